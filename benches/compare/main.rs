//! rpcop against its baselines, side by side in one process run.
//!
//! Every scenario runs its baseline and rpcop interleaved, several times, and
//! reports medians (a baseline quicker than 200 ms runs several times in a
//! row within each sample, and rpcop as many times: `harness::MIN_SAMPLE`);
//! the table goes to stdout (markdown) and to
//! `target/rpcop-bench/compare.json`, and a chart of it to
//! `target/rpcop-bench/compare.svg` (`chart.rs`). `RPCOP_BENCH_SCALE` scales the sizes
//! (1.0 = the sizes below, 0.01 = a smoke run in seconds).
//!
//! | scenario | rpcop | baseline | target |
//! | --- | --- | --- | --- |
//! | cheap function | `upper(s)`, 4M rows, 1 instance of `cores` threads: `thread/local`, `thread/flight` (no target), `process/shm`, `process/flight`, `process/uds` (no target); and the floors of `process/shm` (in-process + the two copies it needs) and `process/flight` (in-process + the same bytes through loopback sockets), no target | in-process, `target_partitions` = cores | ≤ 1.5, -, ≤ 2.0, ≤ 3.0 |
//! | pass-through floor | an identity function, 4M rows, 1 instance of `cores` threads, by each of the five paths | the same batches through Arrow IPC in memory, one stream per partition on as many threads (and, no target, through loopback sockets) | ≤ 1.3 |
//! | CPU-heavy | `embed(body)` at 20 µs/row, `parallelism` = cores, `thread/local` and `process/shm` | in-process, `target_partitions` = cores | ≤ 1.1 |
//! | latency-bound | `model_sim` at 20 ms/batch, 8 instances, one request at a time each, `thread/local` and `process/shm` | in-process (`target_partitions` = cores), and an async UDF at 8 partitions (as many in flight); and, no target, its floor: the same `model_sim` calls on 8 plain threads, no engine | within 5% of ideal, ≤ 1.0 |
//! | bursty (autoscaling) | `model_sim` at 20 ms/request: idle 2 s, 8 callers for 5 s, idle 4 s, on a service autoscaled from 1 to 8 (`scale_up_after` 250 ms, `scale_down_after` 1 s), `thread/local` and `process/shm` | the same workload on a fixed pool of 8: instance-seconds used, and the p99 latency of the burst's requests | none |
//! | bounded memory | 20M rows through a service 10× slower than its input, `thread/local` and `process/shm`: the peak resident memory of the whole process tree (`/proc`) and the engine's peak heap | the same at 2M rows | both peaks within 10% |
//! | shared service | 4 queries at once on one service | one after another | ≤ 1.0 |
//! | Python functions | `x + 1` in Python, row-wise and batched, 1M rows, on rpcop's kit (2 command instances) | the same Python code on RisingWave's arrow-udf server (2 command instances) | ≤ 1.0 |
//! | a real model | `embed_text` (all-MiniLM-L6-v2, candle) of 2,089 help-center texts, 2 thread and 2 process instances of 1 thread (and, without a target, the kit's numpy implementation) | candle in-process, 2 partitions sharing 2 threads, interleaved with each service's runs | ≤ 1.1 |
//!
//! Run: `cargo bench --bench compare` (`RPCOP_BENCH_ONLY=cheap,latency` for
//! some scenarios: cheap, pass-through, cpu, latency, bursty, memory, shared, python, model). `tests/compare_smoke.rs` runs every
//! scenario at a tiny scale in the test suite and checks only the results.
//!
//! One file per scenario beside this one (`cheap.rs`, `pass_through.rs` with
//! `socket.rs`, `cpu_heavy.rs`, `latency.rs`, `bursty.rs`, `memory.rs`, `shared.rs`,
//! `python.rs`, whose servers are `tests/python/`, `model.rs`); the
//! shared helpers in `harness.rs`, the bench's own functions in
//! `functions.rs`. Each module names its file: this file is also included as
//! a module by `tests/compare_smoke.rs`.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

