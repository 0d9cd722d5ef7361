//! rpcop: an RPC Operator Service for Apache DataFusion.
//!
//! Heavy user-defined functions (model inference, embeddings, remote
//! compaction) run in an independent, scalable, fault-isolated **service
//! region** — a supervised pool of instances — and callers reach them over
//! Arrow Flight, streaming Arrow record batches. `docs/architecture.md`
//! draws the layers; `docs/protocol.md` is the wire contract; `docs/sql.md`
//! the SQL reference.
//!
//! The API, from the top:
//!
//! - [`RpcSession`]: SQL with the RPC statements (`CREATE RPC SERVICE`, ...),
//!   calls of hosted functions rewritten into a proxy operator;
//!   [`RpcFunction`] annotates a UDF as heavy (its implicit service starts
//!   with the first query that calls it).
//! - [`ServiceClient`]: a caller of one service: routing, flow control,
//!   timeouts and retries.
//! - [`ServiceRegion`]: a supervised pool of instances, with its
//!   [`Membership`] pushed to callers.
//! - [`FunctionLibrary`] and [`HostedFunction`]: what an instance can host;
//!   [`demo`]: model-like demo functions; [`model`]: a real model
//!   (all-MiniLM-L6-v2 with candle), its files and `embed_text`.
//! - [`ServiceOptions`]: every option of a service, declared once
//!   ([`options`]).
//! - [`wire`]: the protocol's constants and codecs; [`serve`]: `rpcop serve`
//!   as a library entry for a binary that hosts its own functions;
//!   [`malloc`]: glibc's malloc set for moving batches between threads.
//! - `ballista` (the cargo feature `ballista`): a session's queries on a
//!   Ballista cluster, its services reached from the executors.
//! - [`RpcError`] and [`FunctionError`]: what can go wrong.
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

#[cfg(feature = "ballista")]
pub mod ballista;
mod client;
mod error;
mod exec;
mod function;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod instance;
pub mod malloc;
pub mod model;
pub mod options;
mod region;
pub mod serve;
mod session;
mod transport;
pub mod wire;

pub use client::{CallReport, ClientStats, ServiceClient};
pub use error::{FunctionError, RpcError};
pub use function::demo;
pub use function::{FunctionLibrary, HostedFunction, LoadContext, Loader};
pub use options::{
    Isolation, Listen, LoadBalance, OnError, OptionError, Placement, ServiceOptions, Transport,
};
pub use region::{
    Member, MemberState, Membership, MembershipWatch, RegionBuilder, Scaling, ServiceRegion,
};
pub use session::{Registry, RegistryConfig, RpcFunction, RpcSession, RpcSessionBuilder, Startup};
