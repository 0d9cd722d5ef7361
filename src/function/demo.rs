//! Model-like demo functions for examples, tests and benchmarks.
//!
//! Each stands in for a heavy model and follows one documented cost model:
//!
//! | cost | what it is | how it is set |
//! | --- | --- | --- |
//! | start-up | paid once per instance when it loads the function (a "model load") | `RPCOP_DEMO_STARTUP_MS` (default 0), read at each load |
//! | per batch | a wait that uses no CPU (a device call) | `embed`, `classify`: `RPCOP_DEMO_BATCH_LATENCY_MS` (default 0); `model_sim`: its 2nd argument |
//! | per row | CPU burnt per row, on top of the real work | `embed`, `classify`: `RPCOP_DEMO_ROW_COST_US` (default 0); `model_sim`: its 3rd argument |
//!
//! The functions are deterministic, so results through a service can be
//! compared with results in-process:
//!
//! - `embed(text) -> FixedSizeList<Float32, 16>`: a unit-length vector of
//!   hashed character trigrams; NULL for NULL.
//! - `classify(text) -> Utf8`: `news`, `sports`, `tech` or `other` by keywords.
//! - `model_sim(text, batch_latency_ms, row_cost_us) -> Utf8`: waits, burns,
//!   and returns the text's 64-bit FNV-1a hash in hex.
//! - `identity(value)`: its argument, of any type, unchanged and at no cost:
//!   through a service it measures what the way there and back costs.
//!
//! Every load is counted ([`startups`]) so tests can show that a warm service
//! does not pay its start-up again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, FixedSizeListArray, Float32Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::library::{FunctionLibrary, HostedFunction};
use super::text::{first_arg, text_signature, texts};

/// Dimension of `embed`'s vectors.
pub const EMBED_DIM: i32 = 16;

static STARTUPS: AtomicU64 = AtomicU64::new(0);

/// How many times a demo function was loaded in this process.
pub fn startups() -> u64 {
    STARTUPS.load(Ordering::Relaxed)
}

fn env_millis(name: &str) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

fn env_micros(name: &str) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_micros)
}

/// DataFusion's built-ins and the demo models: the library the `rpcop`
/// binary hosts.
pub fn library() -> FunctionLibrary {
    FunctionLibrary::default().with_functions(demo_functions())
}

/// The demo functions, each loaded with its start-up cost.
pub fn demo_functions() -> Vec<HostedFunction> {
    vec![
        demo("embed", || {
            ScalarUDF::new_from_impl(Embed::new(Cost::from_env()))
        }),
        demo("classify", || {
            ScalarUDF::new_from_impl(Classify::new(Cost::from_env()))
        }),
        demo("model_sim", || ScalarUDF::new_from_impl(ModelSim::new())),
        demo("identity", || ScalarUDF::new_from_impl(Identity::new())),
    ]
}

/// The demo UDFs as DataFusion registers them in-process (no start-up paid).
pub fn demo_udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Embed::new(Cost::from_env())),
        ScalarUDF::new_from_impl(Classify::new(Cost::from_env())),
        ScalarUDF::new_from_impl(ModelSim::new()),
        ScalarUDF::new_from_impl(Identity::new()),
    ]
}

fn demo(name: &'static str, build: fn() -> ScalarUDF) -> HostedFunction {
    HostedFunction::with_loader(
        name,
        Arc::new(move |_| {
            let startup = env_millis("RPCOP_DEMO_STARTUP_MS");
            if !startup.is_zero() {
                std::thread::sleep(startup);
            }
            STARTUPS.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(build()))
        }),
    )
}

/// Per-batch latency and per-row CPU cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cost {
    batch_latency: Duration,
    row_cost: Duration,
}

impl Cost {
    fn from_env() -> Self {
        Self {
            batch_latency: env_millis("RPCOP_DEMO_BATCH_LATENCY_MS"),
            row_cost: env_micros("RPCOP_DEMO_ROW_COST_US"),
        }
    }

    /// Waits the batch latency without CPU, then burns `rows` × row cost.
    fn pay(&self, rows: usize) {
        if !self.batch_latency.is_zero() {
            std::thread::sleep(self.batch_latency);
        }
        burn(
            self.row_cost
                .saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX)),
        );
    }
}

/// Keeps one CPU busy for `duration`.
fn burn(duration: Duration) {
    if duration.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// `embed(text)`: a deterministic unit vector of hashed character trigrams.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Embed {
    signature: Signature,
    cost: Cost,
}

impl Embed {
    fn new(cost: Cost) -> Self {
        Self {
            signature: text_signature(),
            cost,
        }
    }
}

/// The embedding of one text.
pub fn embed_text(text: &str, out: &mut [f32]) {
    out.fill(0.0);
    let bytes = text.as_bytes();
    let dim = out.len();
    let windows = bytes.windows(3.min(bytes.len()).max(1));
    for window in windows {
        let h = fnv1a(window);
        let slot = usize::try_from(h % dim as u64).unwrap_or(0);
        out[slot] += if h & (1 << 63) == 0 { 1.0 } else { -1.0 };
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    }
}

