//! A service region: a supervised pool of instances hosting one service.
//!
//! [`ServiceRegion::builder`] starts `parallelism` instances and returns once
//! all are ready. Each instance fills a *slot* kept by the supervisor
//! (`supervisor`), which restarts it when it dies and publishes every change
//! on the region's membership watch ([`MembershipWatch`]).
//! [`ServiceRegion::resize`] adds slots (callers use them as soon as they
//! are ready) or drains slots (no new requests; in-flight ones finish)
//! before stopping them. With `max_parallelism` the region resizes itself
//! to its callers' demand (`autoscale`); [`ServiceRegion::last_scaling`]
//! tells its last decision and why.
//!
//! With `isolation = 'thread'` an instance runs in this process on a tokio
//! runtime of its own with `threads` evaluation threads, apart from the
//! runtime that runs queries (`launch`). With `isolation = 'process'` it is a
//! child `rpcop serve` process (`process`), so an abort or out-of-memory in a
//! handler cannot take the caller down; `memory` limits the child's heap and
//! `gpus` sets its `CUDA_VISIBLE_DEVICES`. [`ServiceRegion::attach`] makes a
//! region of instances that run elsewhere (`rpcop serve` on another host):
//! one slot per endpoint, health-checked and published the same way, but
//! never started, drained or stopped by this process. Instances on other
//! hosts may also join a running region through a session's registry
//! ([`ServiceRegion::admit`]): *guests* (`guests`), each holding a lease it
//! renews, drained when it leaves. The slots themselves, resizing and the
//! autoscaler's loop are in `slots`.

mod autoscale;
mod command;
mod guests;
mod launch;
mod lifeline;
mod membership;
mod process;
mod running;
mod slots;
mod sockets;
mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::RpcError;
use crate::function::HostedFunction;
use crate::options::{Isolation, OptionError, ServiceOptions};
use crate::wire::{
    Access, Admission, BearerToken, InstanceStats, PROTOCOL_VERSION, Registration, Secret,
    instance_stats,
};
pub(crate) use autoscale::Demand;
pub use autoscale::Scaling;
use guests::Guests;
use launch::{InstanceSpec, Launcher};
use lifeline::TokenFd;
use membership::MembershipPublisher;
pub use membership::{Member, MemberState, Membership, MembershipWatch};
use process::random_token;
use slots::{Slots, keep_scaled, resize_slots};
pub(crate) use supervisor::may_blame_request;
use supervisor::{RegionShared, SlotCommand};

/// Builds and starts a [`ServiceRegion`].
#[derive(Debug)]
pub struct RegionBuilder {
    name: String,
    functions: Vec<HostedFunction>,
    options: ServiceOptions,
    token: Option<Secret>,
    serve_program: Option<PathBuf>,
    /// Attach to these instances instead of starting any.
    endpoints: Vec<String>,
    names: Vec<String>,
    command: Option<String>,
}

impl RegionBuilder {
    /// A builder of a region hosting `functions` by name only: their code
    /// is elsewhere (a command's, or the endpoints').
    fn of_names(name: String, functions: Vec<String>) -> Self {
        Self {
            name,
            names: functions,
            functions: Vec::new(),
            options: ServiceOptions::default(),
            token: None,
            serve_program: None,
            endpoints: Vec::new(),
            command: None,
        }
    }

    /// The service's options (parallelism, isolation, profile, ...).
    pub fn options(mut self, options: ServiceOptions) -> Self {
        self.options = options;
        self
    }

