//! Ballista as the data plane (feature `ballista`): a scheduler and two
//! executors on loopback run rewritten queries (projection, filter,
//! aggregate, join) whose calls go to a service each executor starts
//! (`placement = 'per_executor'`) or to `ENDPOINTS` they share; every
//! result equals the same query run by a local session, and the same
//! query evaluated in-process with the rewrite off. Then the same with the
//! binary's processes: `rpcop ballista scheduler`, two `rpcop ballista
//! executor`s, and the shell with `--ballista`.

#![cfg(feature = "ballista")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn_server, within};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use rpcop::ballista::{ExecutorServices, remote_session, start_executor, start_scheduler};
use rpcop::{RpcSession, ServiceRegion};

/// The queries, one of each shape, with hosted calls (`classify` is a demo
/// function, `upper` and `left` built-ins; all go to the service).
const QUERIES: &[(&str, &str)] = &[
    (
        "projection",
        "SELECT id, classify(body) AS topic, upper(body) AS loud FROM docs ORDER BY id",
    ),
    (
        "filter",
        "SELECT id, body FROM docs WHERE classify(body) = 'sports' ORDER BY id",
    ),
    (
        "aggregate",
        "SELECT classify(body) AS topic, count(*) AS n, max(upper(body)) AS last \
         FROM docs GROUP BY classify(body) ORDER BY topic",
    ),
    (
        "guarded, with a constant argument",
        "SELECT id, CASE WHEN id % 3 = 0 THEN upper(body) ELSE left(body, 4) END AS t \
         FROM docs ORDER BY id",
    ),
    (
        "join",
        "SELECT d.id, g.label, classify(d.body) AS topic FROM docs d \
         JOIN groups g ON d.grp = g.grp WHERE upper(g.label) <> 'NONE' ORDER BY d.id",
    ),
];

