//! Calling a Flight UDF server of another protocol: RisingWave's
//! `arrow-udf` or `databend-udf`.
//!
//! Such a server answers each argument batch of a `DoExchange` with one
//! result batch, in order, with no sequence number, and serves one exchange
//! at a time on one thread. So a request here has a stream to itself: it
//! takes an idle exchange for its function (or opens one), sends one batch,
//! reads one answer, and gives the exchange back. Concurrent requests use
//! concurrent exchanges, a timed-out request's exchange is dropped (which
//! cancels it on the server), and no answer can be matched to the wrong
//! request.
//!
//! The server takes its arguments as it describes them (`GetFlightInfo`),
//! not as DataFusion coerces them: each request is cast to the described
//! argument types first, and one that does not fit is refused here with
//! both signatures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedFlightData, DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use datafusion::arrow::datatypes::{Field, FieldRef, Schema};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::exchange::lock;
use super::failure::{Failure, failure_of};
use crate::wire::{self, BatchEncoder, FlightClient, FunctionSignature};

/// Idle exchanges kept per function; more are closed when given back.
const MAX_IDLE: usize = 64;

/// One open exchange with its encoder (which sent the schema once).
struct Stream {
    sender: mpsc::Sender<FlightData>,
    answers: BoxStream<'static, Result<DecodedFlightData, FlightError>>,
    encoder: BatchEncoder,
}

/// The exchanges and descriptions of one server.
pub(crate) struct UdfServer {
    client: FlightClient,
    address: String,
    signatures: Mutex<HashMap<String, Arc<FunctionSignature>>>,
    idle: Mutex<HashMap<String, Vec<Stream>>>,
}

impl UdfServer {
    pub(crate) fn new(client: FlightClient, address: &str) -> Self {
        Self {
            client,
            address: address.to_string(),
            signatures: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Evaluates `function` on `arguments`: one result batch's column.
    pub(crate) async fn evaluate(
        &self,
        function: &str,
        arguments: &RecordBatch,
    ) -> Result<ArrayRef, Failure> {
        let signature = self.signature(function).await?;
        let arguments = conform(arguments, &signature, &self.address)?;
        let taken = lock(&self.idle).get_mut(function).and_then(Vec::pop);
        let mut stream = match taken {
            Some(stream) => stream,
            None => self.open(function),
        };
        let answer = self.request(&mut stream, &arguments).await?;
        let mut idle = lock(&self.idle);
        let streams = idle.entry(function.to_string()).or_default();
        if streams.len() < MAX_IDLE {
            streams.push(stream);
        }
        Ok(answer)
    }

    /// The function's description, asked once.
    async fn signature(&self, function: &str) -> Result<Arc<FunctionSignature>, Failure> {
        if let Some(known) = lock(&self.signatures).get(function) {
            return Ok(Arc::clone(known));
        }
        let mut client = self.client.clone();
        let info = client
            .get_flight_info(wire::function_descriptor(function))
            .await
            .map_err(|status| failure_of(&status, &self.address))?
            .into_inner();
        let signature = wire::signature_of(info).map_err(|e| {
            Failure::Reject(format!(
                "{}: undescribable function '{function}': {e}",
                self.address
            ))
        })?;
        let signature = Arc::new(signature);
        lock(&self.signatures).insert(function.to_string(), Arc::clone(&signature));
        Ok(signature)
    }

    /// A new exchange for `function`; the call starts with its first message.
    fn open(&self, function: &str) -> Stream {
        let (sender, receiver) = mpsc::channel(16);
        let mut client = self.client.clone();
        let (answer_tx, answer_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            match client.do_exchange(ReceiverStream::new(receiver)).await {
                Ok(response) => {
                    let mut answers = response.into_inner();
                    while let Some(message) = answers.next().await {
                        let end = message.is_err();
                        if answer_tx.send(message).await.is_err() || end {
                            return;
                        }
                    }
                }
                Err(status) => {
                    let _ = answer_tx.send(Err(status)).await;
                }
            }
        });
        let messages = ReceiverStream::new(answer_rx).map(|m| m.map_err(FlightError::from));
        Stream {
            sender,
            answers: FlightDataDecoder::new(messages).boxed(),
            encoder: BatchEncoder::new(Some(wire::function_descriptor(function))),
        }
    }

    /// One batch out, one answer back.
    async fn request(
        &self,
        stream: &mut Stream,
        arguments: &RecordBatch,
    ) -> Result<ArrayRef, Failure> {
        let mut messages = Vec::new();
        stream
            .encoder
            .encode(arguments, Bytes::new(), &mut messages)
            .map_err(|e| Failure::Reject(format!("cannot encode the arguments: {e}")))?;
        for message in messages {
            if stream.sender.send(message).await.is_err() {
                return Err(Failure::Retry(format!(
                    "{}: the exchange closed",
                    self.address
                )));
            }
        }
        while let Some(decoded) = stream.answers.next().await {
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(FlightError::Tonic(status)) => {
                    return Err(failure_of(&status, &self.address));
                }
                Err(error) => {
                    return Err(Failure::Retry(format!(
                        "{}: undecodable answer: {error}",
                        self.address
                    )));
                }
            };
            if let DecodedPayload::RecordBatch(batch) = decoded.payload {
                return match batch.columns() {
                    [column] => Ok(Arc::clone(column)),
                    columns => Err(Failure::Retry(format!(
                        "{}: answered {} columns; expected one",
                        self.address,
                        columns.len()
                    ))),
                };
            }
        }
        Err(Failure::Lost(format!(
            "{}: the server closed the exchange without an answer",
            self.address
        )))
    }
}

