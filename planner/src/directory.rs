//! What the rewrite rule knows of services: a [`ServiceDirectory`] answers
//! "which service serves function f?" with a [`ServiceRef`].
//!
//! The runtime's service catalog implements the directory; this crate sees
//! services only through it, so it needs no network and no runtime.

use std::fmt::Debug;

/// What the rule knows of a service: its name and load-balancing policy
/// (shown by `EXPLAIN`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The service's name.
    pub name: String,
    /// Its load-balancing policy.
    pub policy: String,
}

impl ServiceRef {
    /// A service called `name` balancing by `policy`.
    pub fn new(name: impl Into<String>, policy: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: policy.into(),
        }
    }
}

/// Answers the rule's one question: which service serves function `f`?
///
/// The runtime's service catalog answers it; this crate cannot see it.
pub trait ServiceDirectory: Debug + Send + Sync {
    /// The service that serves calls of the function named `function`, if
    /// one does.
    fn service_of(&self, function: &str) -> Option<ServiceRef>;
}
