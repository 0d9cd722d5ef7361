//! Cheap function: `upper(s)` over 4M rows through 1 instance of `cores`
//! threads, by each way of reaching it: a thread instance handed batches
//! in-process and over Flight, a process instance through shared memory and
//! over Flight (loopback TCP, the remote path). Baseline: in-process,
//! `target_partitions` = cores. `RPCOP_BENCH_PATHS=process/shm` runs some
//! of them (for profiling).

use super::harness::{Row, compare_sql, cores, explaining, row, scaled, session, strings};

/// Each way of reaching the instance: `isolation/transport`, the options
/// that choose it, and the ratio to in-process it must keep, if any.
const PATHS: [(&str, &str, Option<f64>); 4] = [
    ("thread/local", "", Some(1.5)),
    ("thread/flight", ", transport = 'flight'", None),
    ("process/shm", ", isolation = 'process'", Some(2.0)),
    (
        "process/flight",
        ", isolation = 'process', transport = 'flight'",
        Some(3.0),
    ),
];

/// The cheap function through one instance, by each path.
pub(super) async fn cheap(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(4_000_000.0, scale, 8192);
    let n = cores();
    let session = session(strings(rows, 8192, n), n, 8192).await;
    let sql = "SELECT upper(s) FROM t";
    let scenario = format!("cheap function: upper(s), {rows} rows, 1 instance of {n} threads");
    let only = std::env::var("RPCOP_BENCH_PATHS").unwrap_or_default();
    let mut out = Vec::new();
    for (path, with, target) in PATHS {
        if !only.is_empty() && !only.split(',').any(|o| path.contains(o)) {
            continue;
        }
        session
            .sql(&format!(
                "CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 1, threads = {n}{with})"
            ))
            .await
            .unwrap();
        let (b, r, got, correct) = compare_sql(&session, sql, sql, reps).await;
        let correct = correct && got == rows;
        let numbers = (b, r, got);
        out.push(
            match target {
                Some(t) => row(
                    scenario.clone(),
                    "in-process",
                    numbers,
                    &format!("ratio <= {t}"),
                    r / b <= t,
                    correct,
                ),
                None => explaining(
                    scenario.clone(),
                    "in-process",
                    numbers,
                    "none: what the wire costs",
                    correct,
                ),
            }
            .via(path),
        );
        session.sql("DROP RPC SERVICE text").await.unwrap();
    }
    out
}
