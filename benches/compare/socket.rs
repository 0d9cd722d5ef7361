//! The socket floor of the pass-through scenario (a row without a target):
//! the same batches as Arrow IPC through loopback TCP, one connection per
//! partition, to a peer that decodes and re-encodes them as an instance does.
//! It measures what Flight costs beyond the socket it runs on; the cheap
//! scenario adds it to its in-process time as the floor of `process/flight`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::harness::{median, runs_for, same};
use super::pass_through::{from_ipc, to_ipc};

/// `reps` samples of the socket floor, each of at least
/// [`MIN_SAMPLE`](super::harness::MIN_SAMPLE): its median in ms per run and
/// whether every answer equalled `data`.
pub(super) async fn socket_floor(data: &[Vec<RecordBatch>], reps: usize) -> (f64, bool) {
    let runs = runs_for(socket_round_trip(data).await.1);
    let mut times = Vec::new();
    let mut correct = true;
    for _ in 0..reps {
        let mut total = Duration::ZERO;
        let mut echoed = Vec::new();
        for _ in 0..runs {
            let (out, elapsed) = socket_round_trip(data).await;
            total += elapsed;
            echoed = out;
        }
        times.push(total / runs);
        correct &= same(data, &echoed);
    }
    (median(times), correct)
}

/// Each partition's batches encoded, sent through a loopback TCP connection
/// of its own to a peer that decodes and re-encodes them (as an instance
/// does), and decoded again; all partitions at once. Returns what came back
/// and the time taken.
async fn socket_round_trip(data: &[Vec<RecordBatch>]) -> (Vec<Vec<RecordBatch>>, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let start = Instant::now();
    let peer = tokio::spawn(echo_peer(listener, data.len()));
    let callers: Vec<_> = data
        .iter()
        .cloned()
        .map(|batches| tokio::spawn(call(address, batches)))
        .collect();
    let mut out = Vec::with_capacity(callers.len());
    for caller in callers {
        out.push(caller.await.unwrap());
    }
    let elapsed = start.elapsed();
    peer.await.unwrap();
    (out, elapsed)
}

/// The peer: accepts `connections` connections and echoes each on a task of
/// its own, until every caller has shut its side down.
async fn echo_peer(listener: TcpListener, connections: usize) {
    let mut echoes = Vec::new();
    for _ in 0..connections {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        echoes.push(tokio::spawn(echo(stream)));
    }
    for task in echoes {
        task.await.unwrap();
    }
}

/// Reads length-prefixed IPC streams from `stream`, decodes and re-encodes
/// each and writes it back, until the caller shuts its side down.
async fn echo(mut stream: TcpStream) {
    while let Ok(len) = stream.read_u64_le().await {
        let mut bytes = vec![0; len as usize];
        stream.read_exact(&mut bytes).await.unwrap();
        let answer = to_ipc(&from_ipc(&bytes));
        stream.write_u64_le(answer.len() as u64).await.unwrap();
        stream.write_all(&answer).await.unwrap();
    }
}

/// One partition: sends `batches` to the peer at `address` on a connection
/// of its own while reading the echoes back; returns them decoded.
async fn call(address: SocketAddr, batches: Vec<RecordBatch>) -> Vec<RecordBatch> {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let count = batches.len();
    let sender = tokio::spawn(async move {
        for batch in &batches {
            let bytes = to_ipc(batch);
            writer.write_u64_le(bytes.len() as u64).await.unwrap();
            writer.write_all(&bytes).await.unwrap();
        }
        writer.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(count);
    for _ in 0..count {
        let len = reader.read_u64_le().await.unwrap();
        let mut bytes = vec![0; len as usize];
        reader.read_exact(&mut bytes).await.unwrap();
        back.push(from_ipc(&bytes));
    }
    sender.await.unwrap();
    back
}
