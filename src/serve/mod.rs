//! `rpcop serve`: one standalone instance, for other hosts and other binaries.
//!
//! The flags are a public contract (`docs/protocol.md`, "rpcop serve").
//! A user's own binary can host its own functions by handing its own
//! [`FunctionLibrary`] to [`serve_main`] (see `examples/serve_own_function.rs`).
//!
//! The first line printed on stdout is the bound address as a URL
//! (`http://host:port`, or `unix:/path` for a Unix domain socket, as
//! `ENDPOINTS` takes it), so a parent that passed port 0 learns the port the
//! system chose. It follows the command contract
//! of `command` instances too: `RPCOP_BIND`, `RPCOP_TOKEN_FILE`,
//! `RPCOP_THREADS`, `RPCOP_MAX_MESSAGE_SIZE` and `RPCOP_MEMORY_LIMIT` stand in for the flags, so
//! `command = 'rpcop serve --function upper'` is an instance.
//!
//! With `--register ADDRESS --service NAME` the instance joins a running
//! session's service through its registry (`register`): it requires the
//! token the registry hands it, renews its lease while it runs, and on
//! SIGTERM leaves, drained, before it stops.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;

mod register;

use crate::error::RpcError;
use crate::function::FunctionLibrary;
use crate::instance::{Instance, InstanceConfig, bind};
use crate::options::{MAX_INSTANCE_THREADS, MIN_INSTANCE_MEMORY, OptionError, thread_budget};
pub use crate::wire::Bind;
use crate::wire::{BearerToken, LIFELINE_ENV, ServerTls};
use register::{Registrant, stopped};

/// The flags of `rpcop serve`.
#[derive(Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: host:port (port 0 picks a free port; loopback
    /// unless told otherwise), or unix:/absolute/path for a Unix domain
    /// socket only this user can connect to.
    #[arg(long, env = "RPCOP_BIND", default_value = "127.0.0.1:50051")]
    pub bind: Bind,
    /// A function to host (repeatable).
    #[arg(long = "function", required = true)]
    pub functions: Vec<String>,
    /// File holding the bearer token callers must send.
    #[arg(long, env = "RPCOP_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The bearer token callers must send (prefer --token-file: argv is
    /// visible to other users of the machine).
    #[arg(long)]
    pub token: Option<String>,
    /// Requests evaluated at once.
    #[arg(long, env = "RPCOP_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Limit of the process's heap in bytes; exceeding it ends the process.
    #[arg(long, env = "RPCOP_MEMORY_LIMIT")]
    pub memory_limit: Option<u64>,
    /// The CUDA device (an ordinal of those `CUDA_VISIBLE_DEVICES` shows)
    /// a function with a model runs on; without it, the CPU.
    #[arg(long, env = "RPCOP_CUDA_DEVICE")]
    pub cuda_device: Option<usize>,
    /// Largest message accepted or sent, in bytes; a larger one fails its
    /// call with OUT_OF_RANGE. Callers must allow as much.
    #[arg(long, env = "RPCOP_MAX_MESSAGE_SIZE", default_value_t = crate::wire::MAX_MESSAGE_BYTES,
          value_parser = parse_message_size)]
    pub max_message_size: usize,
    /// PEM certificate (chain) to serve TLS with; with --tls-key. The
    /// address printed is then https://.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificates of the authority callers' certificates must chain
    /// to: mutual TLS, callers without such a certificate are refused.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve in plain text on an address beyond loopback (refused without
    /// it): tokens and data cross the network readable.
    #[arg(long)]
    pub insecure: bool,
    /// Join the service --service of the session whose registry is at this
    /// address (http://host:port, or https://), keep the place while
    /// running, and leave it drained on SIGTERM. The instance then requires
    /// the service's token, which the registry hands it (--token and
    /// --token-file are not read).
    #[arg(long, value_name = "ADDRESS", requires = "service")]
    pub register: Option<String>,
    /// The service to join (with --register).
    #[arg(long, requires = "register")]
    pub service: Option<String>,
    /// File holding the registry's token (with --register).
    #[arg(long, env = "RPCOP_REGISTRY_TOKEN_FILE")]
    pub registry_token_file: Option<PathBuf>,
    /// PEM certificates of the authority that signed an https:// registry's
    /// certificate (default: the system's).
    #[arg(long)]
    pub registry_ca: Option<PathBuf>,
    /// The address the session reaches this instance at (with --register;
    /// default: the bound address, which must then not be 0.0.0.0 or `[::]`).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("bind", &self.bind)
            .field("functions", &self.functions)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "(redacted)"))
            .field("threads", &self.threads)
            .field("memory_limit", &self.memory_limit)
            .field("cuda_device", &self.cuda_device)
            .field("max_message_size", &self.max_message_size)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("insecure", &self.insecure)
            .field("register", &self.register)
            .field("service", &self.service)
            .field("registry_token_file", &self.registry_token_file)
            .field("registry_ca", &self.registry_ca)
            .field("advertise", &self.advertise)
            .finish()
    }
}

