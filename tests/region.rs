//! The service region under load and under failure: balancing policies,
//! instances killed mid-stream, resizing while a stream runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, AsArray};
use futures::{StreamExt, TryStreamExt};
use rpcop::ServiceRegion;
use tokio::sync::Notify;

use common::{assert_upper_in_order, model_sim_batches, region, text_batches, wait_ready, within};

/// Runs `upper` over `rows` rows through `region` with `client`'s options.
async fn run_upper(client: &rpcop::ServiceClient, rows: usize, batch: usize) -> Vec<ArrayRef> {
    let input = futures::stream::iter(text_batches(rows, batch));
    client
        .call_stream("upper", input)
        .try_collect()
        .await
        .expect("stream completes")
}

/// Requests served by each member, by member id.
async fn served(region: &ServiceRegion) -> Vec<(u64, u64)> {
    region
        .stats()
        .await
        .into_iter()
        .map(|(m, s)| (m.id, s.map_or(0, |s| s.requests)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_per_policy_exactly_once_in_order() {
    within(async {
        const ROWS: usize = 1_000_000;
        for policy in ["round_robin", "least_outstanding", "power_of_two"] {
            let region = region(
                &format!("million-{policy}"),
                &["upper"],
                &[
                    ("parallelism", "4"),
                    ("load_balance", policy),
                    ("batch_size", "4096"),
                ],
            )
            .await;
            let client = region.client().unwrap();
            let results = run_upper(&client, ROWS, 50_000).await;
            assert_upper_in_order(&results, ROWS);
            let counts: Vec<u64> = served(&region).await.into_iter().map(|(_, n)| n).collect();
            let total: u64 = counts.iter().sum();
            assert_eq!(counts.len(), 4, "{policy}: {counts:?}");
            assert_eq!(total, client.stats().requests, "{policy}: {counts:?}");
            assert_eq!(client.stats().retries, 0, "{policy}");
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            match policy {
                // each in turn: the counts differ by at most one
                "round_robin" => assert!(max - min <= 1, "{policy}: {counts:?}"),
                // the least loaded instance first: all share the work
                "least_outstanding" => assert!(*min * 4 >= total / 4, "{policy}: {counts:?}"),
                // two random choices: every instance is used, none is starved
                _ => assert!(*min > 0 && *max < total / 2, "{policy}: {counts:?}"),
            }
            region.shutdown().await;
        }
    })
    .await;
}

/// An instance killed while it holds requests of a stream (each waits
/// 20 ms at its instance, so every instance has some outstanding): they are
/// retried elsewhere (retries > 0), and the stream's answers equal those
/// of a stream nothing disturbed, row by row.
async fn killed_mid_stream(isolation: &str) {
    const ROWS: usize = 200_000;
    let region = region(
        &format!("kill-{isolation}"),
        &["model_sim"],
        &[
            ("parallelism", "4"),
            ("isolation", isolation),
            ("batch_size", "2048"),
            ("timeout", "5s"),
        ],
    )
    .await;
    let client = region.client().unwrap();
    let undisturbed: Vec<ArrayRef> = client
        .call_stream(
            "model_sim",
            futures::stream::iter(model_sim_batches(ROWS, 10_000, 20)),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(client.stats().retries, 0);
    let victim = region.members()[1].id;
    let started = Arc::new(Notify::new());
    let signal = Arc::clone(&started);
    let stream = client
        .call_stream(
            "model_sim",
            futures::stream::iter(model_sim_batches(ROWS, 10_000, 20)),
        )
        .enumerate()
        .map(move |(i, r)| {
            if i == 5 {
                signal.notify_one();
            }
            r
        });
    let collect = tokio::spawn(async move { stream.try_collect::<Vec<ArrayRef>>().await });
    started.notified().await;
    // the victim holds requests of the stream when it is killed
    loop {
        let stats = region.stats().await;
        let busy = stats
            .iter()
            .any(|(m, s)| m.id == victim && s.as_ref().is_some_and(|s| s.in_flight > 0));
        if busy {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(region.kill(victim).await, "the victim was running");
    let results = collect
        .await
        .unwrap()
        .expect("the stream survives the kill");
    let rows = |arrays: &[ArrayRef]| -> Vec<String> {
        arrays
            .iter()
            .flat_map(|a| a.as_string::<i32>().iter().map(|v| v.unwrap().to_string()))
            .collect()
    };
    assert_eq!(rows(&results).len(), ROWS);
    assert_eq!(rows(&results), rows(&undisturbed));
    assert!(client.stats().retries > 0, "{:?}", client.stats());
    wait_ready(&region, 4).await;
    let members = region.members();
    assert!(members.iter().all(|m| m.id != victim), "{members:?}");
    assert!(members.iter().any(|m| m.restarts == 1), "{members:?}");
    region.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_stream_in_process() {
    within(killed_mid_stream("thread")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_process_killed_mid_stream() {
    within(killed_mid_stream("process")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_two_six_one_while_streaming() {
    within(async {
        const ROWS: usize = 400_000;
        let region = Arc::new(
            region(
                "resize",
                &["upper"],
                &[
                    ("parallelism", "2"),
                    ("batch_size", "1024"),
                    ("timeout", "10s"),
                ],
            )
            .await,
        );
        let before: HashSet<u64> = region.members().iter().map(|m| m.id).collect();
        let client = region.client().unwrap();
        // a slow input keeps the stream running while the region changes
        let input = futures::stream::iter(text_batches(ROWS, 4000)).then(|b| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            b
        });
        // the stream is under way once its 10th result is in
        let under_way = Arc::new(Notify::new());
        let collect = tokio::spawn({
            let (client, under_way) = (client.clone(), Arc::clone(&under_way));
            async move {
                client
                    .call_stream("upper", input)
                    .enumerate()
                    .map(move |(i, r)| {
                        if i == 10 {
                            under_way.notify_one();
                        }
                        r
                    })
                    .try_collect::<Vec<ArrayRef>>()
                    .await
            }
        });
        under_way.notified().await;
        region.resize(6).await.expect("grows");
        assert_eq!(region.members().len(), 6);
        // the new instances receive traffic while the stream runs (the
        // test's deadline bounds the wait)
        while !served(&region)
            .await
            .into_iter()
            .any(|(id, n)| !before.contains(&id) && n > 0)
        {
            assert!(
                !collect.is_finished(),
                "the stream ended before a new instance served"
            );
            tokio::task::yield_now().await;
        }
        region.resize(1).await.expect("shrinks");
        wait_ready(&region, 1).await;
        let results = collect.await.unwrap().expect("no error while resizing");
        assert_upper_in_order(&results, ROWS);
        assert_eq!(client.stats().failures, 0);
        region.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_is_retried_then_fails_naming_the_cause() {
    within(async {
        let region = region(
            "slow",
            &["model_sim"],
            &[("parallelism", "2"), ("timeout", "200ms"), ("retries", "3")],
        )
        .await;
        let client = region.client().unwrap();
        let args = |latency_ms: i64| model_sim_batches(1, 1, latency_ms).remove(0);
        let err = client
            .call("model_sim", args(1000))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("after 4 attempt(s)"), "{err}");
        assert!(
            err.contains("no answer within the timeout of 200ms"),
            "{err}"
        );
        // each retry goes to the instance tried least: A, B, A, B
        let addresses: HashSet<String> = region.members().into_iter().map(|m| m.address).collect();
        let tried: Vec<&str> = err
            .split_once("instances [")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list.split(", ").collect())
            .unwrap_or_default();
        assert_eq!(tried.len(), 4, "{err}");
        assert!(tried.iter().all(|a| addresses.contains(*a)), "{err}");
        assert!(tried.windows(2).all(|w| w[0] != w[1]), "in turn: {err}");
        assert_eq!(client.stats().timeouts, 4);
        assert_eq!(client.stats().retries, 3);
        // a fast request still gets through once the instances are free
        loop {
            let stats = region.stats().await;
            if stats
                .iter()
                .all(|(_, s)| s.as_ref().is_some_and(|s| s.in_flight == 0))
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(client.call("model_sim", args(0)).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_runs_once_per_instance_and_is_counted() {
    within(async {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&loads);
        let slow_upper = rpcop::HostedFunction::with_loader(
            "upper",
            Arc::new(move |_| {
                std::thread::sleep(Duration::from_millis(150));
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(datafusion::functions::string::upper())
            }),
        );
        let region = ServiceRegion::builder("startup", vec![slow_upper])
            .options(common::options(&[("parallelism", "2")]))
            .start()
            .await
            .unwrap();
        assert_eq!(
            loads.load(Ordering::SeqCst),
            2,
            "one load per instance, before ready"
        );
        let client = region.client().unwrap();
        let results = run_upper(&client, 50_000, 1000).await;
        assert_upper_in_order(&results, 50_000);
        assert_eq!(loads.load(Ordering::SeqCst), 2, "no load per request");
        for (_, stats) in region.stats().await {
            let stats = stats.unwrap();
            assert_eq!(stats.loads, 1);
            assert!(stats.startup_ms >= 150, "{stats:?}");
        }
        region.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_instance_is_a_clear_error_not_a_hang() {
    within(async {
        let (sender, watch) = tokio::sync::watch::channel(Arc::new(rpcop::Membership::default()));
        let options = common::options(&[("timeout", "100ms")]);
        let client = rpcop::ServiceClient::new("empty", options, "t", watch).unwrap();
        let batch = text_batches(3, 3).remove(0);
        let err = client
            .call("upper", batch.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service 'empty' has no ready instance for function 'upper'"),
            "{err}"
        );
        drop(sender);
        let err = client.call("upper", batch).await.unwrap_err().to_string();
        assert!(
            err.contains("service 'empty': the service was stopped"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_instances_are_reached_in_process_unless_flight_is_asked() {
    within(async {
        let region = region("local", &["upper"], &[]).await;
        let batch = text_batches(5, 5).remove(0);
        // transport = 'auto': handed over, no exchange opened
        let upper = region
            .client()
            .unwrap()
            .call("upper", batch.clone())
            .await
            .unwrap();
        assert_eq!(upper.len(), 5);
        let s = region.stats().await.remove(0).1.unwrap();
        assert_eq!((s.requests, s.open_streams), (1, 0), "{s:?}");
        // transport = 'flight': over the wire, one exchange
        let mut options = region.options();
        options.set("transport", "flight").unwrap();
        let client = region.client_with(options).unwrap();
        let flight = client.call("upper", batch).await.unwrap();
        assert_eq!(flight.as_ref(), upper.as_ref());
        let s = region.stats().await.remove(0).1.unwrap();
        assert_eq!((s.requests, s.open_streams), (2, 1), "{s:?}");
        region.shutdown().await;
    })
    .await;
}
