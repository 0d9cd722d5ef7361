//! Hedged requests: a request still unanswered after a delay is also sent
//! to a second instance, and the first answer wins (Dean and Barroso, "The
//! Tail at Scale"). The loser is dropped, which cancels it at its instance.
//!
//! [`race`] runs the two attempts; [`Latencies`] keeps the recent answer
//! times that `hedge_after = 'auto'` takes its delay from: the 95th
//! percentile of a typical instance (the median of the instances' own
//! percentiles), so that a straggler's slow answers do not raise the delay
//! meant to route around it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::options::Hedge;

/// How many recent answer times `auto` looks at.
const WINDOW: usize = 512;
/// Answers needed before `auto` hedges at all, and between two updates of
/// its delay.
const WARM_UP: usize = 16;
/// Answers an instance needs in the window for its percentile to count
/// (and answers in all before the warm-up delay applies).
const PER_INSTANCE: usize = 4;
/// Until [`WARM_UP`] answers are in, `auto` hedges at this multiple of
/// their median.
const WARM_UP_FACTOR: u64 = 3;
/// The percentile `auto` hedges at.
const PERCENTILE: f64 = 0.95;
/// The shortest delay `auto` uses: below it a hedge costs more than it saves.
const AUTO_FLOOR: Duration = Duration::from_millis(1);

/// How often a request whose hedge delay is not known yet (`auto`
/// warming up) looks again.
const RECHECK: Duration = Duration::from_millis(5);

/// When a request is due a hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Never (`hedge_after = 'off'`).
    Never,
    /// Once it has been running this long.
    After(Duration),
    /// Not known yet (`auto` before its first answers): asked again.
    Unknown,
}

/// Which attempt of a [`race`] gave its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Winner {
    /// The first attempt (no hedge was sent, or it won).
    Primary,
    /// The hedge.
    Hedge,
}