impl ServeArgs {
    /// Refuses limits the process could not start with, before it tries:
    /// the same bounds as the service options `memory` and `threads`.
    fn check(&self) -> Result<(), OptionError> {
        let invalid = |key, value: String, expected: String| OptionError::InvalidValue {
            key,
            value,
            expected,
        };
        if matches!(self.bind, Bind::Unix(_)) && self.tls_cert.is_some() {
            return Err(invalid(
                "bind",
                self.bind.to_string(),
                "host:port with --tls-cert (TLS runs over TCP; a Unix socket is this user's \
                 alone already)"
                    .to_string(),
            ));
        }
        if let Some(limit) = self.memory_limit.filter(|l| *l < MIN_INSTANCE_MEMORY) {
            return Err(invalid(
                "memory-limit",
                limit.to_string(),
                format!("at least {MIN_INSTANCE_MEMORY} bytes (16 MiB)"),
            ));
        }
        let most = MAX_INSTANCE_THREADS.min(thread_budget());
        if !(1..=most).contains(&self.threads) {
            return Err(invalid(
                "threads",
                self.threads.to_string(),
                format!("1 to {most} (the budget of this machine)"),
            ));
        }
        Ok(())
    }

    /// The instance's TLS, if asked for.
    pub fn tls(&self) -> Option<ServerTls> {
        let (cert, key) = (self.tls_cert.clone()?, self.tls_key.clone()?);
        Some(ServerTls {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Refuses plain text beyond loopback unless `--insecure`.
    fn check_transport(&self) -> Result<(), RpcError> {
        match self.bind {
            Bind::Tcp(bind)
                if self.tls().is_none() && !bind.ip().is_loopback() && !self.insecure =>
            {
                Err(RpcError::PlainTextBeyondLoopback { bind })
            }
            _ => Ok(()),
        }
    }

    fn token(&self) -> Result<String, RpcError> {
        match (&self.token_file, &self.token) {
            (Some(path), _) => crate::wire::read_token_file(path),
            (None, Some(token)) => {
                let token = token.trim().to_string();
                BearerToken::new(&token)?;
                Ok(token)
            }
            (None, None) => Err(RpcError::NoToken),
        }
    }
}

/// Runs one instance until SIGINT or SIGTERM (with glibc's malloc set by
/// [`crate::malloc::tune`]).
///
/// ```no_run
/// use clap::Parser;
/// use rpcop::serve::{ServeArgs, serve_main};
///
/// #[derive(Parser)]
/// struct Args {
///     #[command(flatten)]
///     serve: ServeArgs,
/// }
///
/// let args = Args::parse();
/// // the built-ins, plus the user's own functions
/// let library = rpcop::FunctionLibrary::default();
/// serve_main(&args.serve, &library)?;
/// # Ok::<(), rpcop::RpcError>(())
/// ```
pub fn serve_main(args: &ServeArgs, library: &FunctionLibrary) -> Result<(), RpcError> {
    args.check()?;
    args.check_transport()?;
    // the files read (and checked) before anything loads
    let tls = args.tls().map(|tls| tls.config()).transpose()?;
    let secure = tls.is_some();
    crate::malloc::tune();
    if let Some(limit) = args.memory_limit {
        limit_memory(limit)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rpcop-serve")
        .enable_all()
        .build()?;
    // a registering instance learns its token from the registry
    let mut registrant = match (&args.register, &args.service) {
        (Some(registry), Some(service)) => Some({
            let _entered = runtime.enter();
            Registrant::new(
                registry,
                service,
                args.registry_token_file.as_ref(),
                args.registry_ca.as_ref(),
                &args.functions,
            )?
        }),
        _ => None,
    };
    let token = match registrant {
        Some(_) => String::new(),
        None => args.token()?,
    };
    let functions = library.select(&args.functions)?;
    let config = InstanceConfig::new(functions, &token)
        .with_threads(args.threads)
        .with_cuda_device(args.cuda_device)
        .with_max_message(args.max_message_size);
    // loaded within the runtime, so the evaluation threads can use it
    let instance = {
        let _entered = runtime.enter();
        Instance::load(&config)?
    };
    runtime.block_on(async {
        // one watch of the signals, followed by every step that must stop
        let (stopping, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
        });
        let listener = bind(&args.bind).await?;
        let mut address = listener.address()?;
        if secure {
            address = address.replacen("http://", "https://", 1);
        }
        let joined = match &mut registrant {
            Some(registrant) => {
                let reached_at = register::advertised(&address, args.advertise.as_deref())?;
                // told to stop while the registry cannot be reached: stops
                match registrant.join(reached_at, &stop).await? {
                    Some(joined) => Some(joined),
                    None => return Ok(()),
                }
            }
            None => None,
        };
        let mut stdout = std::io::stdout().lock();
        // a URL that pastes into ENDPOINTS ('http://...', 'https://...' or
        // 'unix:/...')
        writeln!(stdout, "{address}")?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(%address, functions = ?args.functions, "serving");
        let (Some(registrant), Some(joined)) = (registrant.as_mut(), joined) else {
            return instance.serve(listener, tls, stopped(&stop)).await;
        };
        // a member of the session's service: serves until it has left,
        // drained (or, refused, has left and stops with why)
        let (halt, halted) = tokio::sync::oneshot::channel::<()>();
        let server = instance
            .with_token(joined.token())
            .serve(listener, tls, async {
                let _ = halted.await;
            });
        tokio::pin!(server);
        let kept = tokio::select! {
            result = &mut server => return result,
            kept = registrant.keep(joined, &stop) => kept,
        };
        let _ = halt.send(());
        let served = server.await;
        kept.and(served)
    })
}

/// Returns on SIGINT, on SIGTERM, or when the parent that started this
/// process ends (see [`wait_for_parent_exit`]).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (orphaned, parent_gone) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rpcop-lifeline".into())
        .spawn(move || {
            if wait_for_parent_exit() {
                let _ = orphaned.send(());
            }
        })
        .ok();
    let parent_gone = async {
        // no lifeline: never
        if parent_gone.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = parent_gone => {}
        }
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = parent_gone => tracing::info!("the parent process is gone; stopping"),
    }
}

/// Blocks until the parent that started this process ends, if it gave this
/// process a lifeline (the fd named by [`LIFELINE_ENV`]); returns `false` at
/// once if it did not.
fn wait_for_parent_exit() -> bool {
    let Some(fd) = std::env::var(LIFELINE_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return false;
    };
    // SAFETY: the parent put the lifeline at this fd for this process, and
    // nothing else in it owns the fd.
    let mut lifeline = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut byte = [0u8; 1];
    // the parent never writes: reads return at end-of-file, when it is gone
    loop {
        match lifeline.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Caps the process's data segment (heap and private mappings): an
/// allocation past it fails and the process aborts, which its supervisor
/// reports and restarts.
/// `--max-message-size`, parsed and bounded as the service option
/// `max_message_size` is (`1048576`, `'64MiB'`).
fn parse_message_size(text: &str) -> Result<usize, OptionError> {
    let mut options = crate::options::ServiceOptions::default();
    options.set("max_message_size", text)?;
    Ok(options.max_message_size)
}

fn limit_memory(bytes: u64) -> Result<(), RpcError> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads a valid rlimit struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(RpcError::Io(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(bind: &str) -> ServeArgs {
        ServeArgs {
            bind: bind.parse().unwrap(),
            functions: vec!["upper".into()],
            token_file: None,
            token: Some("t".into()),
            threads: 1,
            memory_limit: None,
            cuda_device: None,
            max_message_size: crate::wire::MAX_MESSAGE_BYTES,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            insecure: false,
            register: None,
            service: None,
            registry_token_file: None,
            registry_ca: None,
            advertise: None,
        }
    }

    #[test]
    fn plain_text_stays_on_loopback_unless_told_otherwise() {
        assert!(args("127.0.0.1:0").check_transport().is_ok());
        assert!(args("[::1]:0").check_transport().is_ok());
        let wide = args("0.0.0.0:50051");
        assert!(matches!(
            wide.check_transport(),
            Err(RpcError::PlainTextBeyondLoopback { .. })
        ));
        let insecure = ServeArgs {
            insecure: true,
            ..wide.clone()
        };
        assert!(insecure.check_transport().is_ok());
        let tls = ServeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..wide
        };
        assert!(tls.check_transport().is_ok());
        assert!(args("unix:/run/rpcop.sock").check_transport().is_ok());
    }

    #[test]
    fn tls_is_refused_on_a_unix_socket() {
        let unix = ServeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..args("unix:/run/rpcop.sock")
        };
        let refused = unix.check().unwrap_err().to_string();
        assert!(refused.contains("TLS runs over TCP"), "{refused}");
    }
}
