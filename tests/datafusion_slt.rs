//! DataFusion's own SQL behaviour tests, run twice: in-process, and with
//! every hostable built-in hosted by a service. Every query that calls a
//! hosted built-in must answer the same both ways (rows, column types and
//! names, or a failure both ways).
//!
//! The tests are the `test_files` of the `datafusion-sqllogictest` crate of
//! the DataFusion version rpcop builds with, downloaded once from crates.io
//! (checked against its SHA-256) into `~/.cache/rpcop/` or
//! `$RPCOP_DATAFUSION_TESTS`; nothing of them is kept in this repository.
//! Their expected results are not used: they were written for DataFusion's
//! own test runner (its settings, its tables, its data files). What is
//! compared is what the two sessions answer, record by record, each
//! session running every statement of the file in order. Files that need
//! data or features rpcop does not build with fail the same way both ways.
//!
//! By default the files of scalar built-ins run ([`BUILTIN_FILES`]);
//! `cargo test --test datafusion_slt -- string math` runs only the files
//! whose path contains one of the words, `-- all` every file. Differences
//! found and not fixed yet are listed in [`KNOWN`] with their cause.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use rpcop::RpcSession;
use sqllogictest::{Condition, DefaultColumnType, Record};

mod common;

/// The crate whose `test_files` are run, and its SHA-256 on crates.io.
const CRATE: &str = "datafusion-sqllogictest";
const VERSION: &str = "55.2.0";
const SHA256: &str = "b270cea4d8c2b2c42773e60164204386fb97d7936736e5f126ac751b86d7dabe";

/// The files run by default: those of DataFusion's scalar built-ins (the
/// whole suite, `-- all`, takes about ten minutes here, mostly in files
/// that call few built-ins).
const BUILTIN_FILES: &[&str] = &[
    "string/",
    "regexp/",
    "math.slt",
    "scalar.slt",
    "functions.slt",
    "expr.slt",
    "encoding.slt",
    "decimal.slt",
    "dictionary.slt",
    "arrow_field.slt",
    "arrow_typeof.slt",
    "map.slt",
    "struct.slt",
    "to_timestamp_timezone.slt",
];

/// Folders of `test_files` that test other engines' dialects or need data
/// that the crate does not ship (benchmark suites over generated tables).
const SKIPPED: &[&str] = &["spark/", "tpch/", "imdb.slt", "clickbench"];

/// Differences found and not fixed yet, each with its cause: the file and
/// the start of the query. The test fails on any other difference, and on
/// a listed one that no longer differs (then strike it from the list).
const KNOWN: &[(&str, &str, &str)] = &[];

/// Words that make a query answer differently in two sessions, hosted or
/// not: the clock, randomness.
const UNSTABLE: &[&str] = &[
    "now(",
    "current_time",
    "current_date",
    "current_timestamp",
    "localtime",
    "today(",
    "random(",
    "uuid(",
];

/// Where the test files are, downloading them first if they are not there.
fn test_files() -> Result<PathBuf, String> {
    let root = match std::env::var_os("RPCOP_DATAFUSION_TESTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            Path::new(&home).join(".cache/rpcop")
        }
    };
    let dir = root.join(format!("{CRATE}-{VERSION}"));
    let files = dir.join("test_files");
    if files.is_dir() {
        return Ok(files);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let archive = root.join(format!("{CRATE}-{VERSION}.crate"));
    let url = format!("https://static.crates.io/crates/{CRATE}/{CRATE}-{VERSION}.crate");
    run(Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--location",
            "--max-time",
            "300",
        ])
        .arg("--output")
        .arg(&archive)
        .arg(&url))
    .map_err(|e| format!("cannot download DataFusion's tests from {url}: {e}"))?;
    let sum = Command::new("sha256sum")
        .arg(&archive)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let sum = String::from_utf8_lossy(&sum.stdout);
    if sum.split_whitespace().next() != Some(SHA256) {
        let _ = std::fs::remove_file(&archive);
        return Err(format!(
            "{url} does not have the expected SHA-256 {SHA256}: {sum}"
        ));
    }
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&root))
    .map_err(|e| format!("cannot unpack {}: {e}", archive.display()))?;
    let _ = std::fs::remove_file(&archive);
    Ok(files)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// A session as DataFusion's runner makes one (4 partitions, so that
