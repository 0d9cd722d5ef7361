//! Encoding batches as Flight messages, each batch with its own
//! `app_metadata` (its sequence number), which arrow-flight's stream encoder
//! cannot do per batch.
//!
//! Arrow's [`StreamEncoder`] gives each message as the buffers it is made
//! of: the arrays' own buffers, not copies of them. A body is copied once,
//! where it goes: into a shared-memory ring ([`RingWriter`]) when the
//! exchange has one, or into the message itself.

use std::sync::Arc;

use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use datafusion::arrow::buffer::{Buffer, MutableBuffer};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamEncoder;
use datafusion::arrow::ipc::{MessageHeader, root_as_message};
use datafusion::arrow::record_batch::RecordBatch;

use super::dictionaries::sendable;
use super::shared_memory::{Aligned, RingWriter};

/// Encodes a stream of batches as Flight messages, each batch with its own
/// `app_metadata`.
///
/// The schema message is sent before the first batch and again whenever the
/// schema changes; dictionaries are sent before the batch that uses them. A
/// dictionary of dictionaries is sent unpacked to one dictionary, marked
/// with its type ([`ORIGINAL_TYPE_KEY`](super::ORIGINAL_TYPE_KEY)).
pub struct BatchEncoder {
    /// The schema of the batches and the encoder of their stream.
    stream: Option<(SchemaRef, StreamEncoder)>,
    descriptor: Option<FlightDescriptor>,
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("schema", &self.stream.as_ref().map(|(schema, _)| schema))
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

impl BatchEncoder {
    /// An encoder whose first message carries `descriptor`, if given.
    pub fn new(descriptor: Option<FlightDescriptor>) -> Self {
        Self {
            stream: None,
            descriptor,
        }
    }

    /// Encodes `batch` with `app_metadata` on its record batch message.
    pub fn encode(
        &mut self,
        batch: &RecordBatch,
        app_metadata: Bytes,
        out: &mut Vec<FlightData>,
    ) -> Result<(), ArrowError> {
        self.encode_placing(batch, app_metadata, out, None)
            .map(|_| ())
    }

    /// Encodes `batch` as [`encode`](Self::encode) does, placing the
    /// bodies in `ring` where they fit; returns how many it placed.
    pub(crate) fn encode_placing(
        &mut self,
        batch: &RecordBatch,
        app_metadata: Bytes,
        out: &mut Vec<FlightData>,
        ring: Option<&mut RingWriter>,
    ) -> Result<usize, ArrowError> {
        // arrow counts the schema message as sent once `encode` emitted it,
        // even when the batch then fails; the caller drops this request's
        // messages, so a failure starts the next batch on a fresh stream
        let placed = self.encode_on_stream(batch, app_metadata, out, ring);
        if placed.is_err() {
            self.stream = None;
        }
        placed
    }

    /// [`encode_placing`](Self::encode_placing) on the stream of `batch`'s
    /// schema, begun if need be.
    fn encode_on_stream(
        &mut self,
        batch: &RecordBatch,
        app_metadata: Bytes,
        out: &mut Vec<FlightData>,
        mut ring: Option<&mut RingWriter>,
    ) -> Result<usize, ArrowError> {
        let unpacked = sendable(batch)?;
        let batch = unpacked.as_ref().unwrap_or(batch);
        let schema = batch.schema_ref();
        let encoder = match &mut self.stream {
            Some((sent, encoder)) if *sent == *schema => encoder,
            stream => {
                &mut stream
                    .insert((Arc::clone(schema), StreamEncoder::try_new(schema)?))
                    .1
            }
        };
        let stream = encoder.encode(batch)?;
        let mut parts = Parts::new(&stream);
        let (mut placed, mut app_metadata) = (0, Some(app_metadata));
        while let Some((header, kind, body)) = parts.message()? {
            let mut message = FlightData::new().with_data_header(header);
            if kind == MessageHeader::RecordBatch
                && let Some(app_metadata) = app_metadata.take()
            {
                message.app_metadata = app_metadata;
            }
            if let Some(descriptor) = self.descriptor.take() {
                message.flight_descriptor = Some(descriptor);
            }
            if !body.is_empty() {
                let ring = ring.as_deref_mut();
                if ring.is_some_and(|ring| ring.place(&mut message.app_metadata, &body)) {
                    placed += 1;
                } else {
                    message.data_body = inline(&body);
                }
            }
            out.push(message);
        }
        Ok(placed)
    }
}

/// A body made of `parts`, as one buffer (64-byte aligned, as Arrow's readers
/// want it).
fn inline(parts: &[Buffer]) -> Bytes {
    let mut body = MutableBuffer::with_capacity(parts.iter().map(Buffer::len).sum());
    for part in parts {
        body.extend_from_slice(part.as_slice());
    }
    Bytes::from_owner(Aligned(body.into()))
}

/// The messages of an IPC stream given as consecutive buffers: each one's
/// framing (continuation marker, metadata length), metadata and body.
struct Parts<'a> {
    rest: std::slice::Iter<'a, Buffer>,
    current: Buffer,
}

