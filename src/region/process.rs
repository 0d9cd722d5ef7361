//! Instances as child processes: `PROGRAM serve ...` (the `rpcop` binary, or
//! a user's own binary with the same flags), so an abort or out-of-memory in
//! a handler cannot take the caller down.
//!
//! The child gets the region's token as an inherited fd (`--token-file
//! /dev/fd/4`), `--threads`, `--memory-limit` (its heap's limit) and
//! `CUDA_VISIBLE_DEVICES` (its device set), is tied to this process so it
//! never outlives it (`lifeline`), and prints its address as its first line
//! of stdout. Its stderr goes to the log; its last line is kept, to say why
//! it died.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use super::lifeline::{TokenFd, tie};
use super::running::{Running, describe_exit, with_last_words};
use crate::error::RpcError;
use crate::options::ServiceOptions;
use crate::wire::TOKEN_PATH;

/// What a child process instance is started with.
pub(crate) struct ProcessSpec<'a> {
    /// The service's name (for the log).
    pub(crate) service: &'a str,
    /// The functions it hosts.
    pub(crate) functions: Vec<&'a str>,
    /// The address to bind.
    pub(crate) bind: SocketAddr,
    /// The token, passed as an inherited fd.
    pub(crate) token: &'a TokenFd,
}

/// Starts `program serve ...` for `slot`; returns its address once it
/// printed it.
pub(crate) async fn launch_process(
    program: &Path,
    spec: &ProcessSpec<'_>,
    slot: usize,
    options: &ServiceOptions,
) -> Result<(String, Running), String> {
    let mut child = command(program, spec, slot, options)
        .map_err(|e| format!("cannot start '{} serve': {e}", program.display()))?
        .spawn()
        .map_err(|e| format!("cannot start '{} serve': {e}", program.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "the instance process has no stdout".to_string())?;
    let last_words = Arc::new(Mutex::new(String::new()));
    let relay = child.stderr.take().map(|stderr| {
        tokio::spawn(relay_stderr(
            stderr,
            format!("{}[{slot}]", spec.service),
            Arc::clone(&last_words),
        ))
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::select! {
        line = lines.next_line() => line.map_err(|e| e.to_string())?,
        status = child.wait() => {
            // the relay ends when the child's stderr closes: its last words are in
            if let Some(relay) = relay {
                let _ = tokio::time::timeout(Duration::from_secs(1), relay).await;
            }
            return Err(match status {
                Ok(status) => with_last_words(
                    format!("{} before it was ready", describe_exit(status)),
                    &last_words,
                ),
                Err(e) => e.to_string(),
            });
        }
    };
    let address = read_address(program, first, lines)?;
    Ok((address, Running::Process { child, last_words }))
}

/// The command that starts the instance of `slot`.
fn command(
    program: &Path,
    spec: &ProcessSpec<'_>,
    slot: usize,
    options: &ServiceOptions,
) -> Result<Command, RpcError> {
    let mut command = Command::new(program);
    command
        .arg("serve")
        .arg("--bind")
        .arg(spec.bind.to_string())
        .arg("--token-file")
        .arg(TOKEN_PATH)
        .arg("--threads")
        .arg(options.threads.to_string());
    for function in &spec.functions {
        command.arg("--function").arg(function);
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
    tie(&mut command, spec.token)?;
    Ok(command)
}

/// The address a child printed as its first line (`host:port`), as
/// `http://host:port`; keeps draining its stdout afterwards.
fn read_address(
    program: &Path,
    first: Option<String>,
    mut lines: Lines<BufReader<ChildStdout>>,
) -> Result<String, String> {
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
    Ok(format!("http://{host_port}"))
}

/// Forwards a child's stderr to the log, remembering its last line.
async fn relay_stderr(
    stderr: tokio::process::ChildStderr,
    instance: String,
    last_words: Arc<Mutex<String>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match level_of(&line) {
            Some(tracing::Level::ERROR) => tracing::error!(%instance, "{line}"),
            Some(tracing::Level::INFO) => tracing::info!(%instance, "{line}"),
            Some(tracing::Level::DEBUG) => tracing::debug!(%instance, "{line}"),
            Some(tracing::Level::TRACE) => tracing::trace!(%instance, "{line}"),
            // warnings, and what is not a log line (a panic): warn
            _ => tracing::warn!(%instance, "{line}"),
        }
        if !is_backtrace_noise(&line)
            && let Ok(mut last) = last_words.lock()
        {
            *last = line;
        }
    }
}

/// The level of a child's log line as `tracing`'s formatter writes it
/// (`<time>  INFO target: message`), if it is one.
fn level_of(line: &str) -> Option<tracing::Level> {
    line.split_whitespace().take(2).find_map(|word| match word {
        "ERROR" => Some(tracing::Level::ERROR),
        "WARN" => Some(tracing::Level::WARN),
        "INFO" => Some(tracing::Level::INFO),
        "DEBUG" => Some(tracing::Level::DEBUG),
        "TRACE" => Some(tracing::Level::TRACE),
        _ => None,
    })
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

pub(crate) fn random_token() -> Result<String, RpcError> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_lines_keep_their_level() {
        let line = "2026-11-25T10:00:00.000000Z  INFO rpcop::serve: serving";
        assert_eq!(level_of(line), Some(tracing::Level::INFO));
        assert_eq!(
            level_of("2026-11-25T10:00:00Z ERROR x: y"),
            Some(tracing::Level::ERROR)
        );
        assert_eq!(level_of("thread 'main' panicked at src/x.rs:1:1:"), None);
        assert_eq!(level_of("5 retries left"), None);
    }

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