/// results are split and merged), hosting `functions` if any.
async fn session(functions: &[String]) -> RpcSession {
    let session = RpcSession::new();
    session
        .sql("SET datafusion.execution.target_partitions = 4")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if !functions.is_empty() {
        session
            .sql(&format!(
                "CREATE RPC SERVICE builtins FOR FUNCTION {} WITH (transport = 'flight', parallelism = 2)",
                functions.join(", ")
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    session
}

/// The built-ins one service hosts: every one `CREATE RPC SERVICE` takes
/// (it refuses volatile ones and those DataFusion plans away, naming them).
async fn hostable() -> Vec<String> {
    let session = RpcSession::new();
    let state = session.context().state();
    let mut names: Vec<String> = rpcop::FunctionLibrary::default()
        .names()
        .filter(|name| state.scalar_functions().contains_key(*name))
        .map(str::to_string)
        .collect();
    loop {
        let create = format!("CREATE RPC SERVICE probe FOR FUNCTION {}", names.join(", "));
        match session.sql(&create).await {
            Ok(_) => return names,
            Err(error) => {
                let message = error.to_string();
                let before = names.len();
                // the refusal starts with the name, or names it as `name()`
                names.retain(|n| {
                    !message.contains(&format!("{n}()"))
                        && !message.contains(&format!("Error during planning: {n} "))
                });
                assert!(names.len() < before, "CREATE RPC SERVICE failed: {message}");
            }
        }
    }
}

/// What a session answered: the column names and types, and the rows
/// sorted (the order of rows is tested elsewhere), or that it failed.
async fn answer(session: &RpcSession, sql: &str) -> Result<(String, Vec<String>), String> {
    let batches: Vec<RecordBatch> = tokio::time::timeout(Duration::from_secs(60), session.sql(sql))
        .await
        .map_err(|_| "did not answer within 60 s".to_string())?
        .map_err(|e| e.strip_backtrace())?;
    let columns = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut rows: Vec<String> = common::cells(&batches)?
        .into_iter()
        .map(|row| row.join(" | "))
        .collect();
    rows.sort();
    Ok((columns, rows))
}

/// Does `sql` call one of `functions`?
fn calls_any(sql: &str, functions: &BTreeSet<String>) -> bool {
    let lower = sql.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        let word = b.is_ascii_alphanumeric() || b == b'_';
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let rest = lower[i..].trim_start();
                if rest.starts_with('(') && functions.contains(&lower[s..i]) {
                    return true;
                }
                start = None;
            }
            _ => {}
        }
    }
    false
}

#[derive(Default)]
struct Tally {
    files: usize,
    compared: usize,
    failing: usize,
    /// The entries of [`KNOWN`] seen.
    known: BTreeSet<usize>,
    differences: Vec<String>,
}

async fn run_file(
    path: &Path,
    relative: &str,
    functions: &[String],
    hosted: &BTreeSet<String>,
    tally: &mut Tally,
) {
    let records = match sqllogictest::parse_file::<DefaultColumnType>(path) {
        Ok(records) => records,
        Err(error) => {
            println!("skip {relative}: {error}");
            return;
        }
    };
    tally.files += 1;
    let through = session(functions).await;
    let local = session(&[]).await;
    for record in records {
        let (sql, conditions) = match &record {
            Record::Statement {
                sql, conditions, ..
            }
            | Record::Query {
                sql, conditions, ..
            } => (sql, conditions),
            Record::Halt { .. } => break,
            _ => continue,
        };
        let skipped = conditions.iter().any(|c| match c {
            Condition::OnlyIf { label } => label != "Datafusion",
            Condition::SkipIf { label } => label == "Datafusion",
        });
        if skipped {
            continue;
        }
        let trimmed = sql.trim_start().to_ascii_lowercase();
        let compared = calls_any(sql, hosted)
            && !trimmed.starts_with("explain")
            && !UNSTABLE.iter().any(|w| trimmed.contains(w));
        let (a, b) = (answer(&through, sql).await, answer(&local, sql).await);
        if !compared {
            continue;
        }
        tally.compared += 1;
        let same = match (&a, &b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => {
                tally.failing += 1;
                true
            }
            _ => false,
        };
        if !same {
            let known = KNOWN
                .iter()
                .position(|(file, start, _)| relative == *file && sql.trim().starts_with(start));
            match known {
                Some(k) => {
                    tally.known.insert(k);
                }
                None => tally.differences.push(format!(
                    "{relative}: {}\n  through services: {a:?}\n  in-process:       {b:?}",
                    sql.trim()
                )),
            }
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let root = match test_files() {
        Ok(root) => root,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let files = match common::slt_files(&root) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let filters = common::filters();
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let relative = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
            (f, relative)
        })
        .filter(|(_, r)| !SKIPPED.iter().any(|s| r.starts_with(s)))
        .filter(|(_, r)| {
            if filters.iter().any(|x| x == "all") {
                return true;
            }
            match filters.is_empty() {
                true => BUILTIN_FILES.iter().any(|x| r.starts_with(x)),
                false => filters.iter().any(|x| r.contains(x.as_str())),
            }
        })
        .collect();
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let tally = runtime.block_on(async {
        let functions = hostable().await;
        let hosted: BTreeSet<String> = functions.iter().map(|f| f.to_ascii_lowercase()).collect();
        let mut tally = Tally::default();
        // relative paths in the files start where DataFusion's runner starts
        let _ = std::env::set_current_dir(root.parent().unwrap_or(&root));
        for (path, relative) in &files {
            run_file(path, relative, &functions, &hosted, &mut tally).await;
        }
        tally
    });
    println!(
        "DataFusion {VERSION} sqllogictests: {} files, {} queries calling hosted built-ins compared \
         ({} failing both ways), {} differences, in {:.0?}",
        tally.files,
        tally.compared,
        tally.failing,
        tally.differences.len(),
        started.elapsed()
    );
    // a known difference of a file that ran must still be there
    let ran: BTreeSet<&str> = files.iter().map(|(_, r)| r.as_str()).collect();
    let mut gone = Vec::new();
    for (k, (file, start, why)) in KNOWN.iter().enumerate() {
        if ran.contains(file) && !tally.known.contains(&k) {
            gone.push(format!(
                "{file}: {start} ({why}) no longer differs: strike it from KNOWN"
            ));
        }
    }
    println!(
        "{} known differences, each listed with its cause in KNOWN",
        tally.known.len()
    );
    for line in &gone {
        eprintln!("{line}");
    }
    if tally.differences.is_empty()
        && gone.is_empty()
        && (tally.compared > 0 || !filters.is_empty())
    {
        ExitCode::SUCCESS
    } else {
        for difference in &tally.differences {
            eprintln!("{difference}\n");
        }
        ExitCode::FAILURE
    }
}
