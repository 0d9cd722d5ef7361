//! Cancellation: a query that stops early (its `LIMIT` satisfied, its stream
//! dropped) cancels the requests it has in flight, and the instances stop
//! working on them: the queued ones are skipped, unevaluated. That holds for
//! rpcop's own instances and for the Python kit's.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{python, python_tests, settled, within};
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use rpcop::RpcSession;

/// 64 requests of 100 ms each, 16 in flight per partition, on one thread:
/// the query needs one answer. Without cancellation the instance would
/// evaluate every request sent (1.6 s or more); with it, a few.
async fn limit_cancels(options: &str) {
    let session = common::demo_session();
    within(async {
        session
            .sql(&format!(
                "CREATE RPC SERVICE m FOR FUNCTION model_sim WITH (parallelism = 1, threads = 1, \
                 batch_size = 1, max_in_flight = 16, {options})"
            ))
            .await
            .unwrap();
        let region = session.service("m").unwrap();
        let client = session.client("m").unwrap();
        let query = "SELECT r FROM (SELECT model_sim('x' || value, 100, 0) AS r \
                     FROM generate_series(1, 64)) WHERE r IS NOT NULL LIMIT 1";
        let answer = session.sql(query).await.unwrap();
        let shown = pretty_format_batches(&answer).unwrap().to_string();
        assert_eq!(
            answer.iter().map(|b| b.num_rows()).sum::<usize>(),
            1,
            "{shown}"
        );
        let (evaluated, skipped) = settled(&region, &client).await;
        assert!(
            evaluated <= 4 && skipped >= 10,
            "{options}: {evaluated} evaluated, {skipped} skipped"
        );
        // the slots came back: the next query gets the instance at once
        let all = session
            .sql("SELECT count(model_sim('y' || value, 0, 0)) FROM generate_series(1, 100)")
            .await
            .unwrap();
        assert!(
            pretty_format_batches(&all)
                .unwrap()
                .to_string()
                .contains("| 100 ")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satisfied_limit_cancels_requests_handed_over_in_process() {
    limit_cancels("transport = 'auto'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satisfied_limit_cancels_requests_over_flight() {
    limit_cancels("transport = 'flight'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satisfied_limit_cancels_requests_of_an_instance_process() {
    limit_cancels("isolation = 'process'").await;
}

/// A caller's stream dropped half-way (a user's code, not SQL): its
/// requests are cancelled the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_cancels_its_requests() {
    within(async {
        let region = common::region(
            "drop",
            &["model_sim"],
            &[
                ("threads", "1"),
                ("max_in_flight", "8"),
                ("transport", "flight"),
            ],
        )
        .await;
        let client = region.client().unwrap();
        let request = |i: usize, latency: i64| {
            let text: datafusion::arrow::array::ArrayRef = Arc::new(
                datafusion::arrow::array::StringArray::from(vec![format!("r{i}")]),
            );
            let latency: datafusion::arrow::array::ArrayRef =
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![latency]));
            let cost: datafusion::arrow::array::ArrayRef =
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![0]));
            datafusion::arrow::record_batch::RecordBatch::try_from_iter([
                ("text", text),
                ("latency", latency),
                ("cost", cost),
            ])
            .unwrap()
        };
        // answered requests, a result or an error, are not cancelled ones
        assert!(client.call("model_sim", request(0, 0)).await.is_ok());
        assert!(client.call("model_sim", request(0, -1)).await.is_err());
        assert_eq!(settled(&region, &client).await, (1, 0));
        let batches: Vec<_> = (0..32).map(|i| request(i, 100)).collect();
        let mut stream = Box::pin(client.call_stream("model_sim", futures::stream::iter(batches)));
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        let (evaluated, skipped) = settled(&region, &client).await;
        let evaluated = evaluated - 1;
        assert!(
            evaluated <= 3 && skipped >= 5,
            "{evaluated} evaluated, {skipped} skipped"
        );
    })
    .await;
}

/// The one value of a one-row, one-column answer, as an i64.
fn single(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> i64 {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let batch = batches.iter().find(|b| b.num_rows() == 1).unwrap();
    batch.column(0).as_primitive::<Int64Type>().value(0)
}

/// The Python kit reads rpcop's requests ahead too, so a satisfied
/// `LIMIT`'s cancels reach the requests queued at a kit instance: 64 naps of
/// 100 ms (`tests/python/functions.py`), 16 in flight, one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_satisfied_limit_cancels_requests_queued_at_a_kit_instance() {
    let session = RpcSession::new();
    let command = format!(
        "cd ''{}'' && exec ''{}'' kit_server.py",
        python_tests().display(),
        python().display()
    );
    within(async {
        session
            .sql(&format!(
                "CREATE RPC SERVICE n FOR FUNCTION nap WITH (command = '{command}', \
                 parallelism = 1, batch_size = 1, max_in_flight = 16)"
            ))
            .await
            .unwrap();
        let first = session
            .sql(
                "SELECT r FROM (SELECT nap(100 + value * 0) AS r FROM generate_series(1, 64)) \
                 WHERE r IS NOT NULL LIMIT 1",
            )
            .await
            .unwrap();
        assert_eq!(single(&first), 100);
        // 20 more on the same exchange, behind what the first query left
        // there: once they are answered, the instance has skipped or run it all
        let next = session
            .sql("SELECT count(nap(value * 0)) FROM generate_series(1, 20)")
            .await
            .unwrap();
        assert_eq!(single(&next), 20);
        let region = session.service("n").unwrap();
        let stats: Vec<_> = region
            .stats()
            .await
            .into_iter()
            .filter_map(|(_, s)| s)
            .collect();
        let evaluated = stats.iter().map(|s| s.requests).sum::<u64>() - 20;
        let skipped: u64 = stats.iter().map(|s| s.cancelled).sum();
        assert!(
            evaluated <= 4 && skipped >= 10,
            "{evaluated} evaluated, {skipped} skipped"
        );
    })
    .await;
}
