//! A launched instance, however it runs: how to learn that it ended (and
//! why), and how to stop it, gently or at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::RpcError;

/// A launched instance.
pub(crate) enum Running {
    Thread {
        runtime: Option<tokio::runtime::Runtime>,
        shutdown: Option<oneshot::Sender<()>>,
        done: oneshot::Receiver<Result<(), RpcError>>,
    },
    /// A child process, the leader of a process group of its own: signals
    /// go to the whole group, so what a command started goes with it.
    Process {
        child: tokio::process::Child,
        /// The last lines the child wrote to stderr.
        last_words: Arc<LastWords>,
        /// The task that relays its stderr (and keeps those lines); it ends
        /// once every process of the group closed its stderr.
        relay: Option<JoinHandle<()>>,
    },
    /// An instance that runs elsewhere: its health checks tell when it ends.
    Remote,
}

impl Running {
    /// Resolves when the instance ends, with why.
    pub(crate) async fn ended(&mut self) -> String {
        match self {
            Running::Thread { done, .. } => match done.await {
                Ok(Ok(())) => "the instance's server stopped".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the instance's runtime stopped".to_string(),
            },
            Running::Process {
                child,
                last_words,
                relay,
            } => {
                let status = child.wait().await;
                // its last lines may still be in the pipe
                read_to_end(relay).await;
                match status {
                    Ok(status) => with_last_words(describe_exit(status), last_words),
                    Err(error) => format!("cannot wait for the instance process: {error}"),
                }
            }
            Running::Remote => std::future::pending().await,
        }
    }

    /// Waits (up to a second) until a process's stderr has been read to
    /// its end, so its last words are in.
    pub(crate) async fn relayed(&mut self) {
        if let Running::Process { relay, .. } = self {
            read_to_end(relay).await;
        }
    }

    /// Stops the instance at once.
    pub(crate) fn kill(&mut self) {
        match self {
            Running::Thread { runtime, .. } => {
                if let Some(runtime) = runtime.take() {
                    runtime.shutdown_background();
                }
            }
            Running::Process { child, .. } => {
                signal_group(child, libc::SIGKILL);
                let _ = child.start_kill();
            }
            Running::Remote => {}
        }
    }

    /// Stops the instance gracefully, then for sure.
    pub(crate) async fn stop(mut self) {
        match &mut self {
            Running::Thread { shutdown, done, .. } => {
                if let Some(shutdown) = shutdown.take() {
                    let _ = shutdown.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
            }
            Running::Process { child, .. } => {
                signal_group(child, libc::SIGTERM);
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

/// Waits (up to a second) for a stderr relay to end, once.
async fn read_to_end(relay: &mut Option<JoinHandle<()>>) {
    if let Some(relay) = relay.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), relay).await;
    }
}

pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
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

/// Sends `signal` to the process group `child` leads (its own, set up when
/// it was started), while the child is not yet reaped.
fn signal_group(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: signalling the process group of our own unreaped child.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// The last lines an instance process wrote to stderr.
#[derive(Debug, Default)]
pub(crate) struct LastWords(Mutex<VecDeque<String>>);

impl LastWords {
    /// How many lines are kept.
    const LINES: usize = 5;

    /// Keeps `line`, forgetting the oldest beyond [`Self::LINES`].
    pub(crate) fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last line, if any.
    pub(crate) fn last(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.back().cloned()
    }

    /// The kept lines, oldest first, joined by ` | `.
    pub(crate) fn joined(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (!lines.is_empty()).then(|| lines.iter().cloned().collect::<Vec<_>>().join(" | "))
    }
}

/// `reason`, followed by the last line the instance process wrote to
/// stderr, if it wrote one.
pub(crate) fn with_last_words(reason: String, last_words: &LastWords) -> String {
    match last_words.last() {
        Some(last) => format!("{reason}; its last words: {last}"),
        None => reason,
    }
}