impl ScalarUDFImpl for Embed {
    fn name(&self) -> &str {
        "embed"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_fixed_size_list(
            DataType::Float32,
            EMBED_DIM,
            true,
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = first_arg(&args)?;
        self.cost.pay(input.len());
        let dim = usize::try_from(EMBED_DIM).unwrap_or(16);
        let mut values = Float32Builder::with_capacity(input.len() * dim);
        let mut nulls = Vec::with_capacity(input.len());
        let mut scratch = vec![0f32; dim];
        for text in texts(&input)? {
            match text {
                Some(text) => embed_text(text, &mut scratch),
                None => scratch.fill(0.0),
            }
            values.append_slice(&scratch);
            nulls.push(text.is_some());
        }
        let field = Arc::new(Field::new_list_field(DataType::Float32, true));
        let array = FixedSizeListArray::try_new(
            field,
            EMBED_DIM,
            Arc::new(values.finish()),
            Some(nulls.into()),
        )?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// `classify(text)`: a topic label by keywords.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Classify {
    signature: Signature,
    cost: Cost,
}

impl Classify {
    fn new(cost: Cost) -> Self {
        Self {
            signature: text_signature(),
            cost,
        }
    }
}

/// The label `classify` gives one text.
pub fn classify_text(text: &str) -> &'static str {
    const TOPICS: &[(&str, &[&str])] = &[
        (
            "news",
            &["election", "government", "minister", "breaking", "report"],
        ),
        ("sports", &["match", "goal", "team", "league", "score"]),
        ("tech", &["software", "rust", "gpu", "model", "database"]),
    ];
    let lower = text.to_lowercase();
    TOPICS
        .iter()
        .find(|(_, words)| words.iter().any(|w| lower.contains(w)))
        .map_or("other", |(topic, _)| topic)
}

impl ScalarUDFImpl for Classify {
    fn name(&self) -> &str {
        "classify"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = first_arg(&args)?;
        self.cost.pay(input.len());
        let mut out = StringBuilder::with_capacity(input.len(), input.len() * 6);
        for text in texts(&input)? {
            out.append_option(text.map(classify_text));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `identity(value)`: its argument, unchanged.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Identity {
    signature: Signature,
}

impl Identity {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Identity {
    fn name(&self) -> &str {
        "identity"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [value] => Ok(value.clone()),
            _ => exec_err!("identity takes one argument, got {}", args.len()),
        }
    }
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.pop() {
            Some(value) if args.args.is_empty() => Ok(value),
            _ => exec_err!("identity takes one argument"),
        }
    }
}

/// `model_sim(text, batch_latency_ms, row_cost_us)`: a model whose cost is set
/// from SQL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ModelSim {
    signature: Signature,
}

impl ModelSim {
    fn new() -> Self {
        let mut variants = Vec::new();
        for text in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            variants.push(TypeSignature::Exact(vec![
                text,
                DataType::Int64,
                DataType::Int64,
            ]));
        }
        Self {
            signature: Signature::one_of(variants, Volatility::Immutable),
        }
    }
}

/// The cost argument at `index`: a scalar, or the first value of a column.
fn cost_argument(args: &ScalarFunctionArgs, index: usize, what: &str) -> Result<u64> {
    let value = match args.args.get(index) {
        Some(ColumnarValue::Scalar(ScalarValue::Int64(v))) => *v,
        Some(ColumnarValue::Array(a)) if !a.is_empty() => {
            let a = a.as_primitive::<Int64Type>();
            a.is_valid(0).then(|| a.value(0))
        }
        Some(ColumnarValue::Array(_)) => Some(0),
        _ => return exec_err!("model_sim: {what} must be an Int64"),
    };
    match value {
        Some(v) if v >= 0 => Ok(v.unsigned_abs()),
        other => exec_err!("model_sim: {what} must be a non-negative integer, got {other:?}"),
    }
}

impl ScalarUDFImpl for ModelSim {
    fn name(&self) -> &str {
        "model_sim"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let cost = Cost {
            batch_latency: Duration::from_millis(cost_argument(&args, 1, "batch_latency_ms")?),
            row_cost: Duration::from_micros(cost_argument(&args, 2, "row_cost_us")?),
        };
        let input = first_arg(&args)?;
        cost.pay(input.len());
        let mut out = StringBuilder::with_capacity(input.len(), input.len() * 16);
        for text in texts(&input)? {
            out.append_option(text.map(|t| format!("{:016x}", fnv1a(t.as_bytes()))));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_is_deterministic_and_unit_length() {
        let mut a = vec![0f32; 16];
        let mut b = vec![0f32; 16];
        embed_text("hello world", &mut a);
        embed_text("hello world", &mut b);
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        embed_text("", &mut b);
        assert!(b.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn classify_by_keywords() {
        assert_eq!(classify_text("Breaking: election results"), "news");
        assert_eq!(classify_text("a late goal"), "sports");
        assert_eq!(classify_text("a GPU kernel"), "tech");
        assert_eq!(classify_text("lunch"), "other");
    }

    #[test]
    fn the_library_holds_builtins_and_demos() {
        let library = library();
        for name in ["upper", "embed", "classify", "model_sim"] {
            assert!(library.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn loads_are_counted() {
        let before = startups();
        let f = demo_functions().remove(0);
        f.load(&crate::function::LoadContext::new(1)).unwrap();
        assert!(startups() > before);
    }
}
