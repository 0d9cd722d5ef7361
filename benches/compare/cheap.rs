//! Cheap function: `upper(s)` over 4M rows through 1 instance of `cores`
//! threads (and, without a target, the same over Flight and from a process
//! instance). Baseline: in-process, `target_partitions` = cores. Target:
//! ratio ≤ 1.5.

use super::harness::{Row, compare_sql, cores, explaining, row, scaled, session, strings};

/// The cheap function through one instance: in this process (the target),
/// and, for what the wire costs, the same over Flight on loopback TCP and
/// from a process instance (`rpcop serve`, loopback TCP).
pub(super) async fn cheap(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(4_000_000.0, scale, 8192);
    let n = cores();
    let session = session(strings(rows, 8192, n), n, 8192).await;
    let sql = "SELECT upper(s) FROM t";
    let scenario = |how: &str| {
        format!("cheap function: upper(s), {rows} rows, 1 instance of {n} threads{how}")
    };
    let mut out = Vec::new();
    for (how, with) in [
        ("", ""),
        (", over Flight (loopback TCP)", ", transport = 'flight'"),
        (
            ", process instance (loopback TCP)",
            ", isolation = 'process'",
        ),
    ] {
        session
            .sql(&format!(
                "CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 1, threads = {n}{with})"
            ))
            .await
            .unwrap();
        let (b, r, got, correct) = compare_sql(&session, sql, sql, reps).await;
        let correct = correct && got == rows;
        out.push(if how.is_empty() {
            row(
                scenario(how),
                "in-process",
                (b, r, got),
                "ratio <= 1.5",
                r / b <= 1.5,
                correct,
            )
        } else {
            explaining(
                scenario(how),
                "in-process",
                (b, r, got),
                "none: what the wire costs",
                correct,
            )
        });
        session.sql("DROP RPC SERVICE text").await.unwrap();
    }
    out
}
