//! A service region: a supervised pool of instances hosting one service.
//!
//! [`ServiceRegion::builder`] starts `parallelism` instances and returns once
//! all are ready. Each instance fills a *slot* kept by a supervisor task that
//! launches it, watches it (its exit, and a `health` call every second),
//! restarts it with exponential backoff when it dies or stops answering, and
//! publishes every change of state on the region's membership watch
//! ([`crate::membership`]). [`ServiceRegion::resize`] adds slots (callers use
//! them as soon as they are ready) or drains slots (no new requests; in-flight
//! ones finish) before stopping them.
//!
//! With `isolation = 'thread'` an instance runs in this process on a tokio
//! runtime of its own (one I/O thread) with `threads` evaluation threads, apart
//! from the runtime that runs queries. With `isolation = 'process'` it is a
//! child `rpcop serve` process, so an abort or out-of-memory in a handler
//! cannot take the caller down; `memory` limits the child's heap and `gpus`
//! sets its `CUDA_VISIBLE_DEVICES`. [`ServiceRegion::attach`] makes a region
//! of instances that run elsewhere (`rpcop serve` on another host, listed by
//! `ENDPOINTS`): one slot per endpoint, health-checked and published the same
//! way, but never started, drained or stopped by this process.
//!
//! ```no_run
//! # async fn example() -> Result<(), rpcop::RpcError> {
//! use rpcop::{FunctionLibrary, ServiceRegion};
//! use rpcop_sql::ServiceOptions;
//!
//! let library = FunctionLibrary::default();
//! let mut options = ServiceOptions::default();
//! options.set("parallelism", "4")?;
//! let region = ServiceRegion::builder("embedder", library.select(&["embed".into()])?)
//!     .options(options)
//!     .start()
//!     .await?;
//! let client = region.client()?;
//! region.resize(8).await?;
//! region.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::Action;
use futures::StreamExt;
use rpcop_sql::{Isolation, ServiceOptions};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::{BearerToken, FlightClient, ServiceClient, connect};
use crate::error::RpcError;
use crate::function::HostedFunction;
use crate::instance::{Instance, InstanceConfig, InstanceStats, bind};
use crate::membership::{Member, MemberState, MembershipPublisher, MembershipWatch};
use crate::protocol;

/// Instances of a region listen on loopback only.
const BIND_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// How often the supervisor checks an instance's health.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Health checks failed in a row before an instance is restarted.
const HEALTH_FAILURES: u32 = 3;
/// First and largest wait before a restart.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Builds and starts a [`ServiceRegion`].
#[derive(Debug)]
pub struct RegionBuilder {
    name: String,
    functions: Vec<HostedFunction>,
    options: ServiceOptions,
    token: Option<String>,
    serve_program: Option<PathBuf>,
    /// Attach to these instances instead of starting any.
    endpoints: Vec<String>,
    names: Vec<String>,
}

impl RegionBuilder {
    /// The service's options (parallelism, isolation, profile, ...).
    pub fn options(mut self, options: ServiceOptions) -> Self {
        self.options = options;
        self
    }

    /// The bearer token instances require (default: a fresh random one).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The `rpcop` binary that `isolation = 'process'` starts as
    /// `PROGRAM serve ...` (default: `$RPCOP_SERVE_BIN`, else this executable).
    pub fn serve_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.serve_program = Some(program.into());
        self
    }

    /// Starts the instances and returns when all are ready, or with the
    /// first instance's start-up error.
    pub async fn start(self) -> Result<ServiceRegion, RpcError> {
        self.options.validate()?;
        if !self.endpoints.is_empty() && self.token.is_none() {
            return Err(RpcError::Region {
                service: self.name,
                reason: "attaching to endpoints needs the token their instances were started with"
                    .to_string(),
            });
        }
        let token = match self.token {
            Some(token) => token,
            None => random_token()?,
        };
        BearerToken::new(&token)?;
        let mut options = self.options.clone();
        let launcher = match self.options.isolation {
            _ if !self.endpoints.is_empty() => {
                options.parallelism = self.endpoints.len();
                Launcher::Remote {
                    endpoints: self.endpoints.clone(),
                }
            }
            Isolation::Thread => Launcher::Thread,
            Isolation::Process => {
                let program = match self.serve_program {
                    Some(p) => p,
                    None => match std::env::var_os("RPCOP_SERVE_BIN") {
                        Some(p) => PathBuf::from(p),
                        None => std::env::current_exe()?,
                    },
                };
                let token_file = TokenFile::write(&self.name, &token)?;
                Launcher::Process {
                    program,
                    token_file,
                }
            }
        };
        let shared = Arc::new(RegionShared {
            name: self.name,
            names: self.names,
            functions: self.functions,
            token,
            launcher,
            publisher: MembershipPublisher::new(),
            next_id: AtomicU64::new(1),
            options: Mutex::new(options.clone()),
        });
        let region = ServiceRegion {
            shared,
            slots: tokio::sync::Mutex::new(Vec::new()),
        };
        if let Err(error) = region.grow_or_shrink(options.parallelism).await {
            region.shutdown().await;
            return Err(error);
        }
        Ok(region)
    }
}

