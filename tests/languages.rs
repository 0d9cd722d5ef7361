//! Functions in another language: Python functions served by rpcop's kit
//! (`python/`, as `command` instances), by RisingWave's arrow-udf servers
//! and by databend-udf servers (`protocol`, through `command` and
//! `ENDPOINTS`). Every result is compared with the same Python function
//! computed directly (`tests/python/direct.py`); instances are killed in the
//! middle of a query; bad commands get errors that name what went wrong.
//!
//! The servers are `tests/python/*_server.py`, all hosting the functions of
//! `tests/python/functions.py`. The Python environment comes from
//! `scripts/python-env`.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use rpcop::RpcSession;
use serde_json::{Value, json};

use common::{python, python_tests, spawn_server, within};

/// Rows of the test table `t`.
const ROWS: usize = 1500;

/// The shell command that starts `server` (a file of `tests/python`).
fn command(server: &str) -> String {
    format!(
        "cd '{}' && exec '{}' {server}",
        python_tests().display(),
        python().display()
    )
}

/// `text` inside a SQL string literal.
fn quoted(text: &str) -> String {
    text.replace('\'', "''")
}

/// A session with the table `t(id, s, a, b, x, y)` of [`ROWS`] rows, some
/// of them NULL.
async fn session() -> RpcSession {
    let session = RpcSession::builder().build();
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let words = ["alpha", "beta gamma", "", "delta epsilon zeta", "ünïcode ✓"];
    let s: StringArray = ids
        .iter()
        .map(|i| (i % 7 != 3).then(|| format!("{} {i}", words[*i as usize % words.len()])))
        .collect();
    let a: Int64Array = ids.iter().map(|i| (i % 11 != 5).then_some(i * 6)).collect();
    let b: Int64Array = ids.iter().map(|i| Some(i % 97 + 1)).collect();
    let x: Float64Array = ids.iter().map(|i| Some(*i as f64 * 0.5)).collect();
    let y: Float64Array = ids.iter().map(|i| (i % 13 != 0).then_some(3.25)).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as _),
        ("s", Arc::new(s) as _),
        ("a", Arc::new(a) as _),
        ("b", Arc::new(b) as _),
        ("x", Arc::new(x) as _),
        ("y", Arc::new(y) as _),
    ])
    .expect("a batch");
    session
        .context()
        .register_batch("t", batch)
        .expect("the table");
    session
}

/// The values of a column, as JSON.
fn json_values(column: &dyn Array) -> Vec<Value> {
    let column = column.as_any();
    if let Some(strings) = column.downcast_ref::<StringArray>() {
        return strings.iter().map(|v| json!(v)).collect();
    }
    if let Some(ints) = column.downcast_ref::<Int64Array>() {
        return ints.iter().map(|v| json!(v)).collect();
    }
    if let Some(floats) = column.downcast_ref::<Float64Array>() {
        // exact: as direct.py writes them
        return floats
            .iter()
            .map(|v| v.map_or(Value::Null, |v| json!({"f64_bits": v.to_bits()})))
            .collect();
    }
    panic!("no JSON for this column type");
}

/// Each column of the result of `sql`, as JSON values (strings, integers
/// and floats cast to Utf8, Int64 and Float64).
async fn columns(session: &RpcSession, sql: &str) -> Vec<Vec<Value>> {
    let batches = within(Box::pin(session.sql(sql)))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let width = batches.first().map_or(0, RecordBatch::num_columns);
    (0..width)
        .map(|i| {
            batches
                .iter()
                .flat_map(|batch| {
                    let column = batch.column(i);
                    let wanted = match column.data_type() {
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                        DataType::Float32 | DataType::Float64 => DataType::Float64,
                        _ => DataType::Int64,
                    };
                    json_values(&cast(column, &wanted).expect("a cast"))
                })
                .collect()
        })
        .collect()
}

/// `function` computed directly in Python over `rows`.
fn direct(function: &str, rows: &[Vec<Value>]) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg("direct.py")
        .current_dir(python_tests())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let request = json!({"function": function, "rows": rows});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("the request is written");
    let output = common::child_output_within(child);
    assert!(output.status.success(), "direct.py failed");
    serde_json::from_slice(&output.stdout).expect("JSON results")
}

/// The argument rows of `columns` of `t`, in `id` order.
async fn arguments(session: &RpcSession, columns_sql: &str) -> Vec<Vec<Value>> {
    let columns = columns(session, &format!("SELECT {columns_sql} FROM t ORDER BY id")).await;
    (0..ROWS)
        .map(|row| columns.iter().map(|c| c[row].clone()).collect())
        .collect()
}

