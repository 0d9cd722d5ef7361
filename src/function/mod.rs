//! The functions a service can host, and how an instance runs one.
//!
//! [`FunctionLibrary`] and [`HostedFunction`] (in `library`) name the
//! functions and their loaders; `loaded` evaluates a loaded function on
//! argument batches exactly as DataFusion would in-process; [`demo`] holds
//! model-like demo functions with a documented cost model, built on the
//! library.

pub mod demo;
mod library;
mod loaded;

pub use library::{FunctionLibrary, HostedFunction, Loader};
pub(crate) use loaded::LoadedFunction;
