//! The client: a session whose queries run on a Ballista cluster.
//!
//! The session's statements, services and rewrite stay here, and its
//! queries are planned on the cluster ([`ClientPlanner`]), with one
//! exception: a query that reads only the session's listings
//! (`rpc_services()`, `rpc_instances()`, `rpc_options()`) describes this
//! session's services, so it is planned and run here, as Ballista itself
//! does for `information_schema`. A query for the cluster that calls
//! `rpc_call` is refused: it names a service of this session, which the
//! executors do not know by name.

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use super::logical::RpcopLogicalCodec;
use crate::session::{RPC_CALL, RpcSession, RpcSessionBuilder, is_listing};

/// The session `builder` makes, running its queries on the Ballista
/// scheduler at `scheduler_url` (`df://host:port`): its statements, its
/// services and its rewrite stay here, the plan runs on the cluster.
pub fn remote_session(builder: RpcSessionBuilder, scheduler_url: &str) -> Result<RpcSession> {
    builder.on_cluster().build_with(|state| {
        let here = Arc::clone(state.query_planner());
        // the client sends logical plans only; the scheduler plans them
        let config = state
            .config()
            .clone()
            .with_ballista_logical_extension_codec(Arc::new(RpcopLogicalCodec::default()));
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build()
            .upgrade_for_ballista(scheduler_url.to_string())?;
        let cluster = Arc::clone(state.query_planner());
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_query_planner(Arc::new(ClientPlanner { here, cluster }))
            .build())
    })
}

/// Plans a query that scans only the session's listings with the session's
/// own planner, and every other query with Ballista's, but one that calls
/// `rpc_call`.
#[derive(Debug)]
struct ClientPlanner {
    here: Arc<dyn QueryPlanner + Send + Sync>,
    cluster: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for ClientPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if reads_only_listings(plan)? {
            return self.here.create_physical_plan(plan, state).await;
        }
        if calls_rpc_call(plan)? {
            return plan_err!(
                "{RPC_CALL}(...) calls a service of this session by its name, which the \
                 cluster's executors do not know: on a Ballista session call the function \
                 itself (SELECT upper(body) ..., once a service WITH (placement = \
                 'per_executor') or ENDPOINTS hosts it), or run {RPC_CALL} in a local session"
            );
        }
        self.cluster.create_physical_plan(plan, state).await
    }
}

/// Does `plan` call `rpc_call` anywhere?
fn calls_rpc_call(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                found |= matches!(e, Expr::ScalarFunction(f) if f.name() == RPC_CALL);
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })
    })?;
    Ok(found)
}

/// Does `plan` scan at least one table, and only the session's listings?
fn reads_only_listings(plan: &LogicalPlan) -> Result<bool> {
    let (mut listings, mut others) = (0, 0);
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if source_as_provider(&scan.source).is_ok_and(|p| is_listing(p.as_ref())) {
                listings += 1;
            } else {
                others += 1;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(listings > 0 && others == 0)
}