#[path = "bursty.rs"]
mod bursty;
#[path = "chart.rs"]
mod chart;
#[path = "cheap.rs"]
mod cheap;
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "cpu_heavy.rs"]
mod cpu_heavy;
#[path = "functions.rs"]
mod functions;
#[path = "harness.rs"]
mod harness;
#[path = "latency.rs"]
mod latency;
#[path = "memory.rs"]
mod memory;
#[path = "model.rs"]
mod model;
#[path = "pass_through.rs"]
mod pass_through;
#[path = "python.rs"]
mod python;
#[path = "shared.rs"]
mod shared;
#[path = "socket.rs"]
mod socket;
#[path = "tree.rs"]
mod tree;

use harness::Row;

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

/// Runs every scenario at `scale` with `reps` repetitions.
pub async fn run(scale: f64, reps: usize) -> Vec<Row> {
    run_only(scale, reps, "").await
}

/// Runs the scenarios whose name contains `only` (all for "").
pub async fn run_only(scale: f64, reps: usize, only: &str) -> Vec<Row> {
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| name.contains(o));
    let mut rows = Vec::new();
    if wanted("cheap") {
        rows.extend(cheap::cheap(scale, reps).await);
    }
    if wanted("pass-through") {
        rows.extend(pass_through::pass_through(scale, reps).await);
    }
    if wanted("cpu") {
        rows.extend(cpu_heavy::cpu_heavy(scale, reps).await);
    }
    if wanted("latency") {
        rows.extend(latency::latency_bound(scale, reps).await);
    }
    if wanted("bursty") {
        rows.extend(bursty::bursty(scale).await);
    }
    if wanted("memory") {
        rows.extend(memory::bounded_memory(scale, reps.min(3)).await);
    }
    if wanted("shared") {
        rows.push(shared::shared(scale, reps).await);
    }
    if wanted("python") {
        rows.extend(python::python_servers(scale, reps).await);
    }
    if wanted("model") {
        rows.extend(model::minilm(scale, reps).await);
    }
    rows
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | isolation/transport | baseline | baseline median | rpcop median | ratio | rpcop rows/s | peak memory (baseline / rpcop) | target | met |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let unit = r.unit;
        let mut peak = r.peak_mb.map_or_else(
            || "-".to_string(),
            |(b, p)| format!("{b:.1} MB / {p:.1} MB"),
        );
        if let Some((b, p)) = r.heap_mb {
            peak.push_str(&format!("; heap {b:.1} MB / {p:.1} MB"));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} {unit} | {:.1} {unit} | {:.2} | {:.0} | {peak} | {} | {} |\n",
            r.scenario,
            r.path,
            r.baseline,
            r.baseline_ms,
            r.rpcop_ms,
            r.ratio,
            r.rows_per_s,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        ));
    }
    out
}

fn main() {
    // as the rpcop binary does
    rpcop::malloc::tune();
    // SAFETY: no other thread of this process runs yet.
    unsafe { rpcop::model::use_encoder_threads_only() };
    // the per-row CPU cost of embed in the CPU-heavy scenario, for both sides
    // SAFETY: set before any thread of this process reads the environment.
    unsafe { std::env::set_var("RPCOP_DEMO_ROW_COST_US", "20") };
    let scale: f64 = std::env::var("RPCOP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let reps = if scale < 0.1 { 3 } else { 5 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // RPCOP_BENCH_ONLY=cheap,pass-through runs some scenarios (for profiling)
    let only = std::env::var("RPCOP_BENCH_ONLY").unwrap_or_default();
    let rows = runtime.block_on(run_only(scale, reps, &only));
    print!("{}", table(&rows));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rpcop-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let json: Vec<String> = rows.iter().map(Row::json).collect();
    let path = dir.join("compare.json");
    std::fs::write(&path, format!("[\n  {}\n]\n", json.join(",\n  "))).unwrap();
    println!("\nwritten to {}", path.display());
    let picture = dir.join("compare.svg");
    match chart::chart(&rows, &picture) {
        Ok(()) => println!("chart: {}", picture.display()),
        Err(e) => eprintln!("no chart: {e}"),
    }
    if rows.iter().any(|r| !r.correct) {
        eprintln!("some scenario's results differ from its baseline's");
        std::process::exit(1);
    }
}
