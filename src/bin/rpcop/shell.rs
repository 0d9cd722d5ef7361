//! The `rpcop` SQL shell, with datafusion-cli's conventions.
//!
//! `-c SQL` and `-f FILE` (both repeatable) run statements and exit non-zero
//! at the first failure; with neither, an interactive prompt reads
//! statements that end with `;` over as many lines as they take, with
//! history. Results print as `--format table|csv|json|ndjson`, followed by a
//! rows-and-time line. Ctrl-C cancels the running statement: the prompt
//! comes back (with `-c`/`-f`, the shell exits non-zero). Service instances
//! run in process groups of their own, so the terminal's SIGINT does not
//! reach them. Statements run in an [`RpcSession`]: the RPC service
//! statements start, resize, show and stop service regions, and the demo
//! and model functions are registered. While a statement waits for
//! instances to start, a line on stderr says so (`progress`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::{DataFusionError, Result};
use rpcop_sql::parser::parse_sql;
use rustyline::DefaultEditor;

use crate::command::{Command, HELP};
use crate::progress;
use rpcop::{RegistryConfig, RpcSession};
use rustyline::error::ReadlineError;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// An ASCII table.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// The shell's flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ShellArgs {
    /// Run this SQL (repeatable), then exit.
    #[arg(short = 'c', long = "command")]
    pub(crate) commands: Vec<String>,
    /// Run the SQL in these files, in order (repeatable: `-f a.sql b.sql`,
    /// `-f examples/*.sql`), then exit.
    #[arg(short = 'f', long = "file", num_args = 1..)]
    pub(crate) files: Vec<PathBuf>,
    /// How to print results.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Print no rows-and-time line.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Run queries on the Ballista cluster whose scheduler is at URL
    /// (`df://host:port`); the executors reach services created with
    /// placement = 'per_executor' or ENDPOINTS (docs/distributed.md).
    #[cfg(feature = "ballista")]
    #[arg(long, value_name = "URL")]
    pub(crate) ballista: Option<String>,
    /// Take instances that register from other hosts (`rpcop serve
    /// --register ADDRESS --service NAME`) on this address (HOST:PORT; port
    /// 0 picks one, printed on stderr).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) registry: Option<std::net::SocketAddr>,
    /// File holding the token instances must send to register (with
    /// --registry).
    #[arg(long, env = "RPCOP_REGISTRY_TOKEN_FILE")]
    pub(crate) registry_token_file: Option<PathBuf>,
    /// How long a registered instance keeps its place without renewing its
    /// lease (it renews every third of it): `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub(crate) registry_lease: std::time::Duration,
    /// PEM certificate (chain) the registry serves TLS with; with
    /// --registry-tls-key.
    #[arg(long, requires = "registry_tls_key")]
    pub(crate) registry_tls_cert: Option<PathBuf>,
    /// PEM private key of --registry-tls-cert.
    #[arg(long, requires = "registry_tls_cert")]
    pub(crate) registry_tls_key: Option<PathBuf>,
    /// Let the registry listen beyond loopback in plain text (refused
    /// without it): tokens cross the network readable.
    #[arg(long)]
    pub(crate) registry_insecure: bool,
}

/// Is the registry bound to a wildcard address (0.0.0.0, [::])?
fn registry_bound_everywhere(args: &ShellArgs) -> bool {
    args.registry.is_some_and(|bind| bind.ip().is_unspecified())
}

/// A flag's duration: '500ms', '10s', '10m', '1h'.
pub(crate) fn parse_duration_arg(text: &str) -> std::result::Result<std::time::Duration, String> {
    rpcop::options::parse_duration(text)
        .ok_or_else(|| format!("'{text}' is not a duration: a number with ms, s, m or h"))
}

impl ShellArgs {
    /// The registry the flags ask for, if any.
    fn registry(&self) -> Result<Option<RegistryConfig>> {
        let Some(bind) = self.registry else {
            return Ok(None);
        };
        let file = self.registry_token_file.as_ref().ok_or_else(|| {
            DataFusionError::Configuration(
                "--registry needs --registry-token-file (or RPCOP_REGISTRY_TOKEN_FILE): a file \
                 with the token instances must send to register"
                    .to_string(),
            )
        })?;
        let token = rpcop::wire::read_token_file(file).map_err(external)?;
        let tls = match (&self.registry_tls_cert, &self.registry_tls_key) {
            (Some(cert), Some(key)) => Some(rpcop::wire::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            }),
            _ => None,
        };
        Ok(Some(RegistryConfig {
            lease: self.registry_lease,
            tls,
            insecure: self.registry_insecure,
            ..RegistryConfig::new(bind, token)
        }))
    }
}