/// Writes the tables as Parquet files in `dir` (two files for `docs`, so
/// the scan has two partitions) and returns the statements that declare
/// them.
async fn write_tables(dir: &Path) -> String {
    let ctx = datafusion::prelude::SessionContext::new();
    let bodies = [
        "election night results",
        "a late goal wins the match",
        "new chip released",
        "lunch with friends",
    ];
    for (file, range) in [("a", 0..40), ("b", 40..100)] {
        let rows: Vec<String> = range
            .map(|id: usize| {
                let body = bodies[id % bodies.len()];
                format!("({id}, '{body} {id}', 'g{}')", id % 5)
            })
            .collect();
        let path = dir.join("docs").join(format!("{file}.parquet"));
        ctx.sql(&format!(
            "COPY (SELECT column1 AS id, column2 AS body, column3 AS grp FROM (VALUES {})) \
             TO '{}' STORED AS PARQUET",
            rows.join(", "),
            path.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    }
    let path = dir.join("groups").join("all.parquet");
    ctx.sql(&format!(
        "COPY (SELECT column1 AS grp, column2 AS label FROM (VALUES ('g0', 'zero'), \
         ('g1', 'one'), ('g2', 'two'), ('g3', 'none'))) TO '{}' STORED AS PARQUET",
        path.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    format!(
        "CREATE EXTERNAL TABLE docs STORED AS PARQUET LOCATION '{}/docs/'; \
         CREATE EXTERNAL TABLE groups STORED AS PARQUET LOCATION '{}/groups/';",
        dir.display(),
        dir.display()
    )
}

/// The batches as a table, for comparing.
fn table(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// What `sql` answers on `session`, as a table.
async fn shown(session: &RpcSession, sql: &str) -> String {
    table(&session.sql(sql).await.unwrap())
}

/// An `rpcop serve` hosting `classify` and `upper` on a free loopback
/// port, with the token in `token_file`.
fn serve(token_file: &Path) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcop"));
    command
        .args([
            "serve",
            "--function",
            "classify",
            "--function",
            "upper",
            "--function",
            "left",
            "--bind",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(token_file);
    spawn_server(&mut command)
}

/// The distinct regions of the services an executor started.
fn regions(services: &ExecutorServices) -> Vec<Arc<ServiceRegion>> {
    let mut regions: Vec<Arc<ServiceRegion>> = Vec::new();
    for (_, region) in services.started() {
        if !regions.iter().any(|r| Arc::ptr_eq(r, &region)) {
            regions.push(region);
        }
    }
    regions
}

/// Kills the servers when the test ends, however it ends.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs every query on the cluster and locally; each result must be the
/// same, and not empty.
async fn compare(cluster: &RpcSession, local: &RpcSession, placement: &str) {
    for (shape, sql) in QUERIES {
        let remote = cluster
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{placement} {shape} on Ballista: {e}"));
        let here = local.sql(sql).await.unwrap();
        assert!(
            remote.iter().map(RecordBatch::num_rows).sum::<usize>() > 0,
            "{placement} {shape}: no rows"
        );
        assert_eq!(
            table(&remote),
            table(&here),
            "{placement} {shape}: Ballista and local differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewritten_queries_on_ballista_equal_local_runs_for_both_placements() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let tables = write_tables(dir.path()).await;

        let scheduler = start_scheduler(&ExecutorServices::default()).await.unwrap();
        // token files are read from the test's directory only
        let executors = [
            ExecutorServices::default().token_dir(dir.path()),
            ExecutorServices::default().token_dir(dir.path()),
        ];
        for services in &executors {
            start_executor(scheduler, 2, services).await.unwrap();
        }
        let cluster = remote_session(
            RpcSession::builder().with_demo_functions(),
            &format!("df://{scheduler}"),
        )
        .unwrap();
        let local = RpcSession::builder().with_demo_functions().build();
        for session in [&cluster, &local] {
            session.sql(&tables).await.unwrap();
        }

        // a service that lives in the session cannot be reached from an
        // executor: the plan is refused, saying what to do
        for session in [&cluster, &local] {
            session
                .sql("CREATE RPC SERVICE here FOR FUNCTION classify, upper, left")
                .await
                .unwrap();
        }
        let error = cluster.sql(QUERIES[0].1).await.unwrap_err().to_string();
        assert!(
            error.contains("placement = 'per_executor'") && error.contains("ENDPOINTS"),
            "{error}"
        );
        for session in [&cluster, &local] {
            session.sql("DROP RPC SERVICE here").await.unwrap();
        }

        // placement = 'per_executor': each executor starts its own
        for session in [&cluster, &local] {
            session
                .sql(
                    "CREATE RPC SERVICE sim FOR FUNCTION classify, upper, left \
                     WITH (placement = 'per_executor', batch_size = 16)",
                )
                .await
                .unwrap();
        }
        let explained = shown(&cluster, &format!("EXPLAIN {}", QUERIES[0].1)).await;
        assert!(explained.contains("RpcProxy: service=sim"), "{explained}");
        compare(&cluster, &local, "per_executor").await;
        let first: Vec<Vec<Arc<ServiceRegion>>> = executors.iter().map(regions).collect();
        // the results are those of the functions run in-process
        local.sql("SET rpcop.rewrite = false").await.unwrap();
        for (shape, sql) in QUERIES {
            let in_process = local.sql(sql).await.unwrap();
            assert_eq!(
                shown(&cluster, sql).await,
                table(&in_process),
                "{shape}: Ballista and in-process differ"
            );
        }
        // with the rewrite off, the executors evaluate the functions
        // themselves (the same functions as the client's)
        cluster.sql("SET rpcop.rewrite = false").await.unwrap();
        compare(&cluster, &local, "rewrite off").await;
        for session in [&cluster, &local] {
            session.sql("SET rpcop.rewrite = true").await.unwrap();
        }
        // new routing options on the client: the same services serve them
        cluster
            .sql("ALTER RPC SERVICE sim SET (batch_size = 8)")
            .await
            .unwrap();
        compare(&cluster, &local, "per_executor, altered").await;
        // each executor starts sim: the client holds no pool of its own,
        // and its listings, read here, say so
        assert!(
            cluster.service("sim").is_none(),
            "a pool of sim on the client"
        );
        let error = cluster.client("sim").unwrap_err().to_string();
        assert!(error.contains("executors only"), "{error}");
        let row = shown(
            &cluster,
            "SELECT name, instances FROM rpc_services() WHERE name = 'sim'",
        )
        .await;
        assert!(row.contains("| sim  | on executors |"), "{row}");
        let here = shown(&cluster, "SELECT count(*) AS n FROM rpc_instances('sim')").await;
        assert!(here.contains("| 0 |"), "{here}");
        // a listing query runs here, where sim has no instance to call
        let error = cluster
            .sql("SELECT upper(name) FROM rpc_services()")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("executors only"), "{error}");
        // a listing beside the cluster's tables cannot go to the cluster
        let error = cluster
            .sql("SELECT d.id, s.name FROM docs d CROSS JOIN rpc_services() s")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("in a query of its own"), "{error}");
        let placement = "SELECT s.name, o.value FROM rpc_services() s \
             JOIN rpc_options('sim') o ON o.option IN ('placement', 'batch_size') \
             WHERE s.name = 'sim' ORDER BY o.value";
        assert_eq!(
            shown(&cluster, placement).await,
            "+------+--------------+\n\
             | name | value        |\n\
             +------+--------------+\n\
             | sim  | 8            |\n\
             | sim  | per_executor |\n\
             +------+--------------+",
        );

        // one service per executor process, started once and kept across
        // tasks, queries and ALTER; together they served every call
        let mut requests = 0;
        for (services, first) in executors.iter().zip(&first) {
            let now = regions(services);
            assert!(now.len() <= 1, "more than one sim in an executor");
            for region in &now {
                assert!(
                    first.iter().all(|was| Arc::ptr_eq(was, region)),
                    "an executor started sim again"
                );
                assert_eq!(region.restarts(), 0, "the executor's service restarted");
            }
            for (client, _) in services.started() {
                assert_eq!(client.service(), "sim");
                requests += client.stats().requests;
            }
        }
        assert!(
            first.iter().any(|regions| !regions.is_empty()),
            "no executor started sim"
        );
        // 100 rows in requests of at most 16 (then 8), per query and call
        assert!(
            requests >= 50,
            "the executors' services got {requests} requests"
        );
        for session in [&cluster, &local] {
            session.sql("DROP RPC SERVICE sim").await.unwrap();
        }
        // its size is each executor's: ALTER cannot change it
        // (checked on a service made for the purpose, then gone)
        cluster
            .sql("CREATE RPC SERVICE sized FOR FUNCTION left WITH (placement = 'per_executor')")
            .await
            .unwrap();
        let error = cluster
            .sql("ALTER RPC SERVICE sized SET (parallelism = 3)")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("keeps the size it started with"), "{error}");
        cluster.sql("DROP RPC SERVICE sized").await.unwrap();

        // an annotated function with placement = 'per_executor': its
        // implicit service starts on the executors with its first query,
        // which they also answer the call of constants of
        cluster
            .sql("CREATE RPC SERVICE FOR FUNCTION upper WITH (placement = 'per_executor')")
            .await
            .unwrap();
        let sql = "SELECT id, upper(body) AS u, upper('x') AS x FROM docs ORDER BY id";
        let explained = shown(&cluster, &format!("EXPLAIN {sql}")).await;
        assert!(explained.contains("RpcProxy: service=upper"), "{explained}");
        local.sql("SET rpcop.rewrite = false").await.unwrap();
        assert_eq!(
            shown(&cluster, sql).await,
            shown(&local, sql).await,
            "an implicit per_executor service and in-process differ"
        );
        local.sql("SET rpcop.rewrite = true").await.unwrap();
        let listed = "SELECT name, kind, instances FROM rpc_services() WHERE name = 'upper'";
        let row = shown(&cluster, listed).await;
        assert!(row.contains("| upper | implicit | on executors |"), "{row}");
        assert!(
            cluster.service("upper").is_none(),
            "a pool of upper on the client"
        );
        let upper_on_executors = executors
            .iter()
            .flat_map(ExecutorServices::started)
            .any(|(client, _)| client.service() == "upper");
        assert!(upper_on_executors, "no executor started upper");
        // dropped, its annotation goes with it: upper runs in-process
        cluster.sql("DROP RPC SERVICE upper").await.unwrap();
        let row = shown(&cluster, listed).await;
        assert!(!row.contains("upper"), "{row}");
        let explained = shown(&cluster, &format!("EXPLAIN {sql}")).await;
        assert!(!explained.contains("RpcProxy"), "{explained}");

        // ENDPOINTS: instances every executor shares
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "ballista-test-token").unwrap();
        let (first, a) = serve(&token_file);
        let (second, b) = serve(&token_file);
        let _servers = Servers(vec![first, second]);
        for session in [&cluster, &local] {
            session
                .sql(&format!(
                    "CREATE RPC SERVICE shared FOR FUNCTION classify, upper, left \
                     ENDPOINTS ('{a}', '{b}') WITH (token_file = '{}')",
                    token_file.display()
                ))
                .await
                .unwrap();
        }
        compare(&cluster, &local, "endpoints").await;
        // rpc_call names a service of the client's: refused, with advice
        let error = cluster
            .sql("SELECT id, rpc_call('shared', 'upper', body) FROM docs")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("call the function itself"), "{error}");
        let listings = [
            "SELECT name, kind, functions FROM rpc_services() ORDER BY name",
            "SELECT count(*) FROM rpc_instances('shared')",
        ];
        for sql in listings {
            assert_eq!(
                shown(&cluster, sql).await,
                shown(&local, sql).await,
                "{sql}"
            );
        }
        assert!(
            shown(&cluster, listings[1]).await.contains("| 2 "),
            "both endpoints listed"
        );
        let attached: Vec<String> = executors
            .iter()
            .flat_map(ExecutorServices::started)
            .map(|(client, _)| client.service().to_string())
            .filter(|name| name == "shared")
            .collect();
        assert!(!attached.is_empty(), "no executor attached to shared");

        // a Python function the client has no code for (RisingWave's
        // arrow-udf server): the executors call it as the session would
        let (server, address) = spawn_server(
            Command::new(common::python())
                .args(["arrow_udf_server.py", "127.0.0.1:0"])
                .current_dir(common::python_tests()),
        );
        let _server = Servers(vec![server]);
        for session in [&cluster, &local] {
            session
                .sql(&format!(
                    "CREATE RPC SERVICE py FOR FUNCTION reverse_text ENDPOINTS ('{address}') \
                     WITH (protocol = 'arrow-udf')"
                ))
                .await
                .unwrap();
        }
        let sql = "SELECT id, reverse_text(body) AS r FROM docs ORDER BY id";
        let reversed = shown(&cluster, sql).await;
        assert_eq!(reversed, shown(&local, sql).await, "reverse_text differs");
        let first = shown(&local, "SELECT body FROM docs ORDER BY id LIMIT 1").await;
        let body = first
            .lines()
            .nth(3)
            .unwrap()
            .trim_matches(|c| c == '|' || c == ' ');
        let backwards: String = body.chars().rev().collect();
        assert!(
            reversed.contains(&backwards),
            "{backwards} not in {reversed}"
        );
        let attached = executors
            .iter()
            .flat_map(ExecutorServices::started)
            .any(|(client, _)| client.service() == "py");
        assert!(attached, "no executor attached to py");
    })
    .await;
}

/// A free loopback port: bound, then let go for the process that takes it.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until `process` listens on `address` (polling, a bounded number of
/// times); fails if it exits first.
async fn listening(address: &str, process: &mut Child) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return;
        }
        if let Some(status) = process.try_wait().unwrap() {
            panic!("the process for {address} exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {address}");
}

