//! Why one attempt of a request failed, and what the client does about it:
//! an instance's failure is retried on another instance; an answer any
//! instance would give (bad arguments, no such function, bad token) is not.

use tonic::{Code, Status};

use crate::wire::message_of;

/// How many times a request is re-sent because another request's failure
/// ended the exchange it was on, before such failures count as its own.
pub(crate) const MAX_COLLATERAL_RESENDS: usize = 8;

/// Why one attempt of a request failed.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The instance failed; another may succeed.
    Retry(String),
    /// The connection or exchange broke without an answer from the instance
    /// (it may have died): retried like [`Failure::Retry`], and the client
    /// asks the region why the instance went.
    Lost(String),
    /// Another request's error ended the exchange this one was on.
    Collateral(String),
    /// Any instance would answer the same (bad arguments, unknown function).
    Reject(String),
}

/// Is `status` the transport's (the connection broke: HTTP/2 errors, a
/// reset, a refused connection) rather than an answer of the instance?
pub(crate) fn is_transport(status: &Status) -> bool {
    match status.code() {
        Code::Unknown | Code::Cancelled => true,
        Code::Unavailable | Code::Internal => {
            let message = status.message();
            message.contains("h2 protocol error")
                || message.contains("transport error")
                || message.contains("connection")
        }
        _ => false,
    }
}

/// What a status from the instance at `address` means for the request.
pub(crate) fn failure_of(status: &Status, address: &str) -> Failure {
    let mut reason = format!("{address}: {} ({:?})", message_of(status), status.code());
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        reason.push_str(
            "; the message is over max_message_size: raise it (on both sides; fixed while the \
             service runs: DROP and CREATE it), or lower batch_size",
        );
    }
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::Unauthenticated
        | Code::PermissionDenied
        // a message over the size limit is too big for any instance
        | Code::OutOfRange => Failure::Reject(reason),
        _ if is_transport(status) => Failure::Lost(reason),
        _ => Failure::Retry(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_tracebacks_are_left_out() {
        let status = Status::invalid_argument(
            "cannot reverse boom. Detail: Python exception: Traceback (most recent call last):\n  File",
        );
        let Failure::Reject(reason) = failure_of(&status, "h") else {
            panic!("a function's error is refused");
        };
        assert_eq!(reason, "h: cannot reverse boom (InvalidArgument)");
    }

    #[test]
    fn status_classes() {
        assert!(matches!(
            failure_of(&Status::invalid_argument("x"), "a"),
            Failure::Reject(_)
        ));
        assert!(matches!(
            failure_of(
                &Status::out_of_range("Error, encoded message length too large"),
                "a"
            ),
            Failure::Reject(_)
        ));
        assert!(matches!(
            failure_of(&Status::unavailable("x"), "a"),
            Failure::Retry(_)
        ));
        assert!(matches!(
            failure_of(&Status::internal("x"), "a"),
            Failure::Retry(_)
        ));
        assert!(matches!(
            failure_of(
                &Status::internal("h2 protocol error: error reading a body"),
                "a"
            ),
            Failure::Lost(_)
        ));
    }
}
