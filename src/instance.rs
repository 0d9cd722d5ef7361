//! One service instance: an Arrow Flight server hosting a service's functions.
//!
//! An [`Instance`] loads its functions once (the "model load"), then serves
//! `DoExchange` as the wire protocol ([`crate::protocol`]) says: argument
//! batches in, one result batch per request out, in request order, each with
//! the request's sequence number. Up to `threads` requests are evaluated at
//! once, on the instance's own evaluation threads (fed by one queue),
//! apart from the runtime that serves its network I/O, so a slow function
//! never stalls it.
//!
//! The instance checks every call's bearer token, survives any bad request
//! (unknown function, wrong schema, corrupt IPC, a panicking or misbehaving
//! handler) with a Flight status that names the function and the reason, and
//! can be drained: it then refuses new exchanges and serves the open ones to
//! their end.
//!
//! While it serves, an instance is also a [`LocalInstance`] of this process:
//! a caller in the same process (a query reaching a `thread`-isolated
//! service) hands it record batches directly, with no IPC encoding and no
//! socket, and it evaluates them exactly as it evaluates a Flight request,
//! on its own evaluation threads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::config::ConfigOptions;
use futures::stream;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{FunctionError, RpcError};
use crate::evaluator::{Evaluator, Unfinished};
use crate::function::{HostedFunction, LoadedFunction};
use crate::protocol::{self, AUTHORIZATION_KEY, BatchEncoder, SEQUENCE_STATUS_KEY};

/// The counters of one instance, as the `stats` action returns them (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// Requests answered with a result.
    pub requests: u64,
    /// Rows in those requests.
    pub rows: u64,
    /// Requests that failed (bad arguments, function errors, panics).
    pub errors: u64,
    /// Requests being evaluated now.
    pub in_flight: u64,
    /// Exchanges open now.
    pub open_streams: u64,
    /// Functions loaded at start-up.
    pub loads: u64,
    /// Time spent loading them (the one-time start-up), in milliseconds.
    pub startup_ms: u64,
    /// Is the instance draining?
    pub draining: bool,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    rows: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    open_streams: AtomicU64,
    loads: AtomicU64,
    startup_ms: AtomicU64,
    draining: AtomicBool,
}

/// A request being evaluated; counted in `in_flight` until dropped.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The functions an instance hosts and its resource profile.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    functions: Vec<HostedFunction>,
    token: Arc<str>,
    threads: usize,
}

impl InstanceConfig {
    /// An instance hosting `functions`, answering calls that carry `token`.
    pub fn new(functions: Vec<HostedFunction>, token: impl Into<Arc<str>>) -> Self {
        Self {
            functions,
            token: token.into(),
            threads: 1,
        }
    }

    /// Requests evaluated at once (the instance's worker threads).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Requests evaluated at once.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

struct Shared {
    functions: BTreeMap<String, LoadedFunction>,
    counters: Arc<Counters>,
    evaluator: Evaluator,
    threads: usize,
    config: Arc<ConfigOptions>,
}

/// A loaded instance, ready to serve (see [`Instance::serve`]).
#[derive(Clone)]
pub struct Instance {
    shared: Arc<Shared>,
    token: Arc<str>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("functions", &self.shared.functions.keys())
            .field("threads", &self.shared.threads)
            .finish_non_exhaustive()
    }
}

/// A request the instance decoded: its sequence number, if any, and arguments.
type DecodedRequest = (Option<u64>, RecordBatch);

