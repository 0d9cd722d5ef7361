//! The pure overhead of the service path: `upper()` over 1,000,000 short
//! strings through one instance, against DataFusion running `upper()`
//! in-process, interleaved in one process run. Prints a markdown table with
//! the ratio. `RPCOP_BENCH_SCALE` scales the row count (0.01 = a smoke run).
//!
//! Run: `cargo bench --bench upper_overhead`

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use rpcop::{FunctionLibrary, ServiceRegion};

const BATCH: usize = 8192;
const REPETITIONS: usize = 7;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let scale: f64 = std::env::var("RPCOP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rows = ((1_000_000.0 * scale) as usize).max(BATCH);
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(BATCH)
        .map(|start| {
            let end = (start + BATCH).min(rows);
            let column: ArrayRef = Arc::new(StringArray::from_iter_values(
                (start..end).map(|i| format!("row-{i}")),
            ));
            RecordBatch::try_from_iter([("s", column)]).expect("batch")
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let table = MemTable::try_new(batches[0].schema(), vec![batches.clone()]).expect("table");
        ctx.register_table("t", Arc::new(table)).expect("register");
        let library = FunctionLibrary::default();
        let region = ServiceRegion::builder("bench", library.select(&["upper".into()]).expect("upper"))
            .start()
            .await
            .expect("region");
        let client = region.client().expect("client");

        let mut baseline = Vec::new();
        let mut rpcop = Vec::new();
        for _ in 0..REPETITIONS {
            let start = Instant::now();
            let out = ctx
                .sql("SELECT upper(s) FROM t")
                .await
                .expect("plan")
                .collect()
                .await
                .expect("run");
            baseline.push(start.elapsed());
            assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), rows);

            let start = Instant::now();
            let out: Vec<ArrayRef> = client
                .call_stream("upper", futures::stream::iter(batches.clone()))
                .try_collect()
                .await
                .expect("through the service");
            rpcop.push(start.elapsed());
            assert_eq!(out.iter().map(|a| a.len()).sum::<usize>(), rows);
        }
        let (b, r) = (median(baseline), median(rpcop));
        let ratio = r.as_secs_f64() / b.as_secs_f64();
        println!("| scenario | baseline | baseline median | rpcop median | ratio | rpcop rows/s |");
        println!("| --- | --- | --- | --- | --- | --- |");
        println!(
            "| upper() {rows} rows, 1 instance | in-process DataFusion | {:.1} ms | {:.1} ms | {ratio:.2} | {:.0} |",
            b.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3,
            rows as f64 / r.as_secs_f64()
        );
        region.shutdown().await;
    });
}
