//! The client: a session whose queries run on a Ballista cluster.
//!
//! The session's statements, services and rewrite stay here, and its
//! queries are planned on the cluster, with one exception: a query that
//! reads only the session's listings (`rpc_services()`, `rpc_instances()`,
//! `rpc_options()`) describes this session's services, so it is planned
//! and run here ([`ListingsHere`]), as Ballista itself does for
//! `information_schema`.

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;

use super::logical::RpcopLogicalCodec;
use crate::session::{RpcSession, RpcSessionBuilder, is_listing};

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
            .with_query_planner(Arc::new(ListingsHere { here, cluster }))
            .build())
    })
}

/// Plans a query that scans only the session's listings with the session's
/// own planner, and every other query with Ballista's.
#[derive(Debug)]
struct ListingsHere {
    here: Arc<dyn QueryPlanner + Send + Sync>,
    cluster: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for ListingsHere {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = if reads_only_listings(plan)? {
            &self.here
        } else {
            &self.cluster
        };
        planner.create_physical_plan(plan, state).await
    }
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
