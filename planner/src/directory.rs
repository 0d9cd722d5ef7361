//! What the rewrite rule knows of services: a [`ServiceDirectory`] answers
//! "which service serves function f?" with a [`ServiceRef`].
//!
//! The runtime's service catalog implements the directory; this crate sees
//! services only through it, so it needs no network and no runtime.

use std::cmp::Ordering;
use std::fmt::{self, Debug};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What the rule knows of a service: its name and load-balancing policy
/// (shown by `EXPLAIN`), and how another process reaches it.
///
/// Two references to one service are equal whatever their definitions (a
/// service that resized between two calls is still one service), and
/// `Debug` does not print the definition (its option values may be a
/// command's environment).
#[derive(Clone)]
pub struct ServiceRef {
    /// The service's name.
    pub name: String,
    /// Its load-balancing policy.
    pub policy: String,
    /// The runtime's definition of the service (opaque here), which a plan
    /// carries to the processes of a distributed engine that run it: the
    /// service's functions, its endpoints or placement, and its options.
    pub definition: Option<Arc<str>>,
}

impl ServiceRef {
    /// What identifies the service.
    fn key(&self) -> (&str, &str) {
        (&self.name, &self.policy)
    }
}

impl PartialEq for ServiceRef {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ServiceRef {}

impl Hash for ServiceRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for ServiceRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServiceRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Debug for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRef")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field(
                "definition",
                &self
                    .definition
                    .as_ref()
                    .map(|d| format!("<{} bytes>", d.len())),
            )
            .finish()
    }
}

impl ServiceRef {
    /// A service called `name` balancing by `policy`.
    pub fn new(name: impl Into<String>, policy: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: policy.into(),
            definition: None,
        }
    }

    /// The service with the runtime's `definition` of it.
    pub fn with_definition(mut self, definition: impl Into<Arc<str>>) -> Self {
        self.definition = Some(definition.into());
        self
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
