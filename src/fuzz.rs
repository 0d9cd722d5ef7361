//! Entry points of the fuzz targets in `fuzz/` (built with the feature
//! `fuzzing` only; not part of the API): an instance's decoding of the
//! messages of an exchange, fed what a fuzzer chooses, starting from
//! exchanges rpcop's own client sends.

use std::sync::{Arc, OnceLock};

use arrow_flight::{FlightData, FlightDescriptor};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, DictionaryArray, FixedSizeListArray, Float32Array, Int32Array,
    Int64Array, ListArray, StringArray, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::instance::decode_requests;
use crate::wire::{self, BatchEncoder};

/// A batch of each kind of column the wire carries: strings, integers with
/// nulls, lists, dictionaries, structs, vectors, bytes, timestamps.
fn samples() -> Vec<RecordBatch> {
    let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("héllo")]));
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(-7)]));
    let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        None,
        Some(vec![]),
    ]));
    let dictionary: ArrayRef = Arc::new(
        vec!["x", "y", "x"]
            .into_iter()
            .collect::<DictionaryArray<Int32Type>>(),
    );
    let structs: ArrayRef = Arc::new(StructArray::from(vec![
        (
            Arc::new(Field::new("i", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("s", DataType::Utf8, true)),
            Arc::clone(&strings),
        ),
    ]));
    let vectors: ArrayRef = Arc::new(FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        2,
        Arc::new(Float32Array::from(vec![0.5, 1.0, -1.0, 0.0, 2.0, 3.0])),
        None,
    ));
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![
        Some(&b"\0\xff"[..]),
        None,
        Some(b""),
    ]));
    let times: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
        Some(0),
        None,
        Some(1),
    ]));
    [
        ("s", strings),
        ("i", ints),
        ("l", lists),
        ("d", dictionary),
        ("st", structs),
        ("v", vectors),
        ("b", bytes),
        ("t", times),
    ]
    .into_iter()
    .filter_map(|(name, column)| RecordBatch::try_from_iter([(name, column)]).ok())
    .collect()
}

/// For each sample, the exchange rpcop's client sends: the descriptor and
/// schema, two requests with their sequence numbers, and a cancel.
pub fn templates() -> &'static [Vec<FlightData>] {
    static TEMPLATES: OnceLock<Vec<Vec<FlightData>>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        samples()
            .iter()
            .filter_map(|batch| {
                let descriptor = FlightDescriptor::new_path(vec!["upper".to_string()]);
                let mut encoder = BatchEncoder::new(Some(descriptor));
                let mut messages = Vec::new();
                for seq in [1u64, 2] {
                    let seq = bytes::Bytes::copy_from_slice(&seq.to_le_bytes());
                    encoder.encode(batch, seq, &mut messages).ok()?;
                }
                messages.push(FlightData {
                    app_metadata: wire::encode_cancel(2),
                    ..FlightData::default()
                });
                Some(messages)
            })
            .collect()
    })
}

/// Decodes `messages` as an instance decodes an exchange: the first names
/// the function, the rest are requests (Arrow IPC with sequence numbers)
/// and cancels. Returns how many requests decoded; it must never panic
/// nor hang, whatever the messages hold.
pub fn decode_exchange(messages: Vec<FlightData>) -> usize {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok()
    });
    let Some(runtime) = runtime else {
        return 0;
    };
    let mut messages = messages.into_iter();
    let Some(first) = messages.next() else {
        return 0;
    };
    if let Some(descriptor) = &first.flight_descriptor
        && wire::function_of(descriptor).is_err()
    {
        return 0;
    }
    // the cancels decoded are kept until the end, unread
    let (cancel, _cancels) = mpsc::unbounded_channel();
    let rest = stream::iter(messages.map(Ok));
    // decoding times its caller out, so it runs within the runtime
    runtime.block_on(async move {
        decode_requests(first, rest, cancel, None)
            .filter(|request| std::future::ready(request.is_ok()))
            .count()
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_decode_whole() {
        let templates = templates();
        assert_eq!(templates.len(), samples().len());
        for messages in templates {
            assert_eq!(decode_exchange(messages.clone()), 2);
        }
    }
}
