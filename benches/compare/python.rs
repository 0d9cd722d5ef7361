//! Python functions: a trivial Python function (`x + 1`, row-wise and
//! batched) served by rpcop's kit (`python/`: command instances speaking
//! rpcop's protocol) against the very same Python code on RisingWave's
//! arrow-udf server (command instances, `protocol = 'arrow-udf'`). Both run
//! as `parallelism` processes started and supervised by rpcop, both are
//! reached over Flight on loopback, both get the same rows in the same
//! requests. Target: the kit at least as fast (ratio ≤ 1.0).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::datasource::MemTable;
use rpcop::RpcSession;

use super::common::{python, python_tests};
use super::harness::{Row, median, row, same, scaled, timed};

/// A session whose `t(x)` holds `rows` integers in `partitions` partitions,
/// and whose service `py` hosts `function` on `parallelism` instances of
/// `server` speaking `protocol`.
async fn session(
    rows: usize,
    partitions: usize,
    function: &str,
    server: &str,
    protocol: &str,
    parallelism: usize,
) -> RpcSession {
    let session = RpcSession::builder().build();
    let batch = 8192;
    let mut parts = vec![Vec::new(); partitions];
    for (i, start) in (0..rows).step_by(batch).enumerate() {
        let end = (start + batch).min(rows);
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(start as i64..end as i64));
        parts[i % partitions].push(RecordBatch::try_from_iter([("x", column)]).unwrap());
    }
    let schema = parts[0][0].schema();
    let ctx = session.context();
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    ctx.sql(&format!(
        "SET datafusion.execution.target_partitions = {partitions}"
    ))
    .await
    .unwrap();
    let command = format!(
        "cd {} && exec {} {server}",
        python_tests().display(),
        python().display()
    );
    session
        .sql(&format!(
            "CREATE RPC SERVICE py FOR FUNCTION {function} WITH (command = '{command}', \
             protocol = '{protocol}', parallelism = {parallelism})"
        ))
        .await
        .unwrap();
    session
}

/// One row per function shape: the kit against arrow-udf.
pub(super) async fn python_servers(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(1_000_000.0, scale, 1000);
    let parallelism = 2;
    let mut out = Vec::new();
    for (function, shape) in [("add_one", "row-wise"), ("add_one_batch", "batched")] {
        let kit = session(
            rows,
            parallelism,
            function,
            "kit_server.py",
            "rpcop",
            parallelism,
        )
        .await;
        let peer = session(
            rows,
            parallelism,
            function,
            "arrow_udf_server.py",
            "arrow-udf",
            parallelism,
        )
        .await;
        let sql = format!("SELECT {function}(x) FROM t");
        let (mut baseline, mut through) = (Vec::new(), Vec::new());
        let mut correct = true;
        for _ in 0..reps {
            let (expected, elapsed) = timed(&peer, &sql).await;
            baseline.push(elapsed);
            let (actual, elapsed) = timed(&kit, &sql).await;
            through.push(elapsed);
            correct &= same(&expected, &actual);
        }
        let (b, r) = (median(baseline), median(through));
        out.push(
            row(
                format!(
                    "python: x + 1 {shape}, {rows} rows, {parallelism} processes, Flight on loopback"
                ),
                "arrow-udf server (command, protocol arrow-udf)",
                (b, r, rows),
                "kit ratio <= 1.0",
                r <= b,
                correct,
            )
            .via("command/flight"),
        );
        kit.sql("DROP RPC SERVICE py").await.unwrap();
        peer.sql("DROP RPC SERVICE py").await.unwrap();
    }
    out
}
