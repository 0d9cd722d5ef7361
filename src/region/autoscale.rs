//! Autoscaling: a region with `max_parallelism` sizes itself to its
//! callers' demand.
//!
//! Every client the region made counts its requests outstanding (sent, or
//! waiting for a ready instance) in the region's [`Demand`]. A task per
//! region samples it a few times per `scale_up_after` and hands the samples
//! to a [`Scaler`], which decides:
//!
//! - **grow** once the demand has outnumbered the instances' threads
//!   (`size × threads`) in nine samples out of ten for `scale_up_after`:
//!   requests wait for a thread, at an instance or for one. It grows to as
//!   many instances as the average demand of that window keeps busy, at
//!   least one more, at most `max_parallelism`.
//! - **shrink** once at least one instance's worth of threads stayed unused
//!   in every sample for `scale_down_after`: to as many instances as the
//!   window's peak needed, at least one fewer, at least `min_parallelism`.
//!   The instances removed drain first (no new requests; those in flight
//!   finish).
//!
//! The two windows are the hysteresis: a burst shorter than
//! `scale_up_after` does not grow the service, and a lull shorter than
//! `scale_down_after` does not shrink it. After each decision both windows
//! start again, so a new size is judged on its own samples. The last
//! decision, with why, is kept for `rpc_services()` ([`Scaling`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::options::{ServiceOptions, format_duration};

/// The requests callers have outstanding at a region now: sent to an
/// instance, or waiting for a ready one. Every client the region made
/// counts in it.
#[derive(Debug, Default)]
pub(crate) struct Demand(AtomicU64);

impl Demand {
    /// The counter a client enters for each request it has outstanding.
    pub(crate) fn requests(&self) -> &AtomicU64 {
        &self.0
    }

    /// Requests outstanding now.
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One decision of the autoscaler: when, from what size to what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    /// When it was taken.
    pub at: SystemTime,
    /// The number of instances before.
    pub from: usize,
    /// The number of instances it asked for.
    pub to: usize,
    /// Why, in words (and, if the new instances failed to start, why not).
    pub why: String,
}

impl fmt::Display for Scaling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = self.at.elapsed().unwrap_or_default();
        write!(
            f,
            "{} -> {} ({} ago): {}",
            self.from,
            self.to,
            format_duration(Duration::from_secs(ago.as_secs())),
            self.why
        )
    }
}

/// The share of the samples of `scale_up_after` that must be saturated:
/// a pipelined caller's demand dips for an instant between an answer and
/// its next request, which must not restart the window.
const SATURATED_SHARE: f64 = 0.9;

