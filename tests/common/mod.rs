//! Helpers shared by the integration tests: regions on loopback, deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use rpcop::{FunctionLibrary, MemberState, ServiceOptions, ServiceRegion};

/// Every test future runs under this deadline, so no test can hang CI.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `future` and fails the test if it takes longer than [`DEADLINE`].
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("the test did not finish within its deadline")
}

/// How long a test waits for a child's first line (its address).
pub const FIRST_LINE: Duration = Duration::from_secs(60);

/// The first line `reader` gives (without its newline), read on a thread
/// of its own so the wait has a deadline: `None` if none came within
/// `deadline` (or the reader ended first). The reader is returned too,
/// positioned after the line, once the line is in.
pub fn first_line_within<R: std::io::BufRead + Send + 'static>(
    mut reader: R,
    deadline: Duration,
) -> Option<(String, R)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = sender.send(match read {
            Ok(n) if n > 0 => Some((line.trim_end().to_string(), reader)),
            _ => None,
        });
    });
    receiver.recv_timeout(deadline).ok().flatten()
}

/// How long a test waits for a child it runs to end.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Runs `command` to its end, killing it if it takes longer than
/// [`CHILD_DEADLINE`] (the test then fails, naming the command): a child
/// that hangs cannot hang the test.
pub fn output_within(command: &mut std::process::Command) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    child_output_within(child)
}

/// [`std::process::Child::wait_with_output`], killing the child if it
/// takes longer than [`CHILD_DEADLINE`].
pub fn child_output_within(child: std::process::Child) -> std::process::Output {
    let id = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(CHILD_DEADLINE) {
        Ok(output) => output.expect("the child's output"),
        Err(_) => {
            // SAFETY: signalling our own child, not reaped yet (its waiter
            // is still waiting)
            unsafe {
                libc::kill(i32::try_from(id).unwrap_or(i32::MAX), libc::SIGKILL);
            }
            panic!("child {id} did not finish within {CHILD_DEADLINE:?}");
        }
    }
}

/// Service options from `key = value` pairs.
pub fn options(pairs: &[(&str, &str)]) -> ServiceOptions {
    let mut options = ServiceOptions::default();
    for (key, value) in pairs {
        options.set(key, value).expect("valid option");
    }
    options
}

/// A session with the demo functions, whose process instances run this
/// build's `rpcop`.
pub fn demo_session() -> rpcop::RpcSession {
    rpcop::RpcSession::builder()
        .with_demo_functions()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build()
}

/// Starts a region hosting `functions` from the library of the `rpcop` binary.
pub async fn region(name: &str, functions: &[&str], pairs: &[(&str, &str)]) -> ServiceRegion {
    region_from(&rpcop::demo::library(), name, functions, pairs).await
}

/// Starts a region hosting `functions` from `library`.
pub async fn region_from(
    library: &FunctionLibrary,
    name: &str,
    functions: &[&str],
    pairs: &[(&str, &str)],
) -> ServiceRegion {
    let names: Vec<String> = functions.iter().map(|s| s.to_string()).collect();
    ServiceRegion::builder(name, library.select(&names).expect("known functions"))
        .options(options(pairs))
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .start()
        .await
        .expect("region starts")
}

/// Waits until the region has `n` ready instances (and nothing else).
pub async fn wait_ready(region: &ServiceRegion, n: usize) {
    let mut watch = region.membership();
    loop {
        {
            let m = watch.borrow_and_update();
            let ready = m.ready().count();
            if ready == n && m.members.iter().all(|m| m.state == MemberState::Ready) {
                return;
            }
        }
        watch.changed().await.expect("region alive");
    }
}

/// Waits until the region's instances hold no request (a cancelled one is
/// held until it is dropped) and `client` has nothing outstanding; returns
/// what the instances evaluated and dropped as cancelled.
pub async fn settled(region: &ServiceRegion, client: &rpcop::ServiceClient) -> (u64, u64) {
    loop {
        let stats = region.stats().await;
        // a cancelled request is outstanding at its instance until dropped
        let idle = stats.iter().all(|(_, s)| {
            s.as_ref()
                .is_some_and(|s| s.in_flight == 0 && s.outstanding == 0)
        });
        if idle && client.stats().in_flight == 0 {
            let sum = |f: &dyn Fn(&rpcop::wire::InstanceStats) -> u64| -> u64 {
                stats.iter().filter_map(|(_, s)| s.as_ref()).map(f).sum()
            };
            return (sum(&|s| s.requests), sum(&|s| s.cancelled));
        }
        tokio::task::yield_now().await;
    }
}

