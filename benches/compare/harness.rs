//! What every scenario shares: the counting allocator behind the peak-memory
//! numbers, the table's [`Row`], the session with the bench's functions and
//! data, timing a query, comparing two answers and the medians of samples.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use rpcop::RpcSession;

use super::functions::model_sim_async;

/// Counts live heap bytes and their peak, so a scenario can read the peak
/// memory of one run.
pub(super) struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Peak heap bytes above the live bytes at the start, while `f` runs.
pub(super) async fn peak_of<T>(f: impl Future<Output = T>) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f.await;
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// How rpcop reached its instances: `isolation/transport`, e.g.
    /// `thread/local` (the in-process hand-off), `process/shm`,
    /// `process/flight`, `command/flight`.
    pub path: String,
    pub baseline: String,
    pub baseline_ms: f64,
    pub rpcop_ms: f64,
    /// What `baseline_ms` and `rpcop_ms` count: "ms" but in rows that say
    /// otherwise (instance-seconds).
    pub unit: &'static str,
    pub ratio: f64,
    pub rows_per_s: f64,
    /// Peak memory (baseline, rpcop) in MB: of the process tree where the
    /// scenario says so, otherwise as the scenario names it.
    pub peak_mb: Option<(f64, f64)>,
    /// The engine's peak heap (baseline, rpcop) in MB, where measured
    /// beside `peak_mb`.
    pub heap_mb: Option<(f64, f64)>,
    pub target: String,
    /// `None` for a row that has no target (it explains another).
    pub met: Option<bool>,
    /// rpcop's results equal the baseline's.
    pub correct: bool,
}

impl Row {
    pub(super) fn json(&self) -> String {
        let mut peak = match self.peak_mb {
            Some((b, r)) => format!(", \"baseline_peak_mb\": {b:.1}, \"rpcop_peak_mb\": {r:.1}"),
            None => String::new(),
        };
        if let Some((b, r)) = self.heap_mb {
            peak.push_str(&format!(
                ", \"baseline_heap_mb\": {b:.1}, \"rpcop_heap_mb\": {r:.1}"
            ));
        }
        format!(
            "{{\"scenario\": {:?}, \"path\": {:?}, \"baseline\": {:?}, \"baseline_ms\": {:.3}, \"rpcop_ms\": {:.3}, \"unit\": {:?}, \"ratio\": {:.3}, \"rows_per_s\": {:.0}, \"target\": {:?}, \"met\": {}, \"correct\": {}{peak}}}",
            self.scenario,
            self.path,
            self.baseline,
            self.baseline_ms,
            self.rpcop_ms,
            self.unit,
            self.ratio,
            self.rows_per_s,
            self.target,
            self.met
                .map_or_else(|| "null".to_string(), |m| m.to_string()),
            self.correct
        )
    }
}

pub(super) fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// `rows` short strings `row-i` in `partitions` partitions of `batch` rows.
pub(super) fn strings(rows: usize, batch: usize, partitions: usize) -> Vec<Vec<RecordBatch>> {
    let mut parts = vec![Vec::new(); partitions];
    for (i, start) in (0..rows).step_by(batch).enumerate() {
        let end = (start + batch).min(rows);
        let column: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..end).map(|i| format!("row-{i}")),
        ));
        parts[i % partitions].push(RecordBatch::try_from_iter([("s", column)]).unwrap());
    }
    parts
}

/// A session with the bench's functions, `partitions` partitions and
/// `batch` rows per batch, and `t` = `data`.
pub(super) async fn session(
    data: Vec<Vec<RecordBatch>>,
    partitions: usize,
    batch: usize,
) -> RpcSession {
    let session = RpcSession::builder()
        .with_demo_functions()
        .udf(model_sim_async())
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    let ctx = session.context();
    ctx.sql(&format!(
        "SET datafusion.execution.target_partitions = {partitions}"
    ))
    .await
    .unwrap();
    ctx.sql(&format!("SET datafusion.execution.batch_size = {batch}"))
        .await
        .unwrap();
    if let Some(first) = data.iter().flatten().next() {
        let table = MemTable::try_new(first.schema(), data).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
    }
    session
}

pub(super) async fn set_rewrite(session: &RpcSession, on: bool) {
    session
        .sql(&format!("SET rpcop.rewrite = {on}"))
        .await
        .unwrap();
}

/// Runs `sql` and returns its partitions' results (each in order) and time.
pub(super) async fn timed(session: &RpcSession, sql: &str) -> (Vec<Vec<RecordBatch>>, Duration) {
    let start = Instant::now();
    let out = session
        .context()
        .sql(sql)
        .await
        .unwrap()
        .collect_partitioned()
        .await
        .unwrap();
    (out, start.elapsed())
}

/// The first column of every partition, concatenated per partition.
pub(super) fn columns(partitions: &[Vec<RecordBatch>]) -> Vec<Vec<ArrayRef>> {
    partitions
        .iter()
        .map(|p| p.iter().map(|b| Arc::clone(b.column(0))).collect())
        .collect()
}

