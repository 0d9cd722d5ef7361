//! The evaluation threads of an instance.
//!
//! An [`Evaluator`] owns `threads` dedicated threads that take requests from
//! one queue, one after another. A thread that finishes a request takes the
//! next queued one at once: no hand-off through an async runtime between two
//! requests, so a busy instance never waits for a thread to be woken. (With a
//! permit and a `spawn_blocking` per request, the next request could start
//! only after the finished one had woken the caller's task and that task had
//! woken a blocking thread: two cross-thread wake-ups on the critical path of
//! every request.) Callers await their answer; the queue is only as long as
//! the requests callers keep outstanding (`max_in_flight`, or an exchange's
//! window), so it needs no bound of its own.
//!
//! A request whose caller gave up (a timeout, a cancelled query) before a
//! thread reached it is skipped, not evaluated. A panicking function is
//! caught and answered as [`Unfinished::Panicked`]; the thread lives on.
//! [`Evaluator::stop`] (or dropping the evaluator) answers every queued
//! request [`Unfinished::Stopped`] and lets the threads end.
//!
//! Each thread notes when its current request started, so the instance can
//! tell how long its oldest running request has run
//! ([`Evaluator::longest_running`]): one that runs far past its caller's
//! timeout is wedged (a function that sleeps or spins forever), and the
//! supervisor replaces the instance.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

/// Work for one of the threads.
type Job = Box<dyn FnOnce() + Send>;

/// Why a request was not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The evaluator stopped before the request ran.
    Stopped,
    /// The work panicked, with this message.
    Panicked(String),
}

/// `threads` threads evaluating queued work (see the module documentation).
#[derive(Debug)]
pub(crate) struct Evaluator {
    /// `None` once stopped: no new work is taken.
    queue: Mutex<Option<Sender<Job>>>,
    stopped: Arc<AtomicBool>,
    /// Per thread: when its current job started, in microseconds since
    /// `epoch` plus one; 0 while it waits for work.
    started: Arc<[AtomicU64]>,
    epoch: Instant,
}

impl Evaluator {
    /// Starts `threads` threads named `name-N`. Each enters `runtime` (if
    /// given) so that work may use the instance's tokio runtime.
    pub(crate) fn start(
        name: &str,
        threads: usize,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let stopped = Arc::new(AtomicBool::new(false));
        let threads = threads.max(1);
        let started: Arc<[AtomicU64]> = (0..threads).map(|_| AtomicU64::new(0)).collect();
        let epoch = Instant::now();
        for i in 0..threads {
            let (receiver, stopped, runtime, started) = (
                receiver.clone(),
                Arc::clone(&stopped),
                runtime.cloned(),
                Arc::clone(&started),
            );
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
                    work(&receiver, &stopped, &started[i], epoch);
                })?;
        }
        Ok(Self {
            queue: Mutex::new(Some(sender)),
            stopped,
            started,
            epoch,
        })
    }

    /// How long the oldest request being evaluated has run; zero if none is.
    pub(crate) fn longest_running(&self) -> Duration {
        let now = micros_since(self.epoch);
        self.started
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&s| s != 0)
            .map(|s| Duration::from_micros(now.saturating_sub(s - 1)))
            .max()
            .unwrap_or_default()
    }

    /// Queues `work` and waits for its result. If the caller stops waiting
    /// before a thread takes it, `work` is dropped unrun, with what it owns.
    pub(crate) async fn run<R, F>(&self, work: F) -> Result<R, Unfinished>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            // the caller gave up (timeout, cancelled query): the work is
            // dropped unrun
            if answer.is_closed() {
                return;
            }
            let outcome = catch_unwind(AssertUnwindSafe(work))
                .map_err(|payload| Unfinished::Panicked(panic_message(payload.as_ref())));
            let _ = answer.send(outcome);
        });
        let queued = match &*self.lock() {
            Some(queue) => queue.send(job).is_ok(),
            None => false,
        };
        if !queued {
            return Err(Unfinished::Stopped);
        }
        // a job dropped unrun (stopped) drops its sender
        answered.await.unwrap_or(Err(Unfinished::Stopped))
    }

    /// Takes no new work, drops the queued work (its callers hear
    /// [`Unfinished::Stopped`]) and lets the threads end once the work they
    /// are running is done.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Sender<Job>>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One thread's loop: run queued jobs until the queue is closed and empty,
