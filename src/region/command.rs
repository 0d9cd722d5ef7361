//! Instances that are a user's command (`command = 'python3 my_model.py'`),
//! run with `sh -c`, one process each, under the same supervisor as
//! `rpcop serve` children.
//!
//! The command contract (`docs/protocol.md`): the command reads
//! `RPCOP_BIND` (the `host:port` to listen on; port 0 is any free port),
//! `RPCOP_TOKEN_FILE` (the token its callers send), `RPCOP_SERVICE`,
//! `RPCOP_INSTANCE` (its 0-based slot) and `RPCOP_THREADS`; prints the
//! address it bound as the first line of stdout; and finishes its in-flight
//! work and exits on SIGTERM. It also gets `CUDA_VISIBLE_DEVICES` with
//! `gpus`, `RPCOP_MEMORY_LIMIT` (and an `RLIMIT_DATA` of that size) with
//! `memory`, the lifeline as for `rpcop serve`, and the service's `env`, in
//! its `working_dir`.
//!
//! An instance is ready when it printed its address and answers the probe
//! of its protocol ([`crate::wire`]): a server that speaks another protocol
//! than declared fails at once, naming the one it speaks.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Command;

use super::lifeline::{TokenFd, guard_group, tie};
use super::process::{ARROW_UDF_LINE, ChildStart, piped};
use super::running::{LastWords, Running};
use crate::options::{Protocol, ServiceOptions};
use crate::wire::{self, Access, BearerToken, ProbeFailure, TOKEN_PATH};

/// How often a starting instance is probed until it answers.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// What a command instance is started with.
pub(crate) struct CommandSpec<'a> {
    /// The service's name.
    pub(crate) service: &'a str,
    /// The shell command.
    pub(crate) command: &'a str,
    /// The address to bind.
    pub(crate) bind: SocketAddr,
    /// The token, passed as an inherited fd.
    pub(crate) token: &'a TokenFd,
    /// The token as text, for probing an instance of rpcop's protocol.
    pub(crate) token_text: &'a str,
}

/// Starts the command for `slot`; returns its address once it is ready.
pub(crate) async fn launch_command(
    spec: &CommandSpec<'_>,
    slot: usize,
    options: &ServiceOptions,
) -> Result<(String, Running), String> {
    let started = tokio::time::Instant::now();
    let child = ChildStart {
        instance: format!("{}[{slot}]", spec.service),
        what: format!("command '{}'", spec.command),
        startup_timeout: options.startup_timeout,
        // RisingWave's UdfServer prints one such line per function it adds
        skipped: (options.protocol == Protocol::ArrowUdf).then_some(ARROW_UDF_LINE),
        hint: "a command must print the address it bound (host:port) as the first line of its \
               stdout, and log elsewhere (stderr)",
    };
    let command = command(spec, slot, options)
        .map_err(|e| child.failed(&format!("cannot start it: {e}"), &LastWords::default()))?;
    let (address, running, last_words) = child.start(command).await?;
    let deadline = started + options.startup_timeout;
    match ready(&address, spec.token_text, options.protocol, deadline).await {
        Ok(()) => Ok((address, running)),
        Err(reason) => {
            drop(running);
            Err(child.failed(&reason, &last_words))
        }
    }
}

/// `sh -c COMMAND` with the contract's environment, tied to this process.
fn command(
    spec: &CommandSpec<'_>,
    slot: usize,
    options: &ServiceOptions,
) -> Result<Command, crate::error::RpcError> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(spec.command)
        .env("RPCOP_BIND", spec.bind.to_string())
        .env("RPCOP_TOKEN_FILE", TOKEN_PATH)
        .env("RPCOP_SERVICE", spec.service)
        .env("RPCOP_INSTANCE", slot.to_string())
        .env("RPCOP_THREADS", options.threads.to_string());
    if let Some(memory) = options.memory {
        command.env("RPCOP_MEMORY_LIMIT", memory.to_string());
    }
    if let Some(devices) = options.devices_for(slot) {
        command.env("CUDA_VISIBLE_DEVICES", devices.join(","));
    }
    for (name, value) in &options.env {
        command.env(name, value);
    }
    if let Some(directory) = &options.working_dir {
        command.current_dir(directory);
    }
    piped(&mut command);
    tie(&mut command, spec.token)?;
    guard_group(&mut command, options.memory);
    Ok(command)
}

/// Probes the instance at `address` until it answers as `protocol`
/// servers do, or `deadline` passes.
async fn ready(
    address: &str,
    token: &str,
    protocol: Protocol,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let token = BearerToken::for_protocol(token, protocol).map_err(|e| e.to_string())?;
    let client = wire::connect(address, &Access::token(token), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let answer = wire::probe(&client, protocol, left.min(Duration::from_secs(5))).await;
        match answer {
            Ok(()) => return Ok(()),
            Err(ProbeFailure::WrongProtocol(why)) => {
                return Err(format!(
                    "{address} does not speak the declared protocol '{protocol}': {why}"
                ));
            }
            Err(failure) if tokio::time::Instant::now() + PROBE_INTERVAL >= deadline => {
                return Err(format!(
                    "{address} did not answer as a '{protocol}' server within the \
                     startup_timeout: {failure}"
                ));
            }
            Err(_) => tokio::time::sleep(PROBE_INTERVAL).await,
        }
    }
}
