//! What a client has done, for metrics: per request ([`CallReport`]) and in
//! total ([`ClientStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// How one request of [`crate::ServiceClient::call_as`] went, for a
/// caller's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallReport {
    /// Attempts re-sent after a failure or timeout.
    pub retries: u64,
    /// The request failed after its retries and its rows got NULL
    /// (`on_error = 'null'`).
    pub nulled: bool,
}

/// What a client has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests that returned a result.
    pub requests: u64,
    /// Rows in those requests.
    pub rows: u64,
    /// Attempts re-sent after a failure or timeout.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Requests that failed after all attempts.
    pub failures: u64,
    /// Attempts that failed: an error, a timeout, an instance lost (each
    /// failed attempt of a request that then succeeded elsewhere, too).
    pub errors: u64,
}

/// The live counters behind [`ClientStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ClientStats {
        ClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
