//! `embed_text(text) -> FixedSizeList<Float32, 384>`: sentence embeddings of
//! all-MiniLM-L6-v2, run natively ([`crate::model::SentenceEncoder`]).
//!
//! Hosted by a service, each instance loads the model once when it starts
//! (its [`Loader`](super::Loader)), with the service's `threads` as its
//! compute threads. Called in-process, the model loads at the first call
//! and is kept by the function. Without the model's files, either way says
//! to run `rpcop model fetch all-MiniLM-L6-v2`. NULL gives NULL.

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{ArrayRef, FixedSizeListArray, Float32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use super::library::{FunctionLibrary, HostedFunction, LoadContext};
use super::text::{first_arg, text_signature, texts};
use super::vector::cosine_similarity_udf;
use crate::model::{EMBEDDING_DIM, MINILM_L6_V2, ModelError, ModelStore, SentenceEncoder};

/// The function's name.
pub const EMBED_TEXT: &str = "embed_text";

impl FunctionLibrary {
    /// Adds the functions of real models rpcop ships: `embed_text`
    /// (all-MiniLM-L6-v2, each instance loading it once, with its `threads`
    /// as compute threads) and its helper `cosine_similarity`.
    pub fn with_models(self) -> Self {
        self.with(embed_text_hosted())
            .with_udf(cosine_similarity_udf())
    }
}

/// `embed_text` as a service hosts it: each instance loads the model when
/// it starts, with `threads` compute threads.
fn embed_text_hosted() -> HostedFunction {
    HostedFunction::with_loader(
        EMBED_TEXT,
        Arc::new(|context| {
            let encoder = load(context).map_err(|e| e.to_string())?;
            Ok(Arc::new(ScalarUDF::new_from_impl(EmbedText::loaded(
                encoder,
            ))))
        }),
    )
}

/// `embed_text` as a session registers it: the model loads at the first
/// call in-process, on as many threads as the machine has.
pub fn embed_text_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(EmbedText::lazy())
}

fn load(context: &LoadContext) -> Result<Arc<SentenceEncoder>, ModelError> {
    let store = ModelStore::from_env()?;
    let dir = store.ready(&MINILM_L6_V2)?;
    SentenceEncoder::load(&dir, context.threads, context.cuda_device).map(Arc::new)
}

/// The model of one `EmbedText`: loaded, or loaded at the first call.
#[derive(Debug)]
enum Encoder {
    Loaded(Arc<SentenceEncoder>),
    /// Loaded at the first call; a failed load is tried again at the next.
    Lazy(Mutex<Option<Arc<SentenceEncoder>>>),
}

#[derive(Debug)]
struct EmbedText {
    signature: Signature,
    encoder: Encoder,
}

impl EmbedText {
    fn loaded(encoder: Arc<SentenceEncoder>) -> Self {
        Self {
            signature: text_signature(),
            encoder: Encoder::Loaded(encoder),
        }
    }

    fn lazy() -> Self {
        Self {
            signature: text_signature(),
            encoder: Encoder::Lazy(Mutex::new(None)),
        }
    }

    fn encoder(&self) -> Result<Arc<SentenceEncoder>> {
        match &self.encoder {
            Encoder::Loaded(encoder) => Ok(Arc::clone(encoder)),
            Encoder::Lazy(slot) => {
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(encoder) = slot.as_ref() {
                    return Ok(Arc::clone(encoder));
                }
                let threads = std::thread::available_parallelism().map_or(1, usize::from);
                let encoder = load(&LoadContext::new(threads))
                    .map_err(|e| exec_datafusion_err!("{EMBED_TEXT}: {e}"))?;
                *slot = Some(Arc::clone(&encoder));
                Ok(encoder)
            }
        }
    }
}

/// Two `embed_text`s compute the same function, loaded or not.
impl PartialEq for EmbedText {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}

impl Eq for EmbedText {}

impl std::hash::Hash for EmbedText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.signature.hash(state);
    }
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::Float32, true))
}

impl ScalarUDFImpl for EmbedText {
    fn name(&self) -> &str {
        EMBED_TEXT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeList(item_field(), EMBEDDING_DIM as i32))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // a constant is encoded once, not once per row
        let input = if scalar {
            first_arg(&ScalarFunctionArgs {
                number_rows: 1,
                ..args
            })?
        } else {
            first_arg(&args)?
        };
        let rows: Vec<Option<&str>> = texts(&input)?.collect();
        let present: Vec<&str> = rows.iter().flatten().copied().collect();
        let vectors = if present.is_empty() {
            Vec::new()
        } else {
            self.encoder()?
                .encode(&present)
                .map_err(|e| exec_datafusion_err!("{EMBED_TEXT}: {e}"))?
        };
        // NULL rows take zeros under a null bit, in input order
        let mut values = Vec::with_capacity(rows.len() * EMBEDDING_DIM);
        let mut next = vectors.chunks_exact(EMBEDDING_DIM);
        for row in &rows {
            match row.and_then(|_| next.next()) {
                Some(vector) => values.extend_from_slice(vector),
                None => values.resize(values.len() + EMBEDDING_DIM, 0.0),
            }
        }
        let nulls = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
        let array = FixedSizeListArray::try_new(
            item_field(),
            EMBEDDING_DIM as i32,
            Arc::new(Float32Array::from(values)),
            Some(nulls).filter(|n| n.null_count() > 0),
        )?;
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(array) as ArrayRef))
    }
}