/// A shell session.
pub(crate) struct Shell {
    session: RpcSession,
    format: Format,
    quiet: bool,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("session", &self.session)
            .field("format", &self.format)
            .finish()
    }
}

impl Shell {
    /// A session with the demo functions registered.
    #[cfg(test)]
    pub(crate) fn new(format: Format, quiet: bool) -> Self {
        Self::with_session(RpcSession::new(), format, quiet)
    }

    /// A shell of `session`.
    pub(crate) fn with_session(session: RpcSession, format: Format, quiet: bool) -> Self {
        Self {
            session,
            format,
            quiet,
        }
    }

    /// Runs every statement of `sql`, printing each result to `out`; stops at
    /// the first error.
    pub(crate) async fn run(&self, sql: &str, out: &mut impl Write) -> Result<()> {
        let statements = parse_sql(sql).map_err(DataFusionError::from)?;
        for statement in statements {
            let start = Instant::now();
            let batches =
                progress::reporting(&self.session, self.session.execute(statement)).await?;
            self.print(&batches, out)?;
            if !self.quiet {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                writeln!(
                    out,
                    "{rows} row(s) fetched.\nElapsed {:.3} seconds.\n",
                    start.elapsed().as_secs_f64()
                )?;
            }
        }
        Ok(())
    }

    fn print(&self, batches: &[RecordBatch], out: &mut impl Write) -> Result<()> {
        let nonempty: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_columns() > 0).collect();
        match self.format {
            Format::Table => {
                if batches.iter().any(|b| b.num_rows() > 0) {
                    writeln!(out, "{}", pretty_format_batches(batches)?)?;
                }
            }
            Format::Csv => {
                // written to a buffer first: Arrow's CSV writer turns an I/O
                // error into text, and a closed stdout must stay recognisable
                let mut text = Vec::new();
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut text);
                for batch in nonempty {
                    writer.write(batch)?;
                }
                drop(writer);
                out.write_all(&text)?;
            }
            Format::Json => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
                writer.write_batches(&nonempty)?;
                writer.finish()?;
                writeln!(out)?;
            }
            Format::Ndjson => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
                writer.write_batches(&nonempty)?;
                writer.finish()?;
            }
        }
        Ok(())
    }

    /// Runs a backslash command (not `\q`); errors are printed.
    async fn command(&mut self, command: Command) {
        let sql = match command {
            Command::Quit => return,
            Command::Help => {
                say(HELP);
                return;
            }
            Command::Quiet(quiet) => {
                self.quiet = quiet.unwrap_or(!self.quiet);
                say(if self.quiet {
                    "quiet is on"
                } else {
                    "quiet is off"
                });
                return;
            }
            Command::Format(format) => {
                self.format = format;
                say(&format!(
                    "results print as {}",
                    format!("{format:?}").to_lowercase()
                ));
                return;
            }
            Command::Unknown(message) => {
                eprintln!("{message}");
                return;
            }
            Command::ListTables => "SHOW TABLES".to_string(),
            Command::Describe(table) => format!("SHOW COLUMNS FROM {table}"),
        };
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = self.run(&sql, &mut stdout).await {
            eprintln!("Error: {}", error.strip_backtrace());
        }
    }

    /// The interactive prompt; returns when the user quits.
    pub(crate) async fn interactive(&mut self) -> Result<()> {
        let mut editor = DefaultEditor::new().map_err(external)?;
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rpcop_history"));
        if let Some(history) = &history {
            let _ = editor.load_history(history);
        }
        say(&format!(
            "rpcop {} — SQL ending with ';', \\? for help, \\q to quit",
            env!("CARGO_PKG_VERSION")
        ));
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "rpcop> "
            } else {
                "  ...> "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    if buffer.is_empty() && matches!(trimmed, "quit" | "exit") {
                        break;
                    }
                    if buffer.is_empty() && trimmed.starts_with('\\') {
                        let _ = editor.add_history_entry(trimmed);
                        match Command::parse(trimmed) {
                            Command::Quit => break,
                            command => self.command(command).await,
                        }
                        continue;
                    }
                    if trimmed.is_empty() && buffer.is_empty() {
                        continue;
                    }
                    buffer.push_str(&line);
                    buffer.push('\n');
                    if trimmed.ends_with(';') {
                        let _ = editor.add_history_entry(buffer.trim());
                        let mut stdout = std::io::stdout().lock();
                        match cancellable(Box::pin(self.run(&buffer, &mut stdout))).await {
                            Some(Ok(())) => {}
                            Some(Err(error)) => eprintln!("Error: {}", error.strip_backtrace()),
                            None => eprintln!("^C: statement cancelled"),
                        }
                        buffer.clear();
                    }
                }
                Err(ReadlineError::Interrupted) => buffer.clear(),
                Err(ReadlineError::Eof) => break,
                Err(error) => return Err(external(error)),
            }
        }
        if let Some(history) = &history {
            let _ = editor.save_history(history);
        }
        Ok(())
    }
}

