//! Hedged requests: a request still unanswered after a delay is also sent
//! to a second instance, and the first answer wins (Dean and Barroso, "The
//! Tail at Scale"). The loser is dropped, which cancels it at its instance.
//!
//! [`race`] runs the two attempts; [`Latencies`] keeps the recent answer
//! times that `hedge_after = 'auto'` takes its delay from.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::options::Hedge;

/// How many recent answer times `auto` looks at.
const WINDOW: usize = 512;
/// Answers needed before `auto` hedges at all.
const WARM_UP: usize = 32;
/// The percentile `auto` hedges at.
const PERCENTILE: f64 = 0.95;
/// The shortest delay `auto` uses: below it a hedge costs more than it saves.
const AUTO_FLOOR: Duration = Duration::from_millis(1);

/// Which attempt of a [`race`] gave its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Winner {
    /// The first attempt (no hedge was sent, or it won).
    Primary,
    /// The hedge.
    Hedge,
}

/// Runs `primary`. If it is still running after `delay` (if any), starts
/// `hedge()` too (unless it gives none: no other instance) and returns the
/// first success, or, when both fail, the failure of the one that failed
/// last. The other attempt is dropped.
pub(crate) async fn race<T, E, P, H>(
    delay: Option<Duration>,
    primary: P,
    hedge: impl FnOnce() -> Option<H>,
) -> (Winner, Result<T, E>)
where
    P: Future<Output = Result<T, E>>,
    H: Future<Output = Result<T, E>>,
{
    let mut primary = std::pin::pin!(primary);
    let Some(delay) = delay else {
        return (Winner::Primary, primary.await);
    };
    tokio::select! {
        outcome = &mut primary => return (Winner::Primary, outcome),
        () = tokio::time::sleep(delay) => {}
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

/// Recent answer times of a client, and their 95th percentile.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    /// The last [`WINDOW`] answer times, in microseconds, as a ring.
    recent: Mutex<Ring>,
    /// The percentile, in microseconds (0: not enough answers yet).
    percentile: AtomicU64,
}

#[derive(Debug, Default)]
struct Ring {
    micros: Vec<u64>,
    next: usize,
    /// Answers since the percentile was computed.
    since: usize,
}

impl Latencies {
    /// Notes one answer's time.
    pub(crate) fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut ring = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.micros.len() < WINDOW {
            ring.micros.push(micros);
        } else {
            let next = ring.next;
            ring.micros[next] = micros;
        }
        ring.next = (ring.next + 1) % WINDOW;
        ring.since += 1;
        // recomputed every so often, not on every answer
        if ring.micros.len() >= WARM_UP && ring.since >= WARM_UP {
            ring.since = 0;
            let mut sorted = ring.micros.clone();
            sorted.sort_unstable();
            let rank = ((sorted.len() as f64) * PERCENTILE) as usize;
            let at = sorted[rank.min(sorted.len() - 1)];
            self.percentile.store(at, Ordering::Relaxed);
        }
    }

    /// The hedge delay of `hedge` now: none when off, or for `auto` until
    /// enough answers are in.
    pub(crate) fn delay(&self, hedge: Hedge) -> Option<Duration> {
        match hedge {
            Hedge::Off => None,
            Hedge::After(delay) => Some(delay),
            Hedge::Auto => match self.percentile.load(Ordering::Relaxed) {
                0 => None,
                micros => Some(Duration::from_micros(micros).max(AUTO_FLOOR)),
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
        let (winner, outcome) = race(Some(Duration::from_millis(1)), late, hedge).await;
        assert_eq!((winner, outcome), (Winner::Hedge, Ok("hedge")));
    }

    #[tokio::test]
    async fn a_prompt_primary_sends_no_hedge() {
        let prompt = async { Ok::<_, ()>(1) };
        let delay = Some(Duration::from_secs(3600));
        assert_eq!(race(delay, prompt, never).await, (Winner::Primary, Ok(1)));
        // nor does a service without hedging
        let prompt = async { Ok::<_, ()>(2) };
        assert_eq!(race(None, prompt, never).await, (Winner::Primary, Ok(2)));
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
        let delay = Some(Duration::from_millis(1));
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
        assert_eq!(latencies.delay(Hedge::Auto), None);
        assert_eq!(latencies.delay(Hedge::Off), None);
        let fixed = Duration::from_millis(200);
        assert_eq!(latencies.delay(Hedge::After(fixed)), Some(fixed));
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let delay = latencies.delay(Hedge::Auto).unwrap();
        assert!(
            (Duration::from_millis(90)..=Duration::from_millis(100)).contains(&delay),
            "{delay:?}"
        );
    }
}
