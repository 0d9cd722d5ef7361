//! Stragglers: one instance ten times slower than the others. Hedging
//! (`hedge_after`) re-sends its late requests to another instance and takes
//! the first answer, so the query takes about as long as without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{options, text_batches, within};
use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use futures::TryStreamExt;
use rpcop::{HostedFunction, ServiceRegion};

/// `nap(s) = s`, after sleeping its instance's latency (a device call).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Nap {
    signature: Signature,
    millis: u64,
}

impl ScalarUDFImpl for Nap {
    fn name(&self) -> &str {
        "nap"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        std::thread::sleep(Duration::from_millis(self.millis));
        Ok(args.args[0].clone())
    }
}

/// A region of `nap` on 4 instances, each taking `fast` ms a request, but
/// the first one loaded takes `slow` ms.
async fn naps(fast: u64, slow: u64, pairs: &[(&str, &str)]) -> ServiceRegion {
    let first = Arc::new(AtomicBool::new(true));
    let loader: rpcop::Loader = Arc::new(move |_| {
        let millis = if first.swap(false, Ordering::Relaxed) {
            slow
        } else {
            fast
        };
        Ok(Arc::new(ScalarUDF::new_from_impl(Nap {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
            millis,
        })))
    });
    let mut all = vec![
        ("parallelism", "4"),
        ("threads", "8"),
        ("batch_size", "100"),
        ("max_in_flight", "16"),
    ];
    all.extend_from_slice(pairs);
    ServiceRegion::builder("naps", vec![HostedFunction::with_loader("nap", loader)])
        .options(options(&all))
        .start()
        .await
        .unwrap()
}

/// How long 400 requests take through `region`, checked to answer every
/// row once, in order.
async fn timed(region: &ServiceRegion) -> (Duration, rpcop::ClientStats) {
    let client = region.client().unwrap();
    let started = Instant::now();
    let results: Vec<ArrayRef> = client
        .call_stream("nap", futures::stream::iter(text_batches(40_000, 1000)))
        .try_collect()
        .await
        .unwrap();
    let took = started.elapsed();
    let rows: Vec<&str> = results
        .iter()
        .flat_map(|a| a.as_string::<i32>().iter().map(Option::unwrap))
        .collect();
    assert_eq!(rows.len(), 40_000);
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, r)| *r == format!("row-{i}"))
    );
    (took, client.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_takes_the_straggler_out_of_the_query_time() {
    within(async {
        let even = naps(20, 20, &[]).await;
        let (baseline, _) = timed(&even).await;
        even.shutdown().await;
        let unhedged = naps(20, 200, &[]).await;
        let (straggling, _) = timed(&unhedged).await;
        unhedged.shutdown().await;
        for hedge in ["40ms", "auto"] {
            let hedged = naps(20, 200, &[("hedge_after", hedge)]).await;
            // 'auto' learns the latency from the first answers
            let (took, stats) = timed(&hedged).await;
            eprintln!(
                "no straggler {baseline:?}, straggler {straggling:?}, hedged ({hedge}) {took:?}: \
                 ratio {:.2} (unhedged {:.2}); {stats:?}",
                took.as_secs_f64() / baseline.as_secs_f64(),
                straggling.as_secs_f64() / baseline.as_secs_f64()
            );
            assert!(stats.hedges > 0 && stats.hedge_wins > 0, "{stats:?}");
            assert!(
                took.as_secs_f64() <= 1.5 * baseline.as_secs_f64(),
                "hedge_after = {hedge}: {took:?} against {baseline:?} without a straggler"
            );
            hedged.shutdown().await;
        }
    })
    .await;
}