/// `got` equals `expected`; else names the first row that differs.
fn assert_same(got: &[Value], expected: &[Value], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: row counts differ");
    if let Some(row) = (0..got.len()).find(|i| got[*i] != expected[*i]) {
        panic!(
            "{what} differs from Python at row {row}: {} vs {}",
            got[row], expected[row]
        );
    }
}

/// A session whose service `service` runs `server` (a file of
/// `tests/python`) speaking `protocol`, 2 instances, for the calls of
/// [`CALLS`]; each call checked against Python.
async fn calls_served_by(service: &str, server: &str, protocol: &str) -> RpcSession {
    let session = session().await;
    let create = format!(
        "CREATE RPC SERVICE {service} FOR FUNCTION reverse_text, gcd, word_count, hypot \
         WITH (command = '{}', protocol = '{protocol}', parallelism = 2, batch_size = 100)",
        quoted(&command(server))
    );
    run(&session, &create).await;
    assert_calls_match_python(&session, service).await;
    session
}

/// The hosted calls compared with Python, with the columns they take.
const CALLS: [(&str, &str); 4] = [
    ("reverse_text", "s"),
    ("gcd", "a, b"),
    ("word_count", "s"),
    ("hypot", "x, y"),
];

/// Every call of [`CALLS`] through SQL equals the function run in Python,
/// row for row.
async fn assert_calls_match_python(session: &RpcSession, service: &str) {
    for (function, arguments_sql) in CALLS {
        let rows = arguments(session, arguments_sql).await;
        let expected = direct(function, &rows);
        let sql = format!("SELECT {function}({arguments_sql}) FROM t ORDER BY id");
        let got = columns(session, &sql).await.remove(0);
        assert_same(&got, &expected, &sql);
        // and explicitly, through rpc_call
        let sql = format!(
            "SELECT rpc_call('{service}', '{function}', {arguments_sql}) FROM t ORDER BY id"
        );
        let got = columns(session, &sql).await.remove(0);
        assert_same(&got, &expected, &sql);
    }
}

