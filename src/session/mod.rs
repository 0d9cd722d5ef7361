//! A SQL session that ties the RPC statements to service regions.
//!
//! [`RpcSession`] runs SQL text: RPC statements (parsed by `rpcop-sql`)
//! change the session's services (`services`: the catalog, regions started,
//! resized and stopped); every other statement goes to DataFusion, whose
//! optimizer has rpcop's rewrite rule (calls of service-hosted functions
//! become `RpcProxy` nodes) and whose physical planner turns those into
//! `RpcProxyExec`. Before a statement is optimized, the implicit services of
//! the annotated functions it calls (`annotated`) are started, so the first
//! query pays their start-up and later ones find them warm; then its hosted
//! calls of constants are evaluated once through their services, as
//! DataFusion folds calls of constants in-process (`fold`). `SHOW RPC
//! SERVICES` and `DESCRIBE RPC SERVICE` answer with the rows of the service
//! tables (`tables`); `rpc_call` reaches any function of any service.
//! Errors reach the user with SQL-level advice (`advice`).

mod advice;
mod annotated;
mod catalog;
#[cfg(feature = "ballista")]
mod definition;
mod fold;
mod hostable;
mod registry;
mod remote;
mod rpc_call;
mod services;
mod tables;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use rpcop_planner::{RpcRewrite, RpcopConfig, ServiceDirectory};
use rpcop_sql::parser::{Statement, parse_sql};
use rpcop_sql::statement::RpcStatement;

pub use annotated::RpcFunction;
use annotated::called_functions;
use catalog::ServiceCatalog;
pub use catalog::Startup;
#[cfg(feature = "ballista")]
pub(crate) use definition::ServiceDefinition;
pub use registry::{Registry, RegistryConfig};
#[cfg(feature = "ballista")]
pub(crate) use rpc_call::RPC_CALL;
use services::Services;
#[cfg(feature = "ballista")]
pub(crate) use tables::is_listing;
use tables::{RpcInstances, RpcOptions, RpcServices};

use crate::client::ServiceClient;
use crate::exec::{RpcQueryPlanner, TargetSource};
use crate::function::{FunctionLibrary, cosine_similarity_udf, demo, embed_text_udf};
use crate::options::ServiceOptions;
use crate::region::ServiceRegion;

/// The demo functions that ship annotated, and their instances.
const DEMO_ANNOTATED: [(&str, usize); 2] = [("embed", 2), ("classify", 2)];

/// A DataFusion session with a catalog of RPC services.
///
/// ```no_run
/// # async fn example() -> datafusion::error::Result<()> {
/// let session = rpcop::RpcSession::new();
/// session.sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2)").await?;
/// // upper() now runs on the service's two instances
/// session.sql("SELECT upper(column1) FROM (VALUES ('a'), ('b'))").await?;
/// let services = session.sql("SHOW RPC SERVICES").await?;
/// session.sql("DROP RPC SERVICE text").await?;
/// # Ok(()) }
/// ```
pub struct RpcSession {
    ctx: SessionContext,
    services: Services,
}

impl std::fmt::Debug for RpcSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcSession")
            .field("session", &self.ctx.session_id())
            .finish_non_exhaustive()
    }
}

impl Default for RpcSession {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an [`RpcSession`]: its functions, annotated or not.
#[derive(Debug)]
pub struct RpcSessionBuilder {
    library: FunctionLibrary,
    udfs: Vec<ScalarUDF>,
    annotations: Vec<(String, ServiceOptions)>,
    serve_program: Option<PathBuf>,
    /// Its queries run on a cluster's executors.
    on_cluster: bool,
}

impl RpcSessionBuilder {
    /// Registers an annotated function: in-process when rewriting is off,
    /// otherwise on its implicit service, started by the first query that
    /// calls it.
    pub fn function(mut self, function: RpcFunction) -> Self {
        let (udf, options) = function.into_parts();
        self.annotations.push((udf.name().to_string(), options));
        self.udf(udf)
    }

    /// Registers a plain UDF: in-process, and hostable by `CREATE RPC
    /// SERVICE ... FOR FUNCTION`.
    pub fn udf(mut self, udf: ScalarUDF) -> Self {
        self.library = self.library.with_udf(udf.clone());
        self.udfs.push(udf);
        self
    }

