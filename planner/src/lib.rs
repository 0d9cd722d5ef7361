//! The logical side of rpcop: calls of service-hosted functions become
//! [`RpcProxy`] plan nodes.
//!
//! This crate knows nothing of the network. [`RpcRewrite`] is a DataFusion
//! optimizer rule that asks a [`ServiceDirectory`] "which service serves
//! function f?" and moves every call it can below the node that used it,
//! into an [`RpcProxy`] that adds one column per call. A call DataFusion
//! evaluates only on some rows (a `CASE` branch, the right side of `AND`)
//! keeps to those rows: the proxy sends only them. The rule runs after
//! DataFusion's own rules ([`RpcRewrite::install`]). The runtime
//! (crate `rpcop`) plans the node as `RpcProxyExec`. [`RpcopConfig`] is the
//! `rpcop.*` namespace of the session's settings (`SET rpcop.rewrite =
//! false`). A runtime that can reach its services folds hosted calls of
//! constants through them before optimizing, as DataFusion folds calls of
//! constants in-process ([`constant_calls`], [`replace_calls`]); the rule
//! moves what is left.
//!
//! ```
//! use std::sync::Arc;
//! use datafusion::execution::SessionStateBuilder;
//! use datafusion::optimizer::Optimizer;
//! use datafusion::prelude::{SessionConfig, SessionContext};
//! use rpcop_planner::{RpcRewrite, RpcopConfig, ServiceDirectory, ServiceRef};
//!
//! /// Every call of `upper` is served by the service `text`.
//! #[derive(Debug)]
//! struct OneService;
//! impl ServiceDirectory for OneService {
//!     fn service_of(&self, function: &str) -> Option<ServiceRef> {
//!         (function == "upper").then(|| ServiceRef::new("text", "round_robin"))
//!     }
//! }
//!
//! # async fn example() -> datafusion::error::Result<()> {
//! let rules = RpcRewrite::install(Optimizer::new().rules, Arc::new(OneService));
//! let state = SessionStateBuilder::new()
//!     .with_config(SessionConfig::new().with_option_extension(RpcopConfig::default()))
//!     .with_default_features()
//!     .with_optimizer_rules(rules)
//!     .build();
//! let ctx = SessionContext::new_with_state(state);
//! let plan = ctx.sql("SELECT upper('a')").await?.into_optimized_plan()?;
//! assert!(plan.display_indent().to_string().contains("RpcProxy: service=text"));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(example()).unwrap();
//! ```

mod collect;
mod config;
mod constants;
mod directory;
mod guard;
mod proxy;
mod rewrite;
mod scan;

pub use config::RpcopConfig;
pub use constants::{ConstantCall, constant_calls, has_constant_calls, replace_calls};
pub use directory::{ServiceDirectory, ServiceRef};
pub use proxy::{ProxyCall, RpcProxy};
pub use rewrite::{OptimizerRules, RpcRewrite};