/// How often the autoscaler samples the demand: ten times per the shorter
/// window, between 20 ms and half a second.
pub(crate) fn tick(options: &ServiceOptions) -> Duration {
    (options.scale_up_after.min(options.scale_down_after) / 10)
        .clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// Decides sizes from samples of the demand (see the module documentation).
#[derive(Debug)]
pub(crate) struct Scaler {
    /// When the current size began to be judged.
    since: Instant,
    /// The size being judged.
    size: Option<usize>,
    /// Samples of the demand since then, at most the longer window's.
    samples: VecDeque<(Instant, u64)>,
}

impl Scaler {
    /// A scaler judging from `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            since: now,
            size: None,
            samples: VecDeque::new(),
        }
    }

    /// Forgets every sample: the size changed at `now`.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.since = now;
        self.samples.clear();
    }

    /// Takes the sample `demand` at `now`, for a service of `size`
    /// instances with `options`; returns the size to go to and why, if the
    /// service should change size. The windows start again whenever
    /// autoscaling is off or the size changed (an `ALTER`), so a decision
    /// always rests on a whole window of the size it changes.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        demand: u64,
        size: usize,
        options: &ServiceOptions,
    ) -> Option<(usize, String)> {
        let Some((min, max)) = options.scaling_bounds() else {
            self.restart(now);
            return None;
        };
        if self.size != Some(size) {
            self.restart(now);
            self.size = Some(size);
        }
        if size < min {
            return Some((min, format!("below min_parallelism = {min}")));
        }
        if size > max {
            return Some((max, format!("above the largest size, {max}")));
        }
        let (up, down) = (options.scale_up_after, options.scale_down_after);
        self.samples.push_back((now, demand));
        let kept = up.max(down);
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > kept)
        {
            self.samples.pop_front();
        }
        let threads = options.threads as u64;
        let capacity = size as u64 * threads;
        if size < max && now.duration_since(self.since) >= up {
            let window = self.within(now, up);
            let saturated = window.iter().filter(|d| **d > capacity).count();
            if saturated as f64 >= SATURATED_SHARE * window.len() as f64 && !window.is_empty() {
                let mean = window.iter().sum::<u64>() as f64 / window.len() as f64;
                let wanted = usize::try_from((mean / threads as f64).ceil() as u64).unwrap_or(max);
                let to = wanted.clamp(size + 1, max);
                return Some((
                    to,
                    format!(
                        "callers kept {mean:.1} requests outstanding on average for {}, \
                         more than {size} instance(s) of {threads} thread(s) take at once",
                        format_duration(up)
                    ),
                ));
            }
        }
        if size > min && now.duration_since(self.since) >= down {
            let window = self.within(now, down);
            let peak = window.iter().copied().max().unwrap_or(0);
            if peak + threads <= capacity {
                let wanted = usize::try_from(peak.div_ceil(threads)).unwrap_or(size);
                let to = wanted.clamp(min, size - 1);
                return Some((
                    to,
                    format!(
                        "callers had at most {peak} requests outstanding for {}, \
                         which {to} instance(s) of {threads} thread(s) serve",
                        format_duration(down)
                    ),
                ));
            }
        }
        None
    }

    /// The samples of the last `window` before `now`.
    fn within(&self, now: Instant, window: Duration) -> Vec<u64> {
        self.samples
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= window)
            .map(|(_, demand)| *demand)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn autoscaled(min: usize, max: usize, threads: usize) -> ServiceOptions {
        let mut options = ServiceOptions::default();
        options.set("min_parallelism", &min.to_string()).unwrap();
        options.set("max_parallelism", &max.to_string()).unwrap();
        options.set("threads", &threads.to_string()).unwrap();
        options.set("scale_up_after", "1s").unwrap();
        options.set("scale_down_after", "3s").unwrap();
        options
    }

    /// Feeds `demand(i)` every 100 ms for `ms` milliseconds from `start`;
    /// returns the first decision and when it came.
    fn feed(
        scaler: &mut Scaler,
        start: Instant,
        ms: u64,
        size: usize,
        options: &ServiceOptions,
        demand: impl Fn(u64) -> u64,
    ) -> Option<(u64, usize, String)> {
        (0..=ms / 100).find_map(|i| {
            let at = start + Duration::from_millis(i * 100);
            scaler
                .observe(at, demand(i), size, options)
                .map(|(to, why)| (i * 100, to, why))
        })
    }

    #[test]
    fn a_fixed_service_never_scales() {
        let options = ServiceOptions::default();
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        assert_eq!(feed(&mut scaler, start, 60_000, 1, &options, |_| 100), None);
    }

    #[test]
    fn saturation_for_the_whole_window_grows_to_the_mean_demand() {
        let options = autoscaled(1, 8, 1);
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        // 5 requests outstanding on 1 instance of 1 thread: grows to 5
        // once a second of it has passed, not before
        let (at, to, why) = feed(&mut scaler, start, 5_000, 1, &options, |_| 5).unwrap();
        assert_eq!((at, to), (1_000, 5), "{why}");
        assert!(why.contains("5.0 requests"), "{why}");
    }

    #[test]
    fn growth_stops_at_the_largest_size_and_at_the_device_sets() {
        let options = autoscaled(1, 8, 2);
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        let (_, to, _) = feed(&mut scaler, start, 5_000, 2, &options, |_| 100).unwrap();
        assert_eq!(to, 8);
        // at the largest size, no more growth
        let mut scaler = Scaler::new(start);
        assert_eq!(feed(&mut scaler, start, 5_000, 8, &options, |_| 100), None);
        // four device sets: at most four instances
        let mut options = options;
        options.set("gpus", "0,1,2,3").unwrap();
        let mut scaler = Scaler::new(start);
        let (_, to, _) = feed(&mut scaler, start, 5_000, 2, &options, |_| 100).unwrap();
        assert_eq!(to, 4);
    }

    #[test]
    fn a_burst_shorter_than_the_window_or_brief_dips_decide_nothing_wrong() {
        let options = autoscaled(1, 8, 1);
        let start = Instant::now();
        // saturated for 0.5 s, then quiet: no growth; and no shrink below 1
        let mut scaler = Scaler::new(start);
        let burst = |i| if i < 5 { 4 } else { 0 };
        assert_eq!(feed(&mut scaler, start, 10_000, 1, &options, burst), None);
        // saturated with one dip in ten: still grows
        let mut scaler = Scaler::new(start);
        let dipping = |i| if i % 10 == 3 { 1 } else { 3 };
        let (_, to, _) = feed(&mut scaler, start, 5_000, 1, &options, dipping).unwrap();
        assert!(to >= 2);
        // busy but not saturated (demand = capacity): stays
        let mut scaler = Scaler::new(start);
        assert_eq!(feed(&mut scaler, start, 10_000, 4, &options, |_| 4), None);
    }

    #[test]
    fn idle_threads_for_the_whole_window_shrink_to_the_peak() {
        let options = autoscaled(2, 8, 1);
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        // 8 instances, never more than 3 requests: 3 instances, after 3 s
        let (at, to, why) = feed(&mut scaler, start, 10_000, 8, &options, |i| i % 4).unwrap();
        assert_eq!((at, to), (3_000, 3), "{why}");
        // idle: down to min_parallelism, not below
        let mut scaler = Scaler::new(start);
        let (_, to, _) = feed(&mut scaler, start, 10_000, 8, &options, |_| 0).unwrap();
        assert_eq!(to, 2);
        let mut scaler = Scaler::new(start);
        assert_eq!(feed(&mut scaler, start, 10_000, 2, &options, |_| 0), None);
        // one busy moment in the window keeps every instance
        let mut scaler = Scaler::new(start);
        let once = |i| if i == 25 { 8 } else { 0 };
        let (at, _, _) = feed(&mut scaler, start, 10_000, 8, &options, once).unwrap();
        assert!(
            at >= 5_500,
            "shrank {at} ms in, within 3 s of the busy moment"
        );
    }

    #[test]
    fn a_size_outside_changed_bounds_is_brought_back_at_once() {
        let options = autoscaled(3, 5, 1);
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        assert_eq!(scaler.observe(start, 0, 1, &options).unwrap().0, 3);
        assert_eq!(scaler.observe(start, 0, 9, &options).unwrap().0, 5);
    }

    #[test]
    fn turned_on_or_resized_it_waits_a_whole_window() {
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        // an hour without autoscaling, then it is turned on: saturated
        // from then on, it grows one window later, not at once
        let fixed = ServiceOptions::default();
        assert_eq!(feed(&mut scaler, start, 3_600_000, 1, &fixed, |_| 9), None);
        let options = autoscaled(1, 8, 1);
        let on = start + Duration::from_secs(3_601);
        let (at, _, _) = feed(&mut scaler, on, 5_000, 1, &options, |_| 9).unwrap();
        assert_eq!(at, 1_000);
        // resized from outside (ALTER parallelism): the same
        let later = on + Duration::from_secs(60);
        let (at, _, _) = feed(&mut scaler, later, 5_000, 3, &options, |_| 9).unwrap();
        assert_eq!(at, 1_000);
    }

    #[test]
    fn a_restart_judges_the_new_size_on_its_own_samples() {
        let options = autoscaled(1, 8, 1);
        let start = Instant::now();
        let mut scaler = Scaler::new(start);
        let (at, _, _) = feed(&mut scaler, start, 5_000, 1, &options, |_| 4).unwrap();
        let later = start + Duration::from_millis(at);
        scaler.restart(later);
        // saturated again right away: the next growth waits a whole window
        let (again, _, _) = feed(&mut scaler, later, 5_000, 2, &options, |_| 4).unwrap();
        assert_eq!(again, 1_000);
    }
}