/// Each partition's first column, as displayed, in order.
fn values(partitions: &[Vec<RecordBatch>]) -> Vec<Vec<String>> {
    columns(partitions)
        .iter()
        .map(|arrays| {
            arrays
                .iter()
                .flat_map(|a| {
                    let f = datafusion::arrow::util::display::ArrayFormatter::try_new(
                        a.as_ref(),
                        &Default::default(),
                    )
                    .unwrap();
                    (0..a.len())
                        .map(move |i| f.value(i).to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

/// The same first column, partition by partition, in order.
pub(super) fn same(a: &[Vec<RecordBatch>], b: &[Vec<RecordBatch>]) -> bool {
    values(a) == values(b)
}

/// The same first-column values, however partitioned and ordered (for
/// answers of sessions with other partitionings).
pub(super) fn same_rows(a: &[Vec<RecordBatch>], b: &[Vec<RecordBatch>]) -> bool {
    let sorted = |p| {
        let mut all: Vec<String> = values(p).into_iter().flatten().collect();
        all.sort_unstable();
        all
    };
    sorted(a) == sorted(b)
}

pub(super) fn rows_of(partitions: &[Vec<RecordBatch>]) -> usize {
    partitions.iter().flatten().map(RecordBatch::num_rows).sum()
}

/// The shortest a timed sample may be. A baseline query quicker than this
/// runs several times in a row within one sample, and its rpcop side runs as
/// many times, so that a few milliseconds of noise cannot swing the ratio.
pub(super) const MIN_SAMPLE: Duration = Duration::from_millis(200);

/// How many runs of a baseline that took `once` make a sample of at least
/// [`MIN_SAMPLE`].
pub(super) fn runs_for(once: Duration) -> u32 {
    u32::try_from(MIN_SAMPLE.as_nanos().div_ceil(once.as_nanos().max(1)))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Runs `sql` `runs` times in a row; the last answer and the time per run
/// (the answer is checked outside the timed runs: comparing 4M strings
/// takes longer than sending them).
pub(super) async fn timed_runs(
    session: &RpcSession,
    sql: &str,
    runs: u32,
) -> (Vec<Vec<RecordBatch>>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    for _ in 0..runs {
        out = timed(session, sql).await.0;
    }
    (out, start.elapsed() / runs)
}

/// Interleaves `baseline` and `rpcop` `reps` times; medians in ms (per
/// query) and whether every rpcop answer equalled the baseline's. Each
/// sample runs its query as often as the baseline needs to last
/// [`MIN_SAMPLE`] (measured on a warm-up run), the same on both sides.
pub(super) async fn compare_sql(
    session: &RpcSession,
    baseline_sql: &str,
    rpcop_sql: &str,
    reps: usize,
) -> (f64, f64, usize, bool) {
    set_rewrite(session, false).await;
    let runs = runs_for(timed(session, baseline_sql).await.1);
    let (mut b, mut r) = (Vec::new(), Vec::new());
    let mut correct = true;
    let mut rows = 0;
    for _ in 0..reps {
        set_rewrite(session, false).await;
        let (expected, elapsed) = timed_runs(session, baseline_sql, runs).await;
        b.push(elapsed);
        set_rewrite(session, true).await;
        let (actual, elapsed) = timed_runs(session, rpcop_sql, runs).await;
        r.push(elapsed);
        correct &= same(&expected, &actual);
        rows = rows_of(&actual);
    }
    (median(b), median(r), rows, correct)
}

pub(super) fn row(
    scenario: String,
    baseline: &str,
    (baseline_ms, rpcop_ms, rows): (f64, f64, usize),
    target: &str,
    met: bool,
    correct: bool,
) -> Row {
    Row {
        scenario,
        path: "thread/local".to_string(),
        baseline: baseline.to_string(),
        baseline_ms,
        rpcop_ms,
        unit: "ms",
        ratio: rpcop_ms / baseline_ms,
        rows_per_s: rows as f64 / (rpcop_ms / 1e3),
        peak_mb: None,
        heap_mb: None,
        target: target.to_string(),
        met: Some(met),
        correct,
    }
}

impl Row {
    /// The row, as measured through `path` (`isolation/transport`).
    pub(super) fn via(self, path: &str) -> Self {
        Self {
            path: path.to_string(),
            ..self
        }
    }
}

/// A row without a target: it explains another row (`met` is `None`).
pub(super) fn explaining(
    scenario: String,
    baseline: &str,
    numbers: (f64, f64, usize),
    what: &str,
    correct: bool,
) -> Row {
    Row {
        met: None,
        ..row(scenario, baseline, numbers, what, true, correct)
    }
}

/// A row without a target: `baseline` names the floor that `path`'s row
/// cannot go below, measured in the same run.
pub(super) fn floor_row(
    scenario: &str,
    baseline: &str,
    numbers: (f64, f64, usize),
    path: &str,
    correct: bool,
) -> Row {
    explaining(
        scenario.to_string(),
        baseline,
        numbers,
        &format!("none: the floor of the {path} row"),
        correct,
    )
    .via(path)
}

/// Each way of reaching an instance: its `isolation/transport` and the
/// service options (after the first) that choose it.
pub(super) const PATHS: [(&str, &str); 5] = [
    ("thread/local", ""),
    ("thread/flight", ", transport = 'flight'"),
    ("process/shm", ", isolation = 'process'"),
    (
        "process/flight",
        ", isolation = 'process', transport = 'flight'",
    ),
    (
        "process/uds",
        ", isolation = 'process', transport = 'flight', listen = 'unix'",
    ),
];

/// A thread instance handed batches in-process and a process instance
/// through shared memory: the paths of scenarios that measure the function
/// more than the wire.
pub(super) const THREAD_AND_PROCESS: [(&str, &str); 2] = [PATHS[0], PATHS[2]];

/// The paths of [`PATHS`] a scenario runs by: those `RPCOP_BENCH_PATHS`
/// names (comma-separated parts of a path, for profiling), all without it.
pub(super) fn paths() -> impl Iterator<Item = (&'static str, &'static str)> {
    let only = std::env::var("RPCOP_BENCH_PATHS").unwrap_or_default();
    PATHS
        .into_iter()
        .filter(move |(path, _)| only.is_empty() || only.split(',').any(|o| path.contains(o)))
}

pub(super) fn scaled(n: f64, scale: f64, least: usize) -> usize {
    ((n * scale) as usize).max(least)
}
