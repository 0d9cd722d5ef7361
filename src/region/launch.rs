//! Launching one instance of a region, however its instances run: a thread
//! instance on a runtime of its own in this process, a child `rpcop serve`
//! process, a user's command (`command`), or an instance that runs
//! elsewhere (`ENDPOINTS`), which is only health-checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use super::command::{CommandSpec, launch_command};
use super::lifeline::TokenFd;
use super::process::{ProcessSpec, launch_process};
use super::running::Running;
use super::sockets::{BIND_HOST, SocketDir};
use crate::function::HostedFunction;
use crate::instance::{Instance, InstanceConfig, bind};
use crate::options::{Protocol, ServiceOptions};
use crate::wire::{self, Access, Bind, NoAnswer, ProbeFailure, Secret, connect, probe, try_action};

/// How a region's instances come to be.
#[derive(Debug)]
pub(crate) enum Launcher {
    /// In this process, each on a runtime of its own.
    Thread,
    /// Child `PROGRAM serve` processes, given the token as an inherited fd.
    Process { program: PathBuf, token: TokenFd },
    /// A user's command run with `sh -c`, given the token as an inherited fd.
    Command { command: String, token: TokenFd },
    /// Instances that run elsewhere, one per slot.
    Remote { endpoints: Vec<String> },
}

/// What every instance of a region hosts, and its token.
#[derive(Debug)]
pub(crate) struct InstanceSpec {
    /// The service's name.
    pub(crate) service: String,
    /// The functions, loadable here (empty for a remote region).
    pub(crate) functions: Vec<HostedFunction>,
    /// The bearer token the instances require.
    pub(crate) token: Secret,
    /// Where instances of rpcop's serve program listen.
    pub(crate) sockets: SocketDir,
}

impl Launcher {
    /// Launches the instance of `slot`: returns its address once it is ready.
    pub(crate) async fn launch(
        &self,
        spec: &InstanceSpec,
        slot: usize,
        options: &ServiceOptions,
    ) -> Result<(String, Running), String> {
        match self {
            Launcher::Thread => {
                let bind = spec.sockets.bind_for(options)?;
                launch_thread(spec, slot, options, bind).await
            }
            Launcher::Process { program, token } => {
                let process = ProcessSpec {
                    service: &spec.service,
                    functions: spec.functions.iter().map(HostedFunction::name).collect(),
                    bind: spec.sockets.bind_for(options)?,
                    token,
                };
                launch_process(program, &process, slot, options).await
            }
            Launcher::Command { command, token } => {
                let command = CommandSpec {
                    service: &spec.service,
                    command,
                    bind: SocketAddr::from((BIND_HOST, 0)),
                    token,
                    token_text: spec.token.expose(),
                };
                launch_command(&command, slot, options).await
            }
            Launcher::Remote { endpoints } => {
                let endpoint = endpoints.get(slot % endpoints.len().max(1));
                let address = endpoint.cloned().unwrap_or_default();
                check_remote(address, spec.token.expose(), options).await
            }
        }
    }

    /// Do the instances run elsewhere?
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Launcher::Remote { .. })
    }
}

/// An instance that runs elsewhere is ready when it answers a health check
/// (a server of another protocol: the probe of its protocol).
async fn check_remote(
    address: String,
    token: &str,
    options: &ServiceOptions,
) -> Result<(String, Running), String> {
    let protocol = options.protocol;
    let access = Access::of(token, options).map_err(|e| e.to_string())?;
    let timeout = options.timeout.min(Duration::from_secs(5));
    let client = connect(&address, &access, timeout).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let answer = if protocol == Protocol::Rpcop {
        try_action(&client, wire::ACTION_HEALTH, timeout)
            .await
            .map(drop)
    } else {
        match probe(&client, protocol, timeout).await {
            Ok(()) => Ok(()),
            Err(ProbeFailure::Unanswered(no_answer)) => Err(no_answer),
            Err(ProbeFailure::WrongProtocol(why)) => {
                return Err(format!(
                    "{address} does not speak the declared protocol '{protocol}': {why}"
                ));
            }
        }
    };
    match answer {
        Ok(()) => Ok((address, Running::Remote)),
        Err(no_answer) => Err(health_failure(&address, &no_answer, started.elapsed())),
    }
}