impl Instance {
    /// Loads every function (the one-time start-up; blocking, may be slow)
    /// and starts the evaluation threads. Called within a tokio runtime,
    /// the threads enter it, so functions may use it.
    pub fn load(config: &InstanceConfig) -> Result<Self, FunctionError> {
        let counters = Counters::default();
        let start = Instant::now();
        let mut functions = BTreeMap::new();
        for hosted in &config.functions {
            let loaded = hosted.load()?;
            counters.loads.fetch_add(1, Ordering::Relaxed);
            functions.insert(hosted.name().to_string(), loaded);
        }
        let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        counters.startup_ms.store(elapsed, Ordering::Relaxed);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let evaluator =
            Evaluator::start("rpcop-eval", config.threads, runtime.as_ref()).map_err(|e| {
                FunctionError::Load {
                    function: functions.keys().cloned().collect::<Vec<_>>().join(", "),
                    reason: format!("cannot start the evaluation threads: {e}"),
                }
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                functions,
                counters: Arc::new(counters),
                evaluator,
                threads: config.threads,
                config: Arc::new(ConfigOptions::default()),
            }),
            token: Arc::clone(&config.token),
        })
    }

    /// The instance's counters now.
    pub fn stats(&self) -> InstanceStats {
        self.shared.stats()
    }

    /// Serves on `listener` until `shutdown` completes. Then (or when this
    /// future is dropped) the instance stops evaluating: it serves once.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RpcError> {
        let address = listener
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let expected = format!("Bearer {}", self.token);
        let service = FlightServiceServer::new(FlightHandler {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(protocol::MAX_MESSAGE_BYTES);
        let service = InterceptedService::new(service, move |request: Request<()>| {
            check_token(&request, &expected)?;
            Ok(request)
        });
        let _serving = Serving::new(
            format!("http://{address}"),
            LocalInstance {
                shared: Arc::clone(&self.shared),
            },
        );
        let incoming = TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(protocol::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(protocol::CONNECTION_WINDOW_BYTES)
            .max_frame_size(protocol::MAX_FRAME_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| RpcError::Start {
                address,
                reason: e.to_string(),
            })
    }
}

/// The instances serving in this process, by address.
static LOCAL: LazyLock<Mutex<HashMap<String, LocalInstance>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// An instance serving in this process, reached without the network: the
/// caller hands it record batches and gets arrays back, evaluated on the
/// instance's threads like a Flight request (same concurrency, counters,
/// panics caught). Found by the address it serves on.
#[derive(Clone)]
pub struct LocalInstance {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalInstance").finish_non_exhaustive()
    }
}

impl LocalInstance {
    /// The instance serving on `address` (`http://host:port`) in this
    /// process, if there is one.
    pub fn find(address: &str) -> Option<Self> {
        LOCAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(address)
            .cloned()
    }

    /// Evaluates `function` on `arguments`. A draining or stopped instance
    /// answers `UNAVAILABLE`, as its Flight server would.
    pub async fn call(&self, function: &str, arguments: RecordBatch) -> Result<ArrayRef, Status> {
        if self.shared.counters.draining.load(Ordering::Relaxed) {
            return Err(Status::unavailable(
                "instance is draining: it takes no new request; send to another instance",
            ));
        }
        let function = self.shared.function(function)?.clone();
        // straight onto the instance's evaluation threads: no hop through
        // its I/O worker
        self.shared
            .evaluate(function, None, arguments)
            .await
            .map(|(_, array)| array)
    }
}

/// While an instance serves: keeps it in [`LOCAL`]. When it stops: takes
/// it out and stops its evaluation threads (queued requests answer
/// `UNAVAILABLE`).
struct Serving {
    address: String,
    shared: Arc<Shared>,
}

impl Serving {
    fn new(address: String, instance: LocalInstance) -> Self {
        let shared = Arc::clone(&instance.shared);
        LOCAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(address.clone(), instance);
        Self { address, shared }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.shared.evaluator.stop();
        let mut local = LOCAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // a newer instance may have taken the address meanwhile: leave it
        if local
            .get(&self.address)
            .is_some_and(|i| Arc::ptr_eq(&i.shared, &self.shared))
        {
            local.remove(&self.address);
        }
    }
}