    /// Registers the demo functions; `embed` and `classify` annotated.
    pub fn with_demo_functions(mut self) -> Self {
        self.library = self.library.with_functions(demo::demo_functions());
        self.udfs.extend(demo::demo_udfs());
        for (function, parallelism) in DEMO_ANNOTATED {
            let options = ServiceOptions {
                parallelism,
                ..ServiceOptions::default()
            };
            self.annotations.push((function.to_string(), options));
        }
        self
    }

    /// Registers the functions of the real models rpcop ships (see
    /// [`FunctionLibrary::with_models`]): `embed_text` runs in-process
    /// (loading its model at the first call) until a service hosts it;
    /// `cosine_similarity` beside DataFusion's `cosine_distance`.
    pub fn with_model_functions(mut self) -> Self {
        self.library = self.library.with_models();
        self.udfs.push(embed_text_udf());
        self.udfs.push(cosine_similarity_udf());
        self
    }

    /// The `rpcop` binary that `isolation = 'process'` services start.
    pub fn serve_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.serve_program = Some(program.into());
        self
    }

    /// A session whose queries run on a cluster's executors: a service with
    /// `placement = 'per_executor'` starts there only, not here.
    #[cfg(feature = "ballista")]
    pub(crate) fn on_cluster(mut self) -> Self {
        self.on_cluster = true;
        self
    }

    /// The session.
    pub fn build(self) -> RpcSession {
        self.assemble(SessionStateBuilder::build)
    }

    /// The session, its DataFusion state first adapted by `adapt` (before
    /// the session's functions are registered in it): to run its queries
    /// on a distributed engine (`rpcop::ballista::remote_session`), say.
    pub fn build_with(
        self,
        adapt: impl FnOnce(SessionState) -> Result<SessionState>,
    ) -> Result<RpcSession> {
        let mut adapted = Ok(());
        let session = self.assemble(|builder| {
            let state = builder.build();
            adapt(state.clone()).unwrap_or_else(|error| {
                adapted = Err(error);
                state
            })
        });
        adapted.map(|()| session)
    }

    /// The session over the DataFusion state that `state` makes of the
    /// session's own state builder.
    fn assemble(self, state: impl FnOnce(SessionStateBuilder) -> SessionState) -> RpcSession {
        let catalog = Arc::new(ServiceCatalog::default());
        for (function, options) in self.annotations {
            catalog.annotate(function, options);
        }
        let directory: Arc<dyn ServiceDirectory> = Arc::clone(&catalog) as _;
        let targets: Arc<dyn TargetSource> = Arc::clone(&catalog) as _;
        // first, before constant folding could evaluate a hosted call
        // in-process, and again once subqueries are joins
        let rules = RpcRewrite::install(Optimizer::new().rules, directory);
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_option_extension(RpcopConfig::default());
        let state = state(
            SessionStateBuilder::new()
                .with_config(config)
                .with_default_features()
                .with_optimizer_rules(rules)
                .with_query_planner(Arc::new(RpcQueryPlanner::new(targets))),
        );
        let ctx = SessionContext::new_with_state(state);
        for udf in self.udfs {
            ctx.register_udf(udf);
        }
        let state = ctx.state_weak_ref();
        let local: rpc_call::LocalFunctions = Arc::new(move |name: &str| {
            let state = state.upgrade()?;
            state.read().scalar_functions().get(name).cloned()
        });
        ctx.register_udf(rpc_call::rpc_call_udf(Arc::clone(&catalog), local));
        ctx.register_udtf("rpc_services", Arc::new(RpcServices(Arc::clone(&catalog))));
        ctx.register_udtf(
            "rpc_instances",
            Arc::new(RpcInstances(Arc::clone(&catalog))),
        );
        ctx.register_udtf("rpc_options", Arc::new(RpcOptions(Arc::clone(&catalog))));
        RpcSession {
            ctx,
            services: Services::new(catalog, self.library, self.serve_program, self.on_cluster),
        }
    }
}

