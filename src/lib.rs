//! rpcop: an RPC Operator Service for Apache DataFusion.
//!
//! Heavy user-defined functions (model inference, embeddings, remote
//! compaction) run in an independent, scalable, fault-isolated **service
//! region** — a supervised pool of instances — and callers reach them over
//! Arrow Flight, streaming Arrow record batches.
//!
//! - [`protocol`]: the wire protocol (a public contract).
//! - [`function`]: the functions a service can host; [`demo`]: model-like
//!   demo functions with a documented cost model.
//! - [`instance`]: one instance, a Flight server, evaluating on threads of
//!   its own.
//! - [`region`]: a pool of instances with its supervisor; [`membership`]: the
//!   instance set, pushed to callers.
//! - [`client`]: routing, flow control, timeouts and retries.
//! - [`session`]: SQL with RPC statements over a [`catalog`] of services;
//!   [`proxy_exec`]: the operator that sends a query's calls to a service;
//!   [`rpc_function`]: functions annotated as heavy (implicit services);
//!   [`rpc_call`]: explicit calls of any service's functions;
//!   [`service_tables`]: the services as tables (`rpc_services()`).
//! - [`serve`]: the `rpcop serve` entry point; [`shell`]: the SQL shell;
//!   [`malloc`]: glibc's malloc set for moving batches between threads.
//!
//! ```no_run
//! # async fn example() -> Result<(), rpcop::RpcError> {
//! use std::sync::Arc;
//! use datafusion::arrow::array::{ArrayRef, StringArray};
//! use datafusion::arrow::record_batch::RecordBatch;
//! use rpcop::{FunctionLibrary, ServiceRegion};
//!
//! let library = FunctionLibrary::default();
//! let region = ServiceRegion::builder("text", library.select(&["upper".into()])?)
//!     .start()
//!     .await?;
//! let text: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
//! let upper = region
//!     .client()?
//!     .call("upper", RecordBatch::try_from_iter([("s", text)])?)
//!     .await?;
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod client;
pub mod demo;
pub mod error;
mod evaluator;
pub mod function;
pub mod instance;
pub mod malloc;
pub mod membership;
pub mod protocol;
pub mod proxy_exec;
pub mod region;
pub mod rpc_call;
pub mod rpc_function;
pub mod serve;
pub mod service_tables;
pub mod session;
pub mod shell;

pub use client::{ClientStats, ServiceClient};
pub use error::{FunctionError, RpcError};
pub use function::{FunctionLibrary, HostedFunction, LoadedFunction};
pub use instance::{Instance, InstanceConfig, InstanceStats};
pub use membership::{Member, MemberState, Membership, MembershipWatch};
pub use region::ServiceRegion;
pub use rpcop_sql::ServiceOptions;
