//! The typed errors of the rpcop library.
//!
//! [`FunctionError`] is what hosting a function can go wrong with; [`RpcError`]
//! is everything else a caller of a service or a region sees. Both convert to
//! `DataFusionError` at DataFusion's boundaries.

use std::time::Duration;

use datafusion::error::DataFusionError;
use rpcop_sql::OptionError;

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
    /// The function failed (or panicked) on a batch.
    #[error("function '{function}' failed: {reason}")]
    Invoke {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
}

/// An error of a service region or of a call to a service.
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
         check SHOW RPC SERVICES / DESCRIBE RPC SERVICE for instance errors"
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
    /// The instance rejected the request for a reason another instance would
    /// give too (bad arguments, unknown function): not retried.
    #[error("service '{service}' rejected a request for function '{function}': {reason}")]
    Rejected {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// The instance's answer.
        reason: String,
    },
    /// The region could not start, resize or stop as asked.
    #[error("service '{service}': {reason}")]
    Region {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// An instance's server failed to start or bind.
    #[error("instance failed to start on {address}: {reason}")]
    Start {
        /// The address it was to bind.
        address: String,
        /// Why.
        reason: String,
    },
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
