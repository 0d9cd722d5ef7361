//! Request sequence numbers: a u64, 8 bytes little-endian, in a batch's
//! `app_metadata`, and in an error status's metadata when the error
//! concerns one request. A caller that gives up on a request cancels it
//! with a message that carries only `app_metadata`:
//! [`CANCEL_PREFIX`] followed by the sequence number. An instance that
//! cannot end an exchange while it reads ahead asks the caller to close
//! it first with a message carrying only [`ENDING`].

use bytes::Bytes;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::constants::SEQUENCE_STATUS_KEY;

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

/// How the `app_metadata` of a cancel message starts; the request's
/// sequence number (8 bytes, little-endian) follows.
pub const CANCEL_PREFIX: &[u8] = b"rpcop-cancel";

/// The `app_metadata` of a message (with no data header) that cancels
/// request `seq` of the exchange.
pub fn encode_cancel(seq: u64) -> Bytes {
    let mut bytes = Vec::with_capacity(CANCEL_PREFIX.len() + 8);
    bytes.extend_from_slice(CANCEL_PREFIX);
    bytes.extend_from_slice(&seq.to_le_bytes());
    Bytes::from(bytes)
}

/// The request a cancel message's `app_metadata` cancels, if it is one.
pub fn decode_cancel(app_metadata: &[u8]) -> Option<u64> {
    let seq = app_metadata.strip_prefix(CANCEL_PREFIX)?;
    Some(u64::from_le_bytes(seq.try_into().ok()?))
}

/// The `app_metadata` of a message (with no data header) by which an
/// instance says it will end the exchange with an error: the caller sends
/// no more requests on it and half-closes it, and the error follows.
/// rpcop's own instances end at once and never send it; the Python kit,
/// which reads requests ahead on a thread of its own, must wait for that
/// thread before it may end the call.
pub const ENDING: &[u8] = b"rpcop-ending";

/// Names the request an error concerns in the status metadata.
pub(crate) fn with_sequence(mut status: Status, seq: Option<u64>) -> Status {
    if let Some(seq) = seq
        && let Ok(value) = MetadataValue::try_from(seq.to_string())
    {
        status.metadata_mut().insert(SEQUENCE_STATUS_KEY, value);
    }
    status
}

/// The request an error status names, if it names one.
pub(crate) fn sequence_of(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(SEQUENCE_STATUS_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_round_trip() {
        assert_eq!(decode_sequence(&encode_sequence(7)).unwrap(), Some(7));
        assert_eq!(encode_sequence(1).as_ref(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_sequence(&[]).unwrap(), None);
        assert!(decode_sequence(&[1, 2, 3]).unwrap_err().contains("8 bytes"));
    }

    #[test]
    fn cancels_round_trip() {
        assert_eq!(decode_cancel(&encode_cancel(9)), Some(9));
        assert_eq!(encode_cancel(1).len(), 20);
        assert_eq!(decode_cancel(&encode_sequence(9)), None);
        assert_eq!(decode_cancel(b"rpcop-cancel\x01"), None);
    }

    #[test]
    fn statuses_name_their_request() {
        let status = with_sequence(Status::internal("x"), Some(42));
        assert_eq!(sequence_of(&status), Some(42));
        assert_eq!(sequence_of(&Status::internal("x")), None);
    }
}
