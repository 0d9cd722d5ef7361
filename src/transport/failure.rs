//! Why one attempt of a request failed, and what the client does about it:
//! an instance's failure is retried on another instance; an answer any
//! instance would give (bad arguments, no such function, bad token) is not.

use tonic::{Code, Status};

/// How many times a request is re-sent because another request's failure
/// ended the exchange it was on, before such failures count as its own.
pub(crate) const MAX_COLLATERAL_RESENDS: usize = 8;

/// Why one attempt of a request failed.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The instance failed; another may succeed.
    Retry(String),
    /// Another request's error ended the exchange this one was on.
    Collateral(String),
    /// Any instance would answer the same (bad arguments, unknown function).
    Reject(String),
}

/// What a status from the instance at `address` means for the request.
pub(crate) fn failure_of(status: &Status, address: &str) -> Failure {
    let reason = format!("{address}: {} ({:?})", status.message(), status.code());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::Unauthenticated
        | Code::PermissionDenied => Failure::Reject(reason),
        _ => Failure::Retry(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert!(matches!(
            failure_of(&Status::invalid_argument("x"), "a"),
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
    }
}
