//! The logical codec: the `RpcProxy` node as a Ballista client sends it to
//! the scheduler, everything else by Ballista's own codec.
//!
//! A call's function is sent by name with its result field: the scheduler
//! knows it as a [`ShippedFunction`] of that type, which types the plan and
//! is never evaluated there (the service evaluates the call).

use std::sync::Arc;

use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference, exec_err, plan_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    ColumnarValue, Extension, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_expr;
use datafusion_proto::logical_plan::to_proto::serialize_expr;
use rpcop_planner::{ProxyCall, RpcProxy, ServiceRef};

use super::payload::{self, LogicalCall, LogicalProxy, read_field, write_field};
use crate::session::{ServiceDefinition, is_listing};

/// Ballista's logical codec with rpcop's `RpcProxy` node added: give it to
/// the client and the scheduler (`remote_session` and `codec` do).
#[derive(Debug, Default)]
pub struct RpcopLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for RpcopLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        let Some(node) = payload::read::<LogicalProxy>(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx);
        };
        let [input] = inputs else {
            return plan_err!("RpcProxy takes one input, the plan gives {}", inputs.len());
        };
        let calls = node
            .calls
            .iter()
            .map(|call| {
                let result = read_field(call.result.as_ref())?;
                let func = ShippedFunction::new(&call.udf, &node.service, result);
                Ok(ProxyCall {
                    func: Arc::new(ScalarUDF::new_from_impl(func)),
                    function: call.function.clone(),
                    args: call
                        .args
                        .iter()
                        .map(|arg| parse_expr(arg, ctx, self).map_err(DataFusionError::from))
                        .collect::<Result<_>>()?,
                    guard: call
                        .guard
                        .as_ref()
                        .map(|guard| parse_expr(guard, ctx, self))
                        .transpose()?,
                    name: call.name.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let service = ServiceRef::new(node.service, node.policy).with_definition(node.definition);
        let proxy = RpcProxy::try_new(Arc::new(input.clone()), service, calls)?;
        Ok(Extension {
            node: Arc::new(proxy),
        })
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        let Some(proxy) = node.node.as_any().downcast_ref::<RpcProxy>() else {
            return self.ballista.try_encode(node, buf);
        };
        let service = proxy.service();
        let Some(definition) = &service.definition else {
            return plan_err!(
                "the plan calls RPC service '{}' without its definition: plan it in an \
                 RpcSession",
                service.name
            );
        };
        ServiceDefinition::parse(definition)
            .and_then(|parsed| parsed.check_shippable())
            .map_err(DataFusionError::from)?;
        let calls = proxy
            .calls()
            .iter()
            .map(|call| {
                let (_, result) = proxy
                    .schema()
                    .qualified_field_with_unqualified_name(&call.name)?;
                Ok(LogicalCall {
                    udf: call.func.name().to_string(),
                    function: call.function.clone(),
                    name: call.name.clone(),
                    args: call
                        .args
                        .iter()
                        .map(|arg| serialize_expr(arg, self).map_err(DataFusionError::from))
                        .collect::<Result<_>>()?,
                    guard: call
                        .guard
                        .as_ref()
                        .map(|guard| serialize_expr(guard, self))
                        .transpose()?,
                    result: write_field(result.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let node = LogicalProxy {
            service: service.name.clone(),
            policy: service.policy.clone(),
            definition: definition.to_string(),
            calls,
        };
        payload::write(&node, buf);
        Ok(())
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if is_listing(node.as_ref()) {
            return plan_err!(
                "{table_ref} lists this session's RPC services, which only the session reads: \
                 a query that reads the listings alone runs in the session, but one that also \
                 reads the cluster's tables runs on the cluster, where they are not; read the \
                 listing in a query of its own"
            );
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}

/// A function of a shipped `RpcProxy` call, known by its name and result
/// field: it types the plan on the scheduler; its service evaluates it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ShippedFunction {
    name: String,
    service: String,
    result: FieldRef,
    signature: Signature,
}

impl ShippedFunction {
    /// The function `name` of `service`, whose calls give `result`.
    pub(crate) fn new(name: &str, service: &str, result: Field) -> Self {
        Self {
            name: name.to_string(),
            service: service.to_string(),
            result: Arc::new(result),
            // the session that planned the call checked its arguments
            signature: Signature::one_of(
                vec![TypeSignature::VariadicAny, TypeSignature::Nullary],
                Volatility::Volatile,
            ),
        }
    }
}

impl ScalarUDFImpl for ShippedFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.result.data_type().clone())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::clone(&self.result))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{}() is evaluated by RPC service '{}', not here: its calls go through the \
             plan's RpcProxy",
            self.name,
            self.service
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::session::ServiceDefinition;

    /// A proxy calling `upper` for `column1` of a one-row input, its service
    /// defined with `options`.
    fn proxy(options: &[(&str, &str)]) -> Extension {
        let definition = ServiceDefinition::for_tests("text", "upper", options);
        let input = LogicalPlanBuilder::values(vec![vec![lit("a")]])
            .unwrap()
            .build()
            .unwrap();
        let call = ProxyCall {
            func: datafusion::functions::string::upper(),
            function: "upper".into(),
            args: vec![col("column1")],
            guard: None,
            name: "loud".into(),
        };
        let service =
            ServiceRef::new("text", "least_outstanding").with_definition(definition.to_text());
        let proxy = RpcProxy::try_new(Arc::new(input), service, vec![call]).unwrap();
        Extension {
            node: Arc::new(proxy),
        }
    }

    #[test]
    fn a_proxy_reads_back_with_its_service_and_calls() {
        let codec = RpcopLogicalCodec::default();
        let sent = proxy(&[("placement", "per_executor"), ("batch_size", "64")]);
        let mut buf = Vec::new();
        codec.try_encode(&sent, &mut buf).unwrap();
        let input = sent.node.inputs()[0].clone();
        let read = codec
            .try_decode(&buf, &[input], &SessionContext::new().task_ctx())
            .unwrap();
        let (sent, read) = (
            sent.node.as_any().downcast_ref::<RpcProxy>().unwrap(),
            read.node.as_any().downcast_ref::<RpcProxy>().unwrap(),
        );
        assert_eq!(read.service(), sent.service());
        assert_eq!(read.schema(), sent.schema());
        let call = &read.calls()[0];
        assert_eq!(
            (call.func.name(), call.function.as_str(), call.name.as_str()),
            ("upper", "upper", "loud")
        );
        assert_eq!(call.args, sent.calls()[0].args);
        // the scheduler never evaluates it
        assert!(
            call.func
                .inner()
                .downcast_ref::<ShippedFunction>()
                .is_some()
        );
    }

    #[test]
    fn a_pool_of_the_session_is_refused_saying_what_to_do() {
        let codec = RpcopLogicalCodec::default();
        let error = codec
            .try_encode(&proxy(&[]), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RPC service 'text' runs in this session's process")
                && error.contains("placement = 'per_executor'"),
            "{error}"
        );
    }
}
