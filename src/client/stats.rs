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
    /// Requests outstanding now: sent, or waiting for a ready instance.
    pub in_flight: u64,
    /// Attempts also sent to a second instance because the first was late
    /// (`hedge_after`).
    pub hedges: u64,
    /// Hedges whose answer came first.
    pub hedge_wins: u64,
}

/// The live counters behind [`ClientStats`], and the callers' streams open
/// now (a query's partitions running through the service).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open_streams: AtomicU64,
    /// Told when the last open stream closes.
    pub(crate) streams_closed: tokio::sync::Notify,
    pub(crate) requests: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
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
            in_flight: self.in_flight.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            hedge_wins: self.hedge_wins.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts a caller's stream as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(std::sync::Arc<Counters>);

impl OpenStream {
    pub(crate) fn enter(counters: &std::sync::Arc<Counters>) -> Self {
        counters.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(std::sync::Arc::clone(counters))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open_streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.streams_closed.notify_waiters();
        }
    }
}
