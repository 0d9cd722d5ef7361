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
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use super::catalog::ServiceCatalog;
use crate::wire::scalar_argument;

/// The `rpc_call` UDF over a session's `catalog`.
pub(crate) fn rpc_call_udf(catalog: Arc<ServiceCatalog>) -> ScalarUDF {
    AsyncScalarUDF::new(Arc::new(RpcCall {
        catalog,
        signature: Signature::variadic_any(Volatility::Volatile),
    }))
    .into_scalar_udf()
}

#[derive(Debug)]
struct RpcCall {
    catalog: Arc<ServiceCatalog>,
    signature: Signature,
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
        let entry = self.catalog.get(&service)?;
        match entry.results.get(&function) {
            Some(field) => Ok(Arc::new(Field::new(
                "rpc_call",
                field.data_type().clone(),
                true,
            ))),
            None => plan_err!(
                "rpc_call: service '{service}' hosts no function '{function}'; it hosts [{}]",
                entry.results.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
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
            Arc::new(Schema::new(fields)),
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
