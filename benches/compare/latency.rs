//! Latency-bound: `model_sim` at 20 ms/batch on 8 instances, one request at
//! a time each, through thread and process instances (`thread/local`,
//! `process/shm`). Baselines: in-process at `target_partitions` = cores, and
//! a DataFusion async UDF given the same concurrency (8 partitions, so 8
//! batches in flight). Targets: within 5% of ideal, and no slower than the
//! async UDF (ratio ≤ 1.0).
//!
//! "Ideal" is the arithmetic: batches × latency / instances. A floor row
//! measures what the function itself costs at that concurrency, with no
//! engine and no service: the same `model_sim` calls on as many plain
//! threads as instances, each calling it on its share of the batches one
//! after another. Its margin over the arithmetic is the operating system's
//! (a 20 ms sleep overshoots) and the function's own work after each wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use rpcop::RpcSession;

use super::harness::{
    Row, THREAD_AND_PROCESS, cores, floor_row, median, row, same, same_rows, scaled, session,
    set_rewrite, strings, timed,
};

const LATENCY_MS: u64 = 20;
const INSTANCES: usize = 8;
const BATCH: usize = 1024;

/// Latency-bound, by each path: the rpcop row against in-process and the
/// row against the async UDF.
pub(super) async fn latency_bound(scale: f64, reps: usize) -> Vec<Row> {
    let batches = scaled(64.0, scale, 8);
    let rows = batches * BATCH;
    let n = cores();
    // the async UDF's own session: as many partitions as rpcop has instances
    let data = strings(rows, BATCH, INSTANCES);
    let concurrent = session(data.clone(), INSTANCES, BATCH).await;
    let session = session(strings(rows, BATCH, n), n, BATCH).await;
    let ideal = (batches as f64 * LATENCY_MS as f64) / INSTANCES as f64;
    let scenario = format!(
        "latency-bound: {LATENCY_MS} ms/batch, {batches} batches, {INSTANCES} instances (ideal {ideal:.0} ms)"
    );
    let target = "within 5% of ideal and ratio <= 1.0";
    let mut out = Vec::new();
    for (path, with) in THREAD_AND_PROCESS {
        session
            .sql(&format!(
                "CREATE RPC SERVICE sim FOR FUNCTION model_sim WITH (parallelism = {INSTANCES}, threads = 1, batch_size = {BATCH}{with})"
            ))
            .await
            .unwrap();
        let ([p, a, r, f], correct) = measure(&session, &concurrent, &data, reps).await;
        session.sql("DROP RPC SERVICE sim").await.unwrap();
        let near_ideal = r <= ideal * 1.05;
        out.push(floor_row(
            &scenario,
            &format!("the function alone on {INSTANCES} threads, no engine"),
            (f, r, rows),
            path,
            correct,
        ));
        out.push(
            row(
                scenario.clone(),
                &format!("in-process, target_partitions {n}"),
                (p, r, rows),
                target,
                near_ideal && r / p <= 1.0,
                correct,
            )
            .via(path),
        );
        out.push(
            row(
                scenario.clone(),
                &format!("async UDF, target_partitions {INSTANCES}"),
                (a, r, rows),
                target,
                near_ideal && r / a <= 1.0,
                correct,
            )
            .via(path),
        );
    }
    out
}

/// `reps` interleaved runs of in-process (`session`), the async UDF
/// (`concurrent`), rpcop and the function alone on threads (over `data`, a
/// partition per thread): medians in ms and whether all answers agree.
async fn measure(
    session: &RpcSession,
    concurrent: &RpcSession,
    data: &[Vec<RecordBatch>],
    reps: usize,
) -> ([f64; 4], bool) {
    let udf = session.context().udf("model_sim").unwrap();
    let sync_sql = format!("SELECT model_sim(s, {LATENCY_MS}, 0) FROM t");
    let async_sql = format!("SELECT model_sim_async(s, {LATENCY_MS}, 0) FROM t");
    let (mut in_process, mut async_udf, mut through) = (Vec::new(), Vec::new(), Vec::new());
    let mut alone = Vec::new();
    let mut correct = true;
    set_rewrite(concurrent, false).await;
    for _ in 0..reps {
        set_rewrite(session, false).await;
        let (expected, elapsed) = timed(session, &sync_sql).await;
        in_process.push(elapsed);
        let (by_async, elapsed) = timed(concurrent, &async_sql).await;
        async_udf.push(elapsed);
        set_rewrite(session, true).await;
        let (actual, elapsed) = timed(session, &sync_sql).await;
        through.push(elapsed);
        correct &= same(&expected, &actual) && same_rows(&by_async, &actual);
        alone.push(on_threads(&udf, data));
    }
    let medians = [
        median(in_process),
        median(async_udf),
        median(through),
        median(alone),
    ];
    (medians, correct)
}

/// The wall time of `model_sim` called on each partition of `data` by a
/// thread of its own, one batch after another: the floor of the scenario.
fn on_threads(udf: &Arc<ScalarUDF>, data: &[Vec<RecordBatch>]) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for batches in data {
            scope.spawn(move || {
                for batch in batches {
                    let answer = udf.invoke_with_args(ScalarFunctionArgs {
                        args: vec![
                            ColumnarValue::Array(Arc::clone(batch.column(0))),
                            ColumnarValue::Scalar(ScalarValue::Int64(Some(LATENCY_MS as i64))),
                            ColumnarValue::Scalar(ScalarValue::Int64(Some(0))),
                        ],
                        arg_fields: vec![
                            Arc::new(Field::new("s", DataType::Utf8, true)),
                            Arc::new(Field::new("latency", DataType::Int64, true)),
                            Arc::new(Field::new("cost", DataType::Int64, true)),
                        ],
                        number_rows: batch.num_rows(),
                        return_field: Arc::new(Field::new("model_sim", DataType::Utf8, true)),
                        config_options: Arc::new(ConfigOptions::default()),
                    });
                    assert_eq!(answer.unwrap().to_array(1).unwrap().len(), batch.num_rows());
                }
            });
        }
    });
    started.elapsed()
}
