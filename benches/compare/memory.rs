//! Bounded memory: 20M rows through a service 10× slower than its input,
//! through a thread instance and a process instance (`thread/local`,
//! `process/shm`), measured as the peak resident memory of the whole process
//! tree (the engine and its instance processes, from `/proc`) and as the
//! engine's peak heap. Baseline: the same at 2M rows. Target: both peaks
//! within 10% (ratios ≤ 1.1).

use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use rpcop::RpcSession;

use super::harness::{Row, THREAD_AND_PROCESS, median, peak_of, scaled, session, timed};
use super::tree::tree_peak_of;

pub(super) async fn bounded_memory(scale: f64, reps: usize) -> Vec<Row> {
    let mut out = Vec::new();
    for (path, with) in THREAD_AND_PROCESS {
        out.push(bounded_memory_via(scale, reps, path, with).await);
    }
    out
}

/// The scenario through one path, chosen by the service options `with`.
async fn bounded_memory_via(scale: f64, reps: usize, path: &str, with: &str) -> Row {
    let (small, large) = (
        scaled(2_000_000.0, scale, 20_000),
        scaled(20_000_000.0, scale, 200_000),
    );
    let session = session(Vec::new(), 1, 8192).await;
    // 1 ms per 8192-row request on one instance: far slower than the input
    session
        .sql(&format!(
            "CREATE RPC SERVICE slow FOR FUNCTION model_sim WITH (parallelism = 1, max_in_flight = 4{with})"
        ))
        .await
        .unwrap();
    // the peak is the most a run ever needs: the largest over repetitions,
    // interleaved. A peak is a maximum, so it grows with how many moments it
    // is taken over (a large run sends 10x the requests, 10x the chances to
    // catch one more of them out at once); the small size runs 10x as often,
    // so both peaks are taken over as many requests. Memory that grew with
    // the row count would still show: one large run would stand above them.
    let small_runs = (large / small).max(1);
    let (mut small_side, mut large_side) = (Runs::default(), Runs::default());
    for _ in 0..reps {
        for _ in 0..small_runs {
            small_side.run(&session, small).await;
        }
        large_side.run(&session, large).await;
    }
    session.sql("DROP RPC SERVICE slow").await.unwrap();
    let (small_time, large_time) = (median(small_side.times), median(large_side.times));
    let correct = count(&small_side.out) == small as i64 && count(&large_side.out) == large as i64;
    let heap = (small_side.heap as f64 / 1e6, large_side.heap as f64 / 1e6);
    let tree = (small_side.tree, large_side.tree);
    let ratio = tree.1 / tree.0;
    Row {
        scenario: format!(
            "bounded memory: {large} rows through a slow service (peak of the process tree, and of the engine's heap, largest of {reps} runs)"
        ),
        path: path.to_string(),
        baseline: format!(
            "the same at {small} rows (largest of {} runs)",
            reps * small_runs
        ),
        baseline_ms: small_time,
        rpcop_ms: large_time,
        unit: "ms",
        ratio,
        rows_per_s: large as f64 / (large_time / 1e3),
        peak_mb: Some(tree),
        heap_mb: Some(heap),
        target: "peak ratios <= 1.1 (tree and heap)".to_string(),
        met: Some(ratio <= 1.1 && heap.1 / heap.0 <= 1.1),
        correct,
    }
}

/// The runs of one size so far: the last answer, every time taken and the
/// largest peaks (the engine's heap in bytes, the process tree's resident
/// memory in MB).
#[derive(Default)]
struct Runs {
    out: Vec<Vec<RecordBatch>>,
    times: Vec<Duration>,
    heap: usize,
    tree: f64,
}

impl Runs {
    /// Runs the count over `rows` rows once and records it.
    async fn run(&mut self, session: &RpcSession, rows: usize) {
        let ((out, time, heap), tree) = tree_peak_of(peak_run(session, rows)).await;
        self.out = out;
        self.times.push(time);
        self.heap = self.heap.max(heap);
        self.tree = self.tree.max(tree);
    }
}

/// One count over `rows` rows through the slow service: its answer, the time
/// taken and the peak heap bytes.
async fn peak_run(session: &RpcSession, rows: usize) -> (Vec<Vec<RecordBatch>>, Duration, usize) {
    let sql = format!(
        "SELECT count(*), count(DISTINCT substr(h, 1, 2)) FROM \
         (SELECT model_sim('row ' || value, 1, 0) AS h FROM generate_series(1, {rows}))"
    );
    let start = Instant::now();
    let ((out, _), peak) = peak_of(timed(session, &sql)).await;
    (out, start.elapsed(), peak)
}

/// The rows counted: the sum of the first column's first value per batch.
fn count(p: &[Vec<RecordBatch>]) -> i64 {
    p.iter()
        .flatten()
        .map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .sum()
}
