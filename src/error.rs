//! The typed errors of the rpcop library.
//!
//! [`FunctionError`] is what hosting a function can go wrong with;
//! [`RpcError`] is everything else a caller of a service, a region or an
//! instance sees: a variant per failure a caller can act on, carrying what
//! went wrong and why. The messages say what to do in the library's own
//! terms; the SQL session adds SQL-level advice (which statement to run)
//! where it turns them into `DataFusionError`s.

use std::time::Duration;

use datafusion::error::DataFusionError;

use crate::options::OptionError;

/// An error of a hosted function: unknown, failed to load, bad arguments, or
/// failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    /// No function of that name in the library.
    #[error(
        "unknown function '{function}': this binary's function library has {known} functions, and not this one; \
         check the name, or host it from your own binary (see examples/serve_own_function.rs)"
    )]
    Unknown {
        /// The name asked for.
        function: String,
        /// How many functions the library has.
        known: usize,
    },
    /// The loader (the model load) failed.
    #[error("function '{function}' failed to load: {reason}")]
    Load {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
    /// The argument types do not fit the function's signature.
    #[error("function '{function}' cannot take arguments of types ({}): {reason}", given.join(", "))]
    Arguments {
        /// The function.
        function: String,
        /// The argument types given.
        given: Vec<String>,
        /// Why they do not fit.
        reason: String,
    },
    /// The function failed on a batch: an answer for these rows that any
    /// instance would give (a value it cannot take, a broken result), so it
    /// is not retried.
    #[error("function '{function}' failed: {reason}")]
    Invoke {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
    /// The function failed for a reason of the moment (an I/O error, an
    /// external system, exhausted resources): another attempt, on another
    /// instance, may succeed.
    #[error("function '{function}' failed (transient): {reason}")]
    Transient {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
}

/// An error of a service region, an instance, or a call to a service.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A hosted function's error.
    #[error(transparent)]
    Function(#[from] FunctionError),
    /// A bad service option.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The region has no ready instance to send a request to.
    #[error(
        "service '{service}' has no ready instance for function '{function}' after waiting {waited:?}; \
         its instances' last errors say why"
    )]
    NoInstance {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// How long the caller waited for one.
        waited: Duration,
    },
    /// A request failed on every attempt.
    #[error(
        "service '{service}' could not serve function '{function}' after {attempts} attempt(s) on instances [{}]; last cause: {last}",
        tried.join(", ")
    )]
    Exhausted {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// How many times the request was sent.
        attempts: usize,
        /// The addresses of the instances tried, in order.
        tried: Vec<String>,
        /// The last failure.
        last: String,
    },
    /// A request whose attempts killed instances: suspected of killing any
    /// instance it reaches (a row too big for their memory, an input that
    /// crashes the function), so it is not sent again.
    #[error(
        "service '{service}': a request of {rows} row(s) for function '{function}' killed {} \
         instances, one after the other ({}); it is failed as a suspected poison pill and not \
         sent again, and the service lives on",
        deaths.len(),
        deaths.join("; ")
    )]
    PoisonPill {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The rows of the request.
        rows: usize,
        /// Why each instance it reached died.
        deaths: Vec<String>,
    },
    /// One row's arguments are bigger than a request may be
    /// ([`ServiceOptions::request_bytes`](crate::ServiceOptions::request_bytes)):
    /// no request can hold it within the limits the service was given.
    #[error(
        "service '{service}': one row of arguments for function '{function}' is {bytes} bytes, \
         more than a request may hold ({limit} bytes: max_batch_bytes, and three quarters of \
         max_message_size); raise max_batch_bytes (ALTER RPC SERVICE {service} SET \
         (max_batch_bytes = ...)) or max_message_size (fixed while the service runs: DROP and \
         CREATE it), or pass smaller values"
    )]
    RowTooLarge {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The row's argument bytes.
        bytes: usize,
        /// The most argument bytes of one request.
        limit: usize,
    },
    /// The instance rejected the request for a reason another instance would
    /// give too (bad arguments): not retried.
    #[error("service '{service}' rejected a request for function '{function}': {reason}")]
    Rejected {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The instance's answer.
        reason: String,
    },
    /// An instance of the service does not host the function.
    #[error("service '{service}' cannot serve function '{function}': {address} answered: {reason}")]
    NotHosted {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The instance asked.
        address: String,
        /// The instance's answer.
        reason: String,
    },
    /// The function has no fixed signature for its instances to describe;
    /// it can be called, but its result type cannot be learned in advance.
    #[error("function '{function}' of service '{service}' has no fixed signature: {reason}")]
    NoSignature {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The instance's answer.
        reason: String,
    },
    /// The region was stopped while a caller waited for an instance.
    #[error("service '{service}': the service was stopped")]
    Stopped {
        /// The service.
        service: String,
    },
    /// An instance failed its first start, so the region did not start or grow.
    #[error("service '{service}': an instance failed to start: {reason}")]
    InstanceStart {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A region cannot have no instances.
    #[error("service '{service}': parallelism must be at least 1; shut the region down to stop it")]
    NoParallelism {
        /// The service.
        service: String,
    },
    /// The instances of an attached region run elsewhere, one per endpoint.
    #[error(
        "service '{service}': its instances run elsewhere, one per endpoint ({endpoints}), \
         so its parallelism is {endpoints}"
    )]
    FixedEndpoints {
        /// The service.
        service: String,
        /// How many endpoints it has.
        endpoints: usize,
    },
    /// Attaching to endpoints without the token their instances require.
    #[error(
        "service '{service}': attaching to endpoints needs the token their instances were started with"
    )]
    MissingToken {
        /// The service.
        service: String,
    },
    /// A registry that cannot start as configured.
    #[error("registry: {reason}")]
    InvalidRegistry {
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A region refused an instance that asked to join it (`rpcop serve
    /// --register`).
    #[error("service '{service}' refused the instance: {reason}")]
    RegistrationRefused {
        /// The service.
        service: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A plan from another process (a distributed engine's scheduler or
    /// executor) that this process cannot run as it is.
    #[error("{0}")]
    InvalidPlan(String),
    /// Registering with a session's registry failed, or it refused.
    #[error("registering with {registry}: {reason}")]
    Registration {
        /// The registry's address.
        registry: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A token that cannot travel as gRPC metadata.
    #[error("the token must be non-empty printable ASCII without spaces")]
    InvalidToken,
    /// An address that is not `http://host:port` or `https://host:port`.
    #[error("'{address}' is not a valid endpoint: {reason}")]
    InvalidEndpoint {
        /// The address given.
        address: String,
        /// Why.
        reason: String,
    },
    /// A TLS file or setting that cannot be used.
    #[error("TLS: {reason}")]
    Tls {
        /// What is wrong, naming the file and the option or flag.
        reason: String,
    },
    /// `rpcop serve` asked to listen beyond this host without TLS.
    #[error(
        "refusing to serve on {bind} without TLS: callers' bearer tokens and data would cross \
         the network readable. Give --tls-cert and --tls-key (and --tls-client-ca for mutual \
         TLS), bind a loopback address, or pass --insecure on a network you trust"
    )]
    PlainTextBeyondLoopback {
        /// The address asked for.
        bind: std::net::SocketAddr,
    },
    /// An instance could not listen on its address.
    #[error("instance failed to bind {address}: {source}")]
    Bind {
        /// The address it was to bind.
        address: String,
        /// The system's answer.
        source: std::io::Error,
    },
    /// An instance's server failed while serving.
    #[error("instance on {address} failed: {reason}")]
    Serve {
        /// The address it served on.
        address: String,
        /// Why.
        reason: String,
    },
    /// A token file that could not be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The system's answer.
        source: std::io::Error,
    },
    /// `rpcop serve` was given no token.
    #[error("a token is required: pass --token-file PATH (or --token TOKEN)")]
    NoToken,
    /// An Arrow error while encoding or decoding batches.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// An I/O error (child processes, token files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<RpcError> for DataFusionError {
    fn from(error: RpcError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

impl From<FunctionError> for DataFusionError {
    fn from(error: FunctionError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}
