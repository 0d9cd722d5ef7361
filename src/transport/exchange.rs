//! One `DoExchange` stream to one instance for one function, shared by
//! every request of a client to that instance and function: each request is
//! one argument batch out and one result batch back, matched by sequence
//! number, so a request costs a message each way, not a call.
//!
//! A request whose attempt ends before its answer (its query was cancelled
//! or satisfied, it timed out) is cancelled on the stream with a cancel
//! message ([`wire::encode_cancel`]): the instance drops it, unrun if no
//! thread has taken it yet.
//!
//! An instance that must end the stream with an error but cannot while it
//! reads ahead (the Python kit) first says so ([`wire::ENDING`]): the
//! exchange then takes no new request and half-closes.
//!
//! When the stream ends, every request still waiting on it hears why. An
//! error status that names a request (`x-rpcop-seq`) fails that request; the
//! others on the stream are told it was another request's error
//! ([`Failure::Collateral`]), so the client re-sends them without counting a
//! retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use futures::stream::PollNext;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status, Streaming};

use super::failure::{Failure, failure_of, is_transport};
use crate::wire::{self, BatchEncoder, FlightClient, Ring, RingWriter, Segment};

type Waiter = oneshot::Sender<Result<RecordBatch, Failure>>;

/// The requests of one session awaiting their answers.
#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set when the session's stream ended, with why.
    closed: Option<String>,
    /// Set when the instance said it will end the stream with an error.
    ending: bool,
}

/// One `DoExchange` stream to one instance for one function, for argument
/// batches of one schema: a request of another schema opens a new
/// exchange, since pyarrow's Flight readers (and so Python instances)
/// cannot read a schema change within a stream.
pub(crate) struct Exchange {
    schema: SchemaRef,
    writer: tokio::sync::Mutex<Writer>,
    /// Set once the instance mapped the segment this exchange offered:
    /// bodies then go through shared memory.
    shared: Arc<AtomicBool>,
    pending: Arc<Mutex<Pending>>,
    /// Where cancel messages go, beside the writer (a cancel is sent from
    /// a drop, which cannot wait for the writer's lock).
    cancels: mpsc::Sender<FlightData>,
}

struct Writer {
    encoder: BatchEncoder,
    sender: mpsc::Sender<FlightData>,
    messages: Vec<FlightData>,
    /// The requests' ring of the segment offered, if one was.
    ring: Option<RingWriter>,
}

/// Cancel messages waiting to go out beside the requests; a cancel that
/// finds the queue full is dropped (the instance then evaluates the request,
/// and its answer is ignored).
const CANCELS_QUEUED: usize = 64;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Exchange {
    /// Opens an exchange; `share` offers the instance a shared-memory
    /// segment for the bodies (it accepts if it runs on this host);
    /// `trusted` decodes its answers without validating them again.
    pub(crate) fn open(
        client: &FlightClient,
        address: &str,
        function: &str,
        schema: &SchemaRef,
        (share, trusted): (bool, bool),
    ) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(16);
        let (cancels, cancelled) = mpsc::channel(CANCELS_QUEUED);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let segment = share
            .then(|| {
                Segment::create()
                    .map_err(|e| tracing::debug!("no shared memory for {address}: {e}"))
                    .ok()
            })
            .flatten();
        let shared = Arc::new(AtomicBool::new(false));
        let session = Arc::new(Self {
            schema: Arc::clone(schema),
            writer: tokio::sync::Mutex::new(Writer {
                encoder: BatchEncoder::new(Some(wire::function_descriptor(function))),
                sender,
                messages: Vec::new(),
                ring: segment
                    .as_ref()
                    .map(|segment| RingWriter::new(Arc::clone(segment), Ring::Requests)),
            }),
            shared: Arc::clone(&shared),
            pending: Arc::clone(&pending),
            cancels,
        });
        // requests and cancels on one stream, which ends (the caller's
        // half-close) when the exchange is dropped; queued requests go first,
        // so a cancel never overtakes the request it cancels
        // an instance's ENDING half-closes it early
        let (ending, ended) = oneshot::channel::<()>();
        let outgoing = futures::stream::select_with_strategy(
            ReceiverStream::new(receiver),
            ReceiverStream::new(cancelled),
            |(): &mut ()| PollNext::Left,
        )
        .take_until(ended);
        let mut client = client.clone();
        let address = address.to_string();
        let mut request = tonic::Request::new(outgoing);
        // this client half-closes on an instance's ENDING
        request
            .metadata_mut()
            .insert(wire::ENDING_HEADER, MetadataValue::from_static("1"));
        let offer = segment
            .as_ref()
            .and_then(|segment| MetadataValue::try_from(segment.offer()).ok());
        if let Some(offer) = &offer {
            request
                .metadata_mut()
                .insert(wire::SHARED_MEMORY_HEADER, offer.clone());
        }
        tokio::spawn(async move {
            let (reason, failure) = match client.do_exchange(request).await {
                Ok(response) => {
                    // the instance says it mapped the segment by naming it
                    let accepted = response.metadata().get(wire::SHARED_MEMORY_HEADER);
                    if offer.is_some() && accepted == offer.as_ref() {
                        shared.store(true, Ordering::Release);
                    }
                    let answers = response.into_inner();
                    read_answers(answers, &pending, &address, ending, (segment, trusted)).await
                }
                Err(status) => (status.message().to_string(), Some(status)),
            };
            let mut state = lock(&pending);
            let reason = format!("exchange with {address} ended: {reason}");
            let guilty = failure.as_ref().and_then(wire::sequence_of);
            for (seq, waiter) in state.waiters.drain() {
                let failure = match (&failure, guilty) {
                    (Some(status), Some(g)) if g == seq => failure_of(status, &address),
                    (Some(_), Some(g)) => Failure::Collateral(format!(
                        "{reason} (the error of request {g}, not this one)"
                    )),
                    (Some(status), None) if status.code() != Code::Internal => {
                        failure_of(status, &address)
                    }
                    (Some(status), _) if !is_transport(status) => Failure::Retry(reason.clone()),
                    // the stream broke, or ended without a status
                    _ => Failure::Lost(reason.clone()),
                };
                let _ = waiter.send(Err(failure));
            }
            state.closed = Some(reason);
        });
        session
    }

    /// Can it carry a request of `schema`?
    pub(crate) fn serves(&self, schema: &SchemaRef) -> bool {
        let state = lock(&self.pending);
        state.closed.is_none() && !state.ending && &self.schema == schema
    }

    /// Sends one request and waits for its answer.
    pub(crate) async fn request(
        &self,
        seq: u64,
        arguments: &RecordBatch,
    ) -> Result<RecordBatch, Failure> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.pending);
            if let Some(reason) = &state.closed {
                return Err(Failure::Retry(reason.clone()));
            }
            if state.ending {
                // sent on no exchange: another one carries it, uncounted
                return Err(Failure::Collateral(
                    "the instance is ending this exchange".to_string(),
                ));
            }
            state.waiters.insert(seq, tx);
        }
        let _forget = Forget {
            pending: &self.pending,
            cancels: &self.cancels,
            seq,
        };
        {
            let mut writer = self.writer.lock().await;
            let Writer {
                encoder,
                sender,
                messages,
                ring,
            } = &mut *writer;
            messages.clear();
            let ring = ring
                .as_mut()
                .filter(|_| self.shared.load(Ordering::Acquire));
            encoder
                .encode_placing(arguments, wire::encode_sequence(seq), messages, ring)
                .map_err(|e| Failure::Reject(format!("cannot encode the arguments: {e}")))?;
            for message in messages.drain(..) {
                sender
                    .send(message)
                    .await
                    .map_err(|_| Failure::Retry("the exchange closed".to_string()))?;
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Failure::Retry("the exchange closed".to_string())))
    }
}

