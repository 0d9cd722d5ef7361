//! The processes of a Ballista cluster with rpcop's codecs and planner:
//! what `rpcop ballista scheduler` and `rpcop ballista executor` run, and
//! both in this process on loopback (for tests and one machine).

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::utils::{default_config_producer, default_session_builder};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use tokio::runtime::Handle;

use super::logical::RpcopLogicalCodec;
use super::physical::RpcopPhysicalCodec;
use super::services::ExecutorServices;
use crate::exec::RpcQueryPlanner;

/// Where an executor process listens and which scheduler it polls.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// The address it listens on.
    pub bind_host: String,
    /// The host name the scheduler and the other executors reach it by
    /// (default: `bind_host`).
    pub external_host: Option<String>,
    /// Its Arrow Flight port (shuffle data).
    pub port: u16,
    /// Its gRPC port.
    pub grpc_port: u16,
    /// Its task slots.
    pub vcores: usize,
}

/// Runs a Ballista scheduler on `bind`, planning `RpcProxy` nodes with
/// `services` (for their functions), until the process ends.
pub async fn run_scheduler(
    bind: SocketAddr,
    external_host: Option<String>,
    services: ExecutorServices,
) -> Result<()> {
    let planning = services.clone();
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external_host.unwrap_or_else(|| bind.ip().to_string()),
        override_session_builder: Some(Arc::new(move |config| scheduler_state(config, &planning))),
        override_logical_codec: Some(Arc::new(RpcopLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(RpcopPhysicalCodec::new(services))),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    start_server(cluster, bind, Arc::new(config))
        .await
        .map_err(ballista_error)
}

/// Runs a Ballista executor as `config` says, its operators reaching their
/// services through `services` (started on this runtime), until the
/// process ends.
pub async fn run_executor(config: ExecutorConfig, services: ExecutorServices) -> Result<()> {
    services.start_on(Handle::current());
    let (functions, _) = executor_functions(&services)?;
    let (scheduler_host, scheduler_port) = config.scheduler;
    let process = ExecutorProcessConfig {
        bind_host: config.bind_host,
        external_host: config.external_host,
        port: config.port,
        grpc_port: config.grpc_port,
        scheduler_host,
        scheduler_port,
        vcores: config.vcores,
        print_thread_info: false,
        override_function_registry: Some(Arc::new(functions)),
        override_logical_codec: Some(Arc::new(RpcopLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(RpcopPhysicalCodec::new(services))),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(process))
        .await
        .map_err(ballista_error)
}

/// A Ballista error at DataFusion's boundary.
fn ballista_error(error: ballista_core::error::BallistaError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

/// The codecs of a scheduler or executor process whose operators reach
/// their services through `services`.
pub fn codec(services: &ExecutorServices) -> BallistaCodec {
    BallistaCodec::new(
        Arc::new(RpcopLogicalCodec::default()),
        Arc::new(RpcopPhysicalCodec::new(services.clone())),
    )
}

/// The scheduler's session: Ballista's, with the functions of `services`'
/// sessions, and `RpcProxy` nodes planned as operators that reach their
/// services through `services` (its `SessionBuilder`).
pub fn scheduler_state(config: SessionConfig, services: &ExecutorServices) -> Result<SessionState> {
    let state = with_functions(default_session_builder(config)?, services)?;
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(RpcQueryPlanner::new(Arc::new(services.clone()))))
        .build())
}

/// `state` with the functions of `services`' sessions it lacks: those a
/// plan may call outside a proxy.
fn with_functions(mut state: SessionState, services: &ExecutorServices) -> Result<SessionState> {
    for function in services.functions() {
        if !state.scalar_functions().contains_key(function.name()) {
            state.register_udf(function)?;
        }
    }
    Ok(state)
}

/// The functions an executor's tasks may call: Ballista's and those of
/// `services`' sessions.
fn executor_functions(
    services: &ExecutorServices,
) -> Result<(BallistaFunctionRegistry, Arc<RuntimeEnv>)> {
    let state = with_functions(default_session_builder(SessionConfig::new())?, services)?;
    Ok(((&state).into(), Arc::clone(state.runtime_env())))
}

/// Starts a Ballista scheduler in this process, on a free loopback port,
/// planning with `services`; returns its address.
pub async fn start_scheduler(services: &ExecutorServices) -> Result<SocketAddr> {
    let planning = services.clone();
    ballista_scheduler::standalone::new_standalone_scheduler_with_builder(
        Arc::new(move |config| scheduler_state(config, &planning)),
        Arc::new(default_config_producer),
        codec(services),
    )
    .await
    .map_err(ballista_error)
}

/// Starts a Ballista executor in this process, with `vcores` task slots,
/// polling the scheduler at `scheduler`; its operators reach their
/// services through `services` (one executor each, as processes would),
/// started on this runtime.
pub async fn start_executor(
    scheduler: SocketAddr,
    vcores: usize,
    services: &ExecutorServices,
) -> Result<()> {
    services.start_on(Handle::current());
    let client = SchedulerGrpcClient::connect(format!("http://{scheduler}"))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let (functions, runtime) = executor_functions(services)?;
    ballista_executor::new_standalone_executor_from_builder(
        client,
        vcores,
        Arc::new(default_config_producer),
        Arc::new(move |_| Ok(Arc::clone(&runtime))),
        codec(services),
        functions,
    )
    .await
    .map_err(ballista_error)
}
