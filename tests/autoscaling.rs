//! Autoscaling (`max_parallelism`): a service grows while callers keep more
//! requests outstanding than its instances have threads, shrinks (draining)
//! once they stay idle, and every answer is right throughout.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{Array, AsArray};
use rpcop::{MemberState, ServiceClient, ServiceRegion};

use common::{model_sim_batches, region, within};

/// Waits until the region has `n` ready instances and no other member
/// but gone ones; returns how many it saw most on the way.
async fn wait_size(region: &ServiceRegion, n: usize) -> usize {
    let mut watch = region.membership();
    let mut most = 0;
    loop {
        {
            let m = watch.borrow_and_update();
            let ready = m.ready().count();
            most = most.max(ready);
            let settled = m
                .members
                .iter()
                .all(|m| matches!(m.state, MemberState::Ready | MemberState::Gone));
            if ready == n && settled {
                return most;
            }
        }
        watch.changed().await.expect("region alive");
    }
}

/// `model_sim`'s answer to each row of `batch` (its 16 hex digits of FNV-1a).
fn expected(texts: &dyn Array) -> Vec<String> {
    texts
        .as_string::<i32>()
        .iter()
        .map(|t| format!("{:016x}", rpcop::demo::fnv1a(t.unwrap().as_bytes())))
        .collect()
}

/// `callers` tasks, each keeping one `model_sim` request of 30 ms
/// outstanding on `client` and checking every answer, until `stop`; each
/// returns how many it had answered.
fn load(
    client: &ServiceClient,
    callers: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..callers)
        .map(|_| {
            let (client, stop) = (client.clone(), Arc::clone(stop));
            tokio::spawn(async move {
                let batches = model_sim_batches(64, 64, 30);
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = &batches[answered % batches.len()];
                    let answer = client.call("model_sim", batch.clone()).await.unwrap();
                    let answer: Vec<String> = answer
                        .as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap().to_string())
                        .collect();
                    assert_eq!(answer, expected(batch.column(0).as_ref()));
                    answered += 1;
                }
                answered
            })
        })
        .collect()
}

/// Stops the callers of [`load`]; returns how many requests they answered.
async fn stop(stop: &AtomicBool, callers: Vec<tokio::task::JoinHandle<usize>>) -> usize {
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for caller in callers {
        answered += caller.await.unwrap();
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_service_grows_to_its_largest_size_then_drains_back_when_idle() {
    within(async {
        let region = region(
            "autoscaled",
            &["model_sim"],
            &[
                ("min_parallelism", "1"),
                ("max_parallelism", "4"),
                ("scale_up_after", "200ms"),
                ("scale_down_after", "1s"),
            ],
        )
        .await;
        assert_eq!(region.members().len(), 1, "starts at min_parallelism");
        assert_eq!(region.last_scaling(), None);
        // 8 callers, each with a request outstanding at all times: 8
        // requests for 1 thread
        let client = region.client().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let callers = load(&client, 8, &stopping);
        // the average demand (8) is more than 4 instances can take: it goes
        // straight to its largest size, never past it
        let most = wait_size(&region, 4).await;
        assert_eq!(most, 4);
        let grew = region.last_scaling().expect("a decision");
        assert_eq!((grew.from, grew.to), (1, 4), "{grew}");
        assert!(grew.why.contains("requests outstanding"), "{grew}");
        assert_eq!(client.stats().errors, 0);
        let answered = stop(&stopping, callers).await;
        assert!(answered > 8, "callers kept calling: {answered}");
        assert_eq!(region.demand(), 0, "nothing outstanding once they stop");
        // idle for scale_down_after: back to min_parallelism, drained
        wait_size(&region, 1).await;
        let shrank = region.last_scaling().expect("a decision");
        // straight to 1, or through a size the callers' last requests needed
        assert!(shrank.from > 1 && shrank.to == 1, "{shrank}");
        assert!(shrank.why.contains("at most 0 requests"), "{shrank}");
        assert_eq!(client.stats().errors, 0);
        assert_eq!(client.stats().failures, 0);
        region.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_instances_grow_to_one_per_device_set_at_most() {
    within(async {
        let region = region(
            "devices",
            &["model_sim"],
            &[
                ("isolation", "process"),
                ("gpus", "0,1"),
                ("max_parallelism", "8"),
                ("scale_up_after", "200ms"),
                ("scale_down_after", "1h"),
            ],
        )
        .await;
        let client = region.client().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let callers = load(&client, 8, &stopping);
        // 8 requests outstanding want 8 instances; two device sets allow 2
        assert_eq!(wait_size(&region, 2).await, 2);
        let grew = region.last_scaling().expect("a decision");
        assert_eq!((grew.from, grew.to), (1, 2), "{grew}");
        stop(&stopping, callers).await;
        assert_eq!(client.stats().errors, 0);
        region.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_service_below_saturation_keeps_its_size() {
    within(async {
        let region = region(
            "steady",
            &["model_sim"],
            &[
                ("parallelism", "2"),
                ("max_parallelism", "4"),
                ("scale_up_after", "100ms"),
                ("scale_down_after", "1h"),
            ],
        )
        .await;
        assert_eq!(region.members().len(), 2, "starts at parallelism");
        // one caller, one request at a time: 1 of 2 threads busy
        let client = region.client().unwrap();
        for batch in model_sim_batches(640, 64, 20) {
            client.call("model_sim", batch).await.unwrap();
        }
        assert_eq!(region.last_scaling(), None);
        assert_eq!(region.members().len(), 2);
        region.shutdown().await;
    })
    .await;
}