/// Runs a statement that must succeed.
async fn run(session: &RpcSession, sql: &str) {
    within(Box::pin(session.sql(sql)))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn error(session: &RpcSession, sql: &str) -> String {
    within(Box::pin(session.sql(sql)))
        .await
        .expect_err(sql)
        .strip_backtrace()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_functions_served_by_the_kit_equal_python() {
    let session = calls_served_by("py", "kit_server.py", "rpcop").await;
    // a Python exception is the function's error, with its message; the
    // instance survives it
    let e = error(&session, "SELECT reverse_text('boom')").await;
    assert!(e.contains("ValueError: cannot reverse boom"), "{e}");
    assert!(!e.contains("Traceback"), "{e}");
    let e = error(
        &session,
        "SELECT reverse_text(s) FROM (VALUES ('boom')) AS v(s)",
    )
    .await;
    assert!(
        e.contains("function 'reverse_text' failed: ValueError: cannot reverse boom"),
        "{e}"
    );
    let restarts = columns(&session, "SELECT restarts FROM rpc_instances('py')").await;
    assert_eq!(restarts, vec![vec![json!(0), json!(0)]]);
    // a call SQL cannot coerce to the described signature
    let e = error(&session, "SELECT reverse_text(s, s) FROM t").await;
    assert!(
        e.contains("is reverse_text(Utf8) -> Utf8, as its instances describe it; it cannot be called with (Utf8, Utf8)"),
        "{e}"
    );
    within(session.sql("DROP RPC SERVICE py"))
        .await
        .expect("dropped");
    // a function with no code here goes with its service; DataFusion's
    // own gcd, which the service stood in for, stays
    let e = error(&session, "SELECT reverse_text(s) FROM t").await;
    assert!(e.contains("reverse_text"), "{e}");
    within(session.sql("SELECT gcd(a, b) FROM t"))
        .await
        .expect("DataFusion's gcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_udf_servers_by_command_and_by_endpoint() {
    let session = calls_served_by("au", "arrow_udf_server.py", "arrow-udf").await;
    let e = error(&session, "SELECT reverse_text('boom')").await;
    assert!(e.contains("cannot reverse boom"), "{e}");

    // a server someone else runs, annotated: the rewrite sends calls there
    let server = ArrowUdfServer::start();
    let attach = format!(
        "CREATE RPC SERVICE FOR FUNCTION slow_square ENDPOINTS ('{}') WITH (protocol = 'arrow-udf')",
        server.address
    );
    within(session.sql(&attach)).await.expect("attached");
    let rows = arguments(&session, "a").await;
    let expected = direct("slow_square", &rows[..200]);
    let got = columns(
        &session,
        "SELECT slow_square(a) FROM t WHERE id < 200 ORDER BY id",
    )
    .await;
    assert_same(&got[0], &expected, "slow_square at an endpoint");
    let e = error(
        &session,
        &format!(
            "CREATE RPC SERVICE x FOR FUNCTION other ENDPOINTS ('{}') WITH (protocol = 'arrow-udf', token_file = '/etc/hostname')",
            server.address
        ),
    )
    .await;
    assert!(e.contains("'arrow-udf' servers take none"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databend_udf_servers_by_command() {
    calls_served_by("db", "databend_server.py", "databend").await;
}

/// An arrow-udf server this test runs itself, as someone else's would be.
struct ArrowUdfServer {
    child: Child,
    address: String,
}

impl ArrowUdfServer {
    fn start() -> Self {
        let (child, address) = spawn_server(
            Command::new(python())
                .args(["arrow_udf_server.py", "127.0.0.1:0"])
                .current_dir(python_tests()),
        );
        Self { child, address }
    }
}

impl Drop for ArrowUdfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The query of the tests that disturb a service in the middle of one.
const SLOW_QUERY: &str = "SELECT slow_square(a) FROM t ORDER BY id";

/// A session whose service `s` hosts `slow_square` on `parallelism`
/// instances of `server`, with small requests; and the query's rows as
/// Python computes them.
async fn slow_square_service(
    server: &str,
    protocol: &str,
    parallelism: usize,
) -> (RpcSession, Vec<Value>) {
    let session = session().await;
    let create = format!(
        "CREATE RPC SERVICE s FOR FUNCTION slow_square \
         WITH (command = '{}', protocol = '{protocol}', parallelism = {parallelism}, \
               batch_size = 20, max_in_flight = 2)",
        quoted(&command(server))
    );
    run(&session, &create).await;
    let rows = arguments(&session, "a").await;
    let expected = direct("slow_square", &rows);
    (session, expected)
}

/// Waits until the query is under way: 4 requests answered.
async fn under_way(session: &RpcSession) {
    let client = session.client("s").expect("a client");
    while client.stats().requests < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A query over `slow_square` loses an instance in its middle (killed with
/// SIGKILL) and still answers every row, equal to Python.
async fn survives_a_killed_instance(server: &str, protocol: &str) {
    let (session, expected) = slow_square_service(server, protocol, 2).await;
    let region = session.service("s").expect("the region");
    let killer = async {
        under_way(&session).await;
        let victim = region.members()[0].id;
        assert!(region.kill(victim).await, "the instance was killed");
    };
    let (got, ()) = within(async { tokio::join!(columns(&session, SLOW_QUERY), killer) }).await;
    assert_same(&got[0], &expected, "slow_square with a killed instance");
    let restarts = columns(&session, "SELECT sum(restarts) FROM rpc_instances('s')").await;
    assert_eq!(
        restarts,
        vec![vec![json!(1)]],
        "the killed instance was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_instance_killed_mid_query_loses_no_row() {
    survives_a_killed_instance("kit_server.py", "rpcop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrow_udf_server_killed_mid_query_loses_no_row() {
    survives_a_killed_instance("arrow_udf_server.py", "arrow-udf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_service_shrunk_mid_query_loses_no_row() {
    let (session, expected) = slow_square_service("kit_server.py", "rpcop", 3).await;
    let shrink = async {
        under_way(&session).await;
        // drained: the two instances leaving finish what they have
        Box::pin(session.sql("ALTER RPC SERVICE s SET (parallelism = 1)"))
            .await
            .expect("shrunk");
    };
    let (got, ()) = within(async { tokio::join!(columns(&session, SLOW_QUERY), shrink) }).await;
    assert_same(&got[0], &expected, "slow_square while the service shrinks");
    let instances = columns(&session, "SELECT count(*) FROM rpc_instances('s')").await;
    assert_eq!(instances, vec![vec![json!(1)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_the_command_contract() {
    let session = session().await;
    let create = format!(
        "CREATE RPC SERVICE env FOR FUNCTION instance_info \
         WITH (command = 'exec ''{}'' kit_server.py', working_dir = '{}', parallelism = 2, \
               gpus = '3;5', memory = '2GiB', env = 'EXTRA=\"two words\"', \
               load_balance = 'round_robin', batch_size = 1)",
        python().display(),
        python_tests().display()
    );
    run(&session, &create).await;
    let got = columns(
        &session,
        "SELECT DISTINCT instance_info(a) AS i FROM t WHERE id < 20 ORDER BY i",
    )
    .await;
    let dir = python_tests().display().to_string();
    assert_eq!(
        got[0],
        vec![
            json!(format!("env|0|3|2147483648|two words|2147483648|{dir}")),
            json!(format!("env|1|5|2147483648|two words|2147483648|{dir}")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_clear_errors() {
    let session = session().await;
    let arrow_udf = command("arrow_udf_server.py");
    let kit = command("kit_server.py");
    let databend = command("databend_server.py");
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            "echo loading >&2; echo out of memory >&2; exit 3".into(),
            "",
            vec![
                "exited with code 3 before it printed its address",
                "loading | out of memory",
            ],
        ),
        (
            "exec 1>&-; echo no stdout here >&2; sleep 60".into(),
            "",
            vec![
                "closed its stdout without printing its address",
                "no stdout here",
            ],
        ),
        (
            "echo not-an-address; sleep 60".into(),
            "",
            vec!["printed 'not-an-address' where its address (host:port) belongs"],
        ),
        (
            "echo loading the model >&2; sleep 60".into(),
            ", startup_timeout = '300ms'",
            vec![
                "printed no address within the startup_timeout of 300ms",
                "loading the model",
            ],
        ),
        (
            arrow_udf.clone(),
            "",
            vec![
                "printed 'added function: reverse_text' where its address",
                "set protocol = 'arrow-udf'",
            ],
        ),
        (
            databend.clone(),
            ", protocol = 'arrow-udf'",
            vec![
                "does not speak the declared protocol 'arrow-udf'",
                "set protocol = 'databend'",
            ],
        ),
        (
            databend,
            "",
            vec![
                "does not speak the declared protocol 'rpcop'",
                "set protocol = 'databend'",
            ],
        ),
        (
            kit,
            ", protocol = 'arrow-udf'",
            vec![
                "does not speak the declared protocol 'arrow-udf'",
                "set protocol = 'rpcop'",
            ],
        ),
        (
            arrow_udf.clone(),
            ", protocol = 'databend'",
            vec![
                "printed 'added function: reverse_text' where its address",
                "set protocol = 'arrow-udf'",
            ],
        ),
    ];
    for (shell, options, wanted) in cases {
        let sql = format!(
            "CREATE RPC SERVICE bad FOR FUNCTION reverse_text WITH (command = '{}'{options})",
            quoted(&shell)
        );
        let e = error(&session, &sql).await;
        for text in wanted
            .into_iter()
            .chain(["service 'bad'", "instance bad[0]"])
        {
            assert!(e.contains(text), "{sql}: {e} lacks {text:?}");
        }
        assert!(
            e.contains(&format!("command '{shell}'")),
            "{e} names its command"
        );
        assert!(session.service("bad").is_none());
    }
    for (sql, wanted) in [
        (
            "CREATE RPC SERVICE bad FOR FUNCTION upper WITH (protocol = 'arrow-udf')",
            "give their command = '...' (to start them) or their ENDPOINTS",
        ),
        (
            "CREATE RPC SERVICE bad FOR FUNCTION upper WITH (env = 'A=1')",
            "option 'env' applies to instances started with a command",
        ),
        (
            "CREATE RPC SERVICE bad FOR FUNCTION upper WITH (env = 'A')",
            "NAME=value words",
        ),
    ] {
        let e = error(&session, sql).await;
        assert!(e.contains(wanted), "{sql}: {e}");
    }
}

#[test]
fn the_python_example_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = python().parent().expect("the venv's bin").to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_rpcop"))
        .args(["-f", "examples/python_service/demo.sql"])
        .current_dir(root)
        .env("PATH", path)
        .output()
        .expect("rpcop runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "| 1  | fast-great         | positive | 6     |",
        "| 3  | creme-brulee-maker | neutral  | 4     |",
        "| slugify  | implicit | slugify               | 1/1         |",
    ] {
        assert!(stdout.contains(row), "{row} missing from:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcop_serve_follows_the_command_contract() {
    let session = RpcSession::new();
    let create = format!(
        "CREATE RPC SERVICE s FOR FUNCTION upper, classify \
         WITH (command = '{} serve --function upper --function classify', parallelism = 2)",
        env!("CARGO_BIN_EXE_rpcop")
    );
    run(&session, &create).await;
    let got = columns(
        &session,
        "SELECT upper(column1), classify(column1) FROM (VALUES ('the election'), ('rust gpu'))",
    )
    .await;
    assert_eq!(got[0], vec![json!("THE ELECTION"), json!("RUST GPU")]);
    assert_eq!(got[1], vec![json!("news"), json!("tech")]);
}