fn random_token() -> Result<String, RpcError> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A token written to a file only its owner can read, removed on drop.
#[derive(Debug)]
struct TokenFile(PathBuf);

impl TokenFile {
    fn write(service: &str, token: &str) -> Result<Self, RpcError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let safe: String = service
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "rpcop-{}-{safe}-{}.token",
            std::process::id(),
            random_token()?.get(..8).unwrap_or("0")
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
        Ok(Self(path))
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug)]
enum Launcher {
    Thread,
    Process {
        program: PathBuf,
        token_file: TokenFile,
    },
    /// Instances that run elsewhere, one per slot.
    Remote {
        endpoints: Vec<String>,
    },
}

struct RegionShared {
    name: String,
    /// The names of the hosted functions.
    names: Vec<String>,
    functions: Vec<HostedFunction>,
    token: String,
    launcher: Launcher,
    publisher: MembershipPublisher,
    next_id: AtomicU64,
    options: Mutex<ServiceOptions>,
}

impl RegionShared {
    fn options(&self) -> ServiceOptions {
        self.options
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What a slot's keeper is told.
#[derive(Debug)]
enum SlotCommand {
    /// Kill the instance now (it is restarted, as after a crash).
    Kill(oneshot::Sender<bool>),
    /// Drain the instance, stop it, and end the slot.
    Stop,
}

struct Slot {
    commands: mpsc::Sender<SlotCommand>,
    task: JoinHandle<()>,
}

/// A running service region. Dropping it stops every instance abruptly;
/// [`ServiceRegion::shutdown`] drains them first.
pub struct ServiceRegion {
    shared: Arc<RegionShared>,
    slots: tokio::sync::Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for ServiceRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRegion")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl ServiceRegion {
    /// A region named `name` hosting `functions`.
    pub fn builder(name: impl Into<String>, functions: Vec<HostedFunction>) -> RegionBuilder {
        RegionBuilder {
            name: name.into(),
            names: functions.iter().map(|f| f.name().to_string()).collect(),
            functions,
            options: ServiceOptions::default(),
            token: None,
            serve_program: None,
            endpoints: Vec::new(),
        }
    }

    /// A region of the instances at `endpoints` (`http://host:port`), which
    /// run elsewhere and host `functions`; give it their token with
    /// [`RegionBuilder::token`]. Its parallelism is the number of endpoints.
    pub fn attach(
        name: impl Into<String>,
        functions: Vec<String>,
        endpoints: Vec<String>,
    ) -> RegionBuilder {
        RegionBuilder {
            name: name.into(),
            names: functions,
            functions: Vec::new(),
            options: ServiceOptions::default(),
            token: None,
            serve_program: None,
            endpoints,
        }
    }

    /// Do the instances run elsewhere ([`Self::attach`])?
    pub fn is_remote(&self) -> bool {
        matches!(self.shared.launcher, Launcher::Remote { .. })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The names of the functions the service hosts.
    pub fn functions(&self) -> Vec<String> {
        self.shared.names.clone()
    }

    /// Does the service host the function `name`?
    pub fn hosts(&self, name: &str) -> bool {
        self.shared.names.iter().any(|f| f == name)
    }

    /// The service's options now.
    pub fn options(&self) -> ServiceOptions {
        self.shared.options()
    }

    /// Replaces the service's options (validated together). Routing options
    /// apply to clients made after; `parallelism` changes with
    /// [`Self::resize`].
    pub fn set_options(&self, options: ServiceOptions) -> Result<(), RpcError> {
        options.validate()?;
        let mut current = self
            .shared
            .options
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let parallelism = current.parallelism;
        *current = ServiceOptions {
            parallelism,
            ..options
        };
        Ok(())
    }

    /// The bearer token the instances require.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Follows the instance set; every change is pushed.
    pub fn membership(&self) -> MembershipWatch {
        self.shared.publisher.subscribe()
    }

    /// The instances now.
    pub fn members(&self) -> Vec<Member> {
        self.shared.publisher.current().members.clone()
    }

    /// A client of this service with its options.
    pub fn client(&self) -> Result<ServiceClient, RpcError> {
        self.client_with(self.shared.options())
    }

    /// A client of this service with other routing options (policy,
    /// in-flight limit, timeout, retries).
    pub fn client_with(&self, options: ServiceOptions) -> Result<ServiceClient, RpcError> {
        ServiceClient::new(
            self.shared.name.clone(),
            options,
            &self.shared.token,
            self.membership(),
        )
    }

    /// Sets the number of instances. Growing returns when the new instances
    /// are ready; shrinking returns when the removed ones have drained and
    /// stopped. Running callers follow without a restart.
    pub async fn resize(&self, parallelism: usize) -> Result<(), RpcError> {
        if let Launcher::Remote { endpoints } = &self.shared.launcher
            && parallelism != endpoints.len()
        {
            return Err(RpcError::Region {
                service: self.shared.name.clone(),
                reason: format!(
                    "its instances run elsewhere, one per endpoint ({}); DROP it and CREATE it with other ENDPOINTS",
                    endpoints.len()
                ),
            });
        }
        self.grow_or_shrink(parallelism).await
    }

    async fn grow_or_shrink(&self, parallelism: usize) -> Result<(), RpcError> {
        if parallelism == 0 {
            return Err(RpcError::Region {
                service: self.shared.name.clone(),
                reason: "parallelism must be at least 1; DROP the service to stop it".to_string(),
            });
        }
        let mut slots = self.slots.lock().await;
        let mut started = Vec::new();
        while slots.len() < parallelism {
            let index = slots.len();
            let (ready_tx, ready_rx) = oneshot::channel();
            let (commands, receiver) = mpsc::channel(4);
            let task = tokio::spawn(keep_slot(
                Arc::clone(&self.shared),
                index,
                receiver,
                ready_tx,
            ));
            slots.push(Slot { commands, task });
            started.push(ready_rx);
        }
        let mut stopping = Vec::new();
        while slots.len() > parallelism {
            if let Some(slot) = slots.pop() {
                let _ = slot.commands.send(SlotCommand::Stop).await;
                stopping.push(slot.task);
            }
        }
        if let Ok(mut options) = self.shared.options.lock() {
            options.parallelism = parallelism;
        }
        drop(slots);
        let mut first_error = None;
        for ready in started {
            match ready.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "the slot ended before it was ready".into());
                }
            }
        }
        for task in stopping {
            let _ = task.await;
        }
        match first_error {
            None => Ok(()),
            Some(reason) => Err(RpcError::Region {
                service: self.shared.name.clone(),
                reason: format!("an instance failed to start: {reason}"),
            }),
        }
    }

