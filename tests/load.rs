//! Load: many queries at once on one service. Each is answered exactly as
//! in-process, none is starved, and the requests held at the instance
//! never exceed what the callers' `max_in_flight` allows in total.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::within;
use datafusion::arrow::util::pretty::pretty_format_batches;
use rpcop::RpcSession;

const QUERIES: usize = 16;
const PARTITIONS: usize = 2;
const MAX_IN_FLIGHT: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_queries_are_correct_and_none_is_starved() {
    within(async {
        let session = Arc::new(RpcSession::new());
        session
            .sql(&format!(
                "SET datafusion.execution.target_partitions = {PARTITIONS}"
            ))
            .await
            .unwrap();
        // each query its own rows: 2,000 of them, 5 ms a request of 100
        let query = |i: usize| {
            format!(
                "SELECT count(*), min(r), max(r), count(DISTINCT r) FROM \
                 (SELECT model_sim('q{i} row ' || value, 5, 0) AS r FROM generate_series(1, 2000))"
            )
        };
        // the answers in-process, one query at a time
        session.sql("SET rpcop.rewrite = false").await.unwrap();
        let mut expected = Vec::new();
        for i in 0..QUERIES {
            let answer = session.sql(&query(i)).await.unwrap();
            expected.push(pretty_format_batches(&answer).unwrap().to_string());
        }
        session.sql("SET rpcop.rewrite = true").await.unwrap();
        session
            .sql(&format!(
                "CREATE RPC SERVICE sim FOR FUNCTION model_sim WITH (threads = 4, \
                 batch_size = 100, max_in_flight = {MAX_IN_FLIGHT})"
            ))
            .await
            .unwrap();
        let started = Instant::now();
        let queries: Vec<_> = (0..QUERIES)
            .map(|i| {
                let (session, sql) = (Arc::clone(&session), query(i));
                tokio::spawn(async move {
                    let answer = session.sql(&sql).await.unwrap();
                    (
                        pretty_format_batches(&answer).unwrap().to_string(),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        let mut times = Vec::new();
        for (i, query) in queries.into_iter().enumerate() {
            let (answer, took) = query.await.unwrap();
            assert_eq!(answer, expected[i], "query {i}");
            times.push(took);
        }
        times.sort();
        let (fastest, median, slowest) = (times[0], times[QUERIES / 2], times[QUERIES - 1]);
        eprintln!("{QUERIES} queries: fastest {fastest:?}, median {median:?}, slowest {slowest:?}");
        // none starved: the last done within a small factor of the median
        assert!(
            slowest <= median * 3 + Duration::from_millis(200),
            "{fastest:?} {median:?} {slowest:?}"
        );
        // counted at the instance: never more held than the callers may send
        let region = session.service("sim").unwrap();
        let stats = region.stats().await;
        let stats = stats[0].1.as_ref().unwrap();
        let bound = (QUERIES * PARTITIONS * MAX_IN_FLIGHT) as u64;
        eprintln!(
            "peak requests held at the instance: {} (bound {bound})",
            stats.peak_outstanding
        );
        assert!(
            stats.peak_outstanding <= bound && stats.peak_outstanding > 4,
            "{stats:?}"
        );
        assert_eq!(stats.requests, (QUERIES * 20) as u64, "{stats:?}");
    })
    .await;
}
