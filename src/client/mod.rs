//! The caller's side of a service: routing, flow control, timeouts, retries.
//!
//! A [`ServiceClient`] follows a service's membership watch and sends each
//! request to a ready instance chosen by the service's load-balancing policy
//! (`routing`), through the cheapest transport the instance allows
//! ([`crate::transport`]). A request that fails on an instance (the instance
//! died, closed the stream, answered wrongly) or times out is re-sent to
//! another instance, up to `retries` times; services are stateless, so a
//! retry cannot duplicate a result. With `hedge_after`, a request still
//! unanswered after that long is also sent to a second instance and the
//! first answer wins (`hedging`). [`ServiceClient::call_stream`] cuts
//! batches into requests (`batching`), keeps up to `max_in_flight` of them
//! outstanding and yields results in request order.

mod batching;
mod hedging;
mod routing;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, stream};
use tonic::Code;

pub(crate) use batching::slices;

use hedging::{Latencies, Winner, race};
use routing::Router;
use stats::Counters;
pub(crate) use stats::OpenStream;
pub use stats::{CallReport, ClientStats};

use crate::error::RpcError;
use crate::instance::InFlight;
use crate::options::{Hedge, OnError, ServiceOptions};
use crate::region::{Demand, MembershipWatch, ServiceRegion, may_blame_request};
use crate::transport::{Connection, Failure, MAX_COLLATERAL_RESENDS};
use crate::wire::{self, Access, FunctionSignature};

