//! The caller's side of a service: routing, flow control, timeouts, retries.
//!
//! A [`ServiceClient`] follows a service's [`MembershipWatch`] and sends each
//! request to a ready instance chosen by the service's load-balancing policy
//! ([`LoadBalance`]). Requests to one instance for one function share a
//! persistent `DoExchange` stream (a *session*), multiplexed by sequence
//! number, so a request costs one message each way, not a call.
//!
//! A request that fails on an instance (the instance died, closed the stream,
//! answered wrongly) or times out is re-sent to another instance, up to
//! `retries` times; services are stateless, so a retry cannot duplicate a
//! result. [`ServiceClient::call_stream`] keeps up to `max_in_flight` requests
//! outstanding and yields results in request order; it pulls input only when
//! a slot is free, so nothing is buffered without bound.
//!
//! ```no_run
//! # async fn example(region: &rpcop::ServiceRegion) -> Result<(), rpcop::RpcError> {
//! use std::sync::Arc;
//! use datafusion::arrow::array::{ArrayRef, StringArray};
//! use datafusion::arrow::record_batch::RecordBatch;
//!
//! let client = region.client()?;
//! let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
//! let args = RecordBatch::try_from_iter([("text", text)])?;
//! let upper = client.call("upper", args).await?;
//! assert_eq!(upper.len(), 2);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, stream};
use rpcop_sql::{LoadBalance, OnError, ServiceOptions, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use crate::error::RpcError;
use crate::instance::LocalInstance;
use crate::membership::{Member, MembershipWatch};
use crate::protocol::{self, AUTHORIZATION_KEY, BatchEncoder, SEQUENCE_STATUS_KEY};

/// Adds the region's bearer token to every call.
#[derive(Debug, Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// The interceptor for `token` (which must be printable ASCII).
    pub fn new(token: &str) -> Result<Self, RpcError> {
        MetadataValue::try_from(protocol::bearer(token))
            .map(Self)
            .map_err(|_| RpcError::Region {
                service: String::new(),
                reason: "the token must be printable ASCII".to_string(),
            })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, self.0.clone());
        Ok(request)
    }
}

/// A Flight client that sends the region's token.
pub type FlightClient = FlightServiceClient<InterceptedService<Channel, BearerToken>>;

/// A Flight client for the instance at `address` (`http://host:port`). The
/// connection is made on first use.
pub fn connect(
    address: &str,
    token: &BearerToken,
    timeout: Duration,
) -> Result<FlightClient, RpcError> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| RpcError::Start {
            address: address.to_string(),
            reason: format!("not a valid endpoint: {e}"),
        })?
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(protocol::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(protocol::CONNECTION_WINDOW_BYTES)
        .max_frame_size(protocol::MAX_FRAME_BYTES);
    Ok(
        FlightServiceClient::with_interceptor(endpoint.connect_lazy(), token.clone())
            .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(protocol::MAX_MESSAGE_BYTES),
    )
}

/// How many times a request is re-sent because another request's failure
/// ended the exchange it was on, before such failures count as its own.
const MAX_COLLATERAL_RESENDS: usize = 8;

/// Why one attempt of a request failed.
#[derive(Debug, Clone)]
enum Failure {
    /// The instance failed; another may succeed.
    Retry(String),
    /// Another request's error ended the exchange this one was on.
    Collateral(String),
    /// Any instance would answer the same (bad arguments, unknown function).
    Reject(String),
}

fn failure_of(status: &Status, address: &str) -> Failure {
    let reason = format!("{address}: {} ({:?})", status.message(), status.code());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::Unauthenticated
        | Code::PermissionDenied => Failure::Reject(reason),
        _ => Failure::Retry(reason),
    }
}

type Waiter = oneshot::Sender<Result<RecordBatch, Failure>>;

/// The requests of one session awaiting their answers.
#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set when the session's stream ended, with why.
    closed: Option<String>,
}

/// One `DoExchange` stream to one instance for one function.
struct Session {
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
}

