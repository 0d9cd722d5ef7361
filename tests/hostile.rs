//! Hostile input through SQL: a fleet survives one bad row.

#![allow(clippy::unwrap_used)]

mod common;

use rpcop::{MemberState, RpcSession};

/// One oversized row kills each instance it reaches (it is bigger than
/// their memory limit). It is failed after it killed two, as a suspected
/// poison pill naming its rows, instead of being sent to every instance in
/// turn; the service returns to full size and serves the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_kills_two_instances_not_the_fleet() {
    common::within(async {
        let session = RpcSession::builder()
            .serve_program(env!("CARGO_BIN_EXE_rpcop"))
            .build();
        session
            .sql(
                "CREATE RPC SERVICE pill FOR FUNCTION upper WITH (isolation = 'process', \
                 parallelism = 4, memory = '256MiB', retries = 3, timeout = '60s')",
            )
            .await
            .unwrap();
        // 200 MB of text in the second row: under the message limit, over the
        // instances' memory once decoded and upper-cased
        let error = session
            .sql("SELECT length(upper(repeat(s, n))) FROM (VALUES ('ok', 1), ('ab', 100000000)) t(s, n)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("suspected poison pill"), "{error}");
        assert!(error.contains("killed 2 instances"), "{error}");
        assert!(error.contains("memory limit"), "{error}");
        assert!(error.contains("a request of 2 row(s)"), "{error}");
        assert!(error.contains("rows 0..2 of partition 0"), "{error}");
        // each attempt an instance's death ended is an error of the service
        let counted = session
            .sql("SELECT errors FROM rpc_services() WHERE name = 'pill'")
            .await
            .unwrap();
        assert_eq!(common::cells(&counted).unwrap(), vec![vec!["2".to_string()]]);
        // two deaths, not four: the other instances never saw the row, and
        // the two that died are replaced
        let region = session.service("pill").unwrap();
        let restarted: u32 = region.members().iter().map(|m| m.restarts).sum();
        assert!(restarted <= 2, "{restarted} restarts");
        common::wait_ready(&region, 4).await;
        assert!(
            region
                .members()
                .iter()
                .all(|m| m.state == MemberState::Ready)
        );
        let restarted: u32 = region.members().iter().map(|m| m.restarts).sum();
        assert_eq!(restarted, 2);
        let batches = session
            .sql("SELECT upper(s) AS u FROM (VALUES ('fine')) t(s)")
            .await
            .unwrap();
        assert_eq!(common::cells(&batches).unwrap(), vec![vec!["FINE".to_string()]]);
    })
    .await;
}

/// A request whose function never returns (it sleeps for i64::MAX ms) times
/// out for its caller, but its evaluation thread stays busy; requests sent
/// after it would queue behind it and time out too. The supervisor sees the
/// request run past the service's timeout and replaces the instance, and the
/// next query is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_instance_is_replaced() {
    common::within(async {
        let session = RpcSession::new();
        session
            .sql(
                "CREATE RPC SERVICE wedge FOR FUNCTION model_sim WITH (parallelism = 1, \
                 threads = 1, timeout = '300ms', retries = 0)",
            )
            .await
            .unwrap();
        let error = session
            .sql("SELECT model_sim(s, 9223372036854775807, 0) FROM (VALUES ('x')) t(s)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no answer within the timeout"), "{error}");
        // replaced: a new instance (a restart of its slot) is ready
        let region = session.service("wedge").unwrap();
        let mut watch = region.membership();
        loop {
            {
                let m = watch.borrow_and_update();
                if m.members
                    .iter()
                    .any(|m| m.restarts >= 1 && m.state == MemberState::Ready)
                {
                    break;
                }
            }
            watch.changed().await.expect("region alive");
        }
        let batches = session
            .sql("SELECT model_sim(s, 0, 0) AS h FROM (VALUES ('x')) t(s)")
            .await
            .unwrap();
        assert_eq!(common::cells(&batches).unwrap().len(), 1);
    })
    .await;
}