/// `rpcop` with `args`, its output dropped (stopped with the test).
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The shell's CSV output of `statements`, run by `rpcop [extra]`.
async fn shell(extra: &[&str], statements: &[&str]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcop"));
    command.args(extra).args(["-q", "--format", "csv"]);
    for statement in statements {
        command.args(["-c", statement]);
    }
    let output = command.kill_on_drop(true).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rpcop {extra:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_cluster_and_its_shell_answers_as_the_local_one() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let tables = write_tables(dir.path()).await;
        let scheduler = format!("127.0.0.1:{}", free_port());
        // killed when the test ends, however it ends
        let mut processes = Servers(vec![spawn(&[
            "ballista",
            "scheduler",
            "--bind",
            &scheduler,
        ])]);
        listening(&scheduler, &mut processes.0[0]).await;
        let mut flights = Vec::new();
        for _ in 0..2 {
            let (port, grpc) = (free_port().to_string(), free_port().to_string());
            flights.push(format!("127.0.0.1:{port}"));
            processes.0.push(spawn(&[
                "ballista",
                "executor",
                "--scheduler",
                &scheduler,
                "--port",
                &port,
                "--grpc-port",
                &grpc,
                "--vcores",
                "2",
            ]));
        }
        for (flight, executor) in flights.iter().zip(&mut processes.0[1..]) {
            listening(flight, executor).await;
        }
        let mut statements = vec![
            tables.as_str(),
            "CREATE RPC SERVICE sim FOR FUNCTION classify, upper, left \
             WITH (placement = 'per_executor')",
        ];
        statements.extend(QUERIES.iter().map(|(_, sql)| *sql));
        let url = format!("df://{scheduler}");
        let cluster = shell(&["--ballista", &url], &statements).await;
        let local = shell(&[], &statements).await;
        assert!(cluster.contains("sports"), "{cluster}");
        assert_eq!(cluster, local);
    })
    .await;
}