/// Why an instance at `address` failed its health check, told apart: a
/// wrong token, nothing listening, no answer in time.
fn health_failure(address: &str, no_answer: &NoAnswer, waited: Duration) -> String {
    match no_answer {
        NoAnswer::Status(status) if status.code() == tonic::Code::Unauthenticated => format!(
            "{address} refused the token: {}; give the token its instances were started with",
            status.message()
        ),
        NoAnswer::Status(status) if is_tls_failure(address, &root_cause(status)) => format!(
            "{address}: TLS failed: {}; check `tls_ca` (the \
             authority that signed the instance's certificate) and, if the instance wants \
             mutual TLS (`--tls-client-ca`), `tls_cert` and `tls_key`",
            root_cause(status)
        ),
        NoAnswer::Status(status)
            if address.starts_with("http://") && closed_early(&root_cause(status)) =>
        {
            format!(
                "{address} closed the connection without answering the health check; if the \
                 instance serves TLS (`rpcop serve --tls-cert`), give its address as https://"
            )
        }
        NoAnswer::Status(status) if status.code() == tonic::Code::Unavailable => format!(
            "{address} cannot be reached (after {waited:.0?}): {}; is an instance (`rpcop serve`) \
             running there, listening on that address?",
            root_cause(status)
        ),
        NoAnswer::Status(status) => format!(
            "{address} failed the health check ({:?}): {}",
            status.code(),
            root_cause(status)
        ),
        NoAnswer::Silent(timeout) => format!(
            "{address} accepted the connection but did not answer a health check within \
             {timeout:?}; is it a Flight instance, and is it overloaded?"
        ),
        NoAnswer::Empty => format!("{address} answered the health check with nothing"),
    }
}

/// Whether a health check of an `https://` address failed in TLS: a
/// certificate that does not verify, a handshake alert or a connection
/// closed under it (a missing client certificate).
fn is_tls_failure(address: &str, cause: &str) -> bool {
    let cause = cause.to_ascii_lowercase();
    address.starts_with("https://")
        && (closed_early(&cause)
            || ["certificate", "alert", "handshake", "tls"]
                .iter()
                .any(|word| cause.contains(word)))
}

/// Whether a health check's connection was closed under it, or answered
/// with bytes that are not HTTP/2: what a TLS instance does to a caller
/// speaking plain text, or without the certificate it wants.
fn closed_early(cause: &str) -> bool {
    [
        "connection closed",
        "broken pipe",
        "frame with invalid size",
    ]
    .iter()
    .any(|what| cause.contains(what))
}

/// The innermost cause of a transport error (`Connection refused`), not
/// tonic's layers around it.
fn root_cause(status: &tonic::Status) -> String {
    let mut cause: &dyn std::error::Error = status;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    if text.is_empty() {
        status.message().to_string()
    } else {
        text
    }
}

/// An instance in this process: its own runtime (one I/O thread) and
/// `threads` evaluation threads, apart from the runtime that runs queries.
/// With `gpus`, its device set's first device is its CUDA device, as this
/// process numbers them (a thread cannot have a `CUDA_VISIBLE_DEVICES` of
/// its own).
async fn launch_thread(
    spec: &InstanceSpec,
    slot: usize,
    options: &ServiceOptions,
    bind_to: Bind,
) -> Result<(String, Running), String> {
    let cuda_device = match options.devices_for(slot).and_then(|set| set.first()) {
        None => None,
        Some(device) => Some(device.parse::<usize>().map_err(|_| {
            format!(
                "GPU '{device}' of option gpus: a thread instance takes a device number as this \
                 process sees them; for a GPU UUID use isolation = 'process', whose \
                 CUDA_VISIBLE_DEVICES takes it"
            )
        })?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name(format!("rpcop-{}-{slot}", spec.service))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the instance's runtime: {e}"))?;
    let handle = runtime.handle().clone();
    let mut runtime = StartingRuntime(Some(runtime));
    let config = InstanceConfig::new(spec.functions.clone(), spec.token.expose())
        .with_threads(options.threads)
        .with_cuda_device(cuda_device)
        .with_max_message(options.max_message_size);
    let instance = handle
        .spawn_blocking(move || Instance::load(&config))
        .await
        .map_err(|e| format!("loading panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    let (address_tx, address_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel();
    handle.spawn(async move {
        let listener = match bind(&bind_to).await {
            Ok(listener) => listener,
            Err(error) => {
                let _ = address_tx.send(Err(error.to_string()));
                return;
            }
        };
        let _ = address_tx.send(listener.address().map_err(|e| e.to_string()));
        let result = instance
            .serve(listener, None, async {
                let _ = shutdown_rx.await;
            })
            .await;
        let _ = done_tx.send(result);
    });
    let running = Running::Thread {
        runtime: runtime.0.take(),
        shutdown: Some(shutdown_tx),
        done: done_rx,
    };
    let address = address_rx
        .await
        .map_err(|_| "the instance stopped before listening".to_string())??;
    Ok((address, running))
}

/// The runtime of a thread instance until it serves. Dropped on the way
/// (the load failed, or the start was cancelled: a `DROP`, Ctrl-C) it shuts
/// down in the background: a runtime dropped inside a task makes tokio
/// panic, and the reason would be lost.
struct StartingRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StartingRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
