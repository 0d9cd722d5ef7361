//! A SQL session that ties the RPC statements to service regions.
//!
//! [`RpcSession`] runs SQL text: RPC statements (parsed by `rpcop-sql`) update
//! the session's service catalog and start, resize or stop regions; every
//! other statement goes to DataFusion unchanged. `SHOW RPC SERVICES` and
//! `DESCRIBE RPC SERVICE` answer with ordinary record batches.
//!
//! ```no_run
//! # async fn example() -> datafusion::error::Result<()> {
//! let session = rpcop::session::RpcSession::new();
//! session.sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (parallelism = 2)").await?;
//! let services = session.sql("SHOW RPC SERVICES").await?;
//! session.sql("DROP RPC SERVICE text").await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use rpcop_sql::ServiceOptions;
use rpcop_sql::parser::{Statement, parse_sql};
use rpcop_sql::statement::{CreateService, OptionValue, RpcStatement};
use tokio::sync::Mutex;

use crate::catalog::{ServiceCatalog, ServiceEntry};
use crate::client::ServiceClient;
use crate::function::FunctionLibrary;
use crate::region::ServiceRegion;
use crate::rpc_call::rpc_call_udf;

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

fn plan_error(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

impl RpcSession {
    /// A session whose services can host the default function library, with
    /// the demo functions registered for in-process use.
    pub fn new() -> Self {
        let ctx = SessionContext::new();
        for udf in crate::demo::demo_udfs() {
            ctx.register_udf(udf);
        }
        let catalog = Arc::new(ServiceCatalog::default());
        ctx.register_udf(rpc_call_udf(Arc::clone(&catalog)));
        Self {
            ctx,
            library: FunctionLibrary::default(),
            serve_program: None,
            catalog,
            ddl: Mutex::new(()),
        }
    }

    /// The `rpcop` binary that `isolation = 'process'` services start.
    pub fn with_serve_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.serve_program = Some(program.into());
        self
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
                let plan = self.ctx.state().statement_to_plan(*statement).await?;
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

    async fn create(&self, create: CreateService) -> Result<Vec<RecordBatch>> {
        let name = match &create.name {
            Some(name) => name.clone(),
            None => create.functions[0].clone(),
        };
        let _ddl = self.ddl.lock().await;
        if self.catalog.contains(&name) {
            return if create.if_not_exists {
                Ok(Vec::new())
            } else {
                Err(plan_error(format!(
                    "RPC service '{name}' already exists; use IF NOT EXISTS, ALTER RPC SERVICE, or DROP it first"
                )))
            };
        }
        for function in &create.functions {
            if let Some(other) = self.catalog.host_of(function) {
                return Err(plan_error(format!(
                    "function '{function}' is already served by RPC service '{other}'; \
                     a function is served by one service: DROP RPC SERVICE {other} first"
                )));
            }
        }
        if !create.endpoints.is_empty() {
            return Err(DataFusionError::NotImplemented(
                "ENDPOINTS (attaching to remote instances) is not supported yet; \
                 omit it to start a pool of local instances"
                    .to_string(),
            ));
        }
        let functions = self
            .library
            .select(&create.functions)
            .map_err(|e| plan_error(e.to_string()))?;
        let mut options = ServiceOptions::default();
        apply(&mut options, &create.options)?;
        let mut builder = ServiceRegion::builder(name.clone(), functions).options(options);
        if let Some(program) = &self.serve_program {
            builder = builder.serve_program(program);
        }
        let region = builder.start().await.map_err(DataFusionError::from)?;
        let client = region.client().map_err(DataFusionError::from)?;
        let mut results = BTreeMap::new();
        for function in region.functions() {
            // a function without a fixed signature is not callable by rpc_call
            if let Ok(signature) = client.describe(&function).await {
                results.insert(function, signature.result);
            }
        }
        let region = Arc::new(region);
        self.catalog.insert(
            name,
            ServiceEntry {
                region,
                client,
                results,
            },
        );
        Ok(Vec::new())
    }

    async fn alter(&self, name: &str, changes: &[OptionValue]) -> Result<Vec<RecordBatch>> {
        let _ddl = self.ddl.lock().await;
        let region = self.catalog.get(name)?.region;
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
        match self.catalog.get(name) {
            Ok(_) => {
                // new queries stop reaching it at once; running ones drain
                if let Some(entry) = self.catalog.remove(name) {
                    entry.region.shutdown().await;
                }
                Ok(Vec::new())
            }
            Err(_) if if_exists => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    async fn show(&self) -> Result<Vec<RecordBatch>> {
        let services = self.catalog.entries().into_iter().map(|entry| entry.region);
        let mut columns: [Vec<String>; 5] = Default::default();
        let (mut requests, mut errors) = (Vec::new(), Vec::new());
        for region in services {
            let options = region.options();
            let stats = region.stats().await;
            let ready = stats
                .iter()
                .filter(|(m, _)| m.state == crate::MemberState::Ready)
                .count();
            columns[0].push(region.name().to_string());
            columns[1].push(region.functions().join(", "));
            columns[2].push(format!("{ready}/{}", options.parallelism));
            columns[3].push(options.isolation.to_string());
            columns[4].push(options.load_balance.to_string());
            requests.push(
                stats
                    .iter()
                    .filter_map(|(_, s)| s.as_ref())
                    .map(|s| s.requests)
                    .sum::<u64>(),
            );
            errors.push(
                stats
                    .iter()
                    .filter_map(|(_, s)| s.as_ref())
                    .map(|s| s.errors)
                    .sum::<u64>(),
            );
        }
        let names = [
            "name",
            "functions",
            "instances",
            "isolation",
            "load_balance",
        ];
        let mut fields: Vec<(&str, ArrayRef)> = names
            .iter()
            .zip(columns)
            .map(|(n, c)| (*n, Arc::new(StringArray::from(c)) as ArrayRef))
            .collect();
        fields.push(("requests", Arc::new(UInt64Array::from(requests))));
        fields.push(("errors", Arc::new(UInt64Array::from(errors))));
        Ok(vec![RecordBatch::try_from_iter(fields)?])
    }

    async fn describe(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let region = self.catalog.get(name)?.region;
        let stats = region.stats().await;
        let text = |f: &dyn Fn(&crate::Member) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                stats.iter().map(|(m, _)| f(m)),
            ))
        };
        let count = |f: &dyn Fn(&crate::InstanceStats) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter(
                stats.iter().map(|(_, s)| s.as_ref().map(f)),
            ))
        };
        let batch = RecordBatch::try_from_iter([
            ("instance", text(&|m| m.id.to_string())),
            ("address", text(&|m| m.address.clone())),
            ("state", text(&|m| m.state.to_string())),
            ("in_flight", count(&|s| s.in_flight)),
            ("requests", count(&|s| s.requests)),
            ("rows", count(&|s| s.rows)),
            ("errors", count(&|s| s.errors)),
            (
                "restarts",
                Arc::new(UInt64Array::from_iter_values(
                    stats.iter().map(|(m, _)| u64::from(m.restarts)),
                )) as ArrayRef,
            ),
        ])?;
        Ok(vec![batch])
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
        assert!(
            show.contains("| t    | upper, lower | 2/2       | thread    | round_robin  |"),
            "{show}"
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
            e.contains("no RPC service named 'nope'; services: [m]"),
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
            .sql("CREATE RPC SERVICE FOR FUNCTION embed")
            .await
            .unwrap();
        assert!(session.service("embed").is_some());
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
            e.contains("no RPC service named 'nope'; services: [embed]"),
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
        assert!(e.contains("not supported yet"), "{e}");
        session.sql("DROP RPC SERVICE embed").await.unwrap();
    }
}