struct Writer {
    encoder: BatchEncoder,
    sender: mpsc::Sender<FlightData>,
    messages: Vec<FlightData>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    fn open(client: &FlightClient, address: &str, function: &str) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(16);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let session = Arc::new(Self {
            writer: tokio::sync::Mutex::new(Writer {
                encoder: BatchEncoder::new(Some(protocol::function_descriptor(function))),
                sender,
                messages: Vec::new(),
            }),
            pending: Arc::clone(&pending),
        });
        let mut client = client.clone();
        let address = address.to_string();
        tokio::spawn(async move {
            let (reason, failure) = match client.do_exchange(ReceiverStream::new(receiver)).await {
                Ok(response) => read_answers(response.into_inner(), &pending, &address).await,
                Err(status) => (status.message().to_string(), Some(status)),
            };
            let mut state = lock(&pending);
            let reason = format!("exchange with {address} ended: {reason}");
            let guilty = failure.as_ref().and_then(sequence_of);
            for (seq, waiter) in state.waiters.drain() {
                let failure = match (&failure, guilty) {
                    (Some(status), Some(g)) if g == seq => failure_of(status, &address),
                    (Some(_), Some(g)) => Failure::Collateral(format!(
                        "{reason} (the error of request {g}, not this one)"
                    )),
                    (Some(status), None) if status.code() != Code::Internal => {
                        failure_of(status, &address)
                    }
                    _ => Failure::Retry(reason.clone()),
                };
                let _ = waiter.send(Err(failure));
            }
            state.closed = Some(reason);
        });
        session
    }

    fn is_closed(&self) -> bool {
        lock(&self.pending).closed.is_some()
    }

    /// Sends one request and waits for its answer.
    async fn request(&self, seq: u64, arguments: &RecordBatch) -> Result<RecordBatch, Failure> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = lock(&self.pending);
            if let Some(reason) = &state.closed {
                return Err(Failure::Retry(reason.clone()));
            }
            state.waiters.insert(seq, tx);
        }
        let _forget = Forget {
            pending: &self.pending,
            seq,
        };
        {
            let mut writer = self.writer.lock().await;
            let Writer {
                encoder,
                sender,
                messages,
            } = &mut *writer;
            messages.clear();
            encoder
                .encode(arguments, protocol::encode_sequence(seq), messages)
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

/// Removes a request's waiter when its attempt ends early (timeout, cancel).
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.seq);
    }
}

