//! One protocol, proved by every implementation: the same checks of
//! `docs/protocol.md`, run with a plain Flight client against rpcop's Rust
//! instance (`rpcop serve`), the Python kit (`python/`), and, for the part
//! of the contract it has, a RisingWave arrow-udf server.
//!
//! Each implementation hosts `upper(VARCHAR)` and `chr(BIGINT)` (which
//! fails on -1) (`implementations.rs`). The checks are in `checks.rs`. The
//! test prints a table of checks by implementation and fails if any check
//! an implementation should pass fails.

#![allow(clippy::unwrap_used)]

mod checks;
#[path = "../common/mod.rs"]
mod common;
mod implementations;

use std::collections::BTreeMap;

use checks::*;
use common::within;
use implementations::{Implementation, client, start};

type CheckFn = for<'a> fn(&'a mut Target) -> futures::future::BoxFuture<'a, Outcome>;

/// A check: its name, which implementations it applies to, and its run.
type Check = (&'static str, fn(Implementation) -> bool, CheckFn);

macro_rules! checks {
    ($( $name:ident: $applies:expr ),+ $(,)?) => {
        vec![ $( (stringify!($name), $applies as fn(Implementation) -> bool,
                  (|t| Box::pin($name(t))) as CheckFn) ),+ ]
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_implementation_follows_the_protocol() {
    let all = |_: Implementation| true;
    let rpcop = Implementation::speaks_rpcop;
    let plain = |i: Implementation| !i.speaks_rpcop();
    let checks: Vec<Check> = checks![
        describes_functions: all,
        lists_functions: all,
        schema_matches_info: rpcop,
        protocol_version: all,
        answers_in_order: all,
        unnumbered_requests: all,
        zero_rows: all,
        coerces_arguments: all,
        a_failure_names_its_request: rpcop,
        a_failure_fails_the_exchange: plain,
        requires_the_token: rpcop,
        unknown_function: rpcop,
        actions: rpcop,
        bad_app_metadata: rpcop,
        drain: rpcop,
    ];
    let mut table: BTreeMap<(&str, Implementation), Outcome> = BTreeMap::new();
    for implementation in [
        Implementation::Rust,
        Implementation::Kit,
        Implementation::ArrowUdf,
    ] {
        let server = start(implementation);
        let mut target = Target {
            implementation,
            client: within(client(&server.address)).await,
        };
        for (name, applies, run) in &checks {
            if applies(implementation) {
                let outcome = within(run(&mut target)).await;
                table.insert((name, implementation), outcome);
            }
        }
    }
    let mut report = String::from("check | Rust | kit | arrow-udf\n");
    for (name, _, _) in &checks {
        let cell = |i| match table.get(&(*name, i)) {
            Some(Ok(())) => "pass",
            Some(Err(_)) => "FAIL",
            None => "n/a",
        };
        report.push_str(&format!(
            "{name} | {} | {} | {}\n",
            cell(Implementation::Rust),
            cell(Implementation::Kit),
            cell(Implementation::ArrowUdf)
        ));
    }
    println!("{report}");
    let failures: Vec<String> = table
        .iter()
        .filter_map(|((name, i), outcome)| {
            outcome
                .as_ref()
                .err()
                .map(|e| format!("{name} on {i:?}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{report}\n{}", failures.join("\n"));
}
