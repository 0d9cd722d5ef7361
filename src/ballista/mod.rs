//! Ballista as rpcop's data plane (the cargo feature `ballista`): queries of
//! an [`RpcSession`](crate::RpcSession) run on a Ballista cluster, and their calls of
//! service-hosted functions on services the executors reach.
//!
//! - The client ([`remote_session`]) plans as any session does (the rewrite
//!   turns calls into `RpcProxy` nodes) and sends the plan to the
//!   scheduler with [`RpcopLogicalCodec`], which carries each proxy's
//!   calls and its service's definition: its functions, its `ENDPOINTS`
//!   or `placement`, and its options, never a token.
//! - The scheduler ([`scheduler_state`], [`codec`]) plans each proxy as
//!   `RpcProxyExec` and sends it to the executors with
//!   [`RpcopPhysicalCodec`].
//! - Each executor process reaches each service through one client
//!   ([`ExecutorServices`]), shared by all its tasks: the `ENDPOINTS` every
//!   executor shares, or, with `placement = 'per_executor'`, a pool it
//!   starts on first use and keeps warm across tasks and queries.
//!
//! [`start_scheduler`] and [`start_executor`] run both in this process (for
//! tests and one machine); `rpcop ballista scheduler` and `rpcop ballista
//! executor` run them as the processes of a cluster (`docs/distributed.md`).

mod client;
mod cluster;
mod logical;
mod payload;
mod physical;
mod services;

pub use client::remote_session;
pub use cluster::{
    ExecutorConfig, codec, run_executor, run_scheduler, scheduler_state, start_executor,
    start_scheduler,
};
pub use logical::RpcopLogicalCodec;
pub use physical::RpcopPhysicalCodec;
pub use services::ExecutorServices;
