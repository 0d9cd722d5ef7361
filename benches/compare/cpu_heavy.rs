//! CPU-heavy: `embed(body)` at 20 µs/row, `parallelism` = cores, through
//! thread and process instances (`thread/local`, `process/shm`). Baseline:
//! in-process, `target_partitions` = cores. Target: ratio ≤ 1.1.

use super::harness::{Row, THREAD_AND_PROCESS, compare_sql, cores, row, scaled, session, strings};

pub(super) async fn cpu_heavy(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(50_000.0, scale, 256);
    let n = cores();
    let session = session(strings(rows, 1024, n), n, 1024).await;
    let sql = "SELECT embed(s) FROM t";
    let mut out = Vec::new();
    for (path, with) in THREAD_AND_PROCESS {
        session
            .sql(&format!(
                "CREATE RPC SERVICE models FOR FUNCTION embed WITH (parallelism = {n}, batch_size = 1024{with})"
            ))
            .await
            .unwrap();
        let (b, r, got, correct) = compare_sql(&session, sql, sql, reps).await;
        out.push(
            row(
                format!("CPU-heavy: embed(s) at 20 us/row, {rows} rows, parallelism {n}"),
                &format!("in-process, target_partitions {n}"),
                (b, r, got),
                "ratio <= 1.1",
                r / b <= 1.1,
                correct && got == rows,
            )
            .via(path),
        );
        session.sql("DROP RPC SERVICE models").await.unwrap();
    }
    out
}