    /// Kills the instance with this member id at once, as a crash would; its
    /// slot restarts it. Returns whether such an instance was running. For
    /// tests and failure drills.
    pub async fn kill(&self, member_id: u64) -> bool {
        let Some(slot) = self
            .members()
            .into_iter()
            .find(|m| m.id == member_id)
            .map(|m| m.slot)
        else {
            return false;
        };
        let slots = self.slots.lock().await;
        let Some(slot) = slots.get(slot) else {
            return false;
        };
        let (tx, rx) = oneshot::channel();
        if slot.commands.send(SlotCommand::Kill(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Each instance's counters (`None` for one that did not answer).
    pub async fn stats(&self) -> Vec<(Member, Option<InstanceStats>)> {
        let token = match BearerToken::new(&self.shared.token) {
            Ok(token) => token,
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for member in self.members() {
            let stats = if member.address.is_empty() {
                None
            } else {
                instance_stats(&member.address, &token).await
            };
            out.push((member, stats));
        }
        out
    }

    /// Drains and stops every instance.
    pub async fn shutdown(&self) {
        let slots = std::mem::take(&mut *self.slots.lock().await);
        for slot in &slots {
            let _ = slot.commands.send(SlotCommand::Stop).await;
        }
        for slot in slots {
            let _ = slot.task.await;
        }
    }
}

impl Drop for ServiceRegion {
    fn drop(&mut self) {
        for slot in self.slots.get_mut().drain(..) {
            slot.task.abort();
        }
    }
}

/// Asks an instance for its counters.
pub async fn instance_stats(address: &str, token: &BearerToken) -> Option<InstanceStats> {
    let client = connect(address, token, Duration::from_secs(2)).ok()?;
    stats_of(&client).await
}

async fn stats_of(client: &FlightClient) -> Option<InstanceStats> {
    let body = action(client, protocol::ACTION_STATS, Duration::from_secs(2)).await?;
    serde_json::from_slice(&body).ok()
}

/// Runs one action on an instance; `None` on any failure or timeout.
async fn action(client: &FlightClient, name: &str, timeout: Duration) -> Option<bytes::Bytes> {
    let mut client = client.clone();
    let call = async {
        let mut results = client
            .do_action(Action::new(name, bytes::Bytes::new()))
            .await
            .ok()?
            .into_inner();
        results.next().await?.ok().map(|r| r.body)
    };
    tokio::time::timeout(timeout, call).await.ok().flatten()
}

/// A launched instance.
enum Running {
    Thread {
        runtime: Option<tokio::runtime::Runtime>,
        shutdown: Option<oneshot::Sender<()>>,
        done: oneshot::Receiver<Result<(), RpcError>>,
    },
    Process {
        child: tokio::process::Child,
        /// The last line the child wrote to stderr (its last words).
        last_words: Arc<Mutex<String>>,
    },
    /// An instance that runs elsewhere: its health checks tell when it ends.
    Remote,
}

impl Running {
    /// Resolves when the instance ends, with why.
    async fn ended(&mut self) -> String {
        match self {
            Running::Thread { done, .. } => match done.await {
                Ok(Ok(())) => "the instance's server stopped".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the instance's runtime stopped".to_string(),
            },
            Running::Process { child, last_words } => match child.wait().await {
                Ok(status) => with_last_words(describe_exit(status), last_words),
                Err(error) => format!("cannot wait for the instance process: {error}"),
            },
            Running::Remote => std::future::pending().await,
        }
    }

    /// Stops the instance at once.
    fn kill(&mut self) {
        match self {
            Running::Thread { runtime, .. } => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
            Running::Process { child, .. } => {
                let _ = child.start_kill();
            }
            Running::Remote => {}
        }
    }

    /// Stops the instance gracefully, then for sure.
    async fn stop(mut self) {
        match &mut self {
            Running::Thread { shutdown, done, .. } => {
                if let Some(shutdown) = shutdown.take() {
                    let _ = shutdown.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
            }
            Running::Process { child, .. } => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    // SAFETY: sending SIGTERM to our own child process.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
            Running::Remote => {}
        }
        self.kill();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the instance process exited with code {code}"),
        (None, Some(libc::SIGKILL)) => {
            "the instance process was killed (SIGKILL: out of memory, or killed)".to_string()
        }
        (None, Some(libc::SIGABRT)) => {
            "the instance process aborted (SIGABRT: a failed allocation under its memory limit, or an abort in user code)".to_string()
        }
        (None, Some(signal)) => format!("the instance process was ended by signal {signal}"),
        (None, None) => "the instance process ended".to_string(),
    }
}

/// Launches the instance of `slot`: returns its address once it is ready.
async fn launch(shared: &RegionShared, slot: usize) -> Result<(String, Running), String> {
    let options = shared.options();
    match &shared.launcher {
        Launcher::Thread => launch_thread(shared, slot, options.threads).await,
        Launcher::Process {
            program,
            token_file,
        } => launch_process(shared, slot, &options, program, token_file).await,
        Launcher::Remote { endpoints } => {
            let endpoint = endpoints.get(slot % endpoints.len().max(1));
            let address = endpoint.cloned().unwrap_or_default();
            let token = BearerToken::new(&shared.token).map_err(|e| e.to_string())?;
            let timeout = options.timeout.min(Duration::from_secs(5));
            let client = connect(&address, &token, timeout).map_err(|e| e.to_string())?;
            match action(&client, "health", timeout).await {
                Some(_) => Ok((address, Running::Remote)),
                None => Err(format!(
                    "{address} did not answer a health check within {timeout:?}; \
                     is `rpcop serve` running there, and started with this token?"
                )),
            }
        }
    }
}

async fn launch_thread(
    shared: &RegionShared,
    slot: usize,
    threads: usize,
) -> Result<(String, Running), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name(format!("rpcop-{}-{slot}", shared.name))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the instance's runtime: {e}"))?;
    let config =
        InstanceConfig::new(shared.functions.clone(), shared.token.as_str()).with_threads(threads);
    let instance = runtime
        .spawn_blocking(move || Instance::load(&config))
        .await
        .map_err(|e| format!("loading panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    let (address_tx, address_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    let bind_to = SocketAddr::from((BIND_HOST, 0));
    runtime.spawn(async move {
        let listener = match bind(bind_to).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = address_tx.send(Err(error.to_string()));
                return;
            }
        };
        let address = listener
            .local_addr()
            .map(|a| format!("http://{a}"))
            .map_err(|e| e.to_string());
        let _ = address_tx.send(address);
        let result = instance
            .serve(listener, async {
                let _ = shutdown_rx.await;
            })
            .await;
        let _ = done_tx.send(result);
    });
    let running = Running::Thread {
        runtime: Some(runtime),
        shutdown: Some(shutdown_tx),
        done: done_rx,
    };
    let address = address_rx
        .await
        .map_err(|_| "the instance stopped before listening".to_string())??;
    Ok((address, running))
}

async fn launch_process(
    shared: &RegionShared,
    slot: usize,
    options: &ServiceOptions,
    program: &PathBuf,
    token_file: &TokenFile,
) -> Result<(String, Running), String> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg("serve")
        .arg("--bind")
        .arg(SocketAddr::from((BIND_HOST, 0)).to_string())
        .arg("--token-file")
        .arg(&token_file.0)
        .arg("--threads")
        .arg(options.threads.to_string());
    for function in &shared.functions {
        command.arg("--function").arg(function.name());
    }
    if let Some(memory) = options.memory {
        command.arg("--memory-limit").arg(memory.to_string());
    }
    if let Some(devices) = options.devices_for(slot) {
        command.env("CUDA_VISIBLE_DEVICES", devices.join(","));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start '{} serve': {e}", program.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "the instance process has no stdout".to_string())?;
    let last_words = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(relay_stderr(
            stderr,
            format!("{}[{slot}]", shared.name),
            Arc::clone(&last_words),
        ));
    }
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::select! {
        line = lines.next_line() => line.map_err(|e| e.to_string())?,
        status = child.wait() => {
            // let the relay read the child's last words
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(match status {
                Ok(status) => with_last_words(
                    format!("{} before it was ready", describe_exit(status)),
                    &last_words,
                ),
                Err(e) => e.to_string(),
            });
        }
    };
    let address = first
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .ok_or_else(|| "the instance process ended before printing its address".to_string())?;
    // keep reading stdout so the child never blocks on a full pipe
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let host_port = address.strip_prefix("http://").unwrap_or(&address);
    if host_port.parse::<SocketAddr>().is_err() {
        return Err(format!(
            "'{} serve' printed '{address}' where its address belongs; is it the rpcop binary? \
             Set RPCOP_SERVE_BIN to the rpcop binary",
            program.display()
        ));
    }
    let address = format!("http://{host_port}");
    Ok((address, Running::Process { child, last_words }))
}

/// Forwards a child's stderr to the log, remembering its last line.
async fn relay_stderr(
    stderr: tokio::process::ChildStderr,
    instance: String,
    last_words: Arc<Mutex<String>>,
) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(%instance, "{line}");
        if !is_backtrace_noise(&line)
            && let Ok(mut last) = last_words.lock()
        {
            *last = line;
        }
    }
}

/// Lines of a Rust panic's backtrace and hints, which say nothing of why.
fn is_backtrace_noise(line: &str) -> bool {
    let line = line.trim();
    let frame = line
        .split_once(": ")
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    line.is_empty()
        || frame
        || line.starts_with("note: ")
        || line.starts_with("at ")
        || line == "stack backtrace:"
}

fn with_last_words(reason: String, last_words: &Mutex<String>) -> String {
    match last_words.lock() {
        Ok(last) if !last.is_empty() => format!("{reason}; its last words: {last}"),
        _ => reason,
    }
}

/// What ended the watch of a ready instance.
enum Outcome {
    Died(String),
    Killed(oneshot::Sender<bool>),
    Stop,
}

/// Keeps one slot filled with a live instance until told to stop.
async fn keep_slot(
    shared: Arc<RegionShared>,
    slot: usize,
    mut commands: mpsc::Receiver<SlotCommand>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_START;
    let mut restarts = 0u32;
    let mut last_error: Option<String> = None;
    let publisher = &shared.publisher;
    loop {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let error = last_error.clone();
        publisher.update(id, slot, |m| {
            m.state = MemberState::Starting;
            m.restarts = restarts;
            m.last_error = error;
        });
        let launched = tokio::select! {
            launched = launch(&shared, slot) => launched,
            command = commands.recv() => {
                publisher.update(id, slot, |m| m.state = MemberState::Gone);
                if let Some(SlotCommand::Kill(reply)) = command {
                    let _ = reply.send(false);
                    continue;
                }
                return;
            }
        };
        let (address, mut running) = match launched {
            Ok(launched) => launched,
            Err(reason) => {
                tracing::warn!(service = %shared.name, slot, %reason, "instance failed to start");
                publisher.update(id, slot, |m| {
                    m.state = MemberState::Gone;
                    m.last_error = Some(reason.clone());
                });
                if let Some(ready) = ready.take() {
                    // a first start that fails is the caller's error, not a restart loop
                    let _ = ready.send(Err(reason));
                    return;
                }
                last_error = Some(reason);
                restarts += 1;
                if wait_or_stop(&mut commands, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        publisher.update(id, slot, |m| {
            m.address = address.clone();
            m.state = MemberState::Ready;
        });
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        // one connection per instance for its health checks and drain
        let control = BearerToken::new(&shared.token)
            .ok()
            .and_then(|token| connect(&address, &token, HEALTH_INTERVAL * 2).ok());
        let outcome = tokio::select! {
            reason = running.ended() => Outcome::Died(reason),
            reason = unhealthy(control.as_ref()) => Outcome::Died(reason),
            command = commands.recv() => match command {
                Some(SlotCommand::Kill(reply)) => Outcome::Killed(reply),
                Some(SlotCommand::Stop) | None => Outcome::Stop,
            },
        };
        match outcome {
            Outcome::Stop => {
                publisher.update(id, slot, |m| m.state = MemberState::Draining);
                // an instance that runs elsewhere may serve others: left running
                let remote = matches!(shared.launcher, Launcher::Remote { .. });
                if let Some(control) = control.as_ref().filter(|_| !remote) {
                    drain(control, shared.options().timeout).await;
                }
                running.stop().await;
                publisher.update(id, slot, |m| m.state = MemberState::Gone);
                return;
            }
            Outcome::Killed(reply) => {
                running.kill();
                let _ = running.ended().await;
                let _ = reply.send(true);
                last_error = Some("killed on request".to_string());
            }
            Outcome::Died(reason) => {
                tracing::warn!(service = %shared.name, slot, %address, %reason, "instance died; restarting");
                running.kill();
                last_error = Some(reason);
            }
        }
        publisher.update(id, slot, |m| {
            m.state = MemberState::Gone;
            m.last_error.clone_from(&last_error);
        });
        restarts += 1;
        if wait_or_stop(&mut commands, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Waits `delay`; returns true if told to stop meanwhile.
async fn wait_or_stop(commands: &mut mpsc::Receiver<SlotCommand>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            command = commands.recv() => match command {
                Some(SlotCommand::Kill(reply)) => { let _ = reply.send(false); }
                Some(SlotCommand::Stop) | None => return true,
            },
        }
    }
}

/// Resolves when the instance has failed [`HEALTH_FAILURES`] health checks in
/// a row.
async fn unhealthy(control: Option<&FlightClient>) -> String {
    let Some(control) = control else {
        return std::future::pending().await;
    };
    let mut failures = 0;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        match action(control, protocol::ACTION_HEALTH, HEALTH_INTERVAL * 2).await {
            Some(_) => failures = 0,
            None => failures += 1,
        }
        if failures >= HEALTH_FAILURES {
            return format!("failed {failures} health checks in a row");
        }
    }
}

/// Tells an instance to drain and waits (up to `timeout` plus a grace) until
/// its open exchanges are closed by their callers.
async fn drain(control: &FlightClient, timeout: Duration) {
    if action(control, protocol::ACTION_DRAIN, Duration::from_secs(2))
        .await
        .is_none()
    {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match stats_of(control).await {
            Some(stats) if stats.open_streams == 0 && stats.in_flight == 0 => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_words_skip_backtraces() {
        for noise in [
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
            "stack backtrace:",
            "   0: __rustc::rust_begin_unwind",
            "             at /rustc/library/std/src/panicking.rs:689:5",
            "",
        ] {
            assert!(is_backtrace_noise(noise), "{noise}");
        }
        assert!(!is_backtrace_noise(
            "memory allocation of 1073741824 bytes failed"
        ));
        assert!(!is_backtrace_noise(
            "thread 'main' panicked at src/x.rs:1:1:"
        ));
    }
}