fn sequence_of(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(SEQUENCE_STATUS_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Routes answers to their waiters until the stream ends; returns why it
/// ended and the status it ended with, if any.
async fn read_answers(
    answers: Streaming<FlightData>,
    pending: &Mutex<Pending>,
    address: &str,
) -> (String, Option<Status>) {
    let mut decoder = FlightDataDecoder::new(answers.map(|m| m.map_err(FlightError::from)));
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
        match protocol::decode_sequence(&decoded.inner.app_metadata) {
            Ok(Some(seq)) => {
                let waiter = lock(pending).waiters.remove(&seq);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(batch));
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

/// A connection to one instance and its sessions, one per function.
struct MemberConn {
    id: u64,
    address: String,
    client: FlightClient,
    /// The instance itself, when it serves in this process and the
    /// service's transport allows reaching it directly.
    local: Option<LocalInstance>,
    outstanding: AtomicUsize,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl MemberConn {
    fn session(&self, function: &str) -> Arc<Session> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(function) {
            Some(session) if !session.is_closed() => Arc::clone(session),
            _ => {
                let session = Session::open(&self.client, &self.address, function);
                sessions.insert(function.to_string(), Arc::clone(&session));
                session
            }
        }
    }
}

/// Counts a request outstanding on an instance until dropped.
struct Outstanding(Arc<MemberConn>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one request of [`ServiceClient::call_as`] went, for a caller's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallReport {
    /// Attempts re-sent after a failure or timeout.
    pub retries: u64,
    /// The request failed after its retries and its rows got NULL
    /// (`on_error = 'null'`).
    pub nulled: bool,
}

/// What a client has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests that returned a result.
    pub requests: u64,
    /// Rows in those requests.
    pub rows: u64,
    /// Attempts re-sent after a failure or timeout.
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Requests that failed after all attempts.
    pub failures: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rows: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    failures: AtomicU64,
}

struct Inner {
    service: String,
    options: ServiceOptions,
    token: BearerToken,
    membership: MembershipWatch,
    conns: Mutex<HashMap<u64, Arc<MemberConn>>>,
    cursor: AtomicUsize,
    random: AtomicU64,
    sequence: AtomicU64,
    counters: Counters,
}

/// A caller of one service. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client of the service `service` whose instances `membership`
    /// publishes, sending `token`. Must be called within a tokio runtime.
    pub fn new(
        service: impl Into<String>,
        options: ServiceOptions,
        token: &str,
        membership: MembershipWatch,
    ) -> Result<Self, RpcError> {
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let inner = Arc::new(Inner {
            service: service.into(),
            options,
            token: BearerToken::new(token)?,
            membership,
            conns: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
            random: AtomicU64::new(seed | 1),
            sequence: AtomicU64::new(0),
            counters: Counters::default(),
        });
        tokio::spawn(prune_on_change(
            Arc::downgrade(&inner),
            inner.membership.clone(),
        ));
        Ok(Self { inner })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The options the client routes by.
    pub fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    /// What the client has done so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Evaluates `function` on one argument batch (one column per argument)
    /// and returns one value per row, retrying on another instance after a
    /// failure or timeout.
    pub async fn call(&self, function: &str, arguments: RecordBatch) -> Result<ArrayRef, RpcError> {
        self.send(function, &arguments, &mut CallReport::default())
            .await
    }

    /// Evaluates `function` like [`Self::call`], with the result cast to
    /// `result_type` (the type the caller planned with). With `on_error =
    /// 'null'`, a request that failed after its retries answers NULL for
    /// each of its rows, and the report says so.
    pub async fn call_as(
        &self,
        function: &str,
        arguments: &RecordBatch,
        result_type: &DataType,
    ) -> Result<(ArrayRef, CallReport), RpcError> {
        let mut report = CallReport::default();
        let result = self
            .send(function, arguments, &mut report)
            .await
            .and_then(|result| {
                if result.data_type() == result_type {
                    Ok(result)
                } else {
                    Ok(cast(&result, result_type)?)
                }
            });
        match result {
            Ok(result) => Ok((result, report)),
            Err(_) if self.inner.options.on_error == OnError::Null => {
                report.nulled = true;
                Ok((new_null_array(result_type, arguments.num_rows()), report))
            }
            Err(error) => Err(error),
        }
    }

    async fn send(
        &self,
        function: &str,
        arguments: &RecordBatch,
        report: &mut CallReport,
    ) -> Result<ArrayRef, RpcError> {
        let inner = &self.inner;
        let attempts = inner.options.retries + 1;
        let mut tried_ids = Vec::with_capacity(attempts);
        let mut tried = Vec::with_capacity(attempts);
        let mut last = String::new();
        let (mut failed, mut collateral) = (0, 0);
        while failed < attempts {
            let conn = self.pick(function, &tried_ids).await?;
            if failed + collateral > 0 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                report.retries += 1;
            }
            let outcome = self.attempt(Arc::clone(&conn), function, arguments).await;
            self.prune_if_idle(&conn);
            match outcome {
                Ok(result) => {
                    inner.counters.requests.fetch_add(1, Ordering::Relaxed);
                    inner
                        .counters
                        .rows
                        .fetch_add(arguments.num_rows() as u64, Ordering::Relaxed);
                    return Ok(result);
                }
                Err(Failure::Reject(reason)) => {
                    inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(RpcError::Rejected {
                        service: inner.service.clone(),
                        function: function.to_string(),
                        reason,
                    });
                }
                // not this request's fault: re-sent without using a retry
                Err(Failure::Collateral(reason)) if collateral < MAX_COLLATERAL_RESENDS => {
                    collateral += 1;
                    last = reason;
                }
                Err(Failure::Retry(reason) | Failure::Collateral(reason)) => {
                    failed += 1;
                    tried_ids.push(conn.id);
                    tried.push(conn.address.clone());
                    last = reason;
                }
            }
        }
        inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        Err(RpcError::Exhausted {
            service: inner.service.clone(),
            function: function.to_string(),
            attempts,
            tried,
            last,
        })
    }

    /// The signature a ready instance gives for `function` (`GetFlightInfo`).
    pub async fn describe(&self, function: &str) -> Result<protocol::FunctionSignature, RpcError> {
        let conn = self.pick(function, &[]).await?;
        let mut client = conn.client.clone();
        let request = client.get_flight_info(protocol::function_descriptor(function));
        let rejected = |reason: String| RpcError::Rejected {
            service: self.inner.service.clone(),
            function: function.to_string(),
            reason,
        };
        let info = tokio::time::timeout(self.inner.options.timeout, request)
            .await
            .map_err(|_| {
                rejected(format!(
                    "{}: no description within the timeout",
                    conn.address
                ))
            })?
            .map_err(|status| rejected(format!("{}: {}", conn.address, status.message())))?
            .into_inner();
        Ok(protocol::signature_of(info)?)
    }

    /// Evaluates `function` over a stream of argument batches, each sliced to
    /// `batch_size` rows (and `max_batch_bytes`), with up to `max_in_flight`
    /// requests outstanding. Yields one result array per request, in order.
    pub fn call_stream<S>(
        &self,
        function: &str,
        input: S,
    ) -> impl Stream<Item = Result<ArrayRef, RpcError>> + Send + use<S>
    where
        S: Stream<Item = RecordBatch> + Send,
    {
        let client = self.clone();
        let function: Arc<str> = Arc::from(function);
        let options = &self.inner.options;
        let (rows, bytes) = (options.batch_size, options.max_batch_bytes);
        input
            .flat_map(move |batch| stream::iter(slices(&batch, rows, bytes)))
            .map(move |request| {
                let client = client.clone();
                let function = Arc::clone(&function);
                async move { client.call(&function, request).await }
            })
            .buffered(options.max_in_flight)
    }

    async fn attempt(
        &self,
        conn: Arc<MemberConn>,
        function: &str,
        arguments: &RecordBatch,
    ) -> Result<ArrayRef, Failure> {
        conn.outstanding.fetch_add(1, Ordering::Relaxed);
        let _outstanding = Outstanding(Arc::clone(&conn));
        let timeout = self.inner.options.timeout;
        let answer = match &conn.local {
            // handed over in-process: the array itself comes back
            Some(local) => tokio::time::timeout(timeout, local.call(function, arguments.clone()))
                .await
                .map(|answer| answer.map_err(|status| failure_of(&status, &conn.address))),
            None => {
                let seq = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
                let session = conn.session(function);
                tokio::time::timeout(timeout, session.request(seq, arguments))
                    .await
                    .map(|answer| answer.and_then(|batch| only_column(&batch, &conn.address)))
            }
        };
        let answer = match answer {
            Ok(answer) => answer?,
            Err(_) => {
                self.inner.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::Retry(format!(
                    "{}: no answer within the timeout of {timeout:?}",
                    conn.address
                )));
            }
        };
        if answer.len() != arguments.num_rows() {
            return Err(Failure::Retry(format!(
                "{}: answered {} rows for a request of {} rows; expected as many",
                conn.address,
                answer.len(),
                arguments.num_rows()
            )));
        }
        Ok(answer)
    }

    /// Picks a ready instance by policy, preferring ones not tried yet;
    /// waits up to the timeout for one to be ready.
    async fn pick(&self, function: &str, tried: &[u64]) -> Result<Arc<MemberConn>, RpcError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.options.timeout;
        let mut watch = inner.membership.clone();
        loop {
            let snapshot = Arc::clone(&watch.borrow_and_update());
            let ready: Vec<&Member> = snapshot.ready().collect();
            if !ready.is_empty() {
                let fresh: Vec<&Member> = ready
                    .iter()
                    .copied()
                    .filter(|m| !tried.contains(&m.id))
                    .collect();
                let candidates = if fresh.is_empty() { ready } else { fresh };
                let conns = self.conns_for(&candidates)?;
                return Ok(self.choose(conns));
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(RpcError::Region {
                        service: inner.service.clone(),
                        reason: "the service was stopped".to_string(),
                    });
                }
                Err(_) => {
                    return Err(RpcError::NoInstance {
                        service: inner.service.clone(),
                        function: function.to_string(),
                        waited: inner.options.timeout,
                    });
                }
            }
        }
    }

    fn conns_for(&self, members: &[&Member]) -> Result<Vec<Arc<MemberConn>>, RpcError> {
        let mut conns = lock(&self.inner.conns);
        members
            .iter()
            .map(|m| {
                if let Some(conn) = conns.get(&m.id) {
                    return Ok(Arc::clone(conn));
                }
                let conn = Arc::new(MemberConn {
                    id: m.id,
                    address: m.address.clone(),
                    client: connect(&m.address, &self.inner.token, self.inner.options.timeout)?,
                    local: match self.inner.options.transport {
                        Transport::Auto => LocalInstance::find(&m.address),
                        Transport::Flight => None,
                    },
                    outstanding: AtomicUsize::new(0),
                    sessions: Mutex::new(HashMap::new()),
                });
                conns.insert(m.id, Arc::clone(&conn));
                Ok(conn)
            })
            .collect()
    }

    fn choose(&self, mut conns: Vec<Arc<MemberConn>>) -> Arc<MemberConn> {
        let inner = &self.inner;
        let n = conns.len();
        let load = |c: &Arc<MemberConn>| c.outstanding.load(Ordering::Relaxed);
        let index = match inner.options.load_balance {
            LoadBalance::RoundRobin => inner.cursor.fetch_add(1, Ordering::Relaxed) % n,
            LoadBalance::LeastOutstanding => {
                // start the scan at a rotating offset so ties spread evenly
                let start = inner.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|i| load(&conns[*i]))
                    .unwrap_or(0)
            }
            LoadBalance::PowerOfTwo => {
                let a = self.random_below(n);
                let b = if n > 1 {
                    (a + 1 + self.random_below(n - 1)) % n
                } else {
                    a
                };
                if load(&conns[b]) < load(&conns[a]) {
                    b
                } else {
                    a
                }
            }
        };
        conns.swap_remove(index)
    }

    fn random_below(&self, n: usize) -> usize {
        // xorshift64*: good enough to spread load, no dependency needed
        let mut x = self.inner.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.inner.random.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545F4914F6CDD1D);
        usize::try_from(r % n as u64).unwrap_or(0)
    }

    /// Closes the connection to an instance that is no longer ready once no
    /// request is outstanding on it, which ends its exchanges and lets a
    /// draining instance stop.
    fn prune_if_idle(&self, conn: &MemberConn) {
        let ready = self.inner.membership.borrow().is_ready(conn.id);
        if !ready && conn.outstanding.load(Ordering::Relaxed) == 0 {
            lock(&self.inner.conns).remove(&conn.id);
        }
    }
}

