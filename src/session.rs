//! A SQL session that ties the RPC statements to service regions.
//!
//! [`RpcSession`] runs SQL text: RPC statements (parsed by `rpcop-sql`) update
//! the session's service catalog and start, resize or stop regions; every
//! other statement goes to DataFusion, whose optimizer has rpcop's rewrite
//! rule (calls of service-hosted functions become `RpcProxy` nodes) and whose
//! physical planner turns those into `RpcProxyExec`. Before a statement is
//! optimized, the implicit services of the annotated functions it calls are
//! started, so the first query pays their start-up and later ones find them
//! warm. `SHOW RPC SERVICES` and `DESCRIBE RPC SERVICE` answer with ordinary
//! record batches.
//!
//! ```no_run
//! # async fn example() -> datafusion::error::Result<()> {
//! let session = rpcop::session::RpcSession::new();
//! session.sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2)").await?;
//! // upper() now runs on the service's two instances
//! session.sql("SELECT upper(column1) FROM (VALUES ('a'), ('b'))").await?;
//! let services = session.sql("SHOW RPC SERVICES").await?;
//! session.sql("DROP RPC SERVICE text").await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use rpcop_planner::{RpcRewrite, RpcopConfig, ServiceDirectory};
use rpcop_sql::ServiceOptions;
use rpcop_sql::parser::{Statement, parse_sql};
use rpcop_sql::statement::{CreateService, OptionValue, RpcStatement};
use tokio::sync::Mutex;

use crate::catalog::{Service, ServiceCatalog, ServiceEntry};
use crate::client::ServiceClient;
use crate::function::FunctionLibrary;
use crate::proxy_exec::RpcQueryPlanner;
use crate::region::ServiceRegion;
use crate::rpc_call::rpc_call_udf;
use crate::rpc_function::RpcFunction;
use crate::service_tables::{self, RpcInstances, RpcOptions, RpcServices};

/// The demo functions that ship annotated, and their instances.
const DEMO_ANNOTATED: [(&str, usize); 2] = [("embed", 2), ("classify", 2)];

/// A DataFusion session with a catalog of RPC services.
pub struct RpcSession {
    ctx: SessionContext,
    library: FunctionLibrary,
    serve_program: Option<PathBuf>,
    catalog: Arc<ServiceCatalog>,
    /// Serializes the DDL, so two statements never race on one name.
    ddl: Mutex<()>,
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
        self.udfs.extend(crate::demo::demo_udfs());
        for (function, parallelism) in DEMO_ANNOTATED {
            let options = ServiceOptions {
                parallelism,
                ..ServiceOptions::default()
            };
            self.annotations.push((function.to_string(), options));
        }
        self
    }

    /// The `rpcop` binary that `isolation = 'process'` services start.
    pub fn serve_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.serve_program = Some(program.into());
        self
    }

    /// The session.
    pub fn build(self) -> RpcSession {
        let catalog = Arc::new(ServiceCatalog::default());
        for (function, options) in self.annotations {
            catalog.annotate(function, options);
        }
        let directory: Arc<dyn ServiceDirectory> = Arc::clone(&catalog) as _;
        let mut rules = Optimizer::new().rules;
        // first, before constant folding could evaluate a hosted call in-process
        rules.insert(0, Arc::new(RpcRewrite::new(directory)));
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_option_extension(RpcopConfig::default());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rules(rules)
            .with_query_planner(Arc::new(RpcQueryPlanner::new(Arc::clone(&catalog))))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for udf in self.udfs {
            ctx.register_udf(udf);
        }
        ctx.register_udf(rpc_call_udf(Arc::clone(&catalog)));
        ctx.register_udtf("rpc_services", Arc::new(RpcServices(Arc::clone(&catalog))));
        ctx.register_udtf(
            "rpc_instances",
            Arc::new(RpcInstances(Arc::clone(&catalog))),
        );
        ctx.register_udtf("rpc_options", Arc::new(RpcOptions(Arc::clone(&catalog))));
        RpcSession {
            ctx,
            library: self.library,
            serve_program: self.serve_program,
            catalog,
            ddl: Mutex::new(()),
        }
    }
}

