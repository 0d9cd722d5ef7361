//! The wire protocol between callers and service instances (a public contract).
//!
//! Requests travel over Arrow Flight `DoExchange`, as `DESIGN.md` ("The wire
//! protocol") describes:
//!
//! - the first message carries a PATH [`FlightDescriptor`] naming the function
//!   ([`function_descriptor`]);
//! - each argument batch carries its request sequence number in `app_metadata`,
//!   a u64 in 8 bytes little-endian ([`encode_sequence`]); each result batch
//!   (one column, the request's row count) carries the same number back;
//! - an argument field whose metadata has [`SCALAR_ARGUMENT_KEY`] = `"true"` is
//!   a constant: the instance passes its first value to the function as a
//!   scalar, as DataFusion does for a literal argument;
//! - errors are Flight statuses; one that concerns a single request names its
//!   sequence number in the status metadata [`SEQUENCE_STATUS_KEY`];
//! - `ListFlights`/`GetFlightInfo` describe a function in the Arrow Flight UDF
//!   convention ([`function_info`]): its schema is the argument fields followed
//!   by the result field, and `total_records` is the number of arguments;
//! - every call carries `authorization: Bearer <token>`.
//!
//! [`BatchEncoder`] turns batches into `FlightData` messages with their own
//! `app_metadata`, which arrow-flight's stream encoder cannot do per batch.

use std::sync::Arc;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor, FlightInfo};
use bytes::Bytes;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use datafusion::arrow::record_batch::RecordBatch;

/// The protocol version an instance reports for the `protocol_version` action.
pub const PROTOCOL_VERSION: u32 = 1;

/// `DoAction` type: is the instance ready? Answers `ok`.
pub const ACTION_HEALTH: &str = "health";
/// `DoAction` type: stop taking new streams; streams already open are served.
pub const ACTION_DRAIN: &str = "drain";
/// `DoAction` type: the instance's counters as JSON ([`crate::InstanceStats`]).
pub const ACTION_STATS: &str = "stats";
/// `DoAction` type: the protocol version, as decimal text.
pub const ACTION_PROTOCOL_VERSION: &str = "protocol_version";

/// Field metadata key marking a constant argument column.
pub const SCALAR_ARGUMENT_KEY: &str = "rpcop.scalar";

/// Status metadata key naming the sequence number of the request an error
/// concerns.
pub const SEQUENCE_STATUS_KEY: &str = "x-rpcop-seq";

/// gRPC metadata key of the bearer token.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// The largest gRPC message an instance or client accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// HTTP/2 flow-control window of one exchange, both ways. HTTP/2's default
/// (64 KiB) is smaller than one request of 8192 short strings, so each
/// request waited for a window update mid-message; what is outstanding is
/// bounded by `max_in_flight` anyway.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one connection, both ways.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// The largest HTTP/2 frame sent: a request travels in a few frames, not in
/// HTTP/2's default 16 KiB ones. Together with the windows: Flight
/// pass-through of 4M strings (`cargo bench --bench compare`) median
/// 127 ms -> 97 ms over seven runs each.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// The `authorization` metadata value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Encodes a request sequence number as `app_metadata`.
pub fn encode_sequence(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_le_bytes())
}

/// Decodes a request sequence number from `app_metadata`.
///
/// Empty metadata is `Ok(None)` (a plain Flight client); anything that is not
/// 8 bytes is an error.
pub fn decode_sequence(app_metadata: &[u8]) -> Result<Option<u64>, String> {
    match app_metadata.len() {
        0 => Ok(None),
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(app_metadata);
            Ok(Some(u64::from_le_bytes(bytes)))
        }
        n => Err(format!(
            "app_metadata must be a sequence number of 8 bytes (u64 little-endian), got {n} bytes"
        )),
    }
}

/// The descriptor that names `function` in the first message of an exchange.
pub fn function_descriptor(function: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![function.to_string()])
}

