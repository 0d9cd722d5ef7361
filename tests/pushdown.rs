//! Filters DataFusion pushes into a table scan: a hosted call in one goes to
//! its service, not into the scan. Parquet takes a filter as `Inexact`
//! (the copy above it is what counts), a partitioned table's filter on its
//! partition column as `Exact` (the scan would have evaluated it alone).
//! Each result equals the same query with the rewrite off.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::within;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use rpcop::RpcSession;

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// Writes `docs` as Parquet under `dir`, one directory per `grp`
/// (`grp=news/`, ...), and declares it partitioned by `grp`.
async fn docs(session: &RpcSession, dir: &Path) {
    for (grp, ids) in [("news", 0..30), ("sports", 30..60), ("misc", 60..100)] {
        let rows: Vec<String> = ids
            .map(|id| {
                let body = ["election night", "a late goal", "lunch"][id % 3];
                format!("({id}, '{body} {id}')")
            })
            .collect();
        let path = dir.join(format!("grp={grp}")).join("part.parquet");
        session
            .sql(&format!(
                "COPY (SELECT column1 AS id, column2 AS body FROM (VALUES {})) TO '{}' \
                 STORED AS PARQUET",
                rows.join(", "),
                path.display()
            ))
            .await
            .unwrap();
    }
    session
        .sql(&format!(
            "CREATE EXTERNAL TABLE docs (id BIGINT, body TEXT, grp TEXT) STORED AS PARQUET \
             PARTITIONED BY (grp) LOCATION '{}/'",
            dir.display()
        ))
        .await
        .unwrap();
}

/// The plan's scan lines: the table scan and the Parquet source.
fn scans(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter(|line| line.contains("TableScan") || line.contains("DataSourceExec"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_calls_in_filters_pushed_into_a_scan_go_to_the_service() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let session = RpcSession::new();
        docs(&session, dir.path()).await;
        session
            .sql("CREATE RPC SERVICE text FOR FUNCTION classify, upper")
            .await
            .unwrap();
        // the scan would evaluate its filters row by row
        session
            .sql("SET datafusion.execution.parquet.pushdown_filters = true")
            .await
            .unwrap();
        let queries = [
            // Inexact: Parquet prunes with it, the filter above decides
            "SELECT id FROM docs WHERE classify(body) = 'sports' ORDER BY id",
            // Exact: on the partition column, not among the columns returned,
            // under a limit
            "SELECT id FROM docs WHERE upper(grp) = 'SPORTS' ORDER BY id",
            "SELECT id FROM (SELECT id FROM docs WHERE upper(grp) = 'NEWS' LIMIT 5)",
            // both, and a filter the scan keeps
            "SELECT id, grp FROM docs WHERE upper(grp) <> 'MISC' AND classify(body) = 'news' \
             AND id > 3 ORDER BY id",
        ];
        for query in queries {
            let plan = text(&session.sql(&format!("EXPLAIN {query}")).await.unwrap());
            for scan in scans(&plan) {
                assert!(
                    !scan.contains("classify") && !scan.contains("upper"),
                    "a hosted call stayed in the scan of {query}:\n{plan}"
                );
            }
            assert!(plan.contains("RpcProxy: service=text"), "{plan}");
            let served = session.sql(query).await.unwrap();
            session.sql("SET rpcop.rewrite = false").await.unwrap();
            let in_process = session.sql(query).await.unwrap();
            session.sql("SET rpcop.rewrite = true").await.unwrap();
            let rows: usize = served.iter().map(RecordBatch::num_rows).sum();
            assert!(rows > 0, "{query}: no rows");
            // the limited query takes any 5 rows of its partition (ids 0..30)
            if query.contains("LIMIT") {
                assert_eq!(rows, 5, "{query}");
                for batch in &served {
                    let ids = batch.column(0).as_primitive::<Int64Type>();
                    assert!(ids.values().iter().all(|&id| id < 30), "{query}: {ids:?}");
                }
            } else {
                assert_eq!(text(&served), text(&in_process), "{query}");
            }
        }
    })
    .await;
}
