//! Runs the sqllogictest suites in `tests/slt/**/*.slt` against an
//! [`RpcSession`], one fresh session per file.
//!
//! `cargo test --test sqllogictests` runs them all; arguments filter the
//! files by path (`cargo test --test sqllogictests -- rewriting`). Values
//! print as Arrow displays them, NULL as `NULL` and the empty string as
//! `(empty)`; errors are matched against DataFusion's message without its
//! backtrace. `-- --complete` rewrites the files' expected results from
//! what the session answers (review the diff before committing it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use rpcop::RpcSession;

mod common;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record, Runner};

/// A failed statement, as the suite sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

struct RpcDb {
    session: RpcSession,
}

/// Statements that answer with rows, even when there are none.
fn is_query(sql: &str) -> bool {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "select" | "with" | "values" | "explain" | "show" | "describe" | "(select"
    )
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let mut rows = Vec::new();
    for row in common::cells(batches).map_err(SltError)? {
        let cells: Vec<String> = row
            .into_iter()
            .map(|s| {
                if s.is_empty() {
                    "(empty)".to_string()
                } else {
                    s
                }
            })
            .collect();
        // a multi-line cell (a plan) continues on rows of its own
        let lines: Vec<Vec<&str>> = cells
            .iter()
            .map(|c| c.trim_end().lines().collect())
            .collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            rows.push(
                lines
                    .iter()
                    .filter_map(|l| match l.get(i) {
                        None if i > 0 => None,
                        line => Some(line.copied().unwrap_or_default().to_string()),
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl AsyncDB for RpcDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let batches = self
            .session
            .sql(sql)
            .await
            .map_err(|e| SltError(e.strip_backtrace()))?;
        let columns = batches.first().map_or(0, RecordBatch::num_columns);
        if columns == 0 && !is_query(sql) {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "rpcop"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// How long one `.slt` file may run.
const FILE_DEADLINE: Duration = Duration::from_secs(300);

async fn run(files: &[PathBuf], complete: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let mut runner = Runner::new(|| async {
            Ok::<_, SltError>(RpcDb {
                session: RpcSession::builder()
                    .with_demo_functions()
                    .with_model_functions()
                    .serve_program(env!("CARGO_BIN_EXE_rpcop"))
                    .build(),
            })
        });
        if complete {
            if let Err(error) = runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
            {
                failures.push(format!("{}: {error}", file.display()));
            }
            continue;
        }
        // a statement that never returns fails its file, not the run
        match tokio::time::timeout(FILE_DEADLINE, runner.run_file_async(file)).await {
            Ok(Ok(())) => println!("ok   {}", file.display()),
            Ok(Err(error)) => {
                println!("FAIL {}", file.display());
                failures.push(format!("{}:\n{}", file.display(), error.display(true)));
            }
            Err(_) => {
                println!("FAIL {}", file.display());
                failures.push(format!(
                    "{}: did not finish within {FILE_DEADLINE:?}",
                    file.display()
                ));
            }
        }
    }
    failures
}

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files = match common::slt_files(&root) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let filters = common::filters();
    files.retain(|f| {
        filters.is_empty()
            || filters
                .iter()
                .any(|x| f.to_string_lossy().contains(x.as_str()))
    });
    let records: usize = files
        .iter()
        .filter_map(|f| sqllogictest::parse_file::<DefaultColumnType>(f).ok())
        .flatten()
        .filter(|r| matches!(r, Record::Statement { .. } | Record::Query { .. }))
        .count();
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let complete = std::env::args().any(|a| a == "--complete");
    let failures = runtime.block_on(run(&files, complete));
    println!(
        "{} file(s), {records} record(s), {} failed",
        files.len(),
        failures.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for failure in failures {
            eprintln!("{failure}");
        }
        ExitCode::FAILURE
    }
}
