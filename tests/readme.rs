//! The README's commands work as written.
//!
//! Every `cargo run --release [-- args]` the README shows (in code blocks and
//! inline) runs here with the same arguments, from the repository root, on
//! the binary this test suite builds (a release build would take CI 20
//! minutes; the arguments, the working directory and the files are the
//! same). The one without arguments starts the interactive shell: it gets a
//! query and `\q` on its input. `serve` runs where the README's
//! `echo s3cret > token` wrote its token (a directory of its own), must
//! print the address it bound on its first line, and is then stopped.
//! `cargo test --workspace --features ballista` is the command CI runs. A README whose commands
//! change is checked as it is.

mod common;

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const RUN: &str = "cargo run --release";

/// The README's `cargo run --release ...` commands, as written.
fn commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut found = Vec::new();
    for line in readme.lines() {
        let mut rest = line;
        while let Some(at) = rest.find(RUN) {
            let command = &rest[at..];
            // inline: up to the closing backtick; in a block: up to a comment
            let end = command
                .find('`')
                .or_else(|| command.find('#'))
                .unwrap_or(command.len());
            found.push(command[..end].trim().to_string());
            rest = &command[end..];
        }
    }
    found
}

/// The arguments of a `cargo run --release -- args` command.
fn arguments(command: &str) -> Vec<&str> {
    command
        .strip_prefix(RUN)
        .map(|rest| {
            rest.trim()
                .trim_start_matches("--")
                .split_whitespace()
                .collect()
        })
        .unwrap_or_default()
}

fn rpcop(args: &[&str], dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rpcop starts")
}

/// Runs a command that ends by itself; its success, stdout and stderr.
fn run(command: &str) -> (bool, String, String) {
    let args = arguments(command);
    let mut child = rpcop(&args, Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut stdin = child.stdin.take().expect("stdin");
    if args.is_empty() {
        // the interactive shell: one query, then quit
        stdin
            .write_all(b"SELECT classify('the election results are in') AS topic;\n\\q\n")
            .expect("the shell reads its input");
    }
    drop(stdin);
    let out = common::child_output_within(child);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `rpcop serve` as the README does; the first line it prints.
fn serve(command: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rpcop-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    // the README's `echo s3cret > token`
    std::fs::write(dir.join("token"), "s3cret\n").expect("the token");
    let mut child = rpcop(&arguments(command), &dir);
    let first = common::first_line_within(
        BufReader::new(child.stdout.take().expect("stdout")),
        common::FIRST_LINE,
    )
    .map(|(line, _)| line + "\n");
    let _ = child.kill();
    let out = common::child_output_within(child);
    let _ = std::fs::remove_dir_all(&dir);
    let first = first.expect("serve prints its address");
    assert!(
        first.starts_with("http://127.0.0.1:"),
        "`{command}` printed {first:?} first:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    first
}

/// The columns the README says `SHOW RPC SERVICES` prints are the ones it
/// prints.
#[test]
fn the_readme_names_the_columns_of_show_rpc_services() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let said = readme
        .lines()
        .find_map(|line| line.trim().strip_prefix("SHOW RPC SERVICES;"))
        .and_then(|rest| rest.split_once("--"))
        .map(|(_, columns)| columns.split(',').map(str::trim).collect::<Vec<_>>())
        .expect("the README shows SHOW RPC SERVICES with its columns");
    let child = rpcop(
        &["--format", "csv", "-q", "-c", "SHOW RPC SERVICES"],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    let out = common::child_output_within(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .collect();
    assert_eq!(said, header, "README vs SHOW RPC SERVICES");
}

#[test]
fn the_readme_commands_work_as_written() {
    let commands = commands();
    assert!(
        commands.iter().any(|c| c == RUN),
        "the README starts the shell with `{RUN}`: {commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.contains("-f examples/quickstart.sql")),
        "the README runs the examples: {commands:?}"
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for command in &commands {
        if arguments(command).first() == Some(&"serve") {
            assert!(
                readme.contains("echo s3cret > token"),
                "serve reads a token file"
            );
            serve(command);
            continue;
        }
        let (ok, stdout, stderr) = run(command);
        assert!(ok, "`{command}` failed:\n{stderr}\n{stdout}");
        assert!(!stderr.contains("Error"), "`{command}`:\n{stderr}");
        if command == RUN {
            assert!(stdout.contains("| news  |"), "`{command}`:\n{stdout}");
        }
    }
}
