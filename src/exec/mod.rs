//! The physical side of a proxy: the `RpcProxyExec` operator
//! (`proxy_exec`), the calls it sends (`call`), how its input is cut into
//! requests (`requests`), how it reaches its service (`target`), and the
//! query planner that plans `RpcProxy` nodes as it (`planner`).

mod call;
mod planner;
mod proxy_exec;
mod requests;
mod target;

pub(crate) use call::{Call, Rows};
pub(crate) use planner::{RpcQueryPlanner, TargetSource};
#[cfg(feature = "ballista")]
pub(crate) use proxy_exec::RpcProxyExec;
pub(crate) use target::Target;
#[cfg(feature = "ballista")]
pub(crate) use target::{ServiceResolver, Shipped};
