//! One service instance: an Arrow Flight server hosting a service's functions.
//!
//! An [`Instance`] loads its functions once (the "model load"), then serves
//! the wire protocol (`flight`; each exchange is served by `exchange`, which
//! reads requests ahead so that a caller's cancel reaches them before they
//! run). Up to `threads` requests are evaluated at
//! once, on the instance's own evaluation threads fed by one queue
//! (`evaluator`), apart from the runtime that serves its network I/O, so a
//! slow function never stalls it. The instance checks every call's bearer
//! token and can be drained: it then refuses new exchanges and serves the
//! open ones to their end; told to stop, it gives open exchanges
//! [`SHUTDOWN_GRACE`] to finish. It accepts a bounded number of connections,
//! each of which must speak within a few seconds (`listener`), on TCP or a
//! Unix domain socket (`bind`). While it
//! serves, a caller in the same process can also reach it without the
//! network (`local`).

mod bind;
mod counters;
mod evaluator;
mod exchange;
mod flight;
#[cfg(feature = "fuzzing")]
pub(crate) use flight::decode_requests;
mod host;
mod listener;
mod local;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::config::ConfigOptions;
use futures::future::Either;
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;

use crate::error::{FunctionError, RpcError};
use crate::function::{HostedFunction, LoadContext};
use crate::wire::{self, Secret, check_token};
pub(crate) use bind::{Listener, bind};
use counters::Counters;
pub(crate) use counters::InFlight;
use evaluator::Evaluator;
use flight::FlightHandler;
pub(crate) use flight::FlightStream;
use host::Host;
pub(crate) use local::LocalInstance;
use local::Serving;

/// The functions an instance hosts and its resource profile.
#[derive(Debug, Clone)]
pub(crate) struct InstanceConfig {
    functions: Vec<HostedFunction>,
    token: Secret,
    threads: usize,
    cuda_device: Option<usize>,
    max_message: usize,
}

impl InstanceConfig {
    /// An instance hosting `functions`, answering calls that carry `token`.
    pub(crate) fn new(functions: Vec<HostedFunction>, token: &str) -> Self {
        Self {
            functions,
            token: Secret::new(token),
            threads: 1,
            cuda_device: None,
            max_message: wire::MAX_MESSAGE_BYTES,
        }
    }

    /// The largest message the instance accepts or sends; a larger one
    /// fails its call with `OUT_OF_RANGE`.
    pub(crate) fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Requests evaluated at once (the instance's worker threads).
    pub(crate) fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The CUDA device (an ordinal this process sees) of a GPU instance.
    pub(crate) fn with_cuda_device(mut self, device: Option<usize>) -> Self {
        self.cuda_device = device;
        self
    }
}

/// A loaded instance, ready to serve (see [`Instance::serve`]).
#[derive(Clone)]
pub(crate) struct Instance {
    host: Arc<Host>,
    token: Secret,
    max_message: usize,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("functions", &self.host.functions.keys())
            .field("threads", &self.host.threads)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Loads every function (the one-time start-up; blocking, may be slow)
    /// and starts the evaluation threads. Called within a tokio runtime,
    /// the threads enter it, so functions may use it.
    pub(crate) fn load(config: &InstanceConfig) -> Result<Self, FunctionError> {
        let counters = Counters::default();
        let start = Instant::now();
        let mut functions = BTreeMap::new();
        let context = LoadContext::new(config.threads).with_cuda_device(config.cuda_device);
        for hosted in &config.functions {
            let loaded = hosted.load(&context)?;
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
            host: Arc::new(Host {
                functions,
                counters: Arc::new(counters),
                evaluator,
                threads: config.threads,
                config: Arc::new(ConfigOptions::default()),
                session: Mutex::default(),
            }),
            token: config.token.clone(),
            max_message: config.max_message,
        })
    }

    /// The instance, answering calls that carry `token` instead (one that
    /// learns its token after loading: `rpcop serve --register`).
    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Secret::new(token);
        self
    }

    /// Serves on `listener` (over TLS with `tls`) until `shutdown`
    /// completes. Then (or when this future is dropped) the instance stops
    /// evaluating: it serves once.
    pub(crate) async fn serve(
        self,
        listener: Listener,
        tls: Option<ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RpcError> {
        let address = listener.address()?;
        let expected = wire::bearer(self.token.expose());
        let service = FlightServiceServer::new(FlightHandler {
            host: Arc::clone(&self.host),
            max_message: self.max_message,
        })
        .max_decoding_message_size(self.max_message)
        .max_encoding_message_size(self.max_message);
        let service = InterceptedService::new(service, move |request: Request<()>| {
            check_token(&request, &expected)?;
            Ok(request)
        });
        let _serving = Serving::new(address.clone(), &self.host);
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(());
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| RpcError::Tls {
                reason: format!("the instance's certificate or key: {e}"),
            })?;
        }
        // TCP_NODELAY is set on each accepted connection (listener.rs)
        let router = builder
            .initial_stream_window_size(wire::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(wire::CONNECTION_WINDOW_BYTES)
            .max_frame_size(wire::MAX_FRAME_BYTES)
            .http2_keepalive_interval(Some(wire::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(wire::KEEPALIVE_INTERVAL * 2))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(service);
        // the socket's file goes when the server is done with it
        let (server, _file) = match listener {
            Listener::Tcp(tcp) => (
                Either::Left(router.serve_with_incoming_shutdown(listener::bounded(tcp), shutdown)),
                None,
            ),
            Listener::Unix(unix, file) => (
                Either::Right(
                    router.serve_with_incoming_shutdown(listener::bounded_unix(unix), shutdown),
                ),
                Some(file),
            ),
        };
        // once told to stop, open exchanges have SHUTDOWN_GRACE to finish:
        // a caller that keeps one open (and sends nothing) cannot hold the
        // instance up
        let grace = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                tracing::warn!(%address, "exchanges still open after the grace period; stopping");
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result.map_err(|e| RpcError::Serve {
                address,
                reason: e.to_string(),
            }),
            () = grace => Ok(()),
        }
    }
}

/// How long open exchanges have to finish once an instance is told to stop
/// (SIGTERM for `rpcop serve`).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Exchanges one connection may have open at once (rpcop's client opens
/// one per function it calls).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
