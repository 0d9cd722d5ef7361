//! Reaching one instance: a [`Connection`] sends a request by the cheapest
//! way the instance allows.
//!
//! An instance serving in this process (a `thread` instance, with
//! `transport = 'auto'`) is handed the batch directly: no IPC encoding, no
//! socket. Any other is reached over Flight, on one persistent `DoExchange`
//! per function (`exchange`), multiplexed by sequence number; with
//! `transport = 'auto'` the exchange offers the instance shared memory for
//! the message bodies, which an instance on this host accepts; a Flight UDF
//! server of another protocol, on an exchange per request in flight
//! (`udf_server`). Either way an
//! attempt fails with a [`Failure`] that tells the client whether another
//! instance could do better.

mod exchange;
mod failure;
mod udf_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::watch;

use crate::instance::LocalInstance;
use crate::options::Protocol;
use crate::wire::FlightClient;
use exchange::{Exchange, lock};
pub(crate) use failure::{Failure, MAX_COLLATERAL_RESENDS, failure_of};
use udf_server::UdfServer;

/// A connection to one instance and its exchanges, one per function.
pub(crate) struct Connection {
    /// The instance's member id.
    pub(crate) id: u64,
    /// The region slot it fills.
    pub(crate) slot: usize,
    /// Its address, `http://host:port`.
    pub(crate) address: String,
    /// A Flight client of it, for the wire and for `GetFlightInfo`.
    pub(crate) client: FlightClient,
    /// The instance itself, when it serves in this process and the
    /// service's transport allows reaching it directly.
    local: Option<LocalInstance>,
    /// The server, when it speaks another protocol than rpcop's.
    udf_server: Option<UdfServer>,
    /// Offer the instance shared memory for its exchanges (the transport
    /// allows it, and the instance is not reached in-process).
    share: bool,
    /// Decode its answers without validating them again: it runs rpcop's
    /// own instance code, in this process or started by the region.
    trusted: bool,
    /// Requests outstanding on it from this client.
    pub(crate) outstanding: AtomicUsize,
    /// Its recent answer time in microseconds (0 until the first), a moving
    /// average of the last few (each new one weighs 1/8).
    latency_us: AtomicU64,
    /// Until when (microseconds since `created`) it is probably still busy
    /// with an attempt this client gave up (a lost hedge, a timeout, a
    /// cancel): the instance works on, though nothing is outstanding here.
    busy_until_us: AtomicU64,
    created: std::time::Instant,
    exchanges: Mutex<HashMap<String, Arc<Exchange>>>,
    /// Set, with why, once the instance has left its service (it died, or
    /// was replaced): requests still waiting on it fail at once.
    gone: watch::Sender<Option<String>>,
}

impl Connection {
    /// A connection to the instance `id` at `address`, which speaks
    /// `protocol`; `direct` allows the in-process hand-off when the
    /// instance serves in this process; `own` says the region started it
    /// from rpcop's own serve program (its answers are trusted, as those of
    /// an instance in this process are).
    pub(crate) fn new(
        id: u64,
        slot: usize,
        address: &str,
        client: FlightClient,
        direct: bool,
        protocol: Protocol,
        own: bool,
    ) -> Self {
        let udf_server = (!protocol.is_rpcop()).then(|| UdfServer::new(client.clone(), address));
        let in_process = LocalInstance::find(address);
        let trusted = protocol.is_rpcop() && (own || in_process.is_some());
        let local = in_process.filter(|_| direct);
        Self {
            id,
            slot,
            address: address.to_string(),
            client,
            share: direct && local.is_none(),
            trusted,
            local,
            udf_server,
            outstanding: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
            busy_until_us: AtomicU64::new(0),
            created: std::time::Instant::now(),
            exchanges: Mutex::new(HashMap::new()),
            gone: watch::Sender::new(None),
        }
    }

    /// Notes how long an attempt on it took, `answered` or given up (a
    /// timeout, a hedge that won elsewhere, a cancelled query). A given-up
    /// attempt took at least that long: it can only raise the estimate.
    pub(crate) fn record_latency(&self, took: Duration, answered: bool) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        if !answered {
            // still at work on it, probably for about its usual time
            let until = self.now_us().saturating_add(self.latency_us().max(sample));
            self.busy_until_us.fetch_max(until, Ordering::Relaxed);
        }
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                if now == 0 {
                    Some(sample)
                } else if sample >= now {
                    Some(now + (sample - now) / 8)
                } else if answered {
                    Some(now - (now - sample) / 8)
                } else {
                    None
                }
            });
    }

    /// Notes that a hedge sent elsewhere answered first: strong evidence that
    /// this instance is slower than its estimate, which doubles (at least).
    pub(crate) fn lost_hedge(&self) {
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_mul(2).max(1))
            });
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Is it idle: nothing outstanding here, and no given-up attempt it is
    /// probably still working on?
    pub(crate) fn is_idle(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) == 0
            && self.now_us() >= self.busy_until_us.load(Ordering::Relaxed)
    }

    /// Its recent answer time in microseconds; 0 before any.
    pub(crate) fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    /// Marks the instance as gone, with why: every request waiting on it
    /// (now or later) fails with [`Failure::Lost`].
    pub(crate) fn abandon(&self, reason: String) {
        self.gone.send_if_modified(|gone| {
            let first = gone.is_none();
            if first {
                *gone = Some(reason);
            }
            first
        });
    }

    /// Resolves, with why, when the instance is gone ([`Self::abandon`]).
    pub(crate) async fn abandoned(&self) -> String {
        let mut gone = self.gone.subscribe();
        // the watch's guard is let go before any other await
        let reason = gone.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(reason) => reason.unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Evaluates `function` on `arguments` on this instance, as request
    /// `seq` of its exchange; one value per argument row is the caller's to
    /// check.
    pub(crate) async fn evaluate(
        &self,
        function: &str,
        arguments: &RecordBatch,
        seq: u64,
    ) -> Result<ArrayRef, Failure> {
        if let Some(server) = &self.udf_server {
            return server.evaluate(function, arguments).await;
        }
        match &self.local {
            // handed over in-process: the array itself comes back
            Some(local) => local
                .call(function, arguments.clone())
                .await
                .map_err(|status| failure_of(&status, &self.address)),
            None => {
                let exchange = self.exchange(function, arguments.schema_ref());
                let answer = exchange.request(seq, arguments).await?;
                match answer.columns() {
                    [column] => Ok(Arc::clone(column)),
                    columns => Err(Failure::Retry(format!(
                        "{}: answered {} columns; expected one",
                        self.address,
                        columns.len()
                    ))),
                }
            }
        }
    }

    /// The open exchange for `function` and arguments of `schema`, or a
    /// new one (the old one ends once its requests are answered).
    fn exchange(&self, function: &str, schema: &SchemaRef) -> Arc<Exchange> {
        let mut exchanges = lock(&self.exchanges);
        match exchanges.get(function) {
            Some(exchange) if exchange.serves(schema) => Arc::clone(exchange),
            _ => {
                let exchange = Exchange::open(
                    &self.client,
                    &self.address,
                    function,
                    schema,
                    (self.share, self.trusted),
                );
                exchanges.insert(function.to_string(), Arc::clone(&exchange));
                exchange
            }
        }
    }
}