/// The function a descriptor names, or why it names none.
pub fn function_of(descriptor: &FlightDescriptor) -> Result<&str, String> {
    if descriptor.r#type() != DescriptorType::Path {
        return Err(
            "the descriptor must be of type PATH with one element, the function's name".to_string(),
        );
    }
    match descriptor.path.as_slice() {
        [name] if !name.is_empty() => Ok(name),
        path => Err(format!(
            "the descriptor path must be one element, the function's name; got {path:?}"
        )),
    }
}

/// A function's signature as instances describe it: argument fields and the
/// result field.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSignature {
    /// The function's name.
    pub name: String,
    /// One field per argument, in order.
    pub arguments: Vec<FieldRef>,
    /// The result field.
    pub result: FieldRef,
}

/// Describes a function in the Arrow Flight UDF convention.
pub fn function_info(signature: &FunctionSignature) -> Result<FlightInfo, ArrowError> {
    let mut fields: Vec<FieldRef> = signature.arguments.clone();
    fields.push(Arc::clone(&signature.result));
    let schema = Schema::new(fields);
    let arguments = i64::try_from(signature.arguments.len()).unwrap_or(i64::MAX);
    Ok(FlightInfo::new()
        .try_with_schema(&schema)?
        .with_descriptor(function_descriptor(&signature.name))
        .with_total_records(arguments))
}

/// Reads a function's signature back from a [`FlightInfo`].
pub fn signature_of(info: FlightInfo) -> Result<FunctionSignature, ArrowError> {
    let name = info
        .flight_descriptor
        .as_ref()
        .and_then(|d| function_of(d).ok().map(str::to_string))
        .ok_or_else(|| ArrowError::InvalidArgumentError("FlightInfo names no function".into()))?;
    let arguments = usize::try_from(info.total_records).map_err(|_| {
        ArrowError::InvalidArgumentError(format!(
            "FlightInfo of '{name}' has total_records {}, not a number of arguments",
            info.total_records
        ))
    })?;
    let schema = info.try_decode_schema()?;
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    if fields.len() != arguments + 1 {
        return Err(ArrowError::InvalidArgumentError(format!(
            "FlightInfo of '{name}' has {} fields for {arguments} arguments; expected arguments then one result",
            fields.len()
        )));
    }
    let result = fields.pop().ok_or_else(|| {
        ArrowError::InvalidArgumentError(format!("FlightInfo of '{name}' has no result field"))
    })?;
    Ok(FunctionSignature {
        name,
        arguments: fields,
        result,
    })
}

/// Marks an argument field as a constant (see [`SCALAR_ARGUMENT_KEY`]).
pub fn scalar_argument(field: &Field) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(SCALAR_ARGUMENT_KEY.to_string(), "true".to_string());
    field.clone().with_metadata(metadata)
}

/// Is this argument field marked as a constant?
pub fn is_scalar_argument(field: &Field) -> bool {
    field
        .metadata()
        .get(SCALAR_ARGUMENT_KEY)
        .is_some_and(|v| v == "true")
}

/// Encodes a stream of batches as Flight messages, each batch with its own
/// `app_metadata`.
///
/// The schema message is sent before the first batch and again whenever the
/// schema changes; dictionaries are sent before the batch that uses them.
#[derive(Debug)]
pub struct BatchEncoder {
    options: IpcWriteOptions,
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
    context: IpcWriteContext,
    schema: Option<SchemaRef>,
    descriptor: Option<FlightDescriptor>,
}

impl BatchEncoder {
    /// An encoder whose first message carries `descriptor`, if given.
    pub fn new(descriptor: Option<FlightDescriptor>) -> Self {
        Self {
            options: IpcWriteOptions::default(),
            generator: IpcDataGenerator::default(),
            dictionaries: DictionaryTracker::new(false),
            context: IpcWriteContext::default(),
            schema: None,
            descriptor,
        }
    }

