//! The Flight server of an instance: `DoExchange` as the wire protocol
//! ([`crate::wire`]) says — argument batches in, one result batch per
//! request out, in request order, each with the request's sequence number —
//! plus discovery (`ListFlights`, `GetFlightInfo`) and the control actions.
//!
//! Any bad request (unknown function, wrong schema, corrupt IPC, a
//! panicking or misbehaving handler) gets a Flight status that names the
//! function and the reason; the instance lives on. An exchange that sends
//! no first message, or nothing for a long time, is ended, so a silent
//! caller cannot hold it open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::counters::{Counters, OpenStream};
use super::exchange::{self, DecodedRequest};
use super::host::Host;
use crate::function::LoadedFunction;
use crate::wire::{self, Ring, RingWriter, Segment};

/// The Flight service of one instance.
/// Time an exchange has to send its first message (the descriptor).
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without a message from its caller after which an exchange ends.
const EXCHANGE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

pub(crate) struct FlightHandler {
    pub(crate) host: Arc<Host>,
    /// The largest message it sends: no answer body placed in shared memory
    /// is larger either.
    pub(crate) max_message: usize,
}

/// The stream a Flight call answers with (also the session's registry's).
pub(crate) type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The requests of an exchange, decoded; the sequence number of each
/// cancel message goes to `cancels` as it is read.
/// Bodies the caller placed in the shared segment are read there, in place,
/// and counted; the requests of a caller that shares memory are not
/// validated again.
pub(crate) fn decode_requests(
    first: FlightData,
    rest: impl Stream<Item = Result<FlightData, Status>> + Send + 'static,
    cancels: mpsc::UnboundedSender<u64>,
    shared: Option<(Arc<Segment>, Arc<Counters>)>,
) -> impl Stream<Item = Result<DecodedRequest, Status>> + Send {
    let trusted = shared.is_some();
    // a caller silent for EXCHANGE_IDLE_TIMEOUT ends its exchange (after the
    // answers to its requests): it opens a new one when it has more
    let rest = tokio_stream::StreamExt::timeout(rest, EXCHANGE_IDLE_TIMEOUT)
        .map(|message| {
            message.unwrap_or_else(|_| {
                Err(Status::cancelled(format!(
                    "the exchange was idle for {EXCHANGE_IDLE_TIMEOUT:?}; open a new one"
                )))
            })
        })
        .scan(false, |ended, message| {
            let next = (!*ended).then_some(message);
            *ended = matches!(next, Some(Err(_)));
            std::future::ready(next)
        });
    // a message without an IPC header carries only the descriptor or
    // app_metadata (pyarrow opens an exchange with one): nothing to decode,
    // but it may cancel a request
    let input = stream::once(async { Ok(first) })
        .chain(rest)
        .filter(move |m| {
            let header = match m {
                Ok(m) if m.data_header.is_empty() => {
                    if let Some(seq) = wire::decode_cancel(&m.app_metadata) {
                        let _ = cancels.send(seq);
                    }
                    false
                }
                _ => true,
            };
            std::future::ready(header)
        })
        .map(move |m| {
            let mut m = m?;
            let segment = shared.as_ref().map(|(segment, _)| segment);
            let placed = wire::take_body(&mut m, segment, Ring::Requests, false)
                .map_err(|e| Status::invalid_argument(format!("corrupt request: {e}")))?;
            if let Some((_, counters)) = shared.as_ref().filter(|_| placed) {
                counters.shared_bodies.fetch_add(1, Ordering::Relaxed);
            }
            Ok(m)
        })
        .map(|m: Result<FlightData, Status>| m.map_err(FlightError::from));
    // A malformed body can panic inside Arrow's IPC reader (a buffer offset
    // past the body's end). That is the request's fault: answered as an error
    // status, never as a stream that just ends, which reads as success.
    let mut decoder = FlightDataDecoder::new(input);
    if trusted {
        // SAFETY: a caller that shares memory with this instance runs on
        // this host as a user who may open this process's descriptors: it
        // could do anything this process can. Its requests are not
        // validated again (docs/protocol.md, "Validation").
        decoder = unsafe { decoder.with_skip_validation() };
    }
    let decoded = std::panic::AssertUnwindSafe(decoder)
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|payload| {
                Err(FlightError::DecodeError(format!(
                    "reading its Arrow IPC body failed: {}",
                    super::evaluator::panic_message(payload.as_ref())
                )))
            })
        });
    decoded.filter_map(|decoded| async move {
        match decoded {
            Ok(decoded) => match decoded.payload {
                DecodedPayload::RecordBatch(batch) => {
                    Some(match wire::decode_sequence(&decoded.inner.app_metadata) {
                        Ok(seq) => match wire::received(&batch) {
                            Ok(restored) => Ok((seq, restored.unwrap_or(batch))),
                            Err(e) => Err(wire::with_sequence(
                                Status::invalid_argument(format!("corrupt request: {e}")),
                                seq,
                            )),
                        },
                        Err(reason) => Err(Status::invalid_argument(reason)),
                    })
                }
                DecodedPayload::Schema(_) | DecodedPayload::None => None,
            },
            Err(FlightError::Tonic(status)) => Some(Err(*status)),
            Err(error) => Some(Err(Status::invalid_argument(format!(
                "corrupt request: {error}"
            )))),
        }
    })
}