impl RpcSession {
    /// A session with the demo functions (`embed` and `classify` annotated),
    /// the model functions (`embed_text`, `cosine_similarity`) and every
    /// built-in hostable by a service.
    pub fn new() -> Self {
        Self::builder()
            .with_demo_functions()
            .with_model_functions()
            .build()
    }

    /// A builder of a session with DataFusion's built-ins and the functions
    /// it is given.
    pub fn builder() -> RpcSessionBuilder {
        RpcSessionBuilder {
            library: FunctionLibrary::default(),
            udfs: Vec::new(),
            annotations: Vec::new(),
            serve_program: None,
            on_cluster: false,
        }
    }

    /// The DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The services whose instances are not all ready: those being started
    /// (by `CREATE RPC SERVICE`, or by the first query that calls an
    /// annotated function) and running ones with an instance starting
    /// again. What a statement that seems slow may be waiting for.
    pub fn startups(&self) -> Vec<Startup> {
        self.services.catalog.startups()
    }

    /// The running service called `name`.
    pub fn service(&self, name: &str) -> Option<Arc<ServiceRegion>> {
        self.services
            .catalog
            .get(name)
            .ok()
            .map(|entry| entry.region)
    }

    /// Starts a registry through which instances on other hosts join this
    /// session's services (`rpcop serve --register ADDRESS --service
    /// NAME`); it stops when the returned [`Registry`] is dropped.
    pub async fn start_registry(
        &self,
        config: RegistryConfig,
    ) -> std::result::Result<Registry, crate::RpcError> {
        registry::start(Arc::clone(&self.services.catalog), config).await
    }

    /// The client of the service `name`, for a user's own UDF to call it with
    /// the service's batching, balancing and retries (Flink's
    /// `FunctionContext.getRosClient()`); see `examples/udf_calls_service.rs`.
    pub fn client(&self, name: &str) -> Result<ServiceClient> {
        self.services.catalog.get(name).map(|entry| entry.client)
    }

