//! The physical planning of `RpcProxy` nodes: [`RpcQueryPlanner`] is
//! DataFusion's physical planner with [`RpcProxyPlanner`] added, which
//! plans each node as [`RpcProxyExec`] with the way to its service.
//!
//! The planner asks a [`TargetSource`] for that way: the session's service
//! catalog gives its running service's client, a distributed engine's
//! scheduler the service the plan defines; this layer knows neither.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result, internal_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use rpcop_planner::{ProxyCall, RpcProxy, ServiceRef};

use super::call::Call;
use super::proxy_exec::RpcProxyExec;
use super::target::Target;

/// Where the physical planner finds how to reach a service.
pub(crate) trait TargetSource: Debug + Send + Sync {
    /// How a proxy of `service` reaches it, or the error that tells the
    /// user why it cannot (the service is gone).
    fn target(&self, service: &ServiceRef) -> Result<Target>;
}

/// Plans `RpcProxy` nodes as [`RpcProxyExec`], reaching the service as a
/// [`TargetSource`] says.
#[derive(Debug)]
pub(crate) struct RpcProxyPlanner {
    targets: Arc<dyn TargetSource>,
}

#[async_trait]
impl ExtensionPlanner for RpcProxyPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(proxy) = node.as_any().downcast_ref::<RpcProxy>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("RpcProxy takes one input");
        };
        let target = self.targets.target(proxy.service())?;
        let calls = proxy
            .calls()
            .iter()
            .map(|call| physical_call(proxy, call, &input.schema(), session, planning))
            .collect::<Result<Arc<[Call]>>>()?;
        Ok(Some(Arc::new(RpcProxyExec::try_new(
            Arc::clone(input),
            target,
            calls,
        )?)))
    }
}

/// A logical call of `proxy` as the operator sends it: arguments and guard
/// as physical expressions over the input, and the result field of its
/// output column.
fn physical_call(
    proxy: &RpcProxy,
    call: &ProxyCall,
    input: &SchemaRef,
    session: &dyn Session,
    planning: &PhysicalPlanningContext,
) -> Result<Call> {
    let input_schema: &DFSchema = proxy.input().schema();
    let props = session.execution_props();
    let arguments = call
        .args
        .iter()
        .map(|arg| create_physical_expr(arg, input_schema, props, planning))
        .collect::<Result<Vec<_>>>()?;
    let guard = call
        .guard
        .as_ref()
        .map(|guard| create_physical_expr(guard, input_schema, props, planning))
        .transpose()?;
    let (_, result) = proxy
        .schema()
        .qualified_field_with_unqualified_name(&call.name)?;
    Call::new(
        call.function.clone(),
        arguments,
        guard,
        Arc::clone(result),
        input.as_ref(),
        session.config_options(),
    )
}

/// DataFusion's physical planner with [`RpcProxyPlanner`] added.
#[derive(Debug)]
pub(crate) struct RpcQueryPlanner {
    targets: Arc<dyn TargetSource>,
}

impl RpcQueryPlanner {
    /// A query planner whose proxies reach their services as `targets`
    /// says.
    pub(crate) fn new(targets: Arc<dyn TargetSource>) -> Self {
        Self { targets }
    }
}

#[async_trait]
impl QueryPlanner for RpcQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let proxies = RpcProxyPlanner {
            targets: Arc::clone(&self.targets),
        };
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(proxies)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}