/// Runs `primary`. Once it has run as long as `due()` says (asked again
/// while that is unknown, or grows), starts `hedge()` too (unless it gives
/// none: no other instance) and returns the first success, or, when both
/// fail, the failure of the one that failed last. The other attempt is
/// dropped.
pub(crate) async fn race<T, E, P, H>(
    due: impl Fn() -> Due,
    primary: P,
    hedge: impl FnOnce() -> Option<H>,
) -> (Winner, Result<T, E>)
where
    P: Future<Output = Result<T, E>>,
    H: Future<Output = Result<T, E>>,
{
    let mut primary = std::pin::pin!(primary);
    let started = tokio::time::Instant::now();
    loop {
        let wake = match due() {
            Due::Never => return (Winner::Primary, primary.await),
            Due::After(delay) if started.elapsed() >= delay => break,
            Due::After(delay) => started + delay,
            Due::Unknown => tokio::time::Instant::now() + RECHECK,
        };
        tokio::select! {
            outcome = &mut primary => return (Winner::Primary, outcome),
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    let Some(hedge) = hedge() else {
        return (Winner::Primary, primary.await);
    };
    let mut hedge = std::pin::pin!(hedge);
    tokio::select! {
        outcome = &mut primary => match outcome {
            Ok(_) => (Winner::Primary, outcome),
            Err(_) => (Winner::Hedge, hedge.await),
        },
        outcome = &mut hedge => match outcome {
            Ok(_) => (Winner::Hedge, outcome),
            Err(_) => (Winner::Primary, primary.await),
        },
    }
}

/// Recent answer times of a client, by instance, and the delay `auto`
/// hedges at: the 95th percentile of a typical instance.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    /// The last [`WINDOW`] answers: (instance id, microseconds), as a ring.
    recent: Mutex<Ring>,
    /// The delay, in microseconds (0: not enough answers yet).
    percentile: AtomicU64,
}

#[derive(Debug, Default)]
struct Ring {
    answers: Vec<(u64, u64)>,
    next: usize,
    /// Answers since the delay was computed.
    since: usize,
}

impl Ring {
    /// Each instance's 95th-percentile answer time (of those with at least
    /// [`PER_INSTANCE`] answers), and their median, the lower of two: what
    /// a typical instance takes. A straggler's answers raise its own
    /// percentile, not the delay meant to route around it.
    fn typical_percentile(&self) -> Option<u64> {
        let mut by_instance: HashMap<u64, Vec<u64>> = HashMap::new();
        for (instance, micros) in &self.answers {
            by_instance.entry(*instance).or_default().push(*micros);
        }
        let mut percentiles: Vec<u64> = by_instance
            .into_values()
            .filter(|times| times.len() >= PER_INSTANCE)
            .map(|mut times| {
                times.sort_unstable();
                let rank = ((times.len() as f64) * PERCENTILE) as usize;
                times[rank.min(times.len() - 1)]
            })
            .collect();
        percentiles.sort_unstable();
        percentiles
            .get(percentiles.len().checked_sub(1)? / 2)
            .copied()
    }
}

impl Latencies {
    /// Notes one answer's time at `instance`.
    pub(crate) fn record(&self, instance: u64, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut ring = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.answers.len() < WINDOW {
            ring.answers.push((instance, micros));
        } else {
            let next = ring.next;
            ring.answers[next] = (instance, micros);
        }
        ring.next = (ring.next + 1) % WINDOW;
        ring.since += 1;
        // recomputed every so often, not on every answer
        if ring.answers.len() >= WARM_UP && ring.since >= WARM_UP {
            ring.since = 0;
            if let Some(at) = ring.typical_percentile() {
                self.percentile.store(at.max(1), Ordering::Relaxed);
            }
        } else if ring.answers.len() >= PER_INSTANCE && ring.answers.len() < WARM_UP {
            // warming up: a generous multiple of the median so far, so a
            // straggler among the first requests is hedged too
            let mut times: Vec<u64> = ring.answers.iter().map(|(_, micros)| *micros).collect();
            times.sort_unstable();
            let median = times[times.len() / 2];
            self.percentile.store(
                median.saturating_mul(WARM_UP_FACTOR).max(1),
                Ordering::Relaxed,
            );
        }
    }

    /// When `hedge` makes a request due a hedge now: for `auto`, unknown
    /// until enough answers are in.
    pub(crate) fn due(&self, hedge: Hedge) -> Due {
        match hedge {
            Hedge::Off => Due::Never,
            Hedge::After(delay) => Due::After(delay),
            Hedge::Auto => match self.percentile.load(Ordering::Relaxed) {
                0 => Due::Unknown,
                micros => Due::After(Duration::from_micros(micros).max(AUTO_FLOOR)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A hedge that is not sent: building it fails the test.
    fn never<T>() -> Option<std::future::Ready<T>> {
        panic!("no hedge was due")
    }

    #[tokio::test]
    async fn a_late_primary_is_hedged_and_the_first_answer_wins() {
        let late = std::future::pending::<Result<&str, ()>>();
        let hedge = || Some(async { Ok("hedge") });
        let (winner, outcome) = race(|| Due::After(Duration::from_millis(1)), late, hedge).await;
        assert_eq!((winner, outcome), (Winner::Hedge, Ok("hedge")));
    }

    #[tokio::test]
    async fn a_prompt_primary_sends_no_hedge() {
        let prompt = async { Ok::<_, ()>(1) };
        let delay = || Due::After(Duration::from_secs(3600));
        assert_eq!(race(delay, prompt, never).await, (Winner::Primary, Ok(1)));
        // nor does a service without hedging
        let prompt = async { Ok::<_, ()>(2) };
        assert_eq!(
            race(|| Due::Never, prompt, never).await,
            (Winner::Primary, Ok(2))
        );
    }

    #[tokio::test]
    async fn a_failed_hedge_leaves_the_primary_to_answer() {
        // the primary answers once the hedge has failed
        let (failed, hedge_failed) = oneshot::channel::<()>();
        let primary = async {
            let _ = hedge_failed.await;
            Ok::<_, &str>("primary")
        };
        let hedge = move || {
            Some(async move {
                let _ = failed.send(());
                Err("hedge failed")
            })
        };
        let delay = || Due::After(Duration::from_millis(1));
        assert_eq!(
            race(delay, primary, hedge).await,
            (Winner::Primary, Ok("primary"))
        );
        // both fail: the last failure is the answer
        let (failed, hedge_failed) = oneshot::channel::<()>();
        let primary = async {
            let _ = hedge_failed.await;
            Err::<(), _>("primary failed")
        };
        let hedge = move || {
            Some(async move {
                let _ = failed.send(());
                Err("hedge failed")
            })
        };
        assert_eq!(
            race(delay, primary, hedge).await,
            (Winner::Primary, Err("primary failed"))
        );
        // no other instance: no hedge, the primary answers
        let (answer, answered) = oneshot::channel::<()>();
        let primary = async {
            let _ = answered.await;
            Ok::<_, ()>(7)
        };
        let none = move || -> Option<std::future::Ready<Result<i32, ()>>> {
            let _ = answer.send(());
            None
        };
        assert_eq!(race(delay, primary, none).await, (Winner::Primary, Ok(7)));
    }

    #[test]
    fn auto_waits_for_answers_then_hedges_at_the_95th_percentile() {
        let latencies = Latencies::default();
        assert_eq!(latencies.due(Hedge::Auto), Due::Unknown);
        assert_eq!(latencies.due(Hedge::Off), Due::Never);
        let fixed = Duration::from_millis(200);
        assert_eq!(latencies.due(Hedge::After(fixed)), Due::After(fixed));
        // the first answers: three times their median
        for ms in [10, 20, 30] {
            latencies.record(0, Duration::from_millis(ms));
        }
        assert_eq!(latencies.due(Hedge::Auto), Due::Unknown);
        latencies.record(1, Duration::from_millis(40));
        assert_eq!(
            latencies.due(Hedge::Auto),
            Due::After(Duration::from_millis(90))
        );
        let latencies = Latencies::default();
        // 4 even instances: their common 95th percentile
        for ms in 1..=100 {
            latencies.record(ms % 4, Duration::from_millis(ms));
        }
        let Due::After(delay) = latencies.due(Hedge::Auto) else {
            panic!("auto has its delay")
        };
        assert!(
            (Duration::from_millis(88)..=Duration::from_millis(100)).contains(&delay),
            "{delay:?}"
        );
    }

    #[test]
    fn a_straggler_does_not_set_the_delay() {
        // 3 instances answer in 10-19 ms, one in 200 ms, as often: the
        // delay is a typical instance's, not the straggler's
        let latencies = Latencies::default();
        for i in 0..200u64 {
            let instance = i % 4;
            let ms = if instance == 3 { 200 } else { 10 + i % 10 };
            latencies.record(instance, Duration::from_millis(ms));
        }
        let Due::After(delay) = latencies.due(Hedge::Auto) else {
            panic!("auto has its delay")
        };
        assert!(
            (Duration::from_millis(10)..=Duration::from_millis(19)).contains(&delay),
            "{delay:?}"
        );
        // instances with too few answers in the window do not count: two
        // that answered twice in 1 s each are left out
        let latencies = Latencies::default();
        for instance in [8, 8, 9, 9] {
            latencies.record(instance, Duration::from_secs(1));
        }
        for _ in 4..WARM_UP {
            latencies.record(0, Duration::from_millis(5));
        }
        assert_eq!(
            latencies.due(Hedge::Auto),
            Due::After(Duration::from_millis(5))
        );
    }
}