fn plan_error(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

impl RpcSession {
    /// A session with the demo functions (`embed` and `classify` annotated)
    /// and every built-in hostable by a service.
    pub fn new() -> Self {
        Self::builder().with_demo_functions().build()
    }

    /// A builder of a session with DataFusion's built-ins and the functions
    /// it is given.
    pub fn builder() -> RpcSessionBuilder {
        RpcSessionBuilder {
            library: FunctionLibrary::default(),
            udfs: Vec::new(),
            annotations: Vec::new(),
            serve_program: None,
        }
    }

    /// The DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The running service called `name`.
    pub fn service(&self, name: &str) -> Option<Arc<ServiceRegion>> {
        self.catalog.get(name).ok().map(|entry| entry.region)
    }

    /// The client of the service `name`, for a user's own UDF to call it with
    /// the service's batching, balancing and retries (Flink's
    /// `FunctionContext.getRosClient()`); see `examples/udf_calls_service.rs`.
    pub fn client(&self, name: &str) -> Result<ServiceClient> {
        self.catalog.get(name).map(|entry| entry.client)
    }

    /// Runs every statement of `sql`; returns the batches of the last one.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for statement in parse_sql(sql).map_err(|e| plan_error(e.to_string()))? {
            last = self.execute(statement).await?;
        }
        Ok(last)
    }

    /// Runs one parsed statement.
    pub async fn execute(&self, statement: Statement) -> Result<Vec<RecordBatch>> {
        match statement {
            Statement::DataFusion(statement) => {
                let state = self.ctx.state();
                let plan = state.statement_to_plan(*statement).await?;
                if RpcopConfig::rewrite_enabled(state.config_options()) {
                    self.start_implicit_services(&plan).await?;
                }
                self.ctx.execute_logical_plan(plan).await?.collect().await
            }
            Statement::Rpc(RpcStatement::Create(create)) => self.create(create).await,
            Statement::Rpc(RpcStatement::Alter { name, options }) => {
                self.alter(&name, &options).await
            }
            Statement::Rpc(RpcStatement::Drop { name, if_exists }) => {
                self.drop_service(&name, if_exists).await
            }
            Statement::Rpc(RpcStatement::Show) => self.show().await,
            Statement::Rpc(RpcStatement::Describe { name }) => self.describe(&name).await,
        }
    }

    /// Starts the implicit service of every annotated function `plan` calls
    /// that has none running yet.
    async fn start_implicit_services(&self, plan: &LogicalPlan) -> Result<()> {
        let mut called = BTreeSet::new();
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::ScalarFunction(f) = e {
                        called.insert(f.func.name().to_string());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        for function in called {
            if self.catalog.annotation(&function).is_none() || self.catalog.contains(&function) {
                continue;
            }
            let _ddl = self.ddl.lock().await;
            // another statement may have started or dropped it meanwhile
            let Some(options) = self.catalog.annotation(&function) else {
                continue;
            };
            if self.catalog.contains(&function) {
                continue;
            }
            self.start_service(function.clone(), vec![function.clone()], options, true)
                .await
                .map_err(|e| {
                    plan_error(format!(
                        "could not start the implicit service of the annotated function '{function}': {}; \
                         ALTER RPC SERVICE {function} SET (...) to change its options, or \
                         SET rpcop.rewrite = false to run it in-process",
                        e.strip_backtrace()
                    ))
                })?;
        }
        Ok(())
    }

    async fn create(&self, create: CreateService) -> Result<Vec<RecordBatch>> {
        let _ddl = self.ddl.lock().await;
        let name = create
            .name
            .clone()
            .unwrap_or_else(|| create.functions[0].clone());
        // an unnamed CREATE may re-annotate a pending implicit service; a
        // named one may not take its name
        let taken = match create.name {
            Some(_) => self.catalog.lookup(&name).is_ok(),
            None => self.catalog.contains(&name),
        };
        if taken {
            return if create.if_not_exists {
                Ok(Vec::new())
            } else {
                Err(plan_error(format!(
                    "RPC service '{name}' already exists; use IF NOT EXISTS, ALTER RPC SERVICE, or DROP it first"
                )))
            };
        }
        for function in &create.functions {
            if let Some(other) = self.catalog.service_of(function) {
                return Err(plan_error(format!(
                    "function '{function}' is already served by RPC service '{}'; \
                     a function is served by one service: DROP RPC SERVICE {} first",
                    other.name, other.name
                )));
            }
        }
        if !create.endpoints.is_empty() {
            return self.attach(name, &create).await;
        }
        if let Some(change) = create.options.iter().find(|c| c.key == "token_file") {
            return Err(plan_error(format!(
                "option '{}' is the token of instances attached with ENDPOINTS; \
                 a pool started here makes its own",
                change.key
            )));
        }
        self.library
            .select(&create.functions)
            .map_err(|e| plan_error(e.to_string()))?;
        let mut options = ServiceOptions::default();
        apply(&mut options, &create.options)?;
        if create.name.is_none() {
            // an annotation: the first query that calls it starts the service
            self.catalog.annotate(name, options);
            return Ok(Vec::new());
        }
        self.start_service(name, create.functions.clone(), options, false)
            .await?;
        // a service created by name replaces the functions' annotations
        for function in &create.functions {
            self.catalog.remove_annotation(function);
        }
        Ok(Vec::new())
    }

    /// Starts a region and enters it in the catalog. The caller holds `ddl`.
    async fn start_service(
        &self,
        name: String,
        functions: Vec<String>,
        options: ServiceOptions,
        implicit: bool,
    ) -> Result<()> {
        options.validate().map_err(|e| plan_error(e.to_string()))?;
        let functions = self
            .library
            .select(&functions)
            .map_err(|e| plan_error(e.to_string()))?;
        let mut builder = ServiceRegion::builder(name.clone(), functions).options(options);
        if let Some(program) = &self.serve_program {
            builder = builder.serve_program(program);
        }
        let region = builder.start().await.map_err(DataFusionError::from)?;
        self.enter(name, region, implicit).await
    }

    /// `CREATE RPC SERVICE ... ENDPOINTS (...)`: a service of instances that
    /// run elsewhere. The caller holds `ddl`.
    async fn attach(&self, name: String, create: &CreateService) -> Result<Vec<RecordBatch>> {
        if let Some(change) = create.options.iter().find(|c| {
            matches!(
                c.key.as_str(),
                "parallelism" | "isolation" | "threads" | "memory" | "gpus"
            )
        }) {
            return Err(plan_error(format!(
                "option '{}' does not apply to a service with ENDPOINTS: its instances run \
                 elsewhere, one per endpoint, with the resources they were started with",
                change.key
            )));
        }
        let mut options = ServiceOptions::default();
        apply(&mut options, &create.options)?;
        let Some(path) = &options.token_file else {
            return Err(plan_error(format!(
                "a service with ENDPOINTS needs the token its instances were started with \
                 (rpcop serve --token-file): CREATE RPC SERVICE {name} ... WITH (token_file = '/path/to/token')"
            )));
        };
        let token = std::fs::read_to_string(path)
            .map_err(|e| plan_error(format!("cannot read token_file '{path}': {e}")))?;
        let region = ServiceRegion::attach(
            name.clone(),
            create.functions.clone(),
            create.endpoints.clone(),
        )
        .options(options)
        .token(token.trim())
        .start()
        .await
        .map_err(DataFusionError::from)?;
        self.enter(name, region, false).await?;
        Ok(Vec::new())
    }

    /// Enters a started region in the catalog, with the result type of each
    /// function as its instances describe it; a function they do not host
    /// stops the region and fails.
    async fn enter(&self, name: String, region: ServiceRegion, implicit: bool) -> Result<()> {
        let client = region.client().map_err(DataFusionError::from)?;
        let mut results = BTreeMap::new();
        for function in region.functions() {
            match client.describe(&function).await {
                Ok(signature) => {
                    results.insert(function, signature.result);
                }
                // not callable by rpc_call: it has no fixed signature
                Err(error) if !error.to_string().contains("unknown function") => {}
                Err(error) => {
                    region.shutdown().await;
                    return Err(plan_error(format!(
                        "RPC service '{name}' cannot serve function '{function}': {error}"
                    )));
                }
            }
        }
        self.catalog.insert(
            name,
            ServiceEntry {
                region: Arc::new(region),
                client,
                results,
                implicit,
            },
        );
        Ok(())
    }

    async fn alter(&self, name: &str, changes: &[OptionValue]) -> Result<Vec<RecordBatch>> {
        let _ddl = self.ddl.lock().await;
        let region = match self.catalog.lookup(name)? {
            Service::Running(entry) => entry.region,
            // a pending implicit service: nothing runs, every option may change
            Service::Pending(mut options) => {
                apply(&mut options, changes)?;
                self.catalog.annotate(name, options);
                return Ok(Vec::new());
            }
        };
        let mut options = region.options();
        apply(&mut options, changes)?;
        let mut unchangeable = changes
            .iter()
            .filter(|c| matches!(c.key.as_str(), "isolation" | "threads" | "memory" | "gpus"));
        if let Some(change) = unchangeable.next() {
            return Err(plan_error(format!(
                "option '{}' of a running service cannot change; DROP and CREATE the service again",
                change.key
            )));
        }
        region
            .set_options(options.clone())
            .map_err(DataFusionError::from)?;
        region
            .resize(options.parallelism)
            .await
            .map_err(DataFusionError::from)?;
        let client = region.client().map_err(DataFusionError::from)?;
        self.catalog.set_client(name, client);
        Ok(Vec::new())
    }

    async fn drop_service(&self, name: &str, if_exists: bool) -> Result<Vec<RecordBatch>> {
        let _ddl = self.ddl.lock().await;
        let missing = self.catalog.get(name).err();
        // dropping an implicit service also drops its function's annotation:
        // the function runs in-process again
        let annotation = self.catalog.remove_annotation(name);
        // new queries stop reaching it at once; running ones drain
        if let Some(entry) = self.catalog.remove(name) {
            entry.region.shutdown().await;
            return Ok(Vec::new());
        }
        match missing {
            Some(error) if annotation.is_none() && !if_exists => Err(error),
            _ => Ok(Vec::new()),
        }
    }

    async fn show(&self) -> Result<Vec<RecordBatch>> {
        Ok(vec![service_tables::services(&self.catalog).await?])
    }

    async fn describe(&self, name: &str) -> Result<Vec<RecordBatch>> {
        Ok(vec![service_tables::instances(&self.catalog, name).await?])
    }
}

fn apply(options: &mut ServiceOptions, changes: &[OptionValue]) -> Result<()> {
    for change in changes {
        options
            .set(&change.key, &change.value)
            .map_err(|e| plan_error(e.to_string()))?;
    }
    options.validate().map_err(|e| plan_error(e.to_string()))
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
        session
            .sql("CREATE RPC SERVICE FOR FUNCTION embed WITH (parallelism = 1)")
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
