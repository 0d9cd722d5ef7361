//! Bursty: idle, a burst, idle again, on `model_sim` at 20 ms per request,
//! through an autoscaled service (`min_parallelism = 1`, `max_parallelism =
//! 8`) and a fixed pool of 8, one after the other in the same run, through
//! thread instances (`thread/local`) and process instances (`process/shm`,
//! whose growth waits for processes to start). The burst is 8 callers, each
//! keeping one request of 256 rows outstanding. Rows: the instance-seconds
//! each used over the whole workload (instances alive, sampled every 10 ms,
//! whatever their state), and the 99th-percentile latency of the burst's
//! requests. No target: the rows say what autoscaling saves and what its
//! ramp costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use rpcop::{MemberState, ServiceOptions, ServiceRegion};

use super::harness::{Row, explaining};

const CALLERS: usize = 8;
const LATENCY_MS: i64 = 20;
const ROWS: usize = 256;

/// The workload's phases at `scale` (at least a twentieth of full length).
struct Phases {
    idle: Duration,
    burst: Duration,
    after: Duration,
    up: Duration,
    down: Duration,
}

impl Phases {
    fn at(scale: f64) -> Self {
        let f = scale.clamp(0.05, 1.0);
        let s = |secs: f64| Duration::from_secs_f64(secs * f);
        Self {
            idle: s(2.0),
            burst: s(5.0),
            after: s(4.0),
            up: s(0.25),
            down: s(1.0),
        }
    }
}

/// What one service used and answered over the workload.
struct Used {
    instance_seconds: f64,
    p99_ms: f64,
    requests: usize,
    correct: bool,
}

/// Two rows per isolation: instance-seconds and p99 latency, autoscaled
/// vs fixed.
pub(super) async fn bursty(scale: f64) -> Vec<Row> {
    let mut out = Vec::new();
    for (path, isolation) in [("thread/local", "thread"), ("process/shm", "process")] {
        out.extend(bursty_via(scale, path, isolation).await);
    }
    out
}

async fn bursty_via(scale: f64, path: &str, isolation: &str) -> Vec<Row> {
    let phases = Phases::at(scale);
    let fixed = run(&phases, &[("isolation", isolation), ("parallelism", "8")]).await;
    let (up, down) = (ms(phases.up), ms(phases.down));
    let scaled = run(
        &phases,
        &[
            ("isolation", isolation),
            ("min_parallelism", "1"),
            ("max_parallelism", "8"),
            ("scale_up_after", &up),
            ("scale_down_after", &down),
        ],
    )
    .await;
    let scenario = format!(
        "bursty: idle {:.1}s, {CALLERS} callers for {:.1}s, idle {:.1}s; model_sim {LATENCY_MS} ms/request; \
         autoscaled 1..8 (up after {up}, down after {down})",
        phases.idle.as_secs_f64(),
        phases.burst.as_secs_f64(),
        phases.after.as_secs_f64(),
    );
    let rows_per_s = (scaled.requests * ROWS) as f64 / phases.burst.as_secs_f64();
    let correct = fixed.correct && scaled.correct;
    let seconds = explaining(
        format!("{scenario}: instance-seconds used"),
        "a fixed pool of 8",
        (fixed.instance_seconds, scaled.instance_seconds, 0),
        "none: what autoscaling saves",
        correct,
    );
    let latency = explaining(
        format!("{scenario}: p99 latency of the burst's requests"),
        "a fixed pool of 8",
        (fixed.p99_ms, scaled.p99_ms, 0),
        "none: what the ramp costs",
        correct,
    );
    vec![
        Row {
            unit: "instance-s",
            rows_per_s,
            ..seconds.via(path)
        },
        Row {
            rows_per_s,
            ..latency.via(path)
        },
    ]
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Runs the workload on a region of `model_sim` with `pairs` as options.
async fn run(phases: &Phases, pairs: &[(&str, &str)]) -> Used {
    let mut options = ServiceOptions::default();
    for (key, value) in pairs {
        options.set(key, value).unwrap();
    }
    let library = rpcop::demo::library();
    let region = ServiceRegion::builder(
        "bursty",
        library.select(&["model_sim".to_string()]).unwrap(),
    )
    .options(options)
    .serve_program(env!("CARGO_BIN_EXE_rpcop"))
    .start()
    .await
    .unwrap();
    let region = Arc::new(region);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(instance_seconds(Arc::clone(&region), Arc::clone(&stop)));
    tokio::time::sleep(phases.idle).await;
    let client = region.client().unwrap();
    let until = Instant::now() + phases.burst;
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let (batch, expected) = request(caller);
                let mut latencies = Vec::new();
                let mut correct = true;
                while Instant::now() < until {
                    let sent = Instant::now();
                    let answer = client.call("model_sim", batch.clone()).await.unwrap();
                    latencies.push(sent.elapsed());
                    correct &= answer.as_string::<i32>() == expected.as_string::<i32>();
                }
                (latencies, correct)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut correct = true;
    for caller in callers {
        let (times, ok) = caller.await.unwrap();
        latencies.extend(times);
        correct &= ok;
    }
    let left = (phases.idle + phases.burst + phases.after).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    let instance_seconds = sampler.await.unwrap();
    region.shutdown().await;
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default();
    Used {
        instance_seconds,
        p99_ms: p99.as_secs_f64() * 1e3,
        requests: latencies.len(),
        correct,
    }
}

/// The arguments of caller `caller`'s request, and `model_sim`'s answer
/// computed here.
fn request(caller: usize) -> (RecordBatch, ArrayRef) {
    let texts: Vec<String> = (0..ROWS).map(|i| format!("caller-{caller}-{i}")).collect();
    let expected: ArrayRef = Arc::new(StringArray::from_iter_values(
        texts
            .iter()
            .map(|t| format!("{:016x}", rpcop::demo::fnv1a(t.as_bytes()))),
    ));
    let batch = RecordBatch::try_from_iter([
        (
            "s",
            Arc::new(StringArray::from_iter_values(texts)) as ArrayRef,
        ),
        (
            "latency",
            Arc::new(Int64Array::from(vec![LATENCY_MS; ROWS])) as ArrayRef,
        ),
        (
            "cost",
            Arc::new(Int64Array::from(vec![0; ROWS])) as ArrayRef,
        ),
    ])
    .unwrap();
    assert_eq!(expected.len(), ROWS);
    (batch, expected)
}

/// Instance-seconds of `region` until `stop` is set: the instances alive
/// (any state but gone or waiting to restart) times time, every 10 ms.
async fn instance_seconds(region: Arc<ServiceRegion>, stop: Arc<AtomicBool>) -> f64 {
    let (mut total, mut last) = (0.0, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let alive = region
            .members()
            .iter()
            .filter(|m| !matches!(m.state, MemberState::Gone | MemberState::Restarting))
            .count();
        total += alive as f64 * (now - last).as_secs_f64();
        last = now;
    }
    total
}
