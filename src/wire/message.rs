//! A status's message as a peer meant it: pyarrow servers (the Python kit,
//! arrow-udf, databend-udf) append `. Detail: ...` to every message, with
//! the Python traceback, which belongs in the server's log, not the
//! caller's error.

use tonic::Status;

/// Where pyarrow's appendix begins.
const PYARROW_DETAIL: &str = ". Detail: ";

/// `status`'s message without pyarrow's appendix.
pub(crate) fn message_of(status: &Status) -> &str {
    let message = status.message();
    message
        .split_once(PYARROW_DETAIL)
        .map_or(message, |(said, _)| said)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyarrow_appendices_are_cut() {
        let python = Status::invalid_argument(
            "cannot reverse boom. Detail: Python exception: Traceback (most recent call last):\n  File",
        );
        assert_eq!(message_of(&python), "cannot reverse boom");
        let flight = Status::unauthenticated("missing bearer token. Detail: Unauthenticated");
        assert_eq!(message_of(&flight), "missing bearer token");
        assert_eq!(message_of(&Status::internal("plain")), "plain");
    }
}
