//! SQL through services, where sqllogictest cannot reach: annotated Rust
//! functions, start-up paid once, DDL while a query runs, `on_error`, and
//! `EXPLAIN ANALYZE` metrics.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::within;
use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use rpcop::RpcFunction;
use rpcop::RpcSession;

/// `triple(x) = 3x`: a user's own function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Triple(Signature);

impl ScalarUDFImpl for Triple {
    fn name(&self) -> &str {
        "triple"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let x = args.args[0].to_array(args.number_rows)?;
        let x = x.as_primitive::<Int64Type>();
        let out: Int64Array = x.iter().map(|v| v.map(|v| v * 3)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn triple() -> ScalarUDF {
    ScalarUDF::new_from_impl(Triple(Signature::exact(
        vec![DataType::Int64],
        Volatility::Immutable,
    )))
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

async fn explain(session: &RpcSession, sql: &str) -> String {
    text(&session.sql(&format!("EXPLAIN {sql}")).await.unwrap())
}

fn ints(batches: &[RecordBatch]) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Int64Type>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotated_rust_function_starts_its_service_once() {
    within(async {
        let session = RpcSession::builder()
            .function(RpcFunction::new(triple()).parallelism(2).batch_size(100))
            .build();
        assert!(session.service("triple").is_none());
        let sql = "SELECT triple(value) FROM generate_series(1, 1000) ORDER BY 1";
        let first = session.sql(sql).await.unwrap();
        let region = session
            .service("triple")
            .expect("started by the first query");
        assert_eq!(region.options().parallelism, 2);
        let second = session.sql(sql).await.unwrap();
        // the same warm region: no new instance, one load per instance
        assert!(Arc::ptr_eq(&region, &session.service("triple").unwrap()));
        let stats = region.stats().await;
        assert_eq!(stats.len(), 2);
        for (member, stats) in &stats {
            let stats = stats.as_ref().unwrap();
            assert_eq!((stats.loads, member.restarts), (1, 0), "{stats:?}");
        }
        let served: u64 = stats.iter().map(|(_, s)| s.as_ref().unwrap().rows).sum();
        assert_eq!(served, 2000);
        assert_eq!(ints(&first), ints(&second));
        assert_eq!(
            ints(&first),
            (1..=1000).map(|v| Some(v * 3)).collect::<Vec<_>>()
        );
        let show = text(&session.sql("SHOW RPC SERVICES").await.unwrap());
        assert!(
            show.contains("| triple | implicit | triple    | 2/2"),
            "{show}"
        );

        // rewriting off: in-process, the same answers, no request sent
        session.sql("SET rpcop.rewrite = false").await.unwrap();
        assert!(!explain(&session, sql).await.contains("RpcProxy"));
        assert_eq!(ints(&session.sql(sql).await.unwrap()), ints(&first));
        let served_after: u64 = region
            .stats()
            .await
            .iter()
            .map(|(_, s)| s.as_ref().unwrap().rows)
            .sum();
        assert_eq!(served_after, 2000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_shows_the_proxy_metrics() {
    within(async {
        let session = RpcSession::new();
        session
            .sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (batch_size = 100)")
            .await
            .unwrap();
        let plan = text(
            &session
                .sql("EXPLAIN ANALYZE SELECT upper(s) FROM (SELECT 'row ' || value AS s FROM generate_series(1, 1000))")
                .await
                .unwrap(),
        );
        assert!(plan.contains("RpcProxyExec: service=text"), "{plan}");
        for metric in ["output_rows=1.00 K", "requests=10", "retries=0", "errors=0", "in_flight_time=", "wait_time="] {
            assert!(plan.contains(metric), "{metric} missing in {plan}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_above_the_proxy_keeps_the_rows_past_it_from_the_service() {
    within(async {
        let session = RpcSession::new();
        session
            .sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (batch_size = 100)")
            .await
            .unwrap();
        let query = "SELECT upper(s) AS u FROM \
                     (SELECT 'row ' || value AS s FROM generate_series(1, 100000)) LIMIT 3";
        let plan = explain(&session, query).await;
        // the limit sits below the proxy: the service sees 3 rows
        let proxy = plan.find("RpcProxyExec").unwrap();
        let limit = plan.rfind("LimitExec").unwrap();
        assert!(limit > proxy, "{plan}");
        // it tells optimizers it keeps row counts: one row out per row in
        let physical = session
            .context()
            .sql(query)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut nodes = vec![physical];
        let mut effects = Vec::new();
        while let Some(node) = nodes.pop() {
            if node.name() == "RpcProxyExec" {
                effects.push(matches!(
                    node.cardinality_effect(),
                    CardinalityEffect::Equal
                ));
            }
            nodes.extend(node.children().into_iter().cloned());
        }
        assert_eq!(effects, [true]);
        let rows = text(&session.sql(query).await.unwrap());
        assert!(rows.contains("| ROW 3 |"), "{rows}");
        let sent = text(
            &session
                .sql("SELECT requests, rows FROM rpc_services() WHERE name = 'text'")
                .await
                .unwrap(),
        );
        assert!(sent.contains("| 1        | 3    |"), "{sent}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_null_answers_null_for_a_failed_request_only() {
    within(async {
        let session = RpcSession::new();
        session
            .sql("CREATE TABLE t (s VARCHAR) AS VALUES ('2026-01-01T00:00:00'), ('not a time'), ('2026-01-02T00:00:00')")
            .await
            .unwrap();
        session
            .sql("CREATE RPC SERVICE time FOR FUNCTION to_timestamp WITH (parallelism = 2, batch_size = 1, retries = 3, on_error = 'fail')")
            .await
            .unwrap();
        let sql = "SELECT to_timestamp(s) AS ts FROM t";
        let e = session.sql(sql).await.unwrap_err().strip_backtrace();
        // the function's answer for that value, which any instance would give:
        // not retried
        assert!(
            e.contains("service 'time' rejected a request for function 'to_timestamp'")
                && e.contains("Error parsing timestamp from 'not a time'")
                && !e.contains("attempt(s)"),
            "{e}"
        );

        session
            .sql("ALTER RPC SERVICE time SET (on_error = 'null')")
            .await
            .unwrap();
        let through = text(&session.sql(sql).await.unwrap());
        let plan = text(&session.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap());
        assert!(plan.contains("errors=1,") || plan.contains("errors=1 "), "{plan}");
        assert!(
            through.contains("| 2026-01-01T00:00:00 |")
                && through.contains("|                     |")
                && through.contains("| 2026-01-02T00:00:00 |"),
            "{through}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_under_on_error_null_is_counted_and_frees_its_slot() {
    within(async {
        let session = RpcSession::new();
        session
            .sql("CREATE RPC SERVICE slow FOR FUNCTION model_sim WITH (timeout = '200ms', retries = 0, on_error = 'null')")
            .await
            .unwrap();
        // 600 ms per batch: the caller gives up after 200 ms, answers NULL
        // (over a column: a call of constants would be tried while planning)
        let answer = text(
            &session
                .sql("SELECT model_sim(s, 600, 0) AS r FROM (VALUES ('x')) t(s)")
                .await
                .unwrap(),
        );
        assert!(answer.contains("|   |"), "{answer}");
        let services = text(
            &session
                .sql("SELECT requests, errors FROM rpc_services() WHERE name = 'slow'")
                .await
                .unwrap(),
        );
        assert!(services.contains("| 1        | 1      |"), "{services}");
        // the instance finishes the abandoned request: in_flight goes back to 0
        loop {
            let instances = text(
                &session
                    .sql("SELECT in_flight, requests FROM rpc_instances('slow')")
                    .await
                    .unwrap(),
            );
            if instances.contains("| 0         | 1        |") {
                break;
            }
            tokio::task::yield_now().await;
        }
        // and serves the next request
        let answer = text(&session.sql("SELECT model_sim('x', 0, 0) AS r").await.unwrap());
        assert!(!answer.contains("|   |"), "{answer}");
        // ALTER gives the service a new client; the counts go on
        session
            .sql("ALTER RPC SERVICE slow SET (timeout = '5s')")
            .await
            .unwrap();
        let services = text(
            &session
                .sql("SELECT requests, errors FROM rpc_services() WHERE name = 'slow'")
                .await
                .unwrap(),
        );
        assert!(services.contains("| 2        | 1      |"), "{services}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_while_a_query_runs_never_loses_rows_or_hangs() {
    within(async {
        let session = Arc::new(RpcSession::new());
        session
            .sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2, batch_size = 500, max_in_flight = 2)")
            .await
            .unwrap();
        let sql = "SELECT count(*), count(DISTINCT u) FROM (SELECT upper('row ' || value) AS u FROM generate_series(1, 400000))";
        // scaling out and in while the query runs
        let query = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.sql(sql).await }
        });
        session.sql("ALTER RPC SERVICE text SET (parallelism = 4)").await.unwrap();
        session.sql("ALTER RPC SERVICE text SET (parallelism = 1)").await.unwrap();
        let answer = text(&query.await.unwrap().unwrap());
        assert!(answer.contains("| 400000   | 400000"), "{answer}");

        // dropping while the query runs: the query finishes through the
        // service, and DROP returns once it has
        let client = session.client("text").unwrap();
        let query = tokio::spawn({
            let session = Arc::clone(&session);
            async move { session.sql(sql).await }
        });
        let started = client.stats().requests;
        while client.stats().requests < started + 10 {
            tokio::task::yield_now().await;
        }
        session.sql("DROP RPC SERVICE text").await.unwrap();
        let answered = client.stats().requests;
        let answer = text(&query.await.unwrap().unwrap());
        assert!(answer.contains("| 400000   | 400000"), "{answer}");
        // every request of the query was answered before DROP returned
        assert_eq!(client.stats().requests, answered);
        assert_eq!(client.stats().failures, 0, "{:?}", client.stats());
        // and the function is back in-process
        assert!(!explain(&session, sql).await.contains("RpcProxy"));
    })
    .await;
}

/// `rpcop serve` started elsewhere (here: a child process), attached by
/// `CREATE RPC SERVICE ... ENDPOINTS`.
struct Served {
    child: std::process::Child,
    address: String,
    token_file: std::path::PathBuf,
}

impl Served {
    fn start(functions: &[&str]) -> Self {
        let token_file = std::env::temp_dir().join(format!(
            "rpcop-endpoints-{}-{}.token",
            std::process::id(),
            functions.join("-")
        ));
        std::fs::write(&token_file, "s3cret-token\n").unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rpcop"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--token-file"])
            .arg(&token_file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for function in functions {
            command.args(["--function", function]);
        }
        let mut child = command.spawn().unwrap();
        let (line, _) = common::first_line_within(
            std::io::BufReader::new(child.stdout.take().unwrap()),
            common::FIRST_LINE,
        )
        .expect("rpcop serve prints its address");
        Self {
            child,
            address: line.trim().to_string(),
            token_file,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.token_file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_attach_to_instances_started_elsewhere() {
    within(async {
        let a = Served::start(&["upper", "sha256"]);
        let b = Served::start(&["upper", "sha256"]);
        let session = RpcSession::new();
        let token = a.token_file.display();
        session
            .sql(&format!(
                "CREATE RPC SERVICE remote FOR FUNCTION upper, sha256 ENDPOINTS ('{}', '{}') \
                 WITH (token_file = '{token}', load_balance = 'round_robin', batch_size = 10)",
                a.address, b.address
            ))
            .await
            .unwrap();
        let services = text(
            &session
                .sql("SELECT name, isolation, instances FROM rpc_services() WHERE name = 'remote'")
                .await
                .unwrap(),
        );
        assert!(services.contains("| remote | remote    | 2/2       |"), "{services}");
        let sql = "SELECT count(DISTINCT u), min(u) FROM (SELECT upper('x' || value) AS u FROM generate_series(1, 100))";
        assert!(explain(&session, sql).await.contains("RpcProxyExec: service=remote, policy=round_robin"));
        let answer = text(&session.sql(sql).await.unwrap());
        assert!(answer.contains("| 100 ") && answer.contains("| X1 "), "{answer}");
        // both endpoints served, round robin
        let instances = text(&session.sql("SELECT requests FROM rpc_instances('remote')").await.unwrap());
        assert_eq!(instances.matches("| 5        |").count(), 2, "{instances}");
        let typed = text(&session.sql("SELECT arrow_typeof(rpc_call('remote', 'sha256', 'a')) AS t").await.unwrap());
        assert!(typed.contains("Binary"), "{typed}");
        let e = session
            .sql("ALTER RPC SERVICE remote SET (retries = 7, parallelism = 3)")
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(e.contains("one per endpoint") && e.contains("DROP it and CREATE it with other ENDPOINTS"), "{e}");
        // a refused ALTER changes nothing, not even the options it listed first
        let retries = text(&session.sql("SELECT value FROM rpc_options('remote') WHERE option = 'retries'").await.unwrap());
        assert!(retries.contains("| 3     |"), "{retries}");
        // DROP leaves the instances running: they are not ours
        session.sql("DROP RPC SERVICE remote").await.unwrap();
        let again = format!(
            "CREATE RPC SERVICE again FOR FUNCTION upper ENDPOINTS ('{}') WITH (token_file = '{token}')",
            a.address
        );
        session.sql(&again).await.unwrap();
        session.sql("DROP RPC SERVICE again").await.unwrap();

        // mistakes: a function the endpoint does not host, a wrong token, nobody there
        let e = session
            .sql(&format!(
                "CREATE RPC SERVICE r FOR FUNCTION lower ENDPOINTS ('{}') WITH (token_file = '{token}')",
                a.address
            ))
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(e.contains("cannot serve function 'lower'") && e.contains("unknown function 'lower'"), "{e}");
        let wrong = std::env::temp_dir().join(format!("rpcop-wrong-{}.token", std::process::id()));
        std::fs::write(&wrong, "not-the-token").unwrap();
        let e = session
            .sql(&format!(
                "CREATE RPC SERVICE r FOR FUNCTION upper ENDPOINTS ('{}') WITH (token_file = '{}', timeout = '2s')",
                a.address,
                wrong.display()
            ))
            .await
            .unwrap_err()
            .strip_backtrace();
        let _ = std::fs::remove_file(&wrong);
        // a wrong token is told apart from nobody listening
        assert!(
            e.contains(&format!("{} refused the token", a.address))
                && e.contains("give the token its instances were started with"),
            "{e}"
        );
        let e = session
            .sql(&format!(
                "CREATE RPC SERVICE r FOR FUNCTION upper ENDPOINTS ('http://127.0.0.1:1') WITH (token_file = '{token}', timeout = '1s')"
            ))
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(
            e.contains("http://127.0.0.1:1 cannot be reached (after ")
                && e.contains("Connection refused")
                && !e.contains("within 1s"),
            "{e}"
        );
        assert!(session.service("r").is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implicit_service_that_cannot_start_fails_the_query_saying_what_to_do() {
    within(async {
        // `rpcop serve` does not know the user's function, so a process
        // instance of it cannot start
        let session = RpcSession::builder()
            .function(RpcFunction::new(triple()).isolation(rpcop::Isolation::Process))
            .serve_program(env!("CARGO_BIN_EXE_rpcop"))
            .build();
        let sql = "SELECT triple(value) FROM generate_series(1, 3)";
        let e = session.sql(sql).await.unwrap_err().strip_backtrace();
        assert!(
            e.contains("could not start the implicit service of the annotated function 'triple'")
                && e.contains("SET rpcop.rewrite = false"),
            "{e}"
        );
        assert!(session.service("triple").is_none());
        // the way out it names works: in-process
        session.sql("SET rpcop.rewrite = false").await.unwrap();
        assert_eq!(
            ints(&session.sql(sql).await.unwrap()),
            [Some(3), Some(6), Some(9)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_queries_start_one_implicit_service() {
    within(async {
        let session = Arc::new(
            RpcSession::builder()
                .function(RpcFunction::new(triple()).parallelism(2).batch_size(100))
                .build(),
        );
        let sql = "SELECT triple(value) FROM generate_series(1, 1000) ORDER BY 1";
        let queries: Vec<_> = (0..8)
            .map(|_| {
                let session = Arc::clone(&session);
                tokio::spawn(async move { session.sql(sql).await })
            })
            .collect();
        let expected: Vec<Option<i64>> = (1..=1000).map(|v| Some(v * 3)).collect();
        for query in queries {
            assert_eq!(ints(&query.await.unwrap().unwrap()), expected);
        }
        // one region served every row, each instance loaded once: a
        // second start would have replaced it, and its rows gone with it
        let region = session.service("triple").expect("started");
        let stats = region.stats().await;
        assert_eq!(stats.len(), 2);
        let mut served = 0;
        for (member, stats) in &stats {
            let stats = stats.as_ref().unwrap();
            assert_eq!((stats.loads, member.restarts), (1, 0), "{stats:?}");
            served += stats.rows;
        }
        assert_eq!(served, 8000);
        let counts = text(
            &session
                .sql("SELECT requests, rows, errors, retries, restarts FROM rpc_services() WHERE name = 'triple'")
                .await
                .unwrap(),
        );
        assert!(counts.contains("| 80       | 8000 | 0      | 0       | 0        |"), "{counts}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_starts_the_implicit_service_it_names() {
    within(async {
        let session = RpcSession::builder()
            .function(RpcFunction::new(triple()).parallelism(2))
            .build();
        let show = text(&session.sql("SHOW RPC SERVICES").await.unwrap());
        assert!(
            show.contains("| triple | implicit | triple    | not started"),
            "{show}"
        );
        // planned by DataFusion's context past the session, nothing starts
        // it: the error says what to do
        let e = session
            .context()
            .sql("SELECT rpc_call('triple', 'triple', 1)")
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(
            e.contains("RPC service 'triple' has not started: it is the implicit service")
                && e.contains("run one, or CREATE RPC SERVICE"),
            "{e}"
        );
        // typed by the running service, so started before it is planned;
        // in EXPLAIN too, and in a subquery
        let sql = "SELECT rpc_call('triple', 'triple', value) FROM generate_series(1, 5) \
                   WHERE value IN (SELECT value FROM generate_series(1, 5)) ORDER BY 1";
        let answer = session.sql(sql).await.unwrap();
        assert_eq!(ints(&answer), [3, 6, 9, 12, 15].map(Some));
        let region = session.service("triple").expect("started by rpc_call");
        assert_eq!(region.members().len(), 2);
        // a name that is no service still says what there is
        let e = session
            .sql("SELECT rpc_call('nope', 'triple', 1)")
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(e.contains("no RPC service named 'nope'"), "{e}");
    })
    .await;
}