    /// The bearer token instances require (default: a fresh random one).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token.into()));
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
        self.start_watched(|_| {}).await
    }

    /// [`Self::start`], handing `watch` the region's membership once its
    /// instances are launching, so a caller can follow them while they load
    /// (`minilm: 1/2 instances ready`).
    pub async fn start_watched(
        self,
        watch: impl FnOnce(MembershipWatch) + Send,
    ) -> Result<ServiceRegion, RpcError> {
        self.options.validate()?;
        for endpoint in &self.endpoints {
            crate::wire::check_endpoint(endpoint)?;
        }
        let mut options = self.options;
        if let Some(command) = self.command {
            options.set("command", &command)?;
        }
        let protocol = options.protocol;
        if !protocol.is_rpcop() && self.endpoints.is_empty() && options.command.is_none() {
            return Err(OptionError::ProtocolNeedsServer { protocol }.into());
        }
        // a server of another protocol takes no token; its instances get one
        if !self.endpoints.is_empty() && protocol.is_rpcop() && self.token.is_none() {
            return Err(RpcError::MissingToken { service: self.name });
        }
        let token = match self.token {
            Some(token) => token,
            None => Secret::new(random_token()?),
        };
        BearerToken::new(token.expose())?;
        let launcher = if !self.endpoints.is_empty() {
            options.parallelism = self.endpoints.len();
            Launcher::Remote {
                endpoints: self.endpoints,
            }
        } else if let Some(command) = &options.command {
            Launcher::Command {
                command: command.clone(),
                token: TokenFd::new(token.expose())?,
            }
        } else if options.isolation == Isolation::Process {
            let program = match self.serve_program {
                Some(p) => p,
                None => match std::env::var_os("RPCOP_SERVE_BIN") {
                    Some(p) => PathBuf::from(p),
                    None => std::env::current_exe()?,
                },
            };
            Launcher::Process {
                program,
                token: TokenFd::new(token.expose())?,
            }
        } else {
            Launcher::Thread
        };
        let parallelism = options.initial_parallelism();
        let remote = matches!(launcher, Launcher::Remote { .. });
        let shared = Arc::new(RegionShared {
            names: self.names,
            spec: InstanceSpec {
                service: self.name,
                functions: self.functions,
                token,
                sockets: sockets::SocketDir::default(),
            },
            launcher,
            publisher: MembershipPublisher::new(),
            next_id: AtomicU64::new(1),
            options: Mutex::new(options),
            restarts: AtomicU64::new(0),
            demand: Arc::default(),
            scaling: Mutex::new(None),
        });
        let mut region = ServiceRegion {
            shared,
            slots: Arc::default(),
            autoscaler: None,
            guests: Arc::default(),
        };
        watch(region.membership());
        if let Err(error) = region.grow_or_shrink(parallelism).await {
            region.shutdown().await;
            return Err(error);
        }
        // instances that run elsewhere are as many as their endpoints
        if !remote {
            let (shared, slots) = (Arc::clone(&region.shared), Arc::clone(&region.slots));
            region.autoscaler = Some(tokio::spawn(keep_scaled(shared, slots)));
        }
        Ok(region)
    }
}

/// A running service region. Dropping it stops every instance abruptly;
/// [`ServiceRegion::shutdown`] drains them first.
///
/// ```no_run
/// # async fn example() -> Result<(), rpcop::RpcError> {
/// use rpcop::{ServiceOptions, ServiceRegion};
///
/// let library = rpcop::demo::library();
/// let mut options = ServiceOptions::default();
/// options.set("parallelism", "4")?;
/// let region = ServiceRegion::builder("embedder", library.select(&["embed".into()])?)
///     .options(options)
///     .start()
///     .await?;
/// let client = region.client()?; // see ServiceClient
/// region.resize(8).await?;
/// region.shutdown().await;
/// # Ok(()) }
/// ```
pub struct ServiceRegion {
    shared: Arc<RegionShared>,
    slots: Arc<Slots>,
    /// Resizes the region to its demand (when it has `max_parallelism`).
    autoscaler: Option<JoinHandle<()>>,
    /// Instances that joined through a session's registry.
    guests: Arc<Guests>,
}

