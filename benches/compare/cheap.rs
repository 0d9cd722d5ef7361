//! Cheap function: `upper(s)` over 4M rows through 1 instance of `cores`
//! threads, by each way of reaching it: a thread instance handed batches
//! in-process and over Flight, a process instance through shared memory and
//! over Flight (loopback TCP, the remote path). Baseline: in-process,
//! `target_partitions` = cores. `RPCOP_BENCH_PATHS=process/shm` runs some
//! of them (for profiling). A row without a target gives the floor of
//! `process/shm`: in-process plus the two copies shared memory needs, so the
//! table shows how much of that row is the machine's memory bandwidth; and
//! one gives the floor of `process/flight`: in-process plus the same bytes
//! through loopback sockets, encoded and decoded as Flight must.

use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use super::harness::{
    Row, compare_sql, cores, explaining, floor_row, median, paths, row, scaled, session, strings,
};
use super::socket::socket_floor;

/// The ratio to in-process each path must keep, if any.
fn target(path: &str) -> Option<f64> {
    match path {
        "thread/local" => Some(1.5),
        "process/shm" => Some(2.0),
        "process/flight" => Some(3.0),
        _ => None,
    }
}

/// The cheap function through one instance, by each path.
pub(super) async fn cheap(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(4_000_000.0, scale, 8192);
    let n = cores();
    let data = strings(rows, 8192, n);
    let session = session(data.clone(), n, 8192).await;
    let sql = "SELECT upper(s) FROM t";
    let scenario = format!("cheap function: upper(s), {rows} rows, 1 instance of {n} threads");
    let mut out = Vec::new();
    for (path, with) in paths() {
        session
            .sql(&format!(
                "CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 1, threads = {n}{with})"
            ))
            .await
            .unwrap();
        let (b, r, got, correct) = compare_sql(&session, sql, sql, reps).await;
        let correct = correct && got == rows;
        let numbers = (b, r, got);
        out.push(
            match target(path) {
                Some(t) => row(
                    scenario.clone(),
                    "in-process",
                    numbers,
                    &format!("ratio <= {t}"),
                    r / b <= t,
                    correct,
                ),
                None => explaining(
                    scenario.clone(),
                    "in-process",
                    numbers,
                    "none: what the wire costs",
                    correct,
                ),
            }
            .via(path),
        );
        session.sql("DROP RPC SERVICE text").await.unwrap();
        if path == "process/shm" {
            out.push(copy_floor_row(&data, &scenario, (b, r, got), reps, correct));
        }
        if path == "process/flight" {
            let (socket, echoed) = socket_floor(&data, reps).await;
            out.push(floor_row(
                &scenario,
                "in-process + the arguments and results as Arrow IPC through loopback TCP (a connection per partition)",
                (b + socket, r, got),
                path,
                correct && echoed,
            ));
        }
    }
    out
}

/// How far `process/shm` is from what it cannot avoid: in-process plus one
/// copy of the arguments into shared memory and one of the results back
/// (`upper` keeps every string's length), each partition on a thread of
/// its own, measured here.
fn copy_floor_row(
    data: &[Vec<RecordBatch>],
    scenario: &str,
    (b, r, rows): (f64, f64, usize),
    reps: usize,
    correct: bool,
) -> Row {
    let copies = median((0..reps).map(|_| copy_floor(data)).collect());
    floor_row(
        scenario,
        "in-process + the two copies shared memory needs (arguments in, results out, a thread per partition)",
        (b + copies, r, rows),
        "process/shm",
        correct,
    )
}

/// Each partition's buffers copied twice (in and out) into a 64 MiB region
/// of its own, cycling through it as the shared ring does; the time taken.
fn copy_floor(data: &[Vec<RecordBatch>]) -> Duration {
    const RING: usize = 64 << 20;
    let mut rings: Vec<Vec<u8>> = data.iter().map(|_| vec![1u8; RING]).collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (partition, ring) in data.iter().zip(&mut rings) {
            scope.spawn(move || {
                let mut at = 0;
                for batch in partition {
                    let column = batch.column(0).to_data();
                    for buffer in column.buffers().iter().chain(column.buffers()) {
                        let bytes = buffer.as_slice();
                        if at + bytes.len() > RING {
                            at = 0;
                        }
                        ring[at..at + bytes.len()].copy_from_slice(bytes);
                        at += bytes.len().next_multiple_of(64);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    std::hint::black_box(&rings);
    elapsed
}