    /// Encodes the schema message now (a stream that may carry no batch still
    /// tells its schema).
    pub fn encode_schema(&mut self, schema: &SchemaRef, out: &mut Vec<FlightData>) {
        self.schema = Some(Arc::clone(schema));
        // the tracker assigns the dictionary ids that the batches then use
        self.dictionaries = DictionaryTracker::new(false);
        let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.dictionaries,
            &self.options,
        );
        let message = FlightData::new().with_data_header(encoded.ipc_message);
        self.push(message, out);
    }

    /// Encodes `batch` with `app_metadata` on its record batch message.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        app_metadata: Bytes,
        out: &mut Vec<FlightData>,
    ) -> Result<(), ArrowError> {
        if self.schema.as_ref() != Some(batch.schema_ref()) {
            self.encode_schema(batch.schema_ref(), out);
        }
        let (dictionaries, data) = self.generator.encode(
            batch,
            &mut self.dictionaries,
            &self.options,
            &mut self.context,
        )?;
        for dictionary in dictionaries {
            self.push(dictionary.into(), out);
        }
        let mut message: FlightData = data.into();
        message.app_metadata = app_metadata;
        self.push(message, out);
        Ok(())
    }

    fn push(&mut self, mut message: FlightData, out: &mut Vec<FlightData>) {
        if let Some(descriptor) = self.descriptor.take() {
            message.flight_descriptor = Some(descriptor);
        }
        out.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Int32Type};
    use futures::TryStreamExt;

    #[test]
    fn sequence_numbers_round_trip() {
        assert_eq!(decode_sequence(&encode_sequence(7)).unwrap(), Some(7));
        assert_eq!(encode_sequence(1).as_ref(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_sequence(&[]).unwrap(), None);
        assert!(decode_sequence(&[1, 2, 3]).unwrap_err().contains("8 bytes"));
    }

    #[test]
    fn descriptor_names_one_function() {
        assert_eq!(function_of(&function_descriptor("upper")).unwrap(), "upper");
        let two = FlightDescriptor::new_path(vec!["a".into(), "b".into()]);
        assert!(function_of(&two).unwrap_err().contains("one element"));
        let cmd = FlightDescriptor::new_cmd(b"upper".to_vec());
        assert!(function_of(&cmd).unwrap_err().contains("PATH"));
    }

    #[test]
    fn function_info_round_trips() {
        let signature = FunctionSignature {
            name: "f".into(),
            arguments: vec![
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(Field::new("b", DataType::Int64, true)),
            ],
            result: Arc::new(Field::new("f", DataType::Float32, true)),
        };
        let info = function_info(&signature).unwrap();
        assert_eq!(info.total_records, 2);
        assert_eq!(signature_of(info).unwrap(), signature);
    }

    #[tokio::test]
    async fn encoder_carries_metadata_and_dictionaries() {
        let keys = Int32Array::from(vec![0, 1, 0]);
        let values: ArrayRef = Arc::new(StringArray::from(vec!["x", "y"]));
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        let batch = RecordBatch::try_from_iter(vec![("d", Arc::new(dict) as ArrayRef)]).unwrap();
        let mut encoder = BatchEncoder::new(Some(function_descriptor("f")));
        let mut out = Vec::new();
        encoder
            .encode(&batch, encode_sequence(3), &mut out)
            .unwrap();
        encoder
            .encode(&batch, encode_sequence(4), &mut out)
            .unwrap();
        assert!(out[0].flight_descriptor.is_some());
        let decoded: Vec<_> =
            FlightDataDecoder::new(futures::stream::iter(out.into_iter().map(Ok)))
                .try_collect()
                .await
                .unwrap();
        let batches: Vec<_> = decoded
            .into_iter()
            .filter_map(|d| match d.payload {
                DecodedPayload::RecordBatch(b) => Some((decode_sequence(&d.inner.app_metadata), b)),
                _ => None,
            })
            .collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].0, Ok(Some(3)));
        assert_eq!(batches[1].0, Ok(Some(4)));
        assert_eq!(batches[1].1, batch);
    }
}
