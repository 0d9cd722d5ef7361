//! The `rpcop` binary: the SQL shell (with an embedded service region per
//! service), `rpcop serve`, one standalone service instance, `rpcop
//! model`, the models' files on this machine, and (feature `ballista`)
//! `rpcop ballista`, the processes of a Ballista cluster.

#[cfg(feature = "ballista")]
mod ballista;
mod command;
mod model;
mod progress;
mod shell;

use clap::{Parser, Subcommand};
use model::{ModelArgs, model_main};
use rpcop::serve::{ServeArgs, serve_main};
use shell::{ShellArgs, shell_main};

#[derive(Debug, Parser)]
#[command(
    name = "rpcop",
    version,
    about = "RPC Operator Service for Apache DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    shell: ShellArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one standalone service instance.
    Serve(Box<ServeArgs>),
    /// Fetch or list the models' files (`rpcop model fetch all-MiniLM-L6-v2`).
    Model(ModelArgs),
    /// Run a Ballista scheduler or executor that plans and runs rpcop's
    /// operators (`rpcop ballista scheduler`, `rpcop ballista executor`).
    #[cfg(feature = "ballista")]
    #[command(subcommand)]
    Ballista(ballista::BallistaCommand),
}

fn main() -> std::process::ExitCode {
    rpcop::malloc::tune();
    // SAFETY: the first statement of main: no other thread runs yet.
    unsafe { rpcop::model::use_encoder_threads_only() };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RPCOP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // colour codes only for a terminal, not for a log or a pipe
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => {
            serve_main(&args, &rpcop::demo::library().with_models()).map_err(|e| e.to_string())
        }
        Some(Command::Model(args)) => model_main(&args).map_err(|e| e.to_string()),
        #[cfg(feature = "ballista")]
        Some(Command::Ballista(command)) => ballista::ballista_main(command),
        None => run_shell(&cli.shell),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rpcop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_shell(args: &ShellArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(shell_main(args))
        .map_err(|e| e.strip_backtrace())
}
