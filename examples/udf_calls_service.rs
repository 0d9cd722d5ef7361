//! A user's own UDF that calls a service through the session's client, the
//! counterpart of Flink's `FunctionContext.getRosClient()`: the service's
//! batching, balancing and retries come with it.
//!
//! ```sh
//! cargo run --example udf_calls_service
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use rpcop::RpcSession;
use rpcop::ServiceClient;

/// `headline(text)`: the topic the `models` service's `classify` gives the
/// text, then the text, upper-cased by the same service.
#[derive(Debug)]
struct Headline {
    client: ServiceClient,
    signature: Signature,
}

impl PartialEq for Headline {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Headline {}
impl std::hash::Hash for Headline {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "headline".hash(state);
    }
}

impl ScalarUDFImpl for Headline {
    fn name(&self) -> &str {
        "headline"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("headline is evaluated asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for Headline {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let text = args.args[0].to_array(args.number_rows)?;
        let arguments = RecordBatch::try_from_iter([("text", Arc::clone(&text))])?;
        let topics = self.client.call("classify", arguments.clone()).await?;
        let upper = self.client.call("upper", arguments).await?;
        let out: StringArray = topics
            .as_string::<i32>()
            .iter()
            .zip(upper.as_string::<i32>().iter())
            .map(|(topic, text)| Some(format!("[{}] {}", topic?, text?)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let session = RpcSession::new();
    session
        .sql("CREATE RPC SERVICE models FOR FUNCTION classify, upper WITH (parallelism = 2)")
        .await?;
    let udf = AsyncScalarUDF::new(Arc::new(Headline {
        client: session.client("models")?,
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    }));
    session.context().register_udf(udf.into_scalar_udf());
    let batches = session
        .sql(
            "SELECT headline(body) AS headline FROM \
             (VALUES ('election night'), ('a late goal'), ('lunch')) AS docs(body)",
        )
        .await?;
    println!("{}", pretty_format_batches(&batches)?);
    session.sql("DROP RPC SERVICE models").await?;
    Ok(())
}
