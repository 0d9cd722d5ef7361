//! `rpcop ballista scheduler` and `rpcop ballista executor`: the processes
//! of a Ballista cluster that runs sessions' rewritten queries
//! (`docs/distributed.md`). An executor hosts the shell's functions (the
//! demo and model functions, and the built-ins) in its `per_executor`
//! services.

use std::net::SocketAddr;

use rpcop::RpcSession;
use rpcop::ballista::{ExecutorConfig, ExecutorServices, run_executor, run_scheduler};

/// A process of a Ballista cluster.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BallistaCommand {
    /// The scheduler: plans the queries sessions send (`rpcop --ballista
    /// df://HOST:PORT`) and hands their tasks to the executors.
    Scheduler {
        /// The address it listens on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// The host name executors and clients reach it by (default: the
        /// bind address).
        #[arg(long)]
        external_host: Option<String>,
    },
    /// An executor: runs tasks, and the services they call.
    Executor {
        /// The scheduler's HOST:PORT.
        #[arg(long, default_value = "localhost:50050")]
        scheduler: String,
        /// The address it listens on.
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        /// The host name the scheduler and other executors reach it by
        /// (default: --bind-host).
        #[arg(long)]
        external_host: Option<String>,
        /// Its Arrow Flight port (shuffle data).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// Its gRPC port.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Its task slots (default: the cores of this host).
        #[arg(long)]
        vcores: Option<usize>,
        /// Let plans start services whose instances are a `command`: a
        /// client can then run any program on this host.
        #[arg(long)]
        allow_commands: bool,
        /// The directory the token files of ENDPOINTS services must be in
        /// (without it, plans naming a token file are refused).
        #[arg(long, value_name = "DIR")]
        token_dir: Option<std::path::PathBuf>,
        /// Stop a service that no task has used for this long, at least
        /// 1s (its pools free their memory and devices; the next task that
        /// calls it starts it again).
        #[arg(long, default_value = "10m", value_parser = parse_idle_timeout)]
        idle_timeout: std::time::Duration,
    },
}

/// `--idle-timeout`: a duration of at least a second, so that a task
/// that has just asked for a service is not taken for idle.
fn parse_idle_timeout(text: &str) -> Result<std::time::Duration, String> {
    let timeout = crate::shell::parse_duration_arg(text)?;
    if timeout < std::time::Duration::from_secs(1) {
        return Err(format!("'{text}' is too short: give 1s or more"));
    }
    Ok(timeout)
}

/// Runs the process the command names until it is stopped.
pub(crate) fn ballista_main(command: BallistaCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run = async move {
        match command {
            BallistaCommand::Scheduler {
                bind,
                external_host,
            } => {
                eprintln!(
                    "rpcop: Ballista scheduler on {bind}: clients run `rpcop --ballista df://{bind}`"
                );
                run_scheduler(bind, external_host, ExecutorServices::default()).await
            }
            BallistaCommand::Executor {
                scheduler,
                bind_host,
                external_host,
                port,
                grpc_port,
                vcores,
                allow_commands,
                token_dir,
                idle_timeout,
            } => {
                let (host, scheduler_port) = scheduler
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                    .ok_or_else(|| {
                        datafusion::error::DataFusionError::Configuration(format!(
                            "--scheduler {scheduler}: give HOST:PORT, as in localhost:50050"
                        ))
                    })?;
                let vcores = vcores.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                });
                let config = ExecutorConfig {
                    scheduler: (host, scheduler_port),
                    bind_host,
                    external_host,
                    port,
                    grpc_port,
                    vcores,
                };
                eprintln!(
                    "rpcop: Ballista executor on {}:{port} ({vcores} task slots), polling the \
                     scheduler at {}:{}",
                    config.bind_host, config.scheduler.0, config.scheduler.1
                );
                let mut services = ExecutorServices::new(RpcSession::new)
                    .allow_commands(allow_commands)
                    .idle_timeout(idle_timeout);
                if let Some(dir) = token_dir {
                    services = services.token_dir(dir);
                }
                run_executor(config, services).await
            }
        }
    };
    runtime.block_on(run).map_err(|e| e.strip_backtrace())
}
