//! Every hostable built-in answers through a service exactly as DataFusion
//! answers in-process: the same result field (name, type, nullability,
//! metadata) and the same value in every row.
//!
//! The suite is generated over DataFusion's function registry, not written
//! by hand. For each scalar built-in a service may host, the argument types
//! it accepts are found by asking DataFusion's own coercion
//! (`fields_with_udf`) about a pool of Arrow types: every width of integer,
//! float and decimal, `Utf8`/`LargeUtf8`/`Utf8View`, the binaries, dates,
//! times, timestamps with and without a zone, intervals, lists of every
//! kind, structs, maps, dictionaries, a dictionary of dictionaries, and
//! dictionaries nested in lists and structs. Each accepted argument list is
//! called with every argument a column, and with each argument in turn a
//! literal (two values and a typed NULL), because DataFusion shapes some result types by literal values
//! (`round(d, -1)`). The columns hold nulls and arrive in batches with an
//! empty one among them; the calls run again over a table with no rows.
//!
//! One session answers twice: through the service (`rpcop.rewrite` on,
//! every hostable built-in in one service reached over Arrow Flight), and
//! in-process (`rpcop.rewrite` off). A call that fails in-process must fail
//! through the service too.

#![allow(clippy::unwrap_used)]

mod calls;
#[path = "../common/mod.rs"]
mod common;
mod pool;

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, new_empty_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Expr;
use futures::{FutureExt, StreamExt, TryStreamExt};
use rpcop::RpcSession;

use calls::{accepted, calls, hostable};
use pool::{Batches, Column, pool, table};

/// What a query answered: each output column's field and values, or the
/// error.
type Answer = Result<Vec<(FieldRef, ArrayRef)>, String>;

async fn answer(session: &RpcSession, table: &str, calls: &[Expr]) -> Answer {
    let run = async {
        let plan = session
            .context()
            .table(table)
            .await?
            .select(calls.to_vec())?
            .into_unoptimized_plan();
        let stream = session
            .execute_logical_plan(plan)
            .await?
            .execute_stream()
            .await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    };
    // some built-ins panic on some inputs in-process; a panic is an answer
    // too (the service answers it as an error)
    let (schema, batches) = std::panic::AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .map_err(|_| "panicked".to_string())?
        .map_err(|e| e.strip_backtrace())?;
    Ok(schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let values = if parts.is_empty() {
                new_empty_array(field.data_type())
            } else {
                concat(&parts).unwrap()
            };
            (Arc::clone(field), values)
        })
        .collect())
}

/// Why the answers of `calls` differ, or `None`.
fn difference(hosted: &Answer, local: &Answer) -> Option<String> {
    match (hosted, local) {
        (Ok(h), Ok(l)) => {
            for ((hf, hv), (lf, lv)) in h.iter().zip(l) {
                if hf != lf {
                    return Some(format!(
                        "field through the service {hf:?}\n    in-process {lf:?}"
                    ));
                }
                if hv != lv {
                    return Some(format!(
                        "{}: values through the service {hv:?}\n    in-process {lv:?}",
                        lf.name()
                    ));
                }
            }
            (h.len() != l.len()).then(|| "a different number of columns".to_string())
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(l)) => Some(format!("answered through the service, in-process: {l}")),
        (Err(h), Ok(_)) => Some(format!("failed through the service: {h}")),
    }
}

/// What comparing some calls found.
#[derive(Default)]
struct Tally {
    /// Calls that fail both ways (an error, or a panic in-process).
    failing: usize,
    /// Calls that fail in-process only because DataFusion evaluates them on
    /// an empty batch too (see [`compare`]).
    empty_batch: BTreeSet<String>,
    differences: Vec<String>,
}

/// The calls of `calls` that answer in-process over `table`, and those
/// that fail (one query for all, then one per call if that fails).
async fn split_by_outcome(
    local: &RpcSession,
    table: &str,
    calls: &[Expr],
) -> (Vec<Expr>, Vec<Expr>) {
    if answer(local, table, calls).await.is_ok() {
        return (calls.to_vec(), Vec::new());
    }
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for call in calls {
        if answer(local, table, std::slice::from_ref(call))
            .await
            .is_ok()
        {
            good.push(call.clone());
        } else {
            bad.push(call.clone());
        }
    }
    (good, bad)
}

