//! `rpc_call('service', 'function', args...)`: call any function of any
//! service by name, explicitly.
//!
//! The function need not be registered locally. Its return type is the one
//! the service itself describes (`GetFlightInfo`), learned when the service
//! was created and kept in the session's service catalog. The call is an
//! async UDF: DataFusion evaluates it batch by batch through the service's
//! client, with its balancing and retries.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::new_empty_array;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use super::advice::did_you_mean;
use super::catalog::ServiceCatalog;
use crate::wire::{FunctionSignature, scalar_argument, session_metadata};

/// The session's scalar function of a name, if it has one.
pub(crate) type LocalFunctions = Arc<dyn Fn(&str) -> Option<Arc<ScalarUDF>> + Send + Sync>;

/// The `rpc_call` UDF over a session's `catalog`; `local` gives the
/// session's functions, to check argument types at planning.
pub(crate) fn rpc_call_udf(catalog: Arc<ServiceCatalog>, local: LocalFunctions) -> ScalarUDF {
    AsyncScalarUDF::new(Arc::new(RpcCall {
        catalog,
        local,
        signature: Signature::variadic_any(Volatility::Volatile),
    }))
    .into_scalar_udf()
}

struct RpcCall {
    catalog: Arc<ServiceCatalog>,
    local: LocalFunctions,
    signature: Signature,
}

impl std::fmt::Debug for RpcCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcCall").finish_non_exhaustive()
    }
}

impl PartialEq for RpcCall {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for RpcCall {}

impl Hash for RpcCall {
    fn hash<H: Hasher>(&self, state: &mut H) {
        RPC_CALL.hash(state);
    }
}

/// The function's SQL name.
pub(crate) const RPC_CALL: &str = "rpc_call";

fn literal_name(value: Option<&ScalarValue>) -> Option<String> {
    match value? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

impl RpcCall {
    /// Fails at planning, naming the types the function takes, if it cannot
    /// take arguments of the `given` types. The check is the one its
    /// instances make, with the session's own function of that name, when
    /// that function is the one the service describes (it takes the
    /// described arguments and gives the described result).
    fn check_arguments(
        &self,
        service: &str,
        signature: &FunctionSignature,
        given: &[FieldRef],
    ) -> Result<()> {
        let function = &signature.name;
        let Some(udf) = (self.local)(function) else {
            // known to the service alone: its instances check
            return Ok(());
        };
        let same = fields_with_udf(&signature.arguments, udf.as_ref())
            .ok()
            .and_then(|fields| {
                let scalars = vec![None; fields.len()];
                udf.return_field_from_args(ReturnFieldArgs {
                    arg_fields: &fields,
                    scalar_arguments: &scalars,
                })
                .ok()
            })
            .is_some_and(|result| result.data_type() == signature.result.data_type());
        if !same || fields_with_udf(given, udf.as_ref()).is_ok() {
            return Ok(());
        }
        let given: Vec<String> = given.iter().map(|f| f.data_type().to_string()).collect();
        let takes: Vec<String> = udf
            .signature()
            .type_signature
            .to_string_repr()
            .iter()
            .map(|args| format!("{function}({args})"))
            .collect();
        plan_err!(
            "rpc_call('{service}', '{function}', ...): {function} cannot take ({}); it takes {}; \
             cast the arguments to one of these",
            given.join(", "),
            takes.join(" or ")
        )
    }

    fn target(&self, scalars: &[Option<&ScalarValue>]) -> Result<(String, String)> {
        let service = literal_name(scalars.first().copied().flatten());
        let function = literal_name(scalars.get(1).copied().flatten());
        match (service, function) {
            (Some(service), Some(function)) => Ok((service, function)),
            _ => plan_err!(
                "rpc_call takes the service and the function as string literals: rpc_call('service', 'function', args...)"
            ),
        }
    }
}

impl ScalarUDFImpl for RpcCall {
    fn name(&self) -> &str {
        RPC_CALL
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("rpc_call's type comes from its service; see return_field_from_args")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (service, function) = self.target(args.scalar_arguments)?;
        let entry = match self.catalog.get(&service) {
            Ok(entry) => entry,
            // an annotated function's implicit service, not started yet
            Err(_) if self.catalog.annotation(&service).is_some() => {
                return plan_err!(
                    "rpc_call: RPC service '{service}' has not started: it is the implicit \
                     service of the annotated function '{service}', which the first query \
                     that calls {service}(...) starts; run one, or CREATE RPC SERVICE with \
                     a name FOR FUNCTION {service}"
                );
            }
            Err(error) => return Err(error),
        };
        let Some(signature) = entry.signatures.get(&function) else {
            // hosted without a fixed signature (no arguments, or any):
            // typed by the session's own function of that name
            if entry.region.hosts(&function)
                && let Some(udf) = (self.local)(&function)
            {
                let given = args.arg_fields.get(2..).unwrap_or_default();
                let scalars = args.scalar_arguments.get(2..).unwrap_or_default();
                let coerced = fields_with_udf(given, udf.as_ref())?;
                let result = udf.return_field_from_args(ReturnFieldArgs {
                    arg_fields: &coerced,
                    scalar_arguments: scalars,
                })?;
                return Ok(Arc::new(Field::new(
                    RPC_CALL,
                    result.data_type().clone(),
                    true,
                )));
            }
            let hosted = entry.region.functions().iter().map(String::as_str);
            let hint = did_you_mean(&function, hosted.clone())
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default();
            return plan_err!(
                "rpc_call: service '{service}' hosts no function '{function}'{hint}; it hosts [{}]",
                hosted.collect::<Vec<_>>().join(", ")
            );
        };
        self.check_arguments(
            &service,
            signature,
            args.arg_fields.get(2..).unwrap_or_default(),
        )?;
        Ok(Arc::new(Field::new(
            RPC_CALL,
            signature.result.data_type().clone(),
            true,
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("rpc_call is evaluated asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for RpcCall {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalars: Vec<Option<&ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let (service, function) = self.target(&scalars)?;
        let entry = self.catalog.get(&service)?;
        let rows = args.number_rows;
        let result_type = args.return_field.data_type().clone();
        if rows == 0 {
            return Ok(ColumnarValue::Array(new_empty_array(&result_type)));
        }
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (i, arg) in args.args.iter().enumerate().skip(2) {
            let array = arg.to_array(rows)?;
            let field = Field::new(format!("arg{}", i - 2), array.data_type().clone(), true);
            fields.push(match arg {
                ColumnarValue::Scalar(_) => scalar_argument(&field),
                ColumnarValue::Array(_) => field,
            });
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new_with_metadata(
                fields,
                session_metadata(&args.config_options),
            )),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let (result, _) = entry
            .client
            .call_as(&function, &batch, &result_type)
            .await?;
        Ok(ColumnarValue::Array(result))
    }
}
