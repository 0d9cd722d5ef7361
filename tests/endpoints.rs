//! Remote endpoints that die and come back, for every protocol: the dead
//! one is marked, skipped (queries go on through the other), probed with
//! backoff, and taken back once it answers again; `DESCRIBE` shows it all.
//! The servers are processes this test starts itself, as someone else
//! would, on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command};

use common::{python, python_tests, spawn_server, within};
use datafusion::arrow::util::pretty::pretty_format_batches;
use rpcop::{MemberState, RpcSession};

/// A server of `protocol` hosting `gcd` on `bind` (`127.0.0.1:0` for any
/// port), as its address `http://127.0.0.1:port`.
fn serve(protocol: &str, bind: &str, token_file: &std::path::Path) -> (Child, String) {
    let mut command = match protocol {
        "rpcop" => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_rpcop"));
            command
                .args(["serve", "--function", "gcd", "--bind", bind, "--token-file"])
                .arg(token_file);
            command
        }
        other => {
            let script = match other {
                "arrow-udf" => "arrow_udf_server.py",
                _ => "databend_server.py",
            };
            let mut command = Command::new(python());
            command.args([script, bind]).current_dir(python_tests());
            command
        }
    };
    spawn_server(&mut command)
}

async fn text(session: &RpcSession, sql: &str) -> String {
    pretty_format_batches(&session.sql(sql).await.unwrap())
        .unwrap()
        .to_string()
}

/// Waits until the members of service `e` satisfy `done`.
async fn members_until(session: &RpcSession, done: impl Fn(&[rpcop::Member]) -> bool) {
    let region = session.service("e").unwrap();
    let mut watch = region.membership();
    loop {
        if done(&watch.borrow_and_update().members) {
            return;
        }
        watch.changed().await.unwrap();
    }
}

async fn dies_and_returns(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "endpoint-token\n").unwrap();
    let (mut a, a_address) = serve(protocol, "127.0.0.1:0", &token_file);
    let (mut b, b_address) = serve(protocol, "127.0.0.1:0", &token_file);
    let session = RpcSession::builder().build();
    let token = if protocol == "rpcop" {
        format!(", token_file = '{}'", token_file.display())
    } else {
        String::new()
    };
    within(async {
        session
            .sql(&format!(
                "CREATE RPC SERVICE e FOR FUNCTION gcd ENDPOINTS ('{a_address}', '{b_address}') \
                 WITH (protocol = '{protocol}', batch_size = 50{token})"
            ))
            .await
            .unwrap();
        let query = "SELECT sum(gcd(value, 12)) FROM generate_series(1, 1000)";
        let expected = text(&session, query).await;
        // its instances are its endpoints: it cannot autoscale
        let refused = session
            .sql("ALTER RPC SERVICE e SET (max_parallelism = 4)")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("option 'max_parallelism' does not apply to a service with ENDPOINTS"),
            "{refused}"
        );

        // one endpoint dies: marked, skipped, probed again and again
        a.kill().unwrap();
        a.wait().unwrap();
        members_until(&session, |members| {
            members
                .iter()
                .any(|m| m.state == MemberState::Restarting && m.last_error.is_some())
        })
        .await;
        let described = text(
            &session,
            "SELECT state, last_error FROM rpc_instances('e') WHERE state <> 'ready'",
        )
        .await;
        assert!(described.contains("restarting"), "{protocol}: {described}");
        // queries go on through the other
        for _ in 0..3 {
            assert_eq!(text(&session, query).await, expected, "{protocol}");
        }

        // it comes back on its address: taken back
        let bind = a_address.trim_start_matches("http://");
        let (back, back_address) = serve(protocol, bind, &token_file);
        a = back;
        assert_eq!(back_address, a_address);
        members_until(&session, |members| {
            members.len() == 2 && members.iter().all(|m| m.state == MemberState::Ready)
        })
        .await;
        let described = text(
            &session,
            "SELECT address, state FROM rpc_instances('e') ORDER BY address",
        )
        .await;
        assert_eq!(
            described.matches("| ready |").count(),
            2,
            "{protocol}: {described}"
        );
        // and serves again: with the other gone, every request goes to it
        b.kill().unwrap();
        b.wait().unwrap();
        members_until(&session, |members| {
            members
                .iter()
                .filter(|m| m.state == MemberState::Ready)
                .count()
                == 1
        })
        .await;
        assert_eq!(text(&session, query).await, expected, "{protocol}");
        let _ = a.kill();
        let _ = a.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcop_endpoints_die_and_return() {
    dies_and_returns("rpcop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_udf_endpoints_die_and_return() {
    dies_and_returns("arrow-udf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databend_endpoints_die_and_return() {
    dies_and_returns("databend").await;
}