/// `arguments` cast to the types the server describes, or why they do not
/// fit (refused: another instance would say the same).
fn conform(
    arguments: &RecordBatch,
    signature: &FunctionSignature,
    address: &str,
) -> Result<RecordBatch, Failure> {
    // the signatures are written out only when a request does not fit
    let types = |fields: &mut dyn Iterator<Item = &FieldRef>| -> String {
        let names: Vec<String> = fields.map(|f| f.data_type().to_string()).collect();
        names.join(", ")
    };
    let mismatch = |why: String| {
        Failure::Reject(format!(
            "{address}: function '{}' takes ({}), called with ({}): {why}",
            signature.name,
            types(&mut signature.arguments.iter()),
            types(&mut arguments.schema_ref().fields().iter())
        ))
    };
    if arguments.num_columns() != signature.arguments.len() {
        return Err(mismatch(format!(
            "{} argument(s) for {}",
            arguments.num_columns(),
            signature.arguments.len()
        )));
    }
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut fields = Vec::with_capacity(signature.arguments.len());
    let mut columns = Vec::with_capacity(signature.arguments.len());
    for (column, field) in arguments.columns().iter().zip(&signature.arguments) {
        let target = field.data_type();
        let column = if column.data_type() == target {
            Arc::clone(column)
        } else if can_cast_types(column.data_type(), target) {
            cast_with_options(column, target, &options).map_err(|e| mismatch(e.to_string()))?
        } else {
            return Err(mismatch(format!(
                "{} cannot be cast to {target}",
                column.data_type()
            )));
        };
        fields.push(Field::new(field.name(), target.clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(arguments.num_rows())),
    )
    .map_err(|e| mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    fn signature() -> FunctionSignature {
        FunctionSignature {
            name: "gcd".into(),
            arguments: vec![
                Arc::new(Field::new("x", DataType::Int32, true)),
                Arc::new(Field::new("y", DataType::Int32, true)),
            ],
            result: Arc::new(Field::new("gcd", DataType::Int32, true)),
        }
    }

    #[test]
    fn arguments_are_cast_to_the_described_types() {
        let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(12), None]));
        let y: ArrayRef = Arc::new(Int32Array::from(vec![8, 3]));
        let batch = RecordBatch::try_from_iter([("a", x), ("b", y)]).unwrap();
        let sent = conform(&batch, &signature(), "h").unwrap();
        assert_eq!(sent.schema().field(0).name(), "x");
        assert_eq!(sent.column(0).data_type(), &DataType::Int32);
        assert_eq!(sent.num_rows(), 2);
    }

    #[test]
    fn arguments_that_do_not_fit_are_refused_with_both_signatures() {
        let x: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let one = RecordBatch::try_from_iter([("a", x)]).unwrap();
        let Err(Failure::Reject(why)) = conform(&one, &signature(), "h") else {
            panic!("refused");
        };
        assert!(
            why.contains("function 'gcd' takes (Int32, Int32), called with (Int64)"),
            "{why}"
        );
        let big: ArrayRef = Arc::new(Int64Array::from(vec![1 << 40]));
        let text: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        let batch = RecordBatch::try_from_iter([("a", big), ("b", text)]).unwrap();
        let Err(Failure::Reject(why)) = conform(&batch, &signature(), "h") else {
            panic!("refused");
        };
        assert!(why.contains("called with (Int64, Utf8)"), "{why}");
    }
}
