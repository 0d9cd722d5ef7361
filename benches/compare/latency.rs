//! Latency-bound: `model_sim` at 20 ms/batch on 8 instances, one request at
//! a time each. Baselines: in-process and a DataFusion async UDF, both at
//! `target_partitions` = cores. Target: within 15% of ideal, and ≥ 3× both
//! baselines (ratio ≤ 0.33).

use super::harness::{Row, cores, median, row, same, scaled, session, set_rewrite, strings, timed};

/// Latency-bound: returns the rpcop row against in-process and the row
/// against the async UDF.
pub(super) async fn latency_bound(scale: f64, reps: usize) -> Vec<Row> {
    const LATENCY_MS: u64 = 20;
    const INSTANCES: usize = 8;
    let batch = 1024;
    let batches = scaled(64.0, scale, 8);
    let rows = batches * batch;
    let n = cores();
    let session = session(strings(rows, batch, n), n, batch).await;
    session
        .sql(&format!(
            "CREATE RPC SERVICE sim FOR FUNCTION model_sim WITH (parallelism = {INSTANCES}, threads = 1, batch_size = {batch})"
        ))
        .await
        .unwrap();
    let sync_sql = format!("SELECT model_sim(s, {LATENCY_MS}, 0) FROM t");
    let async_sql = format!("SELECT model_sim_async(s, {LATENCY_MS}, 0) FROM t");
    let (mut in_process, mut async_udf, mut through) = (Vec::new(), Vec::new(), Vec::new());
    let mut correct = true;
    for _ in 0..reps {
        set_rewrite(&session, false).await;
        let (expected, elapsed) = timed(&session, &sync_sql).await;
        in_process.push(elapsed);
        let (by_async, elapsed) = timed(&session, &async_sql).await;
        async_udf.push(elapsed);
        set_rewrite(&session, true).await;
        let (actual, elapsed) = timed(&session, &sync_sql).await;
        through.push(elapsed);
        correct &= same(&expected, &actual) && same(&by_async, &actual);
    }
    let (p, a, r) = (median(in_process), median(async_udf), median(through));
    let ideal = (batches as f64 * LATENCY_MS as f64) / INSTANCES as f64;
    let near_ideal = r <= ideal * 1.15;
    let scenario = format!(
        "latency-bound: {LATENCY_MS} ms/batch, {batches} batches, {INSTANCES} instances (ideal {ideal:.0} ms)"
    );
    vec![
        row(
            scenario.clone(),
            &format!("in-process, target_partitions {n}"),
            (p, r, rows),
            "within 15% of ideal and ratio <= 0.33",
            near_ideal && r / p <= 1.0 / 3.0,
            correct,
        ),
        row(
            scenario,
            &format!("async UDF, target_partitions {n}"),
            (a, r, rows),
            "within 15% of ideal and ratio <= 0.33",
            near_ideal && r / a <= 1.0 / 3.0,
            correct,
        ),
    ]
}
