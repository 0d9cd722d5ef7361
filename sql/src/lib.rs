//! The SQL face of rpcop: the RPC service statements and their options.
//!
//! This crate knows nothing of the network. [`options`] holds the typed,
//! validated options of a service (`WITH (key = value, ...)`), which the
//! runtime consumes as they are.

pub mod options;

pub use options::{Isolation, LoadBalance, OnError, OptionError, ServiceOptions};