/// Runs `statement` until it ends (`Some`) or Ctrl-C cancels it (`None`;
/// dropping it stops its streams and their requests).
async fn cancellable(statement: impl Future<Output = Result<()>>) -> Option<Result<()>> {
    tokio::select! {
        result = statement => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    }
}

/// Runs `statement`; Ctrl-C cancels it and fails the run.
async fn run_or_cancel(statement: impl Future<Output = Result<()>>) -> Result<()> {
    cancellable(statement).await.unwrap_or_else(|| {
        Err(DataFusionError::Execution(
            "interrupted (Ctrl-C): statement cancelled".to_string(),
        ))
    })
}

/// Prints a line of the shell's own to stdout. A closed stdout (`rpcop |
/// head`) is not an error of the shell's: the line is dropped.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// Did writing the results fail because their reader went away (`rpcop -c
/// ... | head`)? Then the shell ends normally, as other command-line tools
/// do, instead of reporting an error.
fn is_broken_pipe(error: &DataFusionError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        if let Some(DataFusionError::IoError(io)) = error.downcast_ref::<DataFusionError>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        source = error.source();
    }
    false
}

fn external(error: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// The shell's session: its queries run here, or on the Ballista cluster
/// `--ballista` names.
fn session(args: &ShellArgs) -> Result<RpcSession> {
    #[cfg(feature = "ballista")]
    if let Some(scheduler) = &args.ballista {
        return rpcop::ballista::remote_session(
            RpcSession::builder()
                .with_demo_functions()
                .with_model_functions(),
            scheduler,
        );
    }
    let _ = args;
    Ok(RpcSession::new())
}

/// Runs the shell as the flags say; `Err` carries the message of the first
/// failing statement.
pub(crate) async fn shell_main(args: &ShellArgs) -> Result<()> {
    let mut shell = Shell::with_session(session(args)?, args.format, args.quiet);
    // kept until the shell ends
    let _registry = match args.registry()? {
        Some(config) => {
            let lease = config.lease;
            let registry = shell
                .session
                .start_registry(config)
                .await
                .map_err(external)?;
            // on stderr, as the start-up progress: stdout holds results
            if registry_bound_everywhere(args) {
                eprintln!(
                    "rpcop: the registry listens on every address of this host: instances \
                     reach it by this host's name or address, not 0.0.0.0"
                );
            }
            eprintln!(
                "rpcop: registry at {} (lease {lease:?}): instances join with `rpcop serve \
                 --register {} --service NAME --function ...`",
                registry.address(),
                registry.address()
            );
            Some(registry)
        }
        None => None,
    };
    if args.commands.is_empty() && args.files.is_empty() {
        return shell.interactive().await;
    }
    let mut stdout = std::io::stdout().lock();
    let ran = async {
        for command in &args.commands {
            run_or_cancel(Box::pin(shell.run(command, &mut stdout))).await?;
        }
        for file in &args.files {
            let sql = std::fs::read_to_string(file).map_err(|e| {
                DataFusionError::Execution(format!("cannot read {}: {e}", file.display()))
            })?;
            run_or_cancel(Box::pin(shell.run(&sql, &mut stdout))).await?;
        }
        Ok(())
    };
    match ran.await {
        Err(error) if is_broken_pipe(&error) => Ok(()),
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_statements_in_every_format() {
        for (format, expect) in [
            (Format::Table, "| HELLO |"),
            (Format::Csv, "u\nHELLO\n"),
            (Format::Json, "[{\"u\":\"HELLO\"}]"),
            (Format::Ndjson, "{\"u\":\"HELLO\"}\n"),
        ] {
            let shell = Shell::new(format, true);
            let mut out = Vec::new();
            shell
                .run(
                    "SELECT upper('hello') AS u; SELECT classify('goal') AS c",
                    &mut out,
                )
                .await
                .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(expect), "{format:?}: {text}");
        }
    }

    #[tokio::test]
    async fn errors_stop_the_run() {
        let shell = Shell::new(Format::Table, false);
        let mut out = Vec::new();
        let err = shell
            .run("SELECT 1; SELECT nope(1); SELECT 2", &mut out)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1 row(s) fetched."), "{text}");
    }
}