#[tonic::async_trait]
impl FlightService for FlightHandler {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "rpcop instances take a bearer token in the 'authorization' metadata of every call; no handshake is needed",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let infos: Vec<Result<FlightInfo, Status>> = self
            .host
            .functions
            .values()
            .filter_map(LoadedFunction::describe)
            .map(|s| wire::function_info(&s).map_err(|e| Status::internal(e.to_string())))
            .collect();
        Ok(Response::new(Box::pin(stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let name = wire::function_of(&descriptor).map_err(Status::invalid_argument)?;
        let function = self.host.function(name)?;
        let signature = function.describe().ok_or_else(|| {
            Status::failed_precondition(format!(
                "function '{name}' has no fixed signature to describe; call it with DoExchange"
            ))
        })?;
        wire::function_info(&signature)
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(PollInfo::new().with_info(info)))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented(
            "rpcop instances evaluate functions with DoExchange, not DoGet",
        ))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "rpcop instances evaluate functions with DoExchange, not DoPut",
        ))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let host = &self.host;
        if host.counters.is_draining() {
            return Err(Status::unavailable(
                "instance is draining: it takes no new exchange; send to another instance",
            ));
        }
        // a caller on this host may share memory for the bodies
        let segment = request
            .metadata()
            .get(wire::SHARED_MEMORY_HEADER)
            .and_then(|offer| offer.to_str().ok())
            .and_then(|offer| match Segment::open(offer) {
                Ok(segment) => Some(segment),
                Err(why) => {
                    tracing::debug!("not sharing memory with this caller: {why}");
                    None
                }
            });
        let mut input = request.into_inner();
        let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, input.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no first message within {FIRST_MESSAGE_TIMEOUT:?}: send the PATH descriptor \
                     naming the function when the exchange opens"
                ))
            })??
            .ok_or_else(|| {
                Status::invalid_argument(
                    "empty exchange: the first message must carry a PATH descriptor naming the function",
                )
            })?;
        let descriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
            Status::invalid_argument(
                "the first message of an exchange must carry a PATH descriptor naming the function",
            )
        })?;
        let name = wire::function_of(descriptor).map_err(Status::invalid_argument)?;
        let function = host.function(name)?.clone();
        let open = OpenStream::enter(&host.counters);

        let (cancel, cancels) = mpsc::unbounded_channel();
        let shared = segment
            .clone()
            .map(|segment| (segment, Arc::clone(&host.counters)));
        let requests = decode_requests(first, input, cancel, shared);
        let (sender, receiver) = mpsc::channel(2);
        let accepted = segment
            .as_ref()
            .and_then(|segment| MetadataValue::try_from(segment.offer()).ok());
        tokio::spawn(exchange::serve(
            requests,
            cancels,
            Arc::clone(host),
            function,
            (
                sender,
                segment.map(|segment| {
                    RingWriter::new(segment, Ring::Answers).with_limit(self.max_message)
                }),
            ),
            open,
        ));
        let mut response =
            Response::new(Box::pin(ReceiverStream::new(receiver)) as FlightStream<_>);
        if let Some(accepted) = accepted {
            response
                .metadata_mut()
                .insert(wire::SHARED_MEMORY_HEADER, accepted);
        }
        Ok(response)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let body: Bytes = match action.r#type.as_str() {
            wire::ACTION_HEALTH => Bytes::from_static(b"ok"),
            wire::ACTION_DRAIN => {
                self.host.counters.draining.store(true, Ordering::Relaxed);
                Bytes::from_static(b"draining")
            }
            wire::ACTION_STATS => serde_json::to_vec(&self.host.stats())
                .map(Bytes::from)
                .map_err(|e| Status::internal(e.to_string()))?,
            wire::ACTION_PROTOCOL_VERSION => Bytes::from(wire::PROTOCOL_VERSION.to_string()),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}'; actions are: {}, {}, {}, {}",
                    wire::ACTION_HEALTH,
                    wire::ACTION_DRAIN,
                    wire::ACTION_STATS,
                    wire::ACTION_PROTOCOL_VERSION
                )));
            }
        };
        let result = arrow_flight::Result { body };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (wire::ACTION_HEALTH, "is the instance serving? answers 'ok'"),
            (
                wire::ACTION_DRAIN,
                "take no new exchange; finish the open ones",
            ),
            (wire::ACTION_STATS, "the instance's counters as JSON"),
            (wire::ACTION_PROTOCOL_VERSION, "the rpcop protocol version"),
        ]
        .map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(stream::iter(actions))))
    }
}