/// `rows` strings `row-0`, `row-1`, ... in batches of `batch` rows.
pub fn text_batches(rows: usize, batch: usize) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch).min(rows);
            let column: ArrayRef = Arc::new(StringArray::from_iter_values(
                (start..end).map(|i| format!("row-{i}")),
            ));
            RecordBatch::try_from_iter([("s", column)]).expect("batch")
        })
        .collect()
}

/// `model_sim(s, latency_ms, 0)` arguments for `rows` rows: each request
/// waits `latency_ms` at its instance.
pub fn model_sim_batches(rows: usize, batch: usize, latency_ms: i64) -> Vec<RecordBatch> {
    text_batches(rows, batch)
        .into_iter()
        .map(|b| {
            let n = b.num_rows();
            let latency: ArrayRef = Arc::new(Int64Array::from(vec![latency_ms; n]));
            let cost: ArrayRef = Arc::new(Int64Array::from(vec![0; n]));
            RecordBatch::try_from_iter([
                ("s", Arc::clone(b.column(0))),
                ("latency", latency),
                ("cost", cost),
            ])
            .expect("batch")
        })
        .collect()
}

/// Checks that `results` are `upper` of `text_batches(rows, _)`, row by row,
/// each exactly once and in order.
pub fn assert_upper_in_order(results: &[ArrayRef], rows: usize) {
    let mut i = 0usize;
    for array in results {
        let strings = array
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("upper returns Utf8");
        for value in strings.iter() {
            assert_eq!(value, Some(format!("ROW-{i}").as_str()), "row {i}");
            i += 1;
        }
    }
    assert_eq!(i, rows, "every row exactly once");
}

/// Runs `upper` over `text_batches(rows, batch)` through `region`'s client;
/// checks every row.
pub async fn upper_through(region: &ServiceRegion, rows: usize, batch: usize) {
    use futures::TryStreamExt;
    let client = region.client().expect("a client of the region");
    let input = futures::stream::iter(text_batches(rows, batch));
    let results: Vec<ArrayRef> = client
        .call_stream("upper", input)
        .try_collect()
        .await
        .expect("upper answers");
    assert_upper_in_order(&results, rows);
}

/// The cells of `batches`, row by row, as Arrow displays them (NULL as
/// `NULL`).
pub fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Every `.slt` file under `root`, recursively, sorted; or why they cannot
/// be listed.
pub fn slt_files(root: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "slt") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, &mut files).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    files.sort();
    Ok(files)
}

/// The words given to a test binary without a harness (`cargo test --test
/// x -- word ...`), flags left out.
pub fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

/// The runtime of a test binary without a harness: two worker threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// The Python of rpcop's Python environment (pyarrow, pytest, arrow-udf,
/// databend-udf and this checkout's kit), made or refreshed by
/// `scripts/python-env` on first use.
pub fn python() -> std::path::PathBuf {
    static PYTHON: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python-env");
            let output = std::process::Command::new("timeout")
                .args(["1200", script])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("scripts/python-env runs");
            assert!(
                output.status.success(),
                "scripts/python-env failed ({}); it installs pyarrow, pytest, arrow-udf and \
                 databend-udf from PyPI",
                output.status
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let path = stdout.lines().last().expect("the python's path").trim();
            std::path::PathBuf::from(path)
        })
        .clone()
}

/// The folder of the Python test servers (`tests/python`).
pub fn python_tests() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Starts a server (its stderr silenced), and reads the address it prints
/// first on stdout (after the `added function: ...` lines of RisingWave's
/// arrow-udf servers), as `http://host:port`. Its stdout is read on
/// afterwards: a server that prints (arrow-udf prints each error's
/// traceback) must not fail on a closed pipe.
pub fn spawn_server(command: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("the server's stdout is piped");
    let mut reader = std::io::BufReader::new(stdout);
    let line = loop {
        let Some((line, rest)) = first_line_within(reader, FIRST_LINE) else {
            let _ = child.kill();
            panic!("the server printed no address within {FIRST_LINE:?}");
        };
        reader = rest;
        if !line.starts_with("added function") {
            break line;
        }
    };
    std::thread::spawn(move || reader.lines().for_each(drop));
    let address = format!("http://{}", line.trim().trim_start_matches("http://"));
    (child, address)
}

/// A plain Arrow Flight client of `address` (none of rpcop's client code).
pub async fn raw_client(
    address: &str,
) -> arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(address.to_string())
        .expect("an endpoint")
        .connect()
        .await
        .expect("connects");
    arrow_flight::flight_service_client::FlightServiceClient::new(channel)
}

/// `message` with the bearer `token` in its metadata.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    request
}