impl std::fmt::Debug for ServiceRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRegion")
            .field("name", &self.shared.name())
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
            command: None,
        }
    }

    /// A region named `name` whose instances are `command`, run with
    /// `sh -c`, each hosting `functions` (the command contract of
    /// `docs/protocol.md`; with `protocol`, a Flight UDF server of another
    /// kind). The command may also be given as the option `command`.
    pub fn command(
        name: impl Into<String>,
        functions: Vec<String>,
        command: impl Into<String>,
    ) -> RegionBuilder {
        RegionBuilder {
            command: Some(command.into()),
            ..RegionBuilder::of_names(name.into(), functions)
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
            endpoints,
            ..RegionBuilder::of_names(name.into(), functions)
        }
    }

    /// Do the instances run elsewhere ([`Self::attach`])?
    pub fn is_remote(&self) -> bool {
        self.shared.launcher.is_remote()
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The names of the functions the service hosts.
    pub fn functions(&self) -> &[String] {
        &self.shared.names
    }

    /// The addresses of its instances when they run elsewhere (`ENDPOINTS`);
    /// empty for a pool started here.
    pub fn endpoints(&self) -> &[String] {
        match &self.shared.launcher {
            Launcher::Remote { endpoints } => endpoints,
            _ => &[],
        }
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
            .unwrap_or_else(PoisonError::into_inner);
        let parallelism = current.parallelism;
        *current = ServiceOptions {
            parallelism,
            ..options
        };
        Ok(())
    }

    /// The bearer token the instances require.
    pub fn token(&self) -> &str {
        self.shared.spec.token.expose()
    }

    /// Follows the instance set; every change is pushed.
    pub fn membership(&self) -> MembershipWatch {
        self.shared.publisher.subscribe()
    }

    /// The instances now.
    pub fn members(&self) -> Vec<Member> {
        self.shared.publisher.current().members.clone()
    }

    /// How many instances were restarted (after dying, wedging or failing
    /// their health checks) over the region's life.
    pub fn restarts(&self) -> u64 {
        self.shared
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the number of instances. Growing returns when the new instances
    /// are ready; shrinking returns when the removed ones have drained and
    /// stopped. Running callers follow without a restart.
    pub async fn resize(&self, parallelism: usize) -> Result<(), RpcError> {
        if let Launcher::Remote { endpoints } = &self.shared.launcher
            && parallelism != endpoints.len()
        {
            return Err(RpcError::FixedEndpoints {
                service: self.name().to_string(),
                endpoints: endpoints.len(),
            });
        }
        self.grow_or_shrink(parallelism).await
    }

    async fn grow_or_shrink(&self, parallelism: usize) -> Result<(), RpcError> {
        resize_slots(&self.shared, &self.slots, parallelism).await
    }

    /// The autoscaler's last decision, if it took one (`max_parallelism`).
    pub fn last_scaling(&self) -> Option<Scaling> {
        self.shared
            .scaling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests callers have outstanding at this region now (sent, or
    /// waiting for a ready instance): what the autoscaler sizes it by.
    pub fn demand(&self) -> u64 {
        self.shared.demand.now()
    }

    /// What every client this region makes counts its requests in.
    pub(crate) fn demand_counter(&self) -> Arc<Demand> {
        Arc::clone(&self.shared.demand)
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
        let Ok(access) = Access::of(self.token(), &self.options()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for member in self.members() {
            let stats = if member.address.is_empty() {
                None
            } else {
                instance_stats(&member.address, &access).await
            };
            out.push((member, stats));
        }
        out
    }

    /// Admits an instance that runs elsewhere and asked to join through a
    /// session's registry (`rpcop serve --register`): it must speak
    /// rpcop's protocol version and host every function of the service.
    /// It keeps its place while it answers health checks and renews its
    /// `lease` ([`Self::renew`]); [`Self::leave`] drains it.
    pub fn admit(
        &self,
        registration: &Registration,
        lease: Duration,
    ) -> Result<Admission, RpcError> {
        let refused = |reason: String| RpcError::RegistrationRefused {
            service: self.name().to_string(),
            reason,
        };
        let protocol = self.options().protocol;
        if !protocol.is_rpcop() {
            return Err(refused(format!(
                "its instances are '{protocol}' servers; only rpcop instances register"
            )));
        }
        if registration.protocol_version != PROTOCOL_VERSION {
            return Err(refused(format!(
                "the instance speaks protocol version {}, this session {PROTOCOL_VERSION}; run \
                 the same rpcop release on both",
                registration.protocol_version
            )));
        }
        let missing: Vec<&str> = self
            .functions()
            .iter()
            .filter(|f| !registration.functions.contains(f))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(refused(format!(
                "the instance does not host {}; start it with --function for each of {}",
                missing.join(", "),
                self.functions().join(", ")
            )));
        }
        // an instance of another host is reached over the network only:
        // never at a Unix socket of this host
        let address = &registration.address;
        if !address.starts_with("http://") && !address.starts_with("https://") {
            return Err(refused(format!(
                "'{address}' is not an http:// or https:// address; give --advertise the \
                 address this session reaches the instance at"
            )));
        }
        crate::wire::check_endpoint(address)
            .map_err(|e| refused(format!("{e}; give --advertise the address to reach it at")))?;
        let Some((member, secret)) = self.guests.admit(&self.shared, address.clone(), lease)?
        else {
            return Err(refused("the service is shutting down".to_string()));
        };
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Admission {
            member,
            token: self.token().to_string(),
            secret,
            lease_ms: millis(lease),
            // the drain's own bound (the timeout and 2 s, after a 2 s drain
            // call), and a grace
            drain_ms: millis(self.options().timeout + Duration::from_secs(10)),
        })
    }

    /// Renews the lease of the registered instance `member`, given the
    /// secret its admission carried; false if the region does not know it
    /// (its lease ran out, or it left) by that secret: it must register
    /// again.
    pub fn renew(&self, member: u64, secret: &str) -> bool {
        self.guests.renew(member, secret)
    }

    /// Takes the registered instance `member` out of routing, drains it,
    /// and lets it go; returns when it has drained (false at once if the
    /// region does not know it by `secret`).
    pub async fn leave(&self, member: u64, secret: &str) -> bool {
        self.guests.leave(member, secret).await
    }

    /// Drains and stops every instance (registered ones are let go, and
    /// left running).
    pub async fn shutdown(&self) {
        if let Some(autoscaler) = &self.autoscaler {
            autoscaler.abort();
        }
        self.guests.dismiss_all(&self.shared);
        let slots = std::mem::take(&mut **self.slots.lock().await);
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
        if let Some(autoscaler) = &self.autoscaler {
            autoscaler.abort();
        }
        self.guests.dismiss_all(&self.shared);
        let Ok(mut slots) = self.slots.try_lock() else {
            return;
        };
        for slot in slots.drain(..) {
            slot.task.abort();
        }
    }
}
