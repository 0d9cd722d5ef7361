//! The physical side of a proxy: the `RpcProxyExec` operator
//! (`proxy_exec`), the calls it sends (`call`), how its input is cut into
//! requests (`requests`), and the query planner that plans `RpcProxy` nodes
//! as it (`planner`).

mod call;
mod planner;
mod proxy_exec;
mod requests;

pub(crate) use call::{Call, Rows};
pub(crate) use planner::{ClientSource, RpcQueryPlanner};
