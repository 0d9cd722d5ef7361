//! The physical planning of `RpcProxy` nodes: [`RpcQueryPlanner`] is
//! DataFusion's physical planner with [`RpcProxyPlanner`] added, which
//! plans each node as [`RpcProxyExec`] with the client of its service.
//!
//! The planner asks a [`ClientSource`] for that client; the session's
//! service catalog is one, so this layer does not know the session.

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
use rpcop_planner::{ProxyCall, RpcProxy};

use super::call::Call;
use super::proxy_exec::RpcProxyExec;
use crate::client::ServiceClient;

/// Where the physical planner finds the client of a service.
pub(crate) trait ClientSource: Debug + Send + Sync {
    /// The client of the service `name`, or the error that tells the user
    /// the service is gone.
    fn client(&self, name: &str) -> Result<ServiceClient>;
}

/// Plans `RpcProxy` nodes as [`RpcProxyExec`], with the client of the
/// service from a [`ClientSource`].
#[derive(Debug)]
pub(crate) struct RpcProxyPlanner {
    clients: Arc<dyn ClientSource>,
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
        let client = self.clients.client(&proxy.service().name)?;
        let calls = proxy
            .calls()
            .iter()
            .map(|call| physical_call(proxy, call, &input.schema(), session, planning))
            .collect::<Result<Arc<[Call]>>>()?;
        Ok(Some(Arc::new(RpcProxyExec::try_new(
            Arc::clone(input),
            client,
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
    clients: Arc<dyn ClientSource>,
}

impl RpcQueryPlanner {
    /// A query planner whose proxies take clients from `clients`.
    pub(crate) fn new(clients: Arc<dyn ClientSource>) -> Self {
        Self { clients }
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
            clients: Arc::clone(&self.clients),
        };
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(proxies)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}