/// noting in `started` when the current one started.
fn work(receiver: &Receiver<Job>, stopped: &AtomicBool, started: &AtomicU64, epoch: Instant) {
    while let Ok(job) = receiver.recv() {
        if stopped.load(Ordering::Relaxed) {
            // dropped unrun: its caller hears that the evaluator stopped
            continue;
        }
        started.store(micros_since(epoch) + 1, Ordering::Relaxed);
        job();
        started.store(0, Ordering::Relaxed);
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Keeps one of `evaluator`'s threads busy (once this returns) until
    /// the sender is used or dropped; the handle answers the job.
    async fn occupy(
        evaluator: &Arc<Evaluator>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), Unfinished>>,
    ) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let evaluator = Arc::clone(evaluator);
        let busy = tokio::spawn(async move {
            evaluator
                .run(move || {
                    let _ = started.send(());
                    let _ = released.recv_timeout(Duration::from_secs(10));
                })
                .await
        });
        running.await.unwrap();
        (release, busy)
    }

    #[tokio::test]
    async fn runs_work_on_its_threads_and_survives_a_panic() {
        let evaluator = Evaluator::start("test-eval", 2, None).unwrap();
        let name = evaluator
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("test-eval-"));
        let panicked = evaluator
            .run(|| -> u32 { panic!("boom in a handler") })
            .await;
        assert_eq!(
            panicked,
            Err(Unfinished::Panicked("boom in a handler".to_string()))
        );
        // both threads still serve after the panic
        let answers =
            futures::future::join_all((0..8u32).map(|i| evaluator.run(move || i * 2))).await;
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            (0..8).map(|i| i * 2).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn longest_running_tells_how_long_the_oldest_job_has_run() {
        let evaluator = Arc::new(Evaluator::start("test-eval", 2, None).unwrap());
        assert_eq!(evaluator.longest_running(), Duration::ZERO);
        let (release, busy) = occupy(&evaluator).await;
        let first = evaluator.longest_running();
        // it grows while the job runs, without a fixed wait
        let grown = loop {
            let now = evaluator.longest_running();
            if now > first {
                break now;
            }
            std::thread::yield_now();
        };
        assert!(grown > Duration::ZERO);
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // the thread is idle again once its job answered
        let idle = (0..10_000).any(|_| {
            std::thread::yield_now();
            evaluator.longest_running() == Duration::ZERO
        });
        assert!(idle, "{:?}", evaluator.longest_running());
    }

    #[tokio::test]
    async fn at_most_threads_jobs_run_at_once() {
        let evaluator = Evaluator::start("test-eval", 2, None).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            evaluator.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for answer in futures::future::join_all(jobs).await {
            answer.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stopped_answers_queued_and_new_work_and_skips_abandoned_work() {
        let evaluator = Arc::new(Evaluator::start("test-eval", 1, None).unwrap());
        let ran = Arc::new(AtomicUsize::new(0));
        // the one thread is busy until released
        let (release, busy) = occupy(&evaluator).await;
        // a caller that gives up while queued (polled once, then dropped):
        // its work never runs
        let abandoned = {
            let ran = Arc::clone(&ran);
            evaluator
                .run(move || ran.fetch_add(1, Ordering::SeqCst))
                .now_or_never()
        };
        assert!(abandoned.is_none());
        // a queued caller when the evaluator stops hears Stopped
        let mut queued = {
            let ran = Arc::clone(&ran);
            Box::pin(evaluator.run(move || ran.fetch_add(1, Ordering::SeqCst)))
        };
        assert!(futures::poll!(&mut queued).is_pending());
        evaluator.stop();
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        assert_eq!(queued.await, Err(Unfinished::Stopped));
        assert_eq!(evaluator.run(|| 1).await, Err(Unfinished::Stopped));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn abandoned_work_holds_its_request_until_a_thread_drops_it() {
        use crate::instance::counters::{Counters, Outstanding};
        let counters = Arc::new(Counters::default());
        let evaluator = Arc::new(Evaluator::start("test-eval", 1, None).unwrap());
        let (release, busy) = occupy(&evaluator).await;
        // queued (polled once), then abandoned by its caller
        let queued = Outstanding::enter(&counters);
        let abandoned = evaluator.run(move || drop(queued)).now_or_never();
        assert!(abandoned.is_none());
        let count = |c: &AtomicU64| c.load(Ordering::SeqCst);
        assert_eq!(count(&counters.outstanding), 1, "held while queued");
        assert_eq!(count(&counters.cancelled), 0);
        // dropped on its way to the queue: cancelled at once
        drop(Outstanding::enter(&counters));
        assert_eq!(count(&counters.cancelled), 1);
        // taken up: not cancelled
        let mut taken = Outstanding::enter(&counters);
        taken.taken();
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // one thread, in order: this job runs after the abandoned one was dropped
        evaluator.run(move || drop(taken)).await.unwrap();
        assert_eq!(count(&counters.outstanding), 0);
        assert_eq!(count(&counters.cancelled), 2);
        assert_eq!(count(&counters.peak_outstanding), 2);
    }
}
