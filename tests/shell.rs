//! The `rpcop` binary as a user runs it: `-c`, `-f`, `--format`, exit codes.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn rpcop(args: &[&str]) -> (bool, String, String) {
    let out = common::output_within(Command::new(env!("CARGO_BIN_EXE_rpcop")).args(args));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_and_file_run_and_print_timing() {
    let (ok, stdout, _) = rpcop(&["-c", "SELECT classify('the election') AS topic"]);
    assert!(ok);
    assert!(stdout.contains("| news  |"), "{stdout}");
    assert!(stdout.contains("1 row(s) fetched."), "{stdout}");
    assert!(stdout.contains("Elapsed"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("rpcop-shell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("q.sql");
    std::fs::write(
        &file,
        "SELECT upper('a') AS x;\nSELECT\n  lower('B') AS y;\n",
    )
    .unwrap();
    let (ok, stdout, _) = rpcop(&["-f", file.to_str().unwrap(), "--format", "csv", "-q"]);
    assert!(ok);
    assert_eq!(stdout, "x\nA\ny\nb\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_statement_exits_non_zero_with_its_error() {
    let (ok, _, stderr) = rpcop(&["-c", "SELECT no_such_function(1)"]);
    assert!(!ok);
    assert!(stderr.contains("no_such_function"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn rpc_statements_run_in_the_shell() {
    let (ok, stdout, stderr) = rpcop(&[
        "--format",
        "csv",
        "-q",
        "-c",
        "CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2); \
         ALTER RPC SERVICE text SET (parallelism = 3); \
         SHOW RPC SERVICES; \
         DROP RPC SERVICE text; \
         SHOW RPC SERVICES",
    ]);
    assert!(ok, "{stderr}");
    // listed by the first SHOW, gone from the second
    assert_eq!(
        stdout
            .matches("text,explicit,upper,3/3,thread,least_outstanding,0,0")
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("classify,implicit,classify,not started")
            .count(),
        2,
        "{stdout}"
    );
    let (ok, _, stderr) = rpcop(&[
        "-c",
        "CREATE RPC SERVICE s FOR FUNCTION f WITH (paralelism = 2)",
    ]);
    assert!(!ok);
    assert!(stderr.contains("unknown option 'paralelism'"), "{stderr}");
}

#[test]
fn a_newcomers_interactive_session() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rpcop starts");
    let script = "CREATE RPC SERVICE t FOR FUNCTION upper\n  WITH (parallelism = 2);\n\
                  SELECT upper('newcomer') AS u;\n\
                  SELECT nope();\n\
                  SHOW RPC SERVICES;\n\
                  ALTER RPC SERVICE t SET (parallelism = 1);\n\
                  DESCRIBE RPC SERVICE t;\n\
                  DROP RPC SERVICE t;\n\
                  CREATE TABLE notes (body VARCHAR) AS VALUES ('x');\n\
                  \\?\n\
                  \\d\n\
                  \\d notes\n\
                  \\quiet\n\
                  \\pset format csv\n\
                  SELECT upper('csv') AS u;\n\
                  \\nope\n\
                  \\q\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = common::child_output_within(child);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("| NEWCOMER |"), "{stdout}");
    // the query went through the service: one request
    assert!(
        stdout.contains("| t        | explicit | upper     | 2/2         | thread    | least_outstanding | 1        | 1    | 0      | 0       | 0        |"),
        "{stdout}"
    );
    // one instance left after ALTER, listed by DESCRIBE
    assert_eq!(stdout.matches("| ready |").count(), 1, "{stdout}");
    // an error is printed and the session goes on
    assert!(
        stderr.contains("Error:") && stderr.contains("nope"),
        "{stderr}"
    );
    // datafusion-cli's backslash commands
    assert!(stdout.contains("\\d NAME"), "{stdout}");
    assert!(
        stdout.contains("| notes      |"),
        "\\d lists the tables: {stdout}"
    );
    assert!(stdout.contains("| body        |"), "\\d notes: {stdout}");
    assert!(
        stdout.contains("quiet is on") && stdout.contains("u\nCSV\n"),
        "{stdout}"
    );
    assert!(stderr.contains("unknown command '\\nope'"), "{stderr}");
    // CREATE TABLE, \d and \d notes still counted; none after \quiet
    assert_eq!(stdout.matches("row(s) fetched.").count(), 9, "{stdout}");
}

#[test]
fn the_shipped_examples_run_end_to_end() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_rpcop"))
            .current_dir(root)
            // what `rpcop -f examples/*.sql` expands to
            .args([
                "-f",
                "examples/annotated.sql",
                "examples/explicit.sql",
                "examples/quickstart.sql",
            ]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(!stderr.contains("Error"), "{stderr}");
    // quickstart: the rewritten query's rows, the plan, scaling
    assert!(stdout.contains("| 1  | Vote   | news   |"), "{stdout}");
    assert!(stdout.contains("RpcProxyExec: service=models"), "{stdout}");
    assert!(
        stdout.contains("| explicit | classify, embed | 2/2"),
        "{stdout}"
    );
    // annotated: classify's implicit service started by its first query
    assert!(stdout.contains("| classify | implicit | 2/2"), "{stdout}");
    assert!(
        stdout.contains("RpcProxyExec: service=classify"),
        "{stdout}"
    );
    // explicit: rpc_call answers with the service's types
    assert!(stdout.contains("| Int32 |"), "{stdout}");
}

#[test]
fn a_reader_that_goes_away_ends_the_shell_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // `rpcop -c ... | head -c 100`: the reader closes the pipe after 100 bytes
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .args([
            "--format",
            "csv",
            "-c",
            "SELECT upper(concat('row ', CAST(value AS VARCHAR))) AS r FROM generate_series(1, 200000)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // the read end is dropped here: later writes fail with EPIPE
    let out = common::child_output_within(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

#[test]
fn a_statement_waiting_for_instances_to_load_says_so() {
    // each instance takes 1.5 s to load: the shell shows them coming up,
    // for a CREATE and for the first query of an annotated function
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_rpcop"))
            .args([
                "-q",
                "-c",
                "CREATE RPC SERVICE sim FOR FUNCTION model_sim WITH (parallelism = 2)",
                "-c",
                "SELECT classify('the election') AS topic",
            ])
            .env("RPCOP_DEMO_STARTUP_MS", "1500"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sim: 0/2 instances ready, loading…"),
        "{stderr}"
    );
    assert!(
        stderr.contains("classify: 0/2 instances ready, loading…"),
        "{stderr}"
    );
    // a line per state on a pipe, not one per tick
    let lines = stderr.lines().filter(|l| l.starts_with("sim: ")).count();
    assert!((1..=3).contains(&lines), "{stderr}");
}