/// The bytes of the rows of `arguments` (a slice counts its rows, not the
/// buffers it shares).
fn argument_bytes(arguments: &RecordBatch) -> usize {
    arguments
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// How many instances one request may kill before it is failed as a
/// suspected poison pill ([`RpcError::PoisonPill`]) instead of being sent to
/// the next one: one death may be the instance's bad luck, two in a row are
/// the request.
const POISON_PILL_DEATHS: usize = 2;

struct Inner {
    service: String,
    options: ServiceOptions,
    router: Arc<Router>,
    sequence: AtomicU64,
    counters: Arc<Counters>,
    /// Recent answer times, for `hedge_after = 'auto'`.
    latencies: Latencies,
    /// Where the requests outstanding are also counted for the region's
    /// autoscaler, for a client its region made.
    demand: Option<Arc<Demand>>,
}

/// A caller of one service. Cheap to clone; clones share connections.
///
/// ```no_run
/// # async fn example(region: &rpcop::ServiceRegion) -> Result<(), rpcop::RpcError> {
/// use std::sync::Arc;
/// use datafusion::arrow::array::{ArrayRef, StringArray};
/// use datafusion::arrow::record_batch::RecordBatch;
///
/// let client = region.client()?;
/// let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
/// let args = RecordBatch::try_from_iter([("text", text)])?;
/// let upper = client.call("upper", args).await?;
/// assert_eq!(upper.len(), 2);
/// # Ok(()) }
/// ```
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

impl ServiceRegion {
    /// A client of this service with its options.
    pub fn client(&self) -> Result<ServiceClient, RpcError> {
        self.client_with(self.options())
    }

    /// A client of this service with other routing options (policy,
    /// in-flight limit, timeout, retries).
    pub fn client_with(&self, options: ServiceOptions) -> Result<ServiceClient, RpcError> {
        ServiceClient::build(
            self.name().to_string(),
            options,
            self.token(),
            self.membership(),
            Some(self.demand_counter()),
        )
    }
}

impl ServiceClient {
    /// A client of the service `service` whose instances `membership`
    /// publishes, sending `token`. Must be called within a tokio runtime.
    /// Its requests do not count in an autoscaled region's demand: a client
    /// of a region should come from [`ServiceRegion::client`].
    pub fn new(
        service: impl Into<String>,
        options: ServiceOptions,
        token: &str,
        membership: MembershipWatch,
    ) -> Result<Self, RpcError> {
        Self::build(service.into(), options, token, membership, None)
    }

    /// [`Self::new`], also counting the requests outstanding in `demand`.
    fn build(
        service: String,
        options: ServiceOptions,
        token: &str,
        membership: MembershipWatch,
        demand: Option<Arc<Demand>>,
    ) -> Result<Self, RpcError> {
        let router = Router::new(
            service.clone(),
            &options,
            Access::of(token, &options)?,
            membership,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                options,
                router,
                sequence: AtomicU64::new(0),
                counters: Arc::default(),
                latencies: Latencies::default(),
                demand,
            }),
        })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The options the client routes by.
    pub fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    /// How many instances of the service are ready now.
    pub fn ready_instances(&self) -> usize {
        self.inner.router.ready_instances()
    }

    /// What the client has done so far.
    pub fn stats(&self) -> ClientStats {
        self.inner.counters.snapshot()
    }

    /// Evaluates `function` on one argument batch (one column per argument)
    /// and returns one value per row, retrying on another instance after a
    /// failure or timeout.
    pub async fn call(&self, function: &str, arguments: RecordBatch) -> Result<ArrayRef, RpcError> {
        self.send(function, &arguments, &mut CallReport::default())
            .await
    }

    /// Evaluates `function` over a stream of argument batches, each sliced to
    /// `batch_size` rows (and `max_batch_bytes`), with up to `max_in_flight`
    /// requests outstanding. Yields one result array per request, in order;
    /// pulls input only when a request slot is free, so nothing is buffered
    /// without bound.
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
        let options = self.options();
        let (rows, bytes) = (options.batch_size, options.request_bytes());
        let open = self.open_stream();
        input
            .flat_map(move |batch| stream::iter(slices(&batch, rows, bytes)))
            .map(move |request| {
                let _open = &open;
                let client = client.clone();
                let function = Arc::clone(&function);
                async move { client.call(&function, request).await }
            })
            .buffered(options.max_in_flight)
    }

    /// Counts a stream of this client's (a query partition calling the
    /// service) as open until the guard is dropped.
    pub(crate) fn open_stream(&self) -> OpenStream {
        OpenStream::enter(&self.inner.counters)
    }

    /// How many streams of the service's callers are open now.
    #[cfg(feature = "ballista")]
    pub(crate) fn open_streams(&self) -> u64 {
        self.inner.counters.open_streams.load(Ordering::Acquire)
    }

    /// Resolves once no stream of the service's callers is open: every
    /// query running through it has ended (clients that took over this
    /// one's counters, after an `ALTER`, count with it).
    pub(crate) async fn streams_closed(&self) {
        let counters = &self.inner.counters;
        loop {
            let closed = counters.streams_closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if counters.open_streams.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
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
                    return Ok(result);
                }
                // strict: a value that does not fit is an error, not a NULL
                let strict = CastOptions {
                    safe: false,
                    ..CastOptions::default()
                };
                cast_with_options(&result, result_type, &strict).map_err(|e| RpcError::Rejected {
                    service: self.inner.service.clone(),
                    function: function.to_string(),
                    reason: format!(
                        "function '{function}' answered values of type {} that do not \
                             cast to the type it was planned with, {result_type} ({e}): a bug \
                             in the function's implementation",
                        result.data_type()
                    ),
                })
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

    /// Sends one request until it succeeds, is rejected, or has used its
    /// retries.
    async fn send(
        &self,
        function: &str,
        arguments: &RecordBatch,
        report: &mut CallReport,
    ) -> Result<ArrayRef, RpcError> {
        let inner = &self.inner;
        let _in_flight = InFlight::enter(&inner.counters.in_flight);
        let _demand = inner.demand.as_ref().map(|d| InFlight::enter(d.requests()));
        if arguments.num_rows() == 1 {
            // a request of one row is as small as requests get
            let bytes = argument_bytes(arguments);
            if bytes > inner.options.request_bytes() {
                Counters::add(&inner.counters.failures, 1);
                return Err(RpcError::RowTooLarge {
                    service: inner.service.clone(),
                    function: function.to_string(),
                    bytes,
                    limit: inner.options.request_bytes(),
                });
            }
        }
        let attempts = inner.options.retries + 1;
        let mut tried_ids = Vec::with_capacity(attempts);
        let mut tried = Vec::with_capacity(attempts);
        let mut last = String::new();
        let (mut failed, mut collateral) = (0, 0);
        let mut deaths = Vec::new();
        while failed < attempts {
            let connection = inner.router.pick(function, &tried_ids).await?;
            if failed + collateral > 0 {
                Counters::add(&inner.counters.retries, 1);
                report.retries += 1;
            }
            let (connection, outcome) = self.hedged(connection, function, arguments).await;
            inner.router.prune_if_idle(&connection);
            if let Err(failure) = &outcome {
                tracing::debug!(service = %inner.service, function, ?failure, "attempt failed");
            }
            if matches!(
                outcome,
                Err(Failure::Reject(_) | Failure::Retry(_) | Failure::Lost(_))
            ) {
                Counters::add(&inner.counters.errors, 1);
            }
            match outcome {
                Ok(result) => {
                    Counters::add(&inner.counters.requests, 1);
                    Counters::add(&inner.counters.rows, arguments.num_rows() as u64);
                    return Ok(result);
                }
                Err(Failure::Reject(reason)) => {
                    Counters::add(&inner.counters.failures, 1);
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
                    tried_ids.push(connection.id);
                    tried.push(connection.address.clone());
                    last = reason;
                }
                // the connection broke: if the instance died, say why
                Err(Failure::Lost(reason)) => {
                    failed += 1;
                    tried_ids.push(connection.id);
                    tried.push(connection.address.clone());
                    last = match inner.router.death_of(connection.id, connection.slot).await {
                        Some(why) => {
                            if may_blame_request(&why) {
                                deaths.push(format!("{}: {why}", connection.address));
                            }
                            if deaths.len() >= POISON_PILL_DEATHS {
                                Counters::add(&inner.counters.failures, 1);
                                return Err(RpcError::PoisonPill {
                                    service: inner.service.clone(),
                                    function: function.to_string(),
                                    rows: arguments.num_rows(),
                                    deaths,
                                });
                            }
                            format!("{reason}; the instance died: {why}")
                        }
                        None => reason,
                    };
                }
            }
        }
        Counters::add(&inner.counters.failures, 1);
        Err(RpcError::Exhausted {
            service: inner.service.clone(),
            function: function.to_string(),
            attempts,
            tried,
            last,
        })
    }

    /// One attempt on `connection`, hedged on another instance by the
    /// service's `hedge_after`; returns the connection whose outcome it is.
    async fn hedged(
        &self,
        connection: Arc<Connection>,
        function: &str,
        arguments: &RecordBatch,
    ) -> (Arc<Connection>, Result<ArrayRef, Failure>) {
        let inner = &self.inner;
        let due = || inner.latencies.due(inner.options.hedge_after);
        let mut second = None;
        let hedge = || {
            let other = inner.router.try_pick_other(connection.id)?;
            Counters::add(&inner.counters.hedges, 1);
            second = Some(Arc::clone(&other));
            Some(Box::pin(async move {
                self.attempt(&other, function, arguments).await
            }))
        };
        // boxed: two attempts side by side would double every caller's future
        let primary = Box::pin(self.attempt(&connection, function, arguments));
        let (winner, outcome) = race(due, primary, hedge).await;
        match (winner, second) {
            (Winner::Hedge, Some(second)) => {
                if outcome.is_ok() {
                    Counters::add(&inner.counters.hedge_wins, 1);
                    // routed around from now on, in proportion
                    connection.lost_hedge();
                }
                (second, outcome)
            }
            _ => (connection, outcome),
        }
    }

    /// One attempt on one instance, within the timeout, checked to answer
    /// one value per row.
    async fn attempt(
        &self,
        connection: &Connection,
        function: &str,
        arguments: &RecordBatch,
    ) -> Result<ArrayRef, Failure> {
        connection.outstanding.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let mut outstanding = Outstanding {
            connection,
            started,
            answered: false,
        };
        let timeout = self.inner.options.timeout;
        let seq = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        let evaluate = tokio::time::timeout(timeout, connection.evaluate(function, arguments, seq));
        // an instance that left the service (it died, wedged, was replaced)
        // answers nothing more: its requests go elsewhere now
        let answer = tokio::select! {
            answer = evaluate => answer.map_err(|_| {
                Counters::add(&self.inner.counters.timeouts, 1);
                Failure::Retry(format!(
                    "{}: no answer within the timeout of {timeout:?}",
                    connection.address
                ))
            })??,
            reason = connection.abandoned() => {
                return Err(Failure::Lost(format!("{}: {reason}", connection.address)));
            }
        };
        outstanding.answered = true;
        if self.inner.options.hedge_after == Hedge::Auto {
            self.inner
                .latencies
                .record(connection.id, started.elapsed());
        }
        // any instance of the same code would answer the same: not retried
        if answer.len() != arguments.num_rows() {
            return Err(Failure::Reject(format!(
                "{}: function '{function}' answered {} values for a request of {} rows, where \
                 one value per row is due: a bug in the function's implementation",
                connection.address,
                answer.len(),
                arguments.num_rows()
            )));
        }
        Ok(answer)
    }

    /// This client, adding to the counters of `previous` (a client of the
    /// same service whose options changed) rather than starting from zero.
    pub(crate) fn counting_with(mut self, previous: &ServiceClient) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.counters = Arc::clone(&previous.inner.counters);
        }
        self
    }

    /// The signature a ready instance gives for `function` (`GetFlightInfo`).
    pub async fn describe(&self, function: &str) -> Result<FunctionSignature, RpcError> {
        let connection = self.inner.router.pick(function, &[]).await?;
        let mut client = connection.client.clone();
        let request = client.get_flight_info(wire::function_descriptor(function));
        let (service, name) = (self.inner.service.clone(), function.to_string());
        let address = connection.address.clone();
        let info = match tokio::time::timeout(self.inner.options.timeout, request).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let reason = status.message().to_string();
                return Err(match status.code() {
                    Code::NotFound => RpcError::NotHosted {
                        service,
                        function: name,
                        address,
                        reason,
                    },
                    Code::FailedPrecondition => RpcError::NoSignature {
                        service,
                        function: name,
                        reason,
                    },
                    _ => RpcError::Rejected {
                        service,
                        function: name,
                        reason: format!("{address}: {reason}"),
                    },
                });
            }
            Err(_) => {
                return Err(RpcError::Rejected {
                    service,
                    function: name,
                    reason: format!("{address}: no description within the timeout"),
                });
            }
        };
        Ok(wire::signature_of(info)?)
    }
}

/// Counts a request outstanding on an instance until dropped, and notes
/// how long it was outstanding (answered or given up) in the instance's
/// latency, which routing weighs.
struct Outstanding<'a> {
    connection: &'a Connection,
    started: tokio::time::Instant,
    answered: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        let connection = self.connection;
        connection.outstanding.fetch_sub(1, Ordering::Relaxed);
        connection.record_latency(self.started.elapsed(), self.answered);
    }
}
