//! The bench's own function, registered in every scenario's session beside
//! the demo ones (whose `identity` the pass-through scenario calls):
//! `model_sim_async`, `model_sim` as a DataFusion async UDF (a baseline of
//! the latency-bound scenario).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `model_sim` written as a DataFusion async UDF: the batch latency is an
/// `await`, not a blocked thread.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ModelSimAsync(Signature);

impl ScalarUDFImpl for ModelSimAsync {
    fn name(&self) -> &str {
        "model_sim_async"
    }
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        datafusion::common::exec_err!("model_sim_async is evaluated asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for ModelSimAsync {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let latency = match &args.args[1] {
            ColumnarValue::Scalar(v) => v.to_string().parse::<u64>().unwrap_or(0),
            ColumnarValue::Array(a) => a
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
                .unsigned_abs(),
        };
        tokio::time::sleep(Duration::from_millis(latency)).await;
        let input = args.args[0].to_array(args.number_rows)?;
        let mut out = StringBuilder::new();
        for i in 0..input.len() {
            let text = match input.data_type() {
                DataType::Utf8View => input.as_string_view().value(i).to_string(),
                _ => input.as_string::<i32>().value(i).to_string(),
            };
            out.append_value(format!("{:016x}", rpcop::demo::fnv1a(text.as_bytes())));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

pub(super) fn model_sim_async() -> ScalarUDF {
    AsyncScalarUDF::new(Arc::new(ModelSimAsync(Signature::any(
        3,
        Volatility::Immutable,
    ))))
    .into_scalar_udf()
}
