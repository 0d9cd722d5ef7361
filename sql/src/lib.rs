//! The SQL face of rpcop: the RPC service statements, parsed.
//!
//! This crate knows nothing of the network, nor of what an option means.
//! [`parser`] parses SQL text on top of DataFusion's parser into
//! [`statement`]s — ours, or DataFusion's own, unchanged. The options of a
//! `WITH (key = value, ...)` list arrive as raw [`statement::OptionValue`]s
//! with the position of each key; the runtime (crate `rpcop`) gives them
//! types, checks them, and points its errors at those positions.

pub mod parser;
pub mod statement;

pub use datafusion_sql::sqlparser::tokenizer::Location;
