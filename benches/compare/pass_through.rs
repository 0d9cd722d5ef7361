//! Pass-through floor: an identity function over 4M rows through 1 instance
//! of `cores` threads, by each path (`thread/local`, `thread/flight`,
//! `process/shm`, `process/flight`). Baseline: the same batches through
//! Arrow IPC in memory, encoded and decoded both ways by as many threads as
//! there are partitions (`cores`), each its own stream; and, without a
//! target, through loopback sockets. Target: ratio ≤ 1.3.

use std::time::{Duration, Instant};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use rpcop::RpcSession;

use super::harness::{
    Row, cores, floor_row, median, paths, row, runs_for, same, scaled, session, strings, timed_runs,
};
use super::socket::socket_floor;

/// Pass-through by each path against the parallel IPC floor, and the
/// wire's own floor (loopback sockets) against Flight.
pub(super) async fn pass_through(scale: f64, reps: usize) -> Vec<Row> {
    let rows = scaled(4_000_000.0, scale, 8192);
    let data = strings(rows, 8192, cores());
    let session = session(data.clone(), cores(), 8192).await;
    let scenario = format!(
        "pass-through: identity(s), {rows} rows, 1 instance of {} threads",
        cores()
    );
    let in_memory = format!(
        "Arrow IPC encode+decode, both ways, in memory, {} streams on as many threads",
        cores()
    );
    let mut out = Vec::new();
    for (path, with) in paths() {
        session
            .sql(&format!(
                "CREATE RPC SERVICE echo FOR FUNCTION identity WITH (parallelism = 1, threads = {}{with})",
                cores()
            ))
            .await
            .unwrap();
        let (floor, echo, correct) = measure(&session, &data, reps).await;
        out.push(
            row(
                scenario.clone(),
                &in_memory,
                (floor, echo, rows),
                "ratio <= 1.3",
                echo / floor <= 1.3,
                correct,
            )
            .via(path),
        );
        if path == "thread/flight" {
            // what the wire costs beyond the socket it runs on: not a target
            // of the issue, the measure of how far the floor is reachable
            let (socket, correct) = socket_floor(&data, reps).await;
            out.push(floor_row(
                &scenario,
                "Arrow IPC both ways through loopback TCP (one connection per partition, peer decodes and re-encodes)",
                (socket, echo, rows),
                path,
                correct,
            ));
        }
        session.sql("DROP RPC SERVICE echo").await.unwrap();
    }
    out
}

/// `reps` interleaved samples of the IPC floor and of `echo`: their medians
/// in ms per run and whether every answer equalled `data`. Each sample runs
/// as often as the floor needs to last
/// [`MIN_SAMPLE`](super::harness::MIN_SAMPLE), the same on both sides.
async fn measure(session: &RpcSession, data: &[Vec<RecordBatch>], reps: usize) -> (f64, f64, bool) {
    let runs = runs_for(ipc_floor(data));
    let (mut floor, mut echo) = (Vec::new(), Vec::new());
    let mut correct = true;
    for _ in 0..reps {
        floor.push((0..runs).map(|_| ipc_floor(data)).sum::<Duration>() / runs);
        let (out, elapsed) = timed_runs(session, "SELECT identity(s) FROM t", runs).await;
        echo.push(elapsed);
        correct &= same(data, &out);
    }
    (median(floor), median(echo), correct)
}

/// The floor: each partition's batches encoded and decoded with Arrow IPC,
/// both ways, on a thread of its own (as rpcop's partitions and instance
/// threads run at once); the time taken.
fn ipc_floor(data: &[Vec<RecordBatch>]) -> Duration {
    let start = Instant::now();
    let back: Vec<Vec<RecordBatch>> = std::thread::scope(|scope| {
        let streams: Vec<_> = data
            .iter()
            .map(|partition| {
                scope.spawn(move || {
                    partition
                        .iter()
                        .map(|batch| from_ipc(&to_ipc(&from_ipc(&to_ipc(batch)))))
                        .collect()
                })
            })
            .collect();
        streams.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    drop(back);
    elapsed
}

/// One batch as an Arrow IPC stream.
pub(super) fn to_ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    bytes
}

/// The one batch of an Arrow IPC stream.
pub(super) fn from_ipc(bytes: &[u8]) -> RecordBatch {
    StreamReader::try_new(bytes, None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}