/// Binds `address` (port 0 picks a free port) for an instance to serve on.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, RpcError> {
    TcpListener::bind(address)
        .await
        .map_err(|e| RpcError::Start {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

fn check_token(request: &Request<()>, expected: &str) -> Result<(), Status> {
    let given = request
        .metadata()
        .get(AUTHORIZATION_KEY)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
        Ok(())
    } else if given.is_empty() {
        Err(Status::unauthenticated(
            "missing bearer token: send metadata 'authorization: Bearer <token>' with the region's token",
        ))
    } else {
        Err(Status::unauthenticated(
            "wrong bearer token: send metadata 'authorization: Bearer <token>' with the region's token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Shared {
    fn stats(&self) -> InstanceStats {
        let c = &self.counters;
        InstanceStats {
            requests: c.requests.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            open_streams: c.open_streams.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            startup_ms: c.startup_ms.load(Ordering::Relaxed),
            draining: c.draining.load(Ordering::Relaxed),
        }
    }

    fn function(&self, name: &str) -> Result<&LoadedFunction, Status> {
        self.functions.get(name).ok_or_else(|| {
            let hosted: Vec<&str> = self.functions.keys().map(String::as_str).collect();
            Status::not_found(format!(
                "unknown function '{name}': this instance hosts [{}]",
                hosted.join(", ")
            ))
        })
    }

    /// Evaluates one request on the instance's evaluation threads.
    async fn evaluate(
        &self,
        function: LoadedFunction,
        seq: Option<u64>,
        arguments: RecordBatch,
    ) -> Result<(Option<u64>, ArrayRef), Status> {
        let rows = arguments.num_rows() as u64;
        let (config, counters) = (Arc::clone(&self.config), Arc::clone(&self.counters));
        let named = function.clone();
        let outcome = self
            .evaluator
            .run(move || {
                let _in_flight = InFlight::enter(&counters.in_flight);
                function.invoke(&arguments, &config)
            })
            .await;
        let result = match outcome {
            Ok(Ok(array)) => Ok(array),
            Ok(Err(error)) => Err(function_status(&error)),
            Err(Unfinished::Stopped) => Err(Status::unavailable(
                "the instance stopped; send to another instance",
            )),
            Err(Unfinished::Panicked(message)) => Err(Status::internal(format!(
                "function '{}' panicked: {message}",
                named.name()
            ))),
        };
        match result {
            Ok(array) => {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                self.counters.rows.fetch_add(rows, Ordering::Relaxed);
                Ok((seq, array))
            }
            Err(status) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(with_sequence(status, seq))
            }
        }
    }
}

fn function_status(error: &FunctionError) -> Status {
    match error {
        FunctionError::Arguments { .. } => Status::invalid_argument(error.to_string()),
        FunctionError::Unknown { .. } => Status::not_found(error.to_string()),
        FunctionError::Load { .. } | FunctionError::Invoke { .. } => {
            Status::internal(error.to_string())
        }
    }
}

/// Names the request an error concerns in the status metadata.
fn with_sequence(mut status: Status, seq: Option<u64>) -> Status {
    if let Some(seq) = seq
        && let Ok(value) = MetadataValue::try_from(seq.to_string())
    {
        status.metadata_mut().insert(SEQUENCE_STATUS_KEY, value);
    }
    status
}

/// Counts an open exchange until dropped.
struct OpenStream(Arc<Counters>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

struct FlightHandler {
    shared: Arc<Shared>,
}

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn decode_requests(
    first: FlightData,
    rest: Streaming<FlightData>,
) -> impl Stream<Item = Result<DecodedRequest, Status>> + Send {
    // a message without an IPC header carries only the descriptor or
    // app_metadata (pyarrow opens an exchange with one): nothing to decode
    let input = stream::once(async { Ok(first) })
        .chain(rest)
        .filter(|m| std::future::ready(!matches!(m, Ok(m) if m.data_header.is_empty())))
        .map(|m| m.map_err(FlightError::from));
    FlightDataDecoder::new(input).filter_map(|decoded| async move {
        match decoded {
            Ok(decoded) => match decoded.payload {
                DecodedPayload::RecordBatch(batch) => Some(
                    match protocol::decode_sequence(&decoded.inner.app_metadata) {
                        Ok(seq) => Ok((seq, batch)),
                        Err(reason) => Err(Status::invalid_argument(reason)),
                    },
                ),
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
            .shared
            .functions
            .values()
            .filter_map(LoadedFunction::describe)
            .map(|s| protocol::function_info(&s).map_err(|e| Status::internal(e.to_string())))
            .collect();
        Ok(Response::new(Box::pin(stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let name = protocol::function_of(&descriptor).map_err(Status::invalid_argument)?;
        let function = self.shared.function(name)?;
        let signature = function.describe().ok_or_else(|| {
            Status::failed_precondition(format!(
                "function '{name}' has no fixed signature to describe; call it with DoExchange"
            ))
        })?;
        protocol::function_info(&signature)
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
        let shared = &self.shared;
        if shared.counters.draining.load(Ordering::Relaxed) {
            return Err(Status::unavailable(
                "instance is draining: it takes no new exchange; send to another instance",
            ));
        }
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "empty exchange: the first message must carry a PATH descriptor naming the function",
            )
        })?;
        let descriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
            Status::invalid_argument(
                "the first message of an exchange must carry a PATH descriptor naming the function",
            )
        })?;
        let name = protocol::function_of(descriptor).map_err(Status::invalid_argument)?;
        let function = shared.function(name)?.clone();
        let function_name = name.to_string();
        shared.counters.open_streams.fetch_add(1, Ordering::Relaxed);
        let open = OpenStream(Arc::clone(&shared.counters));

        let evaluator = Arc::clone(shared);
        let results = decode_requests(first, input)
            .map(move |request| {
                let shared = Arc::clone(&evaluator);
                let function = function.clone();
                async move {
                    let (seq, batch) = request?;
                    shared.evaluate(function, seq, batch).await
                }
            })
            .buffered(shared.threads);
        let (sender, receiver) = mpsc::channel(2);
        tokio::spawn(answer(results, sender, open, function_name));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        let body: Bytes = match action.r#type.as_str() {
            protocol::ACTION_HEALTH => Bytes::from_static(b"ok"),
            protocol::ACTION_DRAIN => {
                self.shared.counters.draining.store(true, Ordering::Relaxed);
                Bytes::from_static(b"draining")
            }
            protocol::ACTION_STATS => serde_json::to_vec(&self.shared.stats())
                .map(Bytes::from)
                .map_err(|e| Status::internal(e.to_string()))?,
            protocol::ACTION_PROTOCOL_VERSION => {
                Bytes::from(protocol::PROTOCOL_VERSION.to_string())
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}'; actions are: {}, {}, {}, {}",
                    protocol::ACTION_HEALTH,
                    protocol::ACTION_DRAIN,
                    protocol::ACTION_STATS,
                    protocol::ACTION_PROTOCOL_VERSION
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
            (
                protocol::ACTION_HEALTH,
                "is the instance serving? answers 'ok'",
            ),
            (
                protocol::ACTION_DRAIN,
                "take no new exchange; finish the open ones",
            ),
            (protocol::ACTION_STATS, "the instance's counters as JSON"),
            (
                protocol::ACTION_PROTOCOL_VERSION,
                "the rpcop protocol version",
            ),
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

/// Encodes results in request order and sends them, ending at the first error.
async fn answer(
    results: impl Stream<Item = Result<(Option<u64>, ArrayRef), Status>> + Send,
    sender: mpsc::Sender<Result<FlightData, Status>>,
    open: OpenStream,
    function: String,
) {
    let _open = open;
    let mut results = std::pin::pin!(results);
    let mut encoder = BatchEncoder::new(None);
    let mut messages = Vec::new();
    while let Some(result) = results.next().await {
        let sent = match result.and_then(|(seq, array)| {
            let schema = Arc::new(Schema::new(vec![Field::new(
                function.as_str(),
                array.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema, vec![array])
                .map_err(|e| Status::internal(e.to_string()))?;
            let metadata = seq.map(protocol::encode_sequence).unwrap_or_default();
            messages.clear();
            encoder
                .encode(&batch, metadata, &mut messages)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(())
        }) {
            Ok(()) => {
                let mut ok = true;
                for message in messages.drain(..) {
                    if sender.send(Ok(message)).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                ok
            }
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                false
            }
        };
        if !sent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let mut request = Request::new(());
        assert!(
            check_token(&request, "Bearer t")
                .unwrap_err()
                .message()
                .contains("missing")
        );
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, MetadataValue::from_static("Bearer x"));
        assert!(
            check_token(&request, "Bearer t")
                .unwrap_err()
                .message()
                .contains("wrong")
        );
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, MetadataValue::from_static("Bearer t"));
        assert!(check_token(&request, "Bearer t").is_ok());
    }
}
