//! The shell's live line while services start: a statement that waits for
//! instances loading a model says so (`minilm: 1/2 instances ready,
//! loading…`) instead of looking hung.
//!
//! On a terminal the line is redrawn in place on stderr and erased when
//! the statement ends; on a pipe or a file each new state is one line.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::pin::pin;
use std::time::Duration;

use rpcop::RpcSession;

/// How often the services are looked at while a statement runs.
const TICK: Duration = Duration::from_millis(200);

/// Runs `statement`, showing the start-up of any service of `session`
/// whose instances are not all ready while it runs.
pub(crate) async fn reporting<T>(session: &RpcSession, statement: impl Future<Output = T>) -> T {
    let mut statement = pin!(statement);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    let mut line = Line::new(std::io::stderr().is_terminal());
    loop {
        tokio::select! {
            out = &mut statement => {
                line.clear();
                return out;
            }
            _ = ticks.tick() => {
                let text: Vec<String> = session.startups().iter().map(ToString::to_string).collect();
                line.show(&text.join("; "));
            }
        }
    }
}

/// The line on stderr.
struct Line {
    terminal: bool,
    shown: String,
}

impl Line {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            shown: String::new(),
        }
    }

    fn show(&mut self, text: &str) {
        if text == self.shown {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(stderr, "\r\x1b[K{text}")
        } else if text.is_empty() {
            Ok(())
        } else {
            writeln!(stderr, "{text}")
        };
        let _ = stderr.flush();
        self.shown = text.to_string();
    }

    fn clear(&mut self) {
        if self.terminal && !self.shown.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
        self.shown.clear();
    }
}
