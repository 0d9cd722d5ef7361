//! `isolation = 'process'` with a resource profile: each instance a child
//! process of the user's own serve binary (`examples/serve_own_function.rs`),
//! with its own `CUDA_VISIBLE_DEVICES` and a memory limit that ends only the
//! instance that exceeds it; and the `rpcop` binary serving under a limit.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use rpcop::{HostedFunction, ServiceRegion};

use common::{options, wait_ready, within};

/// The example binary, built beside the `rpcop` binary by `cargo test`.
fn own_serve_binary() -> PathBuf {
    let rpcop = PathBuf::from(env!("CARGO_BIN_EXE_rpcop"));
    let path = rpcop
        .parent()
        .unwrap()
        .join("examples")
        .join("serve_own_function");
    assert!(path.exists(), "build the example first: {}", path.display());
    path
}

/// A function the parent only names: the child process hosts it.
fn hosted_by_child(name: &str) -> HostedFunction {
    let owner = name.to_string();
    HostedFunction::with_loader(
        name,
        Arc::new(move |_| Err(format!("'{owner}' is hosted by the serve program"))),
    )
}

async fn child_region(name: &str, function: &str, pairs: &[(&str, &str)]) -> ServiceRegion {
    ServiceRegion::builder(name, vec![hosted_by_child(function)])
        .options(options(pairs))
        .serve_program(own_serve_binary())
        .start()
        .await
        .expect("region starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_gets_its_own_devices() {
    within(async {
        let region = child_region(
            "gpus",
            "visible_devices",
            &[
                ("isolation", "process"),
                ("parallelism", "2"),
                ("gpus", "3;5,6"),
                ("load_balance", "round_robin"),
            ],
        )
        .await;
        let client = region.client().unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
            let out = client
                .call(
                    "visible_devices",
                    RecordBatch::try_from_iter([("t", text)]).unwrap(),
                )
                .await
                .unwrap();
            seen.insert(out.as_string::<i32>().value(0).to_string());
        }
        assert_eq!(seen, BTreeSet::from(["3".to_string(), "5,6".to_string()]));
        region.shutdown().await;
    })
    .await;
}

fn allocate(mib: i64) -> RecordBatch {
    let column: ArrayRef = Arc::new(Int64Array::from(vec![mib]));
    RecordBatch::try_from_iter([("mib", column)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_ends_only_that_instance() {
    within(Box::pin(async {
        let region = child_region(
            "memory",
            "allocate",
            &[
                ("isolation", "process"),
                ("memory", "256MiB"),
                ("retries", "0"),
                ("timeout", "20s"),
            ],
        )
        .await;
        let client = region.client().unwrap();
        assert_eq!(client.call("allocate", allocate(8)).await.unwrap().len(), 1);
        let first = region.members()[0].id;
        let err = client.call("allocate", allocate(1024)).await.unwrap_err();
        // the caller hears why the instance went, not only that the
        // connection broke
        let err = err.to_string();
        assert!(
            err.contains("service 'memory'")
                && err.contains("the instance died: the instance process aborted")
                && err.contains("memory limit")
                && err.contains("memory allocation"),
            "{err}"
        );
        // the supervisor reports the death and restarts the instance
        let mut watch = region.membership();
        loop {
            let restarted = watch
                .borrow_and_update()
                .members
                .iter()
                .any(|m| m.id != first && m.restarts == 1);
            if restarted {
                break;
            }
            watch.changed().await.unwrap();
        }
        wait_ready(&region, 1).await;
        let member = region.members()[0].clone();
        let reason = member.last_error.unwrap_or_default();
        assert!(reason.contains("instance process"), "{reason}");
        assert!(reason.contains("memory allocation"), "{reason}");
        // the caller survived, and the new instance serves
        assert_eq!(client.call("allocate", allocate(8)).await.unwrap().len(), 1);
        region.shutdown().await;
    }))
    .await;
}

/// The `rpcop` binary itself under a memory limit: its allocator must not
/// reserve address space up front (RLIMIT_DATA counts it), or the child
/// cannot even start its threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpcop_binary_serves_under_a_memory_limit() {
    within(async {
        let library = rpcop::FunctionLibrary::default();
        let region = ServiceRegion::builder("limited", library.select(&["upper".into()]).unwrap())
            .options(options(&[
                ("isolation", "process"),
                ("memory", "256MiB"),
                ("threads", "2"),
            ]))
            .serve_program(env!("CARGO_BIN_EXE_rpcop"))
            .start()
            .await
            .expect("a memory-limited rpcop serve starts");
        let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let out = region
            .client()
            .unwrap()
            .call("upper", RecordBatch::try_from_iter([("t", text)]).unwrap())
            .await
            .unwrap();
        let out = out.as_string::<i32>();
        assert_eq!((out.value(0), out.value(1)), ("A", "B"));
        region.shutdown().await;
    })
    .await;
}