    /// Runs every statement of `sql`; returns the batches of the last one.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for statement in parse_sql(sql).map_err(DataFusionError::from)? {
            last = self.execute(statement).await?;
        }
        Ok(last)
    }

    /// Plans a DataFusion plan as [`Self::sql`] plans a statement, for the
    /// DataFrame API: starts the implicit services of the annotated
    /// functions it calls, and folds its hosted calls of constants through
    /// their services (as DataFusion folds calls of constants in-process).
    /// (`context().execute_logical_plan` would evaluate those calls with the
    /// query instead, each on its own column.)
    pub async fn execute_logical_plan(&self, plan: LogicalPlan) -> Result<DataFrame> {
        let state = self.ctx.state();
        let mut plan = plan;
        if RpcopConfig::rewrite_enabled(state.config_options()) {
            let services = &self.services;
            services
                .start_implicit(called_functions(&plan)?, &self.ctx)
                .await?;
            plan = fold::fold_constants(plan, &state, &services.catalog).await?;
        }
        self.ctx.execute_logical_plan(plan).await
    }

    /// Runs one parsed statement.
    pub async fn execute(&self, statement: Statement) -> Result<Vec<RecordBatch>> {
        let services = &self.services;
        match statement {
            Statement::DataFusion(statement) => {
                // `rpc_call` is typed by its running service
                services
                    .start_implicit(annotated::rpc_call_targets(&statement), &self.ctx)
                    .await?;
                let state = self.ctx.state();
                let plan = state.statement_to_plan(*statement).await?;
                let frame = self.execute_logical_plan(plan).await?;
                return frame.collect().await.map_err(advice::advise);
            }
            Statement::Rpc(RpcStatement::Create(create)) => {
                if let Some(note) = services.create(create, &self.ctx).await? {
                    let note: ArrayRef = Arc::new(StringArray::from(vec![note]));
                    return Ok(vec![RecordBatch::try_from_iter([("note", note)])?]);
                }
            }
            Statement::Rpc(RpcStatement::Alter { name, options }) => {
                services.alter(&name, &options).await?;
            }
            Statement::Rpc(RpcStatement::Drop { name, if_exists }) => {
                services.drop_service(&name, if_exists, &self.ctx).await?;
            }
            Statement::Rpc(RpcStatement::Show) => {
                return Ok(vec![tables::services(&services.catalog).await?]);
            }
            Statement::Rpc(RpcStatement::Describe { name }) => {
                return Ok(vec![tables::instances(&services.catalog, &name).await?]);
            }
        }
        Ok(Vec::new())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    async fn text(session: &RpcSession, sql: &str) -> String {
        pretty_format_batches(&session.sql(sql).await.unwrap())
            .unwrap()
            .to_string()
    }

    async fn error(session: &RpcSession, sql: &str) -> String {
        session.sql(sql).await.unwrap_err().strip_backtrace()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_show_alter_describe_drop() {
        let session = RpcSession::new();
        session
            .sql("CREATE RPC SERVICE t FOR FUNCTION upper, lower WITH (parallelism = 2, load_balance = 'round_robin')")
            .await
            .unwrap();
        let show = text(&session, "SHOW RPC SERVICES").await;
        assert!(show.contains("| classify | implicit | classify"), "{show}");
        let t = text(
            &session,
            "SELECT name, kind, functions, instances, isolation, load_balance FROM rpc_services() WHERE name = 't'",
        )
        .await;
        assert!(
            t.contains("| t    | explicit | upper, lower | 2/2       | thread    | round_robin  |"),
            "{t}"
        );
        session
            .sql("ALTER RPC SERVICE t SET (parallelism = 3)")
            .await
            .unwrap();
        let describe = text(&session, "DESCRIBE RPC SERVICE t").await;
        assert_eq!(describe.matches("| ready |").count(), 3, "{describe}");
        assert!(session.service("t").unwrap().options().parallelism == 3);
        session.sql("DROP RPC SERVICE t").await.unwrap();
        assert!(session.service("t").is_none());
        session.sql("DROP RPC SERVICE IF EXISTS t").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rpc_call_reaches_any_function_of_any_service() {
        let session = RpcSession::new();
        session
            .sql("CREATE RPC SERVICE m FOR FUNCTION classify, sha256 WITH (parallelism = 2)")
            .await
            .unwrap();
        session
            .sql("CREATE TABLE docs AS VALUES ('the election'), (NULL), ('rust gpu')")
            .await
            .unwrap();
        let through = text(
            &session,
            "SELECT rpc_call('m', 'classify', column1) AS c FROM docs",
        )
        .await;
        let local = text(&session, "SELECT classify(column1) AS c FROM docs").await;
        assert_eq!(through, local);
        assert!(
            through.contains("| news |") && through.contains("| tech |"),
            "{through}"
        );
        let typed = text(
            &session,
            "SELECT arrow_typeof(rpc_call('m', 'sha256', 'x')) AS t",
        )
        .await;
        assert!(typed.contains("Binary"), "{typed}");
        let e = error(&session, "SELECT rpc_call('nope', 'f', 1)").await;
        assert!(
            e.contains("no RPC service named 'nope'; services: [embed, m]"),
            "{e}"
        );
        let e = error(&session, "SELECT rpc_call('m', 'upper', 'x')").await;
        assert!(e.contains("service 'm' hosts no function 'upper'"), "{e}");
        let e = error(
            &session,
            "SELECT rpc_call(column1, 'classify', column1) FROM docs",
        )
        .await;
        assert!(e.contains("as string literals"), "{e}");
        session.sql("DROP RPC SERVICE m").await.unwrap();
        let e = error(&session, "SELECT rpc_call('m', 'classify', 'x')").await;
        assert!(e.contains("no RPC service named 'm'"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mistakes_get_clear_errors() {
        let session = RpcSession::new();
        // embed ships annotated: annotating it again is refused, ALTER it
        let e = error(
            &session,
            "CREATE RPC SERVICE FOR FUNCTION embed WITH (parallelism = 1)",
        )
        .await;
        assert!(e.contains("function 'embed' is already annotated"), "{e}");
        session
            .sql("ALTER RPC SERVICE embed SET (parallelism = 1)")
            .await
            .unwrap();
        // an annotation: the first query that calls embed starts its service
        assert!(session.service("embed").is_none());
        session.sql("SELECT embed('x')").await.unwrap();
        assert_eq!(session.service("embed").unwrap().options().parallelism, 1);
        let e = error(&session, "CREATE RPC SERVICE other FOR FUNCTION embed").await;
        assert!(
            e.contains("function 'embed' is already served by RPC service 'embed'"),
            "{e}"
        );
        let e = error(&session, "CREATE RPC SERVICE embed FOR FUNCTION upper").await;
        assert!(e.contains("RPC service 'embed' already exists"), "{e}");
        session
            .sql("CREATE RPC SERVICE IF NOT EXISTS embed FOR FUNCTION upper")
            .await
            .unwrap();
        let e = error(&session, "CREATE RPC SERVICE s FOR FUNCTION no_such_fn").await;
        assert!(e.contains("unknown function 'no_such_fn'"), "{e}");
        let e = error(
            &session,
            "CREATE RPC SERVICE s FOR FUNCTION upper WITH (memory = '1GiB')",
        )
        .await;
        assert!(e.contains("isolation = 'process'"), "{e}");
        let e = error(&session, "ALTER RPC SERVICE nope SET (parallelism = 2)").await;
        assert!(
            e.contains("no RPC service named 'nope'; services: [classify, embed]"),
            "{e}"
        );
        let e = error(
            &session,
            "ALTER RPC SERVICE embed SET (isolation = 'process')",
        )
        .await;
        assert!(e.contains("cannot change"), "{e}");
        let e = session.client("nope").unwrap_err().strip_backtrace();
        assert!(e.contains("create it first"), "{e}");
        assert_eq!(session.client("embed").unwrap().service(), "embed");
        let e = error(&session, "DROP RPC SERVICE nope").await;
        assert!(e.contains("no RPC service named 'nope'"), "{e}");
        let e = error(
            &session,
            "CREATE RPC SERVICE s FOR FUNCTION upper ENDPOINTS ('http://h:1')",
        )
        .await;
        assert!(
            e.contains("needs the token its instances were started with"),
            "{e}"
        );
        session.sql("DROP RPC SERVICE embed").await.unwrap();
    }
}

#[cfg(test)]
mod startup_tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;
    use crate::function::HostedFunction;

    /// A session whose `upper` loads only when the test lets it, one
    /// instance per `()` sent.
    fn gated_session() -> (Arc<RpcSession>, mpsc::Sender<()>) {
        let (open, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let upper = datafusion::functions::string::upper();
        let loader: crate::Loader = Arc::new(move |_| {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
            Ok(Arc::clone(&upper))
        });
        let mut builder = RpcSession::builder();
        builder.library = builder
            .library
            .with(HostedFunction::with_loader("upper", loader));
        (Arc::new(builder.build()), open)
    }

    /// Waits (bounded) until the session's start-ups are `want`.
    async fn until(session: &RpcSession, want: &[(usize, usize)]) {
        for _ in 0..2000 {
            let now: Vec<(usize, usize)> = session
                .startups()
                .iter()
                .map(|s| (s.ready, s.starting))
                .collect();
            if now == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("start-ups never became {want:?}: {:?}", session.startups());
    }

    async fn instances(session: &RpcSession) -> String {
        let batches = session
            .sql("SELECT instances FROM rpc_services() WHERE name = 'text'")
            .await
            .unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_still_loading_are_shown_while_create_waits() {
        let (session, open) = gated_session();
        let creating = Arc::clone(&session);
        let create = tokio::spawn(async move {
            creating
                .sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2)")
                .await
        });
        until(&session, &[(0, 2)]).await;
        let startup = &session.startups()[0];
        assert_eq!(startup.to_string(), "text: 0/2 instances ready, loading…");
        assert!(instances(&session).await.contains("0/2 (2 starting)"));
        open.send(()).unwrap();
        until(&session, &[(1, 1)]).await;
        assert!(instances(&session).await.contains("1/2 (1 starting)"));
        open.send(()).unwrap();
        create.await.unwrap().unwrap();
        assert!(session.startups().is_empty());
        assert!(instances(&session).await.contains("| 2/2 "));
    }
}