/// A session with a service `h` of `functions`, run by the Python kit's
/// hostile fixture (`tests/python/hostile_server.py`), with more options in
/// `with`.
async fn hostile(functions: &str, with: &str) -> RpcSession {
    let session = RpcSession::builder().build();
    let command = format!(
        "cd ''{}'' && exec ''{}'' hostile_server.py",
        common::python_tests().display(),
        common::python().display()
    );
    session
        .sql(&format!(
            "CREATE RPC SERVICE h FOR FUNCTION {functions} WITH (command = '{command}'{with})"
        ))
        .await
        .unwrap();
    session
}

/// An instance whose answers are wrong (a value too few, a text where a
/// BIGINT is due) is reported as a bug of the function, at once: any
/// instance of the same code would answer the same, so nothing is retried,
/// and the instances live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_are_reported_as_the_functions_bug() {
    common::within(async {
        let session = hostile("short, wrong_type", ", parallelism = 2").await;
        let error = |sql: &'static str| {
            let session = &session;
            async move { session.sql(sql).await.unwrap_err().strip_backtrace() }
        };
        let e = error("SELECT short(value) FROM generate_series(1, 10)").await;
        assert!(
            e.contains("function 'short' answered 9 values for a request of 10 rows")
                && e.contains("a bug in the function's implementation")
                && !e.contains("attempt(s)"),
            "{e}"
        );
        let e = error("SELECT wrong_type(value) FROM generate_series(1, 10)").await;
        assert!(
            e.contains("function 'wrong_type' answered values of type Utf8")
                && e.contains("planned with, Int64")
                && e.contains("a bug in the function's implementation"),
            "{e}"
        );
        let region = session.service("h").unwrap();
        let members = region.members();
        assert_eq!(members.len(), 2);
        assert!(
            members
                .iter()
                .all(|m| m.state == MemberState::Ready && m.restarts == 0)
        );
        let client = session.client("h").unwrap();
        assert_eq!(client.stats().retries, 0, "{:?}", client.stats());
    })
    .await;
}

/// An answer bigger than the service's `max_message_size` is refused on
/// the wire, by a thread instance over Flight and by a process instance
/// alike: the query fails at once (not retried) with an error naming the
/// option, and the service answers the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_message_limit_is_refused() {
    common::within(async {
        let session = RpcSession::builder()
            .serve_program(env!("CARGO_BIN_EXE_rpcop"))
            .build();
        for (name, isolation) in [("t", "thread', transport = 'flight"), ("p", "process")] {
            session
                .sql(&format!(
                    "CREATE RPC SERVICE {name} FOR FUNCTION repeat WITH (isolation = '{isolation}', \
                     max_message_size = '64KiB', retries = 3)"
                ))
                .await
                .unwrap();
            // 8 bytes of arguments, 200,000 bytes of answer
            let error = session
                .sql("SELECT length(repeat('ab', 100000)) AS n")
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("message length too large") && error.contains("max_message_size"),
                "{name}: {error}"
            );
            let retried = session
                .sql(&format!("SELECT retries FROM rpc_services() WHERE name = '{name}'"))
                .await
                .unwrap();
            assert_eq!(common::cells(&retried).unwrap(), vec![vec!["0".to_string()]]);
            // under the limit: answered
            let batches = session
                .sql("SELECT length(repeat('ab', 1000)) AS n")
                .await
                .unwrap();
            assert_eq!(common::cells(&batches).unwrap(), vec![vec!["2000".to_string()]]);
            session.sql(&format!("DROP RPC SERVICE {name}")).await.unwrap();
        }
    })
    .await;
}

/// An instance whose answer says its body lies in the caller's shared
/// memory, far outside it (a command instance is offered shared memory as
/// any instance on this host is): the request fails naming the bad
/// placement, nothing is read out of bounds, and the session serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_placed_outside_the_shared_ring_is_refused() {
    common::within(async {
        let session = hostile("misplaced", ", retries = 1").await;
        let e = session
            .sql("SELECT misplaced(value) FROM generate_series(1, 10)")
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(
            e.contains("a body placed at slot 0, offset 1099511627776, length 4096 lies outside the shared ring"),
            "{e}"
        );
        let still = session.sql("SELECT upper('still here')").await.unwrap();
        assert_eq!(
            common::cells(&still).unwrap(),
            vec![vec!["STILL HERE".to_string()]]
        );
    })
    .await;
}
