//! The supervisor of a region: one task per slot keeps the slot filled with
//! a live instance.
//!
//! A slot's keeper launches its instance, publishes every change of its
//! state on the region's membership watch, watches it (its exit, and a
//! `health` call every half second: one unanswered takes it out of
//! routing, three in a row replace it), restarts it with exponential backoff when it
//! dies or stops answering (meanwhile the slot is listed as restarting, with
//! why and when it starts again), and on `Stop` drains it (no new requests;
//! in-flight ones finish) before stopping it. An instance whose *first*
//! start fails ends its slot: that is the caller's error, not a restart loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::autoscale::{Demand, Scaling};
use super::launch::{InstanceSpec, Launcher};
use super::membership::{MemberState, MembershipPublisher};
use super::running::Running;
use crate::options::{Protocol, ServiceOptions};
use crate::wire::{self, Access, FlightClient, action, connect, probe, stats_of, stats_within};

/// How often the supervisor checks an instance's health.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How long a health check waits for its answer.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Health checks failed in a row before an instance is replaced; the
/// first failed one takes it out of routing. An instance that stops
/// answering (frozen, SIGSTOP) is therefore unresponsive within
/// `HEALTH_INTERVAL + HEALTH_TIMEOUT` (1.5 s) and replaced within
/// [`UNRESPONSIVE_BOUND`].
const HEALTH_FAILURES: u32 = 3;
/// How long after an instance stops answering it is replaced, at most:
/// documented in `docs/architecture.md`.
const UNRESPONSIVE_BOUND: Duration = Duration::from_millis(
    (HEALTH_FAILURES as u64)
        * (HEALTH_INTERVAL.as_millis() as u64 + HEALTH_TIMEOUT.as_millis() as u64),
);
/// How far past the service's timeout a request may run before its
/// instance counts as wedged and is replaced.
const WEDGE_GRACE: Duration = Duration::from_secs(1);
/// First and largest wait before a restart.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why an instance killed with [`super::ServiceRegion::kill`] ended.
const KILLED_ON_REQUEST: &str = "killed on request";
/// How the reason of an instance replaced for missing health checks starts.
const STOPPED_ANSWERING: &str = "stopped answering";
/// How the reason of a registered instance dropped for want of a renewal
/// starts (`guests`).
pub(crate) const MISSED_LEASE: &str = "missed its lease";

/// Could the request an instance was evaluating have caused its end, as
/// told by `reason` (its member's `last_error`)? A crash, an abort or a
/// wedge could be the request's doing; a kill on request, missed health
/// checks (a frozen process, an overloaded host) or a lapsed lease (a host
/// that vanished) are not.
pub(crate) fn may_blame_request(reason: &str) -> bool {
    ![KILLED_ON_REQUEST, STOPPED_ANSWERING, MISSED_LEASE]
        .iter()
        .any(|innocent| reason.starts_with(innocent))
}

/// What the slots of one region share.
pub(crate) struct RegionShared {
    /// The names of the hosted functions.
    pub(crate) names: Vec<String>,
    pub(crate) spec: InstanceSpec,
    pub(crate) launcher: Launcher,
    pub(crate) publisher: MembershipPublisher,
    pub(crate) next_id: AtomicU64,
    pub(crate) options: Mutex<ServiceOptions>,
    /// Instances restarted, over the region's life.
    pub(crate) restarts: AtomicU64,
    /// The requests callers have outstanding, counted by every client the
    /// region made.
    pub(crate) demand: Arc<Demand>,
    /// The autoscaler's last decision.
    pub(crate) scaling: Mutex<Option<Scaling>>,
}

impl RegionShared {
    /// The service's name.
    pub(crate) fn name(&self) -> &str {
        &self.spec.service
    }

