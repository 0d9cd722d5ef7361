//! The physical codec: `RpcProxyExec` as the scheduler sends it to the
//! executors, everything else by Ballista's own codec.
//!
//! A decoded operator reaches its service through the [`ExecutorServices`]
//! the codec was made with: the executor process's one client per service,
//! shared by all its tasks.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{Result, plan_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;

use super::payload::{self, PhysicalCall, PhysicalProxy, read_field, write_field};
use super::services::ExecutorServices;
use crate::exec::{Call, RpcProxyExec, Target};

/// Ballista's physical codec with rpcop's `RpcProxyExec` added: give it
/// to the scheduler and the executors (`codec` does).
#[derive(Debug)]
pub struct RpcopPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    services: ExecutorServices,
}

impl RpcopPhysicalCodec {
    /// A codec whose decoded operators reach their services through
    /// `services`.
    pub fn new(services: ExecutorServices) -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            services,
        }
    }
}

impl PhysicalExtensionCodec for RpcopPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(node) = payload::read::<PhysicalProxy>(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let [input] = inputs else {
            return plan_err!(
                "RpcProxyExec takes one input, the plan gives {}",
                inputs.len()
            );
        };
        let schema = input.schema();
        let decoding = PhysicalPlanDecodeContext::new(ctx, self);
        let expr = |proto: &protobuf::PhysicalExprNode| {
            proto_converter.proto_to_physical_expr(proto, &schema, &decoding)
        };
        let options = ctx.session_config().options();
        let calls = node
            .calls
            .iter()
            .map(|call| {
                let result = read_field(call.result.as_ref())?;
                Call::new(
                    call.function.clone(),
                    call.args.iter().map(expr).collect::<Result<_>>()?,
                    call.guard.as_ref().map(expr).transpose()?,
                    Arc::new(result),
                    &schema,
                    options,
                )
            })
            .collect::<Result<Arc<[Call]>>>()?;
        let target = self.services.shipped(node.definition.into())?;
        Ok(Arc::new(RpcProxyExec::try_new(
            Arc::clone(input),
            Target::Shipped(Box::new(target)),
            calls,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(proxy) = node.downcast_ref::<RpcProxyExec>() else {
            return self.ballista.try_encode(node, buf, proto_converter);
        };
        let Target::Shipped(shipped) = proxy.target() else {
            return plan_err!(
                "RpcProxyExec of RPC service '{}' calls this session's own service, which a \
                 plan sent to executors cannot: plan it on a scheduler with rpcop's session \
                 state (rpcop::ballista::scheduler_state)",
                proxy.service()
            );
        };
        let expr = |e| serialize_physical_expr_with_converter(e, self, proto_converter);
        let calls = proxy
            .calls()
            .iter()
            .map(|call| {
                Ok(PhysicalCall {
                    function: call.function.clone(),
                    args: call
                        .planned_arguments()
                        .iter()
                        .map(expr)
                        .collect::<Result<_>>()?,
                    guard: call.guard.as_ref().map(expr).transpose()?,
                    result: write_field(call.result.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let node = PhysicalProxy {
            definition: shipped.definition.to_string(),
            calls,
        };
        payload::write(&node, buf);
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}
