//! An instance's counters, read by the `stats` action.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::wire::InstanceStats;

/// The live counters of one instance.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    /// Requests received and not finished (queued or running), and the
    /// most there were at once.
    pub(crate) outstanding: AtomicU64,
    pub(crate) peak_outstanding: AtomicU64,
    /// Requests dropped unevaluated: their caller cancelled them (or
    /// stopped waiting) before a thread took them, their exchange ended
    /// first, or the instance stopped.
    pub(crate) cancelled: AtomicU64,
    pub(crate) open_streams: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) startup_ms: AtomicU64,
    pub(crate) draining: AtomicBool,
    /// Message bodies read from or placed in memory shared with a caller.
    pub(crate) shared_bodies: AtomicU64,
}

impl Counters {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> InstanceStats {
        InstanceStats {
            requests: self.requests.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            open_streams: self.open_streams.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            startup_ms: self.startup_ms.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
            longest_running_ms: 0,
            pid: None,
            cancelled: self.cancelled.load(Ordering::Relaxed),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            peak_outstanding: self.peak_outstanding.load(Ordering::Relaxed),
            shared_bodies: self.shared_bodies.load(Ordering::Relaxed),
        }
    }

    /// Is the instance draining (taking no new work)?
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Counts one thing in `counter` while it lives: a request being evaluated
/// (an instance's `in_flight`), or one outstanding at a client.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request received and not finished: counted in `outstanding` (and its
/// peak) from the moment it is read until it is answered or dropped, queued
/// or running in between. One dropped before it was evaluated (its caller
/// cancelled it, whether it was still on its way to the evaluation threads
/// or already queued there) counts as `cancelled`.
pub(crate) struct Outstanding {
    counters: Arc<Counters>,
    taken: bool,
}

impl Outstanding {
    pub(crate) fn enter(counters: &Arc<Counters>) -> Self {
        let now = counters.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
        counters.peak_outstanding.fetch_max(now, Ordering::Relaxed);
        Self {
            counters: Arc::clone(counters),
            taken: false,
        }
    }

    /// The request was taken up (evaluated, or refused with an answer):
    /// dropping it now does not count it as cancelled.
    pub(crate) fn taken(&mut self) {
        self.taken = true;
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if !self.taken {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open exchange; counted in `open_streams` until dropped.
pub(crate) struct OpenStream(Arc<Counters>);

impl OpenStream {
    pub(crate) fn enter(counters: &Arc<Counters>) -> Self {
        counters.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counters))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
