//! The SQL face of rpcop: the RPC service statements and their options.
//!
//! This crate knows nothing of the network. [`parser`] parses SQL text on top
//! of DataFusion's parser into [`statement`]s — ours, or DataFusion's own,
//! unchanged; [`options`] holds the typed, validated options of a service
//! (`WITH (key = value, ...)`), which the runtime consumes as they are.

pub mod options;
pub mod parser;
pub mod statement;

pub use options::{Isolation, LoadBalance, OnError, OptionError, ServiceOptions, Transport};