    /// The service's options now.
    pub(crate) fn options(&self) -> ServiceOptions {
        self.options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What a slot's keeper is told.
#[derive(Debug)]
pub(crate) enum SlotCommand {
    /// Kill the instance now (it is restarted, as after a crash).
    Kill(oneshot::Sender<bool>),
    /// Drain the instance, stop it, and end the slot.
    Stop,
}

/// A slot: its keeper's task and how to tell it something.
pub(crate) struct Slot {
    pub(crate) commands: mpsc::Sender<SlotCommand>,
    pub(crate) task: JoinHandle<()>,
}

impl Slot {
    /// Starts the keeper of slot `index`; `ready` hears once the first
    /// instance is ready, or why it failed.
    pub(crate) fn start(
        shared: &Arc<RegionShared>,
        index: usize,
        ready: oneshot::Sender<Result<(), String>>,
    ) -> Self {
        let (commands, receiver) = mpsc::channel(4);
        let keeper = Keeper {
            shared: Arc::clone(shared),
            slot: index,
            ready: Some(ready),
            backoff: BACKOFF_START,
            restarts: 0,
            last_error: None,
            restarting: None,
        };
        let task = tokio::spawn(keeper.keep(receiver));
        Self { commands, task }
    }
}

/// What ended the watch of a ready instance.
enum Outcome {
    Died(String),
    Killed(oneshot::Sender<bool>),
    Stop,
}

/// What a keeper does after an instance ended.
enum Next {
    Restart,
    End,
}

/// Keeps one slot filled with a live instance until told to stop.
struct Keeper {
    shared: Arc<RegionShared>,
    slot: usize,
    /// Told when the first instance is ready (or failed); then `None`.
    ready: Option<oneshot::Sender<Result<(), String>>>,
    backoff: Duration,
    restarts: u32,
    last_error: Option<String>,
    /// The id of the slot's next instance while the slot is listed as
    /// restarting; that instance takes it when it starts.
    restarting: Option<u64>,
}

impl Keeper {
    async fn keep(mut self, mut commands: mpsc::Receiver<SlotCommand>) {
        loop {
            let id = self.starting();
            let options = self.shared.options();
            let launched = tokio::select! {
                launched = self.shared.launcher.launch(&self.shared.spec, self.slot, &options) => launched,
                command = commands.recv() => {
                    self.publish_gone(id);
                    if let Some(SlotCommand::Kill(reply)) = command {
                        let _ = reply.send(false);
                        continue;
                    }
                    return;
                }
            };
            let next = match launched {
                Ok((address, running)) => self.watch(id, address, running, &mut commands).await,
                Err(reason) => self.failed_start(id, reason),
            };
            if matches!(next, Next::End) {
                return;
            }
            let next = self.restarting(self.backoff);
            if wait_or_stop(&mut commands, self.backoff).await {
                self.publish_gone(next);
                return;
            }
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Publishes a new member of this slot, starting; returns its id.
    fn starting(&mut self) -> u64 {
        let id = self
            .restarting
            .take()
            .unwrap_or_else(|| self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (restarts, error) = (self.restarts, self.last_error.clone());
        self.shared.publisher.update(id, self.slot, |m| {
            m.state = MemberState::Starting;
            m.restarts = restarts;
            m.last_error = error;
            m.next_start = None;
        });
        id
    }

    /// Publishes the slot's next member as restarting in `delay`, with why
    /// its last instance ended; returns its id.
    fn restarting(&mut self, delay: Duration) -> u64 {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.restarting = Some(id);
        let (restarts, error) = (self.restarts, self.last_error.clone());
        let at = std::time::Instant::now() + delay;
        self.shared.publisher.update(id, self.slot, |m| {
            m.state = MemberState::Restarting;
            m.restarts = restarts;
            m.last_error = error;
            m.next_start = Some(at);
        });
        id
    }

    fn publish_gone(&self, id: u64) {
        let error = self.last_error.clone();
        self.shared.publisher.update(id, self.slot, |m| {
            m.state = MemberState::Gone;
            if error.is_some() {
                m.last_error = error;
            }
        });
    }

    /// An instance failed to start: the first start's failure ends the
    /// slot (the caller hears it); a restart's is retried.
    fn failed_start(&mut self, id: u64, reason: String) -> Next {
        tracing::warn!(service = %self.shared.name(), slot = self.slot, %reason, "instance failed to start");
        self.last_error = Some(reason.clone());
        self.publish_gone(id);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(reason));
            return Next::End;
        }
        self.restarts += 1;
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        Next::Restart
    }

    /// Serves callers with a ready instance until it dies, is killed, or
    /// the slot is told to stop.
    async fn watch(
        &mut self,
        id: u64,
        address: String,
        mut running: Running,
        commands: &mut mpsc::Receiver<SlotCommand>,
    ) -> Next {
        self.shared.publisher.update(id, self.slot, |m| {
            m.address = address.clone();
            m.state = MemberState::Ready;
        });
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        // one connection per instance for its health checks and drain
        let protocol = self.shared.options().protocol;
        let control = Access::of(self.shared.spec.token.expose(), &self.shared.options())
            .ok()
            .and_then(|access| connect(&address, &access, HEALTH_TIMEOUT).ok());
        // an instance started here is replaced when wedged; one that runs
        // elsewhere may serve others, and is not this region's to replace;
        // a server of another protocol has no stats, only its probe
        let shared = Arc::clone(&self.shared);
        let timeout = move || shared.options().timeout;
        let check = match protocol {
            Protocol::Rpcop if self.shared.launcher.is_remote() => Check::Health,
            Protocol::Rpcop => Check::Stats(&timeout),
            other => Check::Probe(other),
        };
        // out of routing while it misses health checks, back when it answers
        let (publisher, slot) = (&self.shared.publisher, self.slot);
        let responsive = |answering: bool| {
            publisher.update(id, slot, |m| {
                m.state = if answering {
                    MemberState::Ready
                } else {
                    MemberState::Unresponsive
                };
            });
        };
        let outcome = tokio::select! {
            reason = running.ended() => Outcome::Died(reason),
            reason = unhealthy(control.as_ref(), check, responsive) => Outcome::Died(reason),
            command = commands.recv() => match command {
                Some(SlotCommand::Kill(reply)) => Outcome::Killed(reply),
                Some(SlotCommand::Stop) | None => Outcome::Stop,
            },
        };
        match outcome {
            Outcome::Stop => {
                self.shared
                    .publisher
                    .update(id, self.slot, |m| m.state = MemberState::Draining);
                // an instance that runs elsewhere may serve others: left running
                if let Some(control) = control
                    .as_ref()
                    .filter(|_| !self.shared.launcher.is_remote() && protocol.is_rpcop())
                {
                    drain(control, self.shared.options().timeout).await;
                }
                running.stop().await;
                self.publish_gone(id);
                return Next::End;
            }
            Outcome::Killed(reply) => {
                running.kill();
                let _ = running.ended().await;
                let _ = reply.send(true);
                self.last_error = Some(KILLED_ON_REQUEST.to_string());
            }
            Outcome::Died(reason) => {
                tracing::warn!(service = %self.shared.name(), slot = self.slot, %address, %reason, "instance died; restarting");
                running.kill();
                self.last_error = Some(reason);
            }
        }
        self.publish_gone(id);
        self.restarts += 1;
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        Next::Restart
    }
}

/// Waits `delay`; returns true if told to stop meanwhile.
async fn wait_or_stop(commands: &mut mpsc::Receiver<SlotCommand>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return false,
            command = commands.recv() => match command {
                Some(SlotCommand::Kill(reply)) => { let _ = reply.send(false); }
                Some(SlotCommand::Stop) | None => return true,
            },
        }
    }
}

/// How an instance's health is checked every [`HEALTH_INTERVAL`].
pub(crate) enum Check<'a> {
    /// rpcop's `health` action (an instance that runs elsewhere).
    Health,
    /// rpcop's `stats` action, which also tells a wedged instance: one
    /// whose oldest request has run past the service's timeout (read
    /// each time) plus [`WEDGE_GRACE`].
    Stats(&'a (dyn Fn() -> Duration + Send + Sync)),
    /// The probe of a server of another protocol.
    Probe(Protocol),
}

/// Resolves, with why, when the instance failed [`HEALTH_FAILURES`] checks
/// in a row or is wedged; never without a control connection. Tells
/// `responsive` when the instance misses a check after answering one, and
/// when it answers again.
pub(crate) async fn unhealthy(
    control: Option<&FlightClient>,
    check: Check<'_>,
    responsive: impl Fn(bool),
) -> String {
    let Some(control) = control else {
        return std::future::pending().await;
    };
    let mut failures = 0;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let healthy = match &check {
            Check::Health => action(control, wire::ACTION_HEALTH, HEALTH_TIMEOUT)
                .await
                .is_some(),
            Check::Probe(protocol) => probe(control, *protocol, HEALTH_TIMEOUT).await.is_ok(),
            Check::Stats(timeout) => match stats_within(control, HEALTH_TIMEOUT).await {
                Some(stats) => {
                    let limit = timeout() + WEDGE_GRACE;
                    let running = Duration::from_millis(stats.longest_running_ms);
                    if running > limit {
                        return format!(
                            "wedged: a request has run for {running:?}, past the timeout of {:?} \
                             (its caller gave up); the function never returned",
                            limit - WEDGE_GRACE
                        );
                    }
                    true
                }
                None => false,
            },
        };
        match (healthy, failures) {
            (true, 0) => {}
            (true, _) => responsive(true),
            (false, 0) => responsive(false),
            (false, _) => {}
        }
        failures = if healthy { 0 } else { failures + 1 };
        if failures >= HEALTH_FAILURES {
            return format!(
                "{STOPPED_ANSWERING}: missed {failures} health checks in a row \
                 (each waits {HEALTH_TIMEOUT:?}; an instance that stops answering is \
                 replaced within {UNRESPONSIVE_BOUND:?})"
            );
        }
    }
}

/// Tells an instance to drain and waits (up to `timeout` plus a grace) until
/// its open exchanges are closed by their callers.
pub(crate) async fn drain(control: &FlightClient, timeout: Duration) {
    if action(control, wire::ACTION_DRAIN, Duration::from_secs(2))
        .await
        .is_none()
    {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match stats_of(control).await {
            Some(stats) if stats.open_streams == 0 && stats.in_flight == 0 => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_end_the_request_could_cause_is_blamed_on_it() {
        for innocent in [
            KILLED_ON_REQUEST.to_string(),
            format!("{STOPPED_ANSWERING}: missed 3 health checks in a row"),
            format!("{MISSED_LEASE}: no renewal in 1s"),
        ] {
            assert!(!may_blame_request(&innocent), "{innocent}");
        }
        for suspect in [
            "the instance process was killed (SIGKILL: out of memory, or killed)",
            "wedged: a request has run for 31s",
        ] {
            assert!(may_blame_request(suspect), "{suspect}");
        }
    }
}