impl<'a> Parts<'a> {
    fn new(parts: &'a [Buffer]) -> Self {
        Self {
            rest: parts.iter(),
            current: Buffer::from(Vec::<u8>::new()),
        }
    }

    /// The next message's metadata, kind and body parts; `None` at the end.
    fn message(&mut self) -> Result<Option<(Bytes, MessageHeader, Vec<Buffer>)>, ArrowError> {
        let mut framing = Vec::with_capacity(2);
        if !self.take(8, &mut framing) {
            return Ok(None);
        }
        let framing = concatenated(&framing);
        let (marker, len) = framing.split_at(4);
        let len = match <[u8; 4]>::try_from(len) {
            Ok(len) if marker == [0xff; 4] => i32::from_le_bytes(len),
            _ => return Err(unreadable("no continuation marker")),
        };
        let mut metadata = Vec::with_capacity(2);
        let len = usize::try_from(len).map_err(|_| unreadable("a negative metadata length"))?;
        if !self.take(len, &mut metadata) {
            return Err(unreadable("its metadata is cut short"));
        }
        let header = Bytes::from(concatenated(&metadata));
        let message = root_as_message(&header).map_err(|e| unreadable(&e.to_string()))?;
        let (kind, body_len) = (message.header_type(), message.bodyLength());
        let body_len =
            usize::try_from(body_len).map_err(|_| unreadable("a negative body length"))?;
        let mut body = Vec::new();
        if !self.take(body_len, &mut body) {
            return Err(unreadable("its body is cut short"));
        }
        Ok(Some((header, kind, body)))
    }

    /// Appends the next `n` bytes to `into`, as slices of the parts; false
    /// if the parts end first.
    fn take(&mut self, mut n: usize, into: &mut Vec<Buffer>) -> bool {
        while n > 0 {
            if self.current.is_empty() {
                match self.rest.next() {
                    Some(part) => self.current = part.clone(),
                    None => return false,
                }
                continue;
            }
            let k = n.min(self.current.len());
            into.push(self.current.slice_with_length(0, k));
            self.current = self.current.slice(k);
            n -= k;
        }
        true
    }
}

/// Arrow's own stream could not be split into messages, which is a bug.
fn unreadable(why: &str) -> ArrowError {
    ArrowError::IpcError(format!("cannot split the IPC stream it wrote: {why}"))
}

fn concatenated(parts: &[Buffer]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|part| part.as_slice().iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        Ring, Segment, decode_sequence, encode_sequence, function_descriptor, take_body,
    };
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

    /// Decodes `messages`, putting back the bodies placed in `segment`.
    async fn decoded(messages: Vec<FlightData>, segment: &Arc<Segment>) -> Vec<RecordBatch> {
        let segment = Arc::clone(segment);
        let messages = messages.into_iter().map(move |mut m| {
            take_body(&mut m, Some(&segment), Ring::Requests, false).unwrap();
            Ok(m)
        });
        FlightDataDecoder::new(futures::stream::iter(messages))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|d| match d.payload {
                DecodedPayload::RecordBatch(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn bodies_placed_in_a_ring_decode_as_the_inline_ones() {
        // sliced, with nulls, views and a dictionary: buffers arrow writes
        // as they are, and ones it writes anew (offsets, bitmaps)
        let strings: StringArray = (0..20_000)
            .map(|i| (i % 7 != 0).then(|| format!("value {i}")))
            .collect();
        let views = datafusion::arrow::compute::cast(
            &strings,
            &datafusion::arrow::datatypes::DataType::Utf8View,
        )
        .unwrap();
        let keys = Int32Array::from_iter_values((0..20_000).map(|i| i % 3));
        let values: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            ("s", Arc::new(strings) as ArrayRef),
            ("v", views),
            ("d", Arc::new(dict) as ArrayRef),
        ])
        .unwrap()
        .slice(3, 15_000);
        let segment = Segment::create().unwrap();
        let mut ring = RingWriter::new(Arc::clone(&segment), Ring::Requests);
        let (mut placed, mut inline) = (Vec::new(), Vec::new());
        let mut shared = BatchEncoder::new(None);
        let mut plain = BatchEncoder::new(None);
        for seq in 0..3 {
            let n = shared
                .encode_placing(&batch, encode_sequence(seq), &mut placed, Some(&mut ring))
                .unwrap();
            assert_eq!(n, 1, "the record batch's body is placed");
            plain
                .encode(&batch, encode_sequence(seq), &mut inline)
                .unwrap();
        }
        // the same messages, but for where the bodies are
        assert_eq!(placed.len(), inline.len());
        for (p, i) in placed.iter().zip(&inline) {
            assert_eq!(p.data_header, i.data_header);
            assert!(p.data_body.is_empty() || p.data_body == i.data_body);
        }
        let through_ring = decoded(placed, &segment).await;
        assert_eq!(through_ring, vec![batch.clone(); 3]);
        assert_eq!(decoded(inline, &segment).await, through_ring);
        // the bodies decode in place; their slots are free once dropped
        drop(through_ring);
        assert_eq!(ring.placed(), 0);
    }
}
