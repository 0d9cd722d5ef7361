//! One exchange on the instance's side: requests are read as they come (up
//! to [`READ_AHEAD`] waiting), each is evaluated on the instance's threads,
//! and the answers go back in request order.
//!
//! Reading ahead is what lets a caller's cancel reach a request in time: a
//! cancel message follows its request on the stream, so an instance that
//! read only as many requests as it has threads would see it only once the
//! request had run. A cancelled request is dropped: skipped if no thread
//! has taken it yet, its answer discarded otherwise, and it gets no answer.
//! When the caller goes (it reset the stream, or stopped reading), every
//! request of the exchange is dropped the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_flight::FlightData;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tonic::Status;

use super::counters::{Counters, OpenStream};
use super::host::Host;
use crate::function::LoadedFunction;
use crate::wire::{self, BatchEncoder, RingWriter};

/// A request the instance decoded: its sequence number, if any, and arguments.
pub(crate) type DecodedRequest = (Option<u64>, RecordBatch);

/// How many requests of one exchange may wait for their answers; further
/// ones wait in HTTP/2 flow control until answers go out.
pub(crate) const READ_AHEAD: usize = 1024;

type Evaluation = JoinHandle<Result<(Option<u64>, ArrayRef), Status>>;

/// The evaluations of an exchange, aborted when it ends however it ends.
#[derive(Default)]
struct Running(HashMap<u64, AbortHandle>);

impl Running {
    /// Drops the evaluation of request `seq`, if it is still running.
    fn cancel(&mut self, seq: u64) {
        if let Some(handle) = self.0.remove(&seq) {
            handle.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for handle in self.0.values() {
            handle.abort();
        }
    }
}

/// Serves one exchange of `function`: `requests` in, answers out on
/// `sender` (their bodies placed in the shared memory's `ring`, if the
/// caller shares memory), `cancels` naming the requests the caller gave up on.
pub(crate) async fn serve(
    requests: impl Stream<Item = Result<DecodedRequest, Status>> + Send,
    mut cancels: mpsc::UnboundedReceiver<u64>,
    host: Arc<Host>,
    function: LoadedFunction,
    (sender, ring): (mpsc::Sender<Result<FlightData, Status>>, Option<RingWriter>),
    open: OpenStream,
) {
    let _open = open;
    let mut requests = std::pin::pin!(requests);
    let shared = ring.map(|ring| (ring, Arc::clone(&host.counters)));
    let mut answers = Answers::new(function.name(), sender.clone(), shared);
    let mut pending: FuturesOrdered<Evaluation> = FuturesOrdered::new();
    let mut running = Running::default();
    // set when the caller's stream ended, with the error it ended with
    let mut ended: Option<Option<Status>> = None;
    loop {
        if pending.is_empty()
            && let Some(end) = ended.take()
        {
            if let Some(status) = end {
                answers.fail(status).await;
            }
            return;
        }
        tokio::select! {
            biased;
            () = sender.closed() => return,
            Some(seq) = cancels.recv() => running.cancel(seq),
            answer = pending.next(), if !pending.is_empty() => match answer {
                Some(Ok(Ok((seq, array)))) => {
                    if let Some(seq) = seq {
                        running.0.remove(&seq);
                    }
                    if !answers.send(seq, array).await {
                        return;
                    }
                }
                // an error ends the exchange: the requests after it get none
                Some(Ok(Err(status))) => {
                    answers.fail(status).await;
                    return;
                }
                // cancelled by its caller: no answer
                Some(Err(_)) | None => {}
            },
            request = requests.next(), if ended.is_none() && pending.len() < READ_AHEAD => {
                match request {
                    Some(Ok((seq, batch))) => {
                        let (host, function) = (Arc::clone(&host), function.clone());
                        // counted from here: one cancelled before its task
                        // first runs is counted cancelled when dropped
                        let received = host.receive();
                        let evaluation = tokio::spawn(async move {
                            host.evaluate(received, function, seq, batch).await
                        });
                        if let Some(seq) = seq {
                            running.0.insert(seq, evaluation.abort_handle());
                        }
                        pending.push_back(evaluation);
                    }
                    Some(Err(status)) => ended = Some(Some(status)),
                    None => ended = Some(None),
                }
            }
        }
    }
}

/// Encodes answers (one batch of one column each) onto the exchange.
struct Answers {
    function: String,
    sender: mpsc::Sender<Result<FlightData, Status>>,
    encoder: BatchEncoder,
    messages: Vec<FlightData>,
    /// Where bodies go, when the caller shares memory, and where they are
    /// counted.
    ring: Option<(RingWriter, Arc<Counters>)>,
}

impl Answers {
    fn new(
        function: &str,
        sender: mpsc::Sender<Result<FlightData, Status>>,
        ring: Option<(RingWriter, Arc<Counters>)>,
    ) -> Self {
        Self {
            function: function.to_string(),
            sender,
            encoder: BatchEncoder::new(None),
            messages: Vec::new(),
            ring,
        }
    }

    /// Sends the answer to request `seq`; false once the caller is gone
    /// or the answer cannot be encoded (the exchange then ends).
    async fn send(&mut self, seq: Option<u64>, array: ArrayRef) -> bool {
        let schema = Arc::new(Schema::new(vec![Field::new(
            self.function.as_str(),
            array.data_type().clone(),
            true,
        )]));
        let (ring, counters) = match &mut self.ring {
            Some((ring, counters)) => (Some(ring), Some(counters)),
            None => (None, None),
        };
        let encoded = RecordBatch::try_new(schema, vec![array])
            .map_err(|e| Status::internal(e.to_string()))
            .and_then(|batch| {
                let metadata = seq.map(wire::encode_sequence).unwrap_or_default();
                self.messages.clear();
                self.encoder
                    .encode_placing(&batch, metadata, &mut self.messages, ring)
                    .map_err(|e| Status::internal(e.to_string()))
            });
        match encoded {
            Ok(placed) => {
                if let Some(counters) = counters {
                    counters
                        .shared_bodies
                        .fetch_add(placed as u64, Ordering::Relaxed);
                }
            }
            Err(status) => {
                self.fail(status).await;
                return false;
            }
        }
        for message in self.messages.drain(..) {
            if self.sender.send(Ok(message)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ends the exchange with `status`.
    async fn fail(&self, status: Status) {
        let _ = self.sender.send(Err(status)).await;
    }
}