/// Compares the answers of `calls` through the service and in-process over
/// `table`. The calls that answer in-process are compared together, in one
/// query (in halves if the service fails it, down to the calls it fails);
/// each call that fails in-process must fail through the service too.
/// Returns the calls that answer in-process.
async fn compare(
    [hosted, local, clean]: [&RpcSession; 3],
    table: &str,
    calls: &[Expr],
    tally: &mut Tally,
) -> Vec<Expr> {
    let (good, bad) = split_by_outcome(local, table, calls).await;
    let describe = |calls: &[Expr], d: String| {
        let names: Vec<String> = calls.iter().map(|c| c.schema_name().to_string()).collect();
        format!("{table}: {}\n    {d}", names.join(", "))
    };
    let mut pending = vec![good.clone()];
    while let Some(calls) = pending.pop().filter(|c| !c.is_empty()) {
        let through = answer(hosted, table, &calls).await;
        if through.is_err() && calls.len() > 1 {
            let half = calls.len() / 2;
            pending.push(calls[half..].to_vec());
            pending.push(calls[..half].to_vec());
            continue;
        }
        let here = answer(local, table, &calls).await;
        if let Some(d) = difference(&through, &here) {
            tally.differences.push(describe(&calls, d));
        }
    }
    tally.failing += bad.len();
    // each on its own (a failing call fails its query), several at once
    let answers: Vec<(Expr, Answer)> = futures::stream::iter(bad)
        .map(|call| async move {
            let through = answer(hosted, table, std::slice::from_ref(&call)).await;
            (call, through)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (call, through) in answers {
        if through.is_err() {
            continue;
        }
        // DataFusion evaluates a function on the empty batch too, and some
        // fail there only (a panic, "Empty iterator", a row out of nothing);
        // a service is never sent an empty request. Such a call answers
        // in-process over the same rows without the empty batch (`clean`), and
        // must answer the same as through the service.
        let calls = std::slice::from_ref(&call);
        let clean = answer(clean, table, calls).await;
        match difference(&through, &clean) {
            None if clean.is_ok() => {
                tally.empty_batch.insert(format!("{}", call.schema_name()));
            }
            _ => {
                let here = answer(local, table, calls).await;
                tally.differences.push(describe(
                    calls,
                    format!(
                        "answered through the service, in-process: {:?}; without the empty batch: {:?}",
                        here.err(),
                        difference(&through, &clean)
                    ),
                ));
            }
        }
    }
    good
}

/// `calls` in groups that DataFusion can select together: no two of a
/// group with the same name (literals of different types print alike).
fn groups(calls: Vec<Expr>) -> Vec<Vec<Expr>> {
    let mut groups: Vec<(BTreeSet<String>, Vec<Expr>)> = Vec::new();
    for call in calls {
        let name = call.schema_name().to_string();
        match groups.iter_mut().find(|(names, _)| !names.contains(&name)) {
            Some((names, group)) => {
                names.insert(name);
                group.push(call);
            }
            None => groups.push((BTreeSet::from([name]), vec![call])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Requests the service has answered so far.
async fn requests(session: &RpcSession) -> u64 {
    let region = session.service("builtins").unwrap();
    region
        .stats()
        .await
        .iter()
        .filter_map(|(_, stats)| stats.as_ref().map(|s| s.requests))
        .sum()
}

/// A session over the pool's tables `v` (rows) and `e` (no rows), in
/// batches with an empty one among them or not.
fn session(pool: &[Column], empty_batches: bool) -> RpcSession {
    let session = RpcSession::builder()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    let (rows, none) = if empty_batches {
        (Batches::WithEmpty, Batches::None)
    } else {
        (Batches::Rows, Batches::Nothing)
    };
    for (name, batches) in [("v", rows), ("e", none)] {
        session
            .context()
            .register_table(name, Arc::new(table(pool, batches)))
            .unwrap();
    }
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostable_builtin_answers_as_in_process() {
    let pool = pool();
    let (hosted, local) = (session(&pool, true), session(&pool, true));
    // the same rows without empty batches (see `compare`)
    let clean = session(&pool, false);
    let sessions = [&hosted, &local, &clean];

    // one service for every built-in it accepts; the few it refuses
    // (`now()`: DataFusion plans it away) say so, naming the function
    let mut functions = hostable(&hosted);
    loop {
        let names: Vec<&str> = functions.iter().map(|f| f.name()).collect();
        let create = format!(
            "CREATE RPC SERVICE builtins FOR FUNCTION {} WITH (transport = 'flight', parallelism = 2)",
            names.join(", ")
        );
        match hosted.sql(&create).await {
            Ok(_) => break,
            Err(error) => {
                let message = error.to_string();
                let before = functions.len();
                functions.retain(|f| !message.contains(&format!("{}()", f.name())));
                assert!(
                    functions.len() < before,
                    "CREATE RPC SERVICE failed: {message}"
                );
            }
        }
    }
    assert!(
        functions.len() >= 150,
        "only {} built-ins hosted",
        functions.len()
    );

    let (mut kinds, mut cases, mut groups_run) = (0, 0, 0);
    let mut tally = Tally::default();
    let before = requests(&hosted).await;
    // `RPCOP_BUILTINS=upper,round`: only these (to look into a difference)
    let only: Option<Vec<String>> = std::env::var("RPCOP_BUILTINS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    for udf in &functions {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == udf.name()))
        {
            continue;
        }
        let lists = accepted(udf, &pool);
        kinds += lists.len();
        let calls: Vec<Expr> = lists
            .iter()
            .flat_map(|types| calls(udf, &pool, types))
            .collect();
        cases += calls.len();
        for group in groups(calls) {
            let valid = common::within(compare(sessions, "v", &group, &mut tally)).await;
            // over no rows, the calls that answer over rows: a call that
            // fails in-process for its argument types alone (array_position
            // of a NULL-typed column) fails there even on an empty batch,
            // while through a service no row means no request
            common::within(compare(sessions, "e", &valid, &mut tally)).await;
            groups_run += 1;
        }
    }
    let served = requests(&hosted).await - before;
    if !tally.empty_batch.is_empty() {
        let names: Vec<&str> = tally.empty_batch.iter().map(String::as_str).collect();
        println!(
            "{} calls fail in-process only on the empty batch DataFusion evaluates them on \
             (a service gets no empty request): {}",
            names.len(),
            names.join(", ")
        );
    }
    println!(
        "{} built-ins hosted; {kinds} argument-type lists, {cases} calls (columns and literals), \
         each over 6 rows in 3 batches (one empty) and over no rows, in {groups_run} groups: \
         {} calls failing both ways, {served} requests answered by the service, {} differences",
        functions.len(),
        tally.failing,
        tally.differences.len()
    );
    assert!(
        tally.differences.is_empty(),
        "{} calls answer differently through the service:\n{}",
        tally.differences.len(),
        tally
            .differences
            .iter()
            .map(|d| d.chars().take(600).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the comparison says something only if calls reached the service
    assert!(
        served as usize >= functions.len(),
        "only {served} requests reached the service for {} functions",
        functions.len()
    );
    assert!(tally.failing > 0, "no call fails: errors are not compared");
}