/// Removes a request's waiter when its attempt ends, and cancels the
/// request at the instance if it ended early (a timeout, a cancelled query).
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    cancels: &'a mpsc::Sender<FlightData>,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let unanswered = {
            let mut state = lock(self.pending);
            state.waiters.remove(&self.seq).is_some() && state.closed.is_none()
        };
        if unanswered {
            let cancel = FlightData {
                app_metadata: wire::encode_cancel(self.seq),
                ..FlightData::default()
            };
            let _ = self.cancels.try_send(cancel);
        }
    }
}

/// Routes answers to their waiters until the stream ends; returns why it
/// ended and the status it ended with, if any. Messages without a data
/// header are skipped; an [`wire::ENDING`] among them fires `ending`.
/// Bodies a `trusted` instance placed in the shared `segment` are read in
/// place and not validated again; any other instance's are copied out of it
/// before they are decoded (see `wire::shared_memory` for why).
async fn read_answers(
    answers: Streaming<FlightData>,
    pending: &Arc<Mutex<Pending>>,
    address: &str,
    ending: oneshot::Sender<()>,
    (segment, trusted): (Option<Arc<Segment>>, bool),
) -> (String, Option<Status>) {
    let mut ending = Some(ending);
    let said = Arc::clone(pending);
    let answers = answers.filter_map(move |message| {
        let message = match message {
            Ok(m) if m.data_header.is_empty() => {
                if m.app_metadata.as_ref() == wire::ENDING
                    && let Some(ending) = ending.take()
                {
                    lock(&said).ending = true;
                    let _ = ending.send(());
                }
                None
            }
            Ok(mut m) => Some(
                wire::take_body(&mut m, segment.as_ref(), Ring::Answers, !trusted)
                    .map(|_| m)
                    .map_err(FlightError::DecodeError),
            ),
            Err(status) => Some(Err(FlightError::from(status))),
        };
        futures::future::ready(message)
    });
    let mut decoder = FlightDataDecoder::new(answers);
    if trusted {
        // SAFETY: the instance is rpcop's own code, in this process or
        // started by this region: it encodes arrays that arrow-rs built and
        // validated, with arrow-rs's IPC writer. What that trusts is written
        // in docs/protocol.md ("Validation").
        decoder = unsafe { decoder.with_skip_validation() };
    }
    while let Some(decoded) = decoder.next().await {
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(FlightError::Tonic(status)) => {
                return (status.message().to_string(), Some(*status));
            }
            Err(error) => return (format!("undecodable answer: {error}"), None),
        };
        let DecodedPayload::RecordBatch(batch) = decoded.payload else {
            continue;
        };
        match wire::decode_sequence(&decoded.inner.app_metadata) {
            Ok(Some(seq)) => {
                let waiter = lock(pending).waiters.remove(&seq);
                if let Some(waiter) = waiter {
                    let answer = match wire::received(&batch) {
                        Ok(restored) => Ok(restored.unwrap_or(batch)),
                        Err(e) => Err(Failure::Retry(format!(
                            "{address} answered an unreadable batch: {e}"
                        ))),
                    };
                    let _ = waiter.send(answer);
                }
            }
            Ok(None) => {
                return (
                    format!("{address} answered without a sequence number"),
                    None,
                );
            }
            Err(reason) => return (reason, None),
        }
    }
    ("the instance closed the stream".to_string(), None)
}
