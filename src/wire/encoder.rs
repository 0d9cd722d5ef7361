//! Encoding batches as Flight messages, each batch with its own
//! `app_metadata` (its sequence number), which arrow-flight's stream encoder
//! cannot do per batch.

use std::sync::Arc;

use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use datafusion::arrow::record_batch::RecordBatch;

use super::dictionaries::sendable;

/// Encodes a stream of batches as Flight messages, each batch with its own
/// `app_metadata`.
///
/// The schema message is sent before the first batch and again whenever the
/// schema changes; dictionaries are sent before the batch that uses them. A
/// dictionary of dictionaries is sent unpacked to one dictionary, marked
/// with its type ([`ORIGINAL_TYPE_KEY`](super::ORIGINAL_TYPE_KEY)).
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
        let unpacked = sendable(batch)?;
        let batch = unpacked.as_ref().unwrap_or(batch);
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
    use crate::wire::{decode_sequence, encode_sequence, function_descriptor};
    use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;
    use futures::TryStreamExt;

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
