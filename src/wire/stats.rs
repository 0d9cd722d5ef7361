//! The body of the `stats` action: an instance's counters, as JSON.

use serde::{Deserialize, Serialize};

/// The counters of one instance, as the `stats` action returns them (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// Requests answered with a result.
    pub requests: u64,
    /// Rows in those requests.
    pub rows: u64,
    /// Requests that failed (bad arguments, function errors, panics).
    pub errors: u64,
    /// Requests being evaluated now.
    pub in_flight: u64,
    /// Exchanges open now.
    pub open_streams: u64,
    /// Functions loaded at start-up.
    pub loads: u64,
    /// Time spent loading them (the one-time start-up), in milliseconds.
    pub startup_ms: u64,
    /// Is the instance draining?
    pub draining: bool,
    /// How long the oldest request being evaluated has run, in
    /// milliseconds (0 if none is). One far past its caller's timeout is
    /// wedged: the supervisor replaces the instance. Optional on the wire
    /// (0 when absent), for instances that do not track it.
    #[serde(default)]
    pub longest_running_ms: u64,
    /// The id of the operating-system process that serves it (for a
    /// `thread` instance, the engine's own). Optional on the wire.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Requests dropped unevaluated: their caller cancelled them (or
    /// stopped waiting) before a thread took them, their exchange ended
    /// first (an earlier request's error ends it), or the instance stopped.
    /// Optional on the wire.
    #[serde(default)]
    pub cancelled: u64,
    /// Requests received and not yet answered or dropped: queued or
    /// running now. Optional on the wire.
    #[serde(default)]
    pub outstanding: u64,
    /// The most requests the instance held at once: received and not yet
    /// answered, queued or running. Optional on the wire.
    #[serde(default)]
    pub peak_outstanding: u64,
    /// Message bodies (requests read, answers sent) that went through
    /// memory shared with their caller rather than the stream. Optional on
    /// the wire.
    #[serde(default)]
    pub shared_bodies: u64,
}
