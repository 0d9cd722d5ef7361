//! The sentence encoder of all-MiniLM-L6-v2, run natively with candle.
//!
//! It is what sentence-transformers computes: BERT (candle-transformers'
//! `BertModel`) over WordPiece tokens (the `tokenizers` crate), mean
//! pooling over the real tokens only (the attention mask: padding never
//! counts), then L2 normalisation. Sentences are cut at 256 tokens, the
//! model's `max_seq_length` (the shipped `tokenizer.json` says 128 and pads
//! every input to 128: both are overridden).
//!
//! A call tokenises its sentences together, sorts them by length and runs
//! them in chunks of [`CHUNK`], each padded to its longest sentence and run
//! as one forward pass; results come back in input order. The compute runs
//! on the encoder's own pool of `threads` threads, so instances sharing a
//! process do not share (or fight over) one global pool; candle's own
//! process-wide pool for elementwise ops is best off (see
//! [`use_encoder_threads_only`](super::use_encoder_threads_only)).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::error::ModelError;
use super::store::MINILM_L6_V2;

/// The dimension of the embeddings.
pub const EMBEDDING_DIM: usize = 384;

/// The longest input in tokens, `[CLS]` and `[SEP]` included
/// (`sentence_bert_config.json`'s `max_seq_length`).
pub const MAX_TOKENS: usize = 256;

/// Sentences per forward pass.
pub const CHUNK: usize = 32;

/// all-MiniLM-L6-v2, loaded.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("device", &self.device)
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, ModelError> {
    Device::new_cuda(ordinal).map_err(|e| model_error(format!("CUDA device {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> Result<Device, ModelError> {
    Err(model_error(format!(
        "the instance was given CUDA device {ordinal} (option gpus), but this rpcop was built \
         without the cuda feature: rebuild with `cargo build --release --features cuda`, or \
         drop the gpus option to run on the CPU"
    )))
}

fn model_error(reason: impl std::fmt::Display) -> ModelError {
    ModelError::Model {
        model: MINILM_L6_V2.name,
        reason: reason.to_string(),
    }
}

impl SentenceEncoder {
    /// Loads the model from `dir` (see [`super::ModelStore::ready`]) to run
    /// on `threads` compute threads: on the CPU, or with `cuda_device` on
    /// that CUDA device (an ordinal of those `CUDA_VISIBLE_DEVICES` lets
    /// this process see), which needs rpcop built with the `cuda` feature.
    pub fn load(
        dir: &Path,
        threads: usize,
        cuda_device: Option<usize>,
    ) -> Result<Self, ModelError> {
        let device = match cuda_device {
            None => Device::Cpu,
            Some(ordinal) => cuda(ordinal)?,
        };
        Self::load_on(dir, threads, device)
    }

    fn load_on(dir: &Path, threads: usize, device: Device) -> Result<Self, ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| ModelError::Io {
                path,
                reason: e.to_string(),
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| model_error(format!("config.json: {e}")))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| model_error(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(model_error)?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| model_error(format!("tokenizer.json: {e}")))?;
        // padded here per chunk, not by the tokenizer to a fixed 128
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| model_error(format!("tokenizer.json: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("rpcop-model-{i}"))
            .build()
            .map_err(model_error)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            pool,
        })
    }

    /// The compute threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The embeddings of `texts`, one after another in their order:
    /// `texts.len() × EMBEDDING_DIM` floats, each vector of unit length.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        self.pool.install(|| self.encode_here(texts))
    }

    fn encode_here(&self, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(model_error)?;
        // the shortest first: chunks of like lengths pad little
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![0f32; texts.len() * EMBEDDING_DIM];
        for chunk in order.chunks(CHUNK) {
            let width = chunk
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0);
            let mut ids = vec![0u32; chunk.len() * width];
            let mut mask = vec![0u32; chunk.len() * width];
            for (row, &i) in chunk.iter().enumerate() {
                let tokens = encodings[i].get_ids();
                ids[row * width..row * width + tokens.len()].copy_from_slice(tokens);
                mask[row * width..row * width + tokens.len()].fill(1);
            }
            let vectors = self.forward(ids, mask, chunk.len(), width)?;
            for (row, &i) in chunk.iter().enumerate() {
                out[i * EMBEDDING_DIM..(i + 1) * EMBEDDING_DIM]
                    .copy_from_slice(&vectors[row * EMBEDDING_DIM..(row + 1) * EMBEDDING_DIM]);
            }
        }
        Ok(out)
    }

    /// One forward pass over `rows` sentences padded to `width` tokens:
    /// mean-pooled over the mask, L2-normalised, flattened.
    fn forward(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        rows: usize,
        width: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::from_vec(ids, (rows, width), &self.device)?;
            let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
            let counts = weights.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norm)?.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(model_error)
    }
}
