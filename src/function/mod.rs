//! The functions a service can host, and how an instance runs one.
//!
//! [`FunctionLibrary`] and [`HostedFunction`] (in `library`) name the
//! functions and their loaders; `loaded` evaluates a loaded function on
//! argument batches exactly as DataFusion would in-process; [`demo`] holds
//! model-like demo functions with a documented cost model, built on the
//! library; `embed_text` is a real model's function (all-MiniLM-L6-v2,
//! run by [`crate::model`]), and `vector` the helper that makes its results
//! useful in SQL (`cosine_similarity`).

pub mod demo;
mod embed_text;
mod library;
mod loaded;
mod text;
mod vector;

pub(crate) use embed_text::embed_text_udf;
pub use library::{FunctionLibrary, HostedFunction, LoadContext, Loader};
pub(crate) use loaded::LoadedFunction;
pub(crate) use vector::cosine_similarity_udf;
