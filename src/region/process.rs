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
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use super::lifeline::{TokenFd, tie};
use super::running::{LastWords, Running, describe_exit};
use crate::error::RpcError;
use crate::options::ServiceOptions;
use crate::wire::{Bind, TOKEN_PATH};

/// What a child process instance is started with.
pub(crate) struct ProcessSpec<'a> {
    /// The service's name (for the log).
    pub(crate) service: &'a str,
    /// The functions it hosts.
    pub(crate) functions: Vec<&'a str>,
    /// The address to bind.
    pub(crate) bind: Bind,
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
    let command = command(program, spec, slot, options)
        .map_err(|e| format!("cannot start '{} serve': {e}", program.display()))?;
    let child = ChildStart {
        instance: format!("{}[{slot}]", spec.service),
        what: format!("'{} serve'", program.display()),
        startup_timeout: options.startup_timeout,
        skipped: None,
        hint: "is it the rpcop binary? Set RPCOP_SERVE_BIN to the rpcop binary",
    };
    let (address, running, _) = child.start(command).await?;
    Ok((address, running))
}

/// What RisingWave's arrow-udf `UdfServer` prints on stdout for each
/// function it adds, before anything else.
pub(crate) const ARROW_UDF_LINE: &str = "added function: ";

/// How long a child that closed its stdout has to exit, for its exit
/// status to be the reason it gave no address.
const EXIT_NOTICE: Duration = Duration::from_secs(1);

/// Starting one child instance process and reading its address.
pub(crate) struct ChildStart<'a> {
    /// `service[slot]`, for the log.
    pub(crate) instance: String,
    /// What is started, for messages (`'rpcop serve'`, `command '...'`).
    pub(crate) what: String,
    /// How long it has to print its address.
    pub(crate) startup_timeout: Duration,
    /// Lines a known server prints before its address, passed over.
    pub(crate) skipped: Option<&'a str>,
    /// What to check when the first line is not an address.
    pub(crate) hint: &'a str,
}

impl ChildStart<'_> {
    /// Spawns `command` and waits, up to the start-up timeout, for the
    /// address it prints first on stdout (`host:port`, or
    /// `http://host:port`); returns it as `http://host:port`, the running
    /// child and the lines it wrote to stderr so far. The child's stderr
    /// is relayed to the log, named by its instance.
    pub(crate) async fn start(
        &self,
        mut command: Command,
    ) -> Result<(String, Running, Arc<LastWords>), String> {
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.what))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| "the instance process has no stdout".to_string())?;
        let last_words = Arc::new(LastWords::default());
        let relay = child.stderr.take().map(|stderr| {
            tokio::spawn(relay_stderr(
                stderr,
                self.instance.clone(),
                Arc::clone(&last_words),
            ))
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::select! {
            line = self.address_line(&mut lines) => line.map_err(|e| format!("cannot read its stdout: {e}")),
            status = child.wait() => {
                let exit = match status {
                    Ok(status) => describe_exit(status),
                    Err(e) => e.to_string(),
                };
                // what it printed before it ended is still in the pipe, and
                // says more than its exit ('echo hello' printed 'hello')
                Err(match tokio::time::timeout(EXIT_NOTICE, self.address_line(&mut lines)).await {
                    Ok(Ok(Some(line))) => format!(
                        "it printed '{}' where its address (host:port) belongs, then ended: {exit}",
                        line.trim()
                    ),
                    _ => format!("{exit} before it printed its address"),
                })
            }
            () = tokio::time::sleep(self.startup_timeout) => Err(format!(
                "printed no address within the startup_timeout of {:?}; raise startup_timeout \
                 if it needs longer to load",
                self.startup_timeout
            )),
        };
        let first = match first {
            // stdout closed: most often because the process is ending
            Ok(None) => match tokio::time::timeout(EXIT_NOTICE, child.wait()).await {
                Ok(Ok(status)) => Err(format!(
                    "{} before it printed its address",
                    describe_exit(status)
                )),
                _ => Err("it closed its stdout without printing its address".to_string()),
            },
            other => other,
        };
        let mut running = Running::Process {
            child,
            last_words: Arc::clone(&last_words),
            relay,
        };
        let address = match first {
            Ok(Some(line)) => self.read_address(&line, lines),
            Ok(None) => Err("it closed its stdout without printing its address".to_string()),
            Err(reason) => Err(reason),
        };
        match address {
            Ok(address) => Ok((address, running, last_words)),
            Err(reason) => {
                // once the group is gone its stderr closes: its last lines are in
                running.kill();
                running.relayed().await;
                Err(self.failed(&reason, &last_words))
            }
        }
    }

    /// The first line of stdout that is not one a known server prints
    /// before its address.
    async fn address_line(
        &self,
        lines: &mut Lines<BufReader<ChildStdout>>,
    ) -> std::io::Result<Option<String>> {
        loop {
            let line = lines.next_line().await?;
            match (&line, self.skipped) {
                (Some(text), Some(prefix)) if text.starts_with(prefix) => {
                    tracing::info!(instance = %self.instance, "{text}");
                }
                _ => return Ok(line),
            }
        }
    }

    /// `line` as an address (`http://host:port`); keeps draining the
    /// child's stdout afterwards.
    fn read_address(
        &self,
        line: &str,
        mut lines: Lines<BufReader<ChildStdout>>,
    ) -> Result<String, String> {
        // keep reading stdout so the child never blocks on a full pipe
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let address = line.trim();
        if let Ok(Bind::Unix(_)) = address.parse::<Bind>() {
            return Ok(address.to_string());
        }
        let host_port = address.strip_prefix("http://").unwrap_or(address);
        if host_port.parse::<SocketAddr>().is_err() {
            let hint = if address.starts_with(ARROW_UDF_LINE) {
                "RisingWave's arrow-udf servers print such lines: set protocol = 'arrow-udf'"
            } else {
                self.hint
            };
            return Err(format!(
                "it printed '{address}' where its address (host:port) belongs; {hint}"
            ));
        }
        Ok(format!("http://{host_port}"))
    }

    /// `reason`, naming the instance and what it runs, with its last lines
    /// on stderr.
    pub(crate) fn failed(&self, reason: &str, last_words: &LastWords) -> String {
        let mut message = format!("instance {} ({}): {reason}", self.instance, self.what);
        if let Some(lines) = last_words.joined() {
            message.push_str(&format!("; its last lines on stderr: {lines}"));
        }
        message
    }
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
        .arg(options.threads.to_string())
        .arg("--max-message-size")
        .arg(options.max_message_size.to_string());
    for function in &spec.functions {
        command.arg("--function").arg(function);
    }
    if let Some(memory) = options.memory {
        command.arg("--memory-limit").arg(memory.to_string());
    }
    if let Some(devices) = options.devices_for(slot) {
        // the instance sees its devices only, numbered from 0
        command.env("CUDA_VISIBLE_DEVICES", devices.join(","));
        command.arg("--cuda-device").arg("0");
    } else {
        // not this shell's: an instance without gpus runs on the CPU
        command.env_remove("RPCOP_CUDA_DEVICE");
    }
    piped(&mut command);
    tie(&mut command, spec.token)?;
    Ok(command)
}

/// stdin from `/dev/null`, stdout and stderr piped here; killed if dropped.
pub(crate) fn piped(command: &mut Command) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
}

/// Forwards a child's stderr to the log, remembering its last line.
async fn relay_stderr(
    stderr: tokio::process::ChildStderr,
    instance: String,
    last_words: Arc<LastWords>,
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
        if !is_backtrace_noise(&line) {
            last_words.push(line);
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