/// The one result column of an answer batch.
fn only_column(answer: &RecordBatch, address: &str) -> Result<ArrayRef, Failure> {
    match answer.columns() {
        [column] => Ok(Arc::clone(column)),
        columns => Err(Failure::Retry(format!(
            "{address}: answered {} columns; expected one",
            columns.len()
        ))),
    }
}

/// Closes idle connections to members that left the ready set, whenever the
/// membership changes; ends with the client or the region.
async fn prune_on_change(client: Weak<Inner>, mut watch: MembershipWatch) {
    while watch.changed().await.is_ok() {
        let Some(inner) = client.upgrade() else {
            return;
        };
        let snapshot = Arc::clone(&watch.borrow_and_update());
        lock(&inner.conns).retain(|id, conn| {
            snapshot.is_ready(*id) || conn.outstanding.load(Ordering::Relaxed) > 0
        });
    }
}

/// Splits a batch into requests of at most `rows` rows and about `bytes` bytes.
pub fn slices(batch: &RecordBatch, rows: usize, bytes: usize) -> Vec<RecordBatch> {
    let total = batch.num_rows();
    if total == 0 {
        return vec![batch.clone()];
    }
    let size = batch.get_array_memory_size().max(1);
    let by_bytes = (bytes.saturating_mul(total) / size).max(1);
    let step = rows.min(by_bytes).max(1);
    (0..total)
        .step_by(step)
        .map(|offset| batch.slice(offset, step.min(total - offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;

    #[test]
    fn slices_cover_every_row_once() {
        let array: ArrayRef = Arc::new(Int32Array::from_iter_values(0..10_000));
        let batch = RecordBatch::try_from_iter([("a", array)]).unwrap();
        let parts = slices(&batch, 3000, usize::MAX);
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            [3000, 3000, 3000, 1000]
        );
        let parts = slices(&batch, 10_000, 4000);
        assert!(parts.len() >= 10, "{}", parts.len());
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).sum::<usize>(),
            10_000
        );
        assert_eq!(slices(&batch.slice(0, 0), 10, 10).len(), 1);
    }

    #[test]
    fn status_classes() {
        assert!(matches!(
            failure_of(&Status::invalid_argument("x"), "a"),
            Failure::Reject(_)
        ));
        assert!(matches!(
            failure_of(&Status::unavailable("x"), "a"),
            Failure::Retry(_)
        ));
        assert!(matches!(
            failure_of(&Status::internal("x"), "a"),
            Failure::Retry(_)
        ));
    }
}
