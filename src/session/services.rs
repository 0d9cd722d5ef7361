//! The statements that change a session's services: `CREATE`, `ALTER` and
//! `DROP RPC SERVICE`, and the start of an annotated function's implicit
//! service by the first query that calls it.
//!
//! Statements are serialized (one at a time), so two never race on one
//! name. Every option is checked against the scope its declaration gives it
//! (a pool started here, `ENDPOINTS`, a running service), and its error
//! points at the option in the statement.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ReturnFieldArgs, ScalarUDF};
use datafusion::prelude::SessionContext;
use rpcop_planner::ServiceDirectory;
use rpcop_sql::statement::{CreateService, OptionValue};
use tokio::sync::Mutex;

use super::advice::{option_error, plan_error, rpc_error};
use super::catalog::{Launching, Service, ServiceCatalog, ServiceEntry, ShippedService};
use super::hostable::{self, Source};
use super::remote::RemoteFunction;
use crate::error::RpcError;
use crate::function::FunctionLibrary;
use crate::options::{OptionError, OptionScope, Placement, ServiceOptions};
use crate::region::ServiceRegion;
use crate::wire::FunctionSignature;

/// What a list of options is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A pool of instances to start here (or an annotation of one).
    Pool,
    /// Instances that run elsewhere (`ENDPOINTS`).
    Endpoints,
    /// A service that runs now; `remote`: its instances are `ENDPOINTS`.
    Running { remote: bool },
}

/// Applies `changes` to `options`, each checked against where it applies;
/// then checks the options together.
fn apply(options: &mut ServiceOptions, changes: &[OptionValue], target: Target) -> Result<()> {
    for change in changes {
        let at = Some(change.location);
        let (key, scope) =
            ServiceOptions::scope_of(&change.key).map_err(|e| option_error(&e, at))?;
        let refused = match target {
            Target::Pool if !scope.applies_to_pool() => Some(OptionError::OnlyForEndpoints { key }),
            Target::Endpoints if !scope.applies_to_endpoints() => {
                Some(OptionError::NotForEndpoints { key })
            }
            Target::Running { .. } if !scope.changes_while_running() => {
                Some(OptionError::FixedWhileRunning { key })
            }
            // the number of endpoints is checked by the resize, which says
            // how many there are
            Target::Running { remote: true }
                if !scope.applies_to_endpoints() && key != "parallelism" =>
            {
                Some(OptionError::NotForEndpoints { key })
            }
            _ => None,
        };
        if let Some(error) = refused {
            return Err(option_error(&error, at));
        }
        options
            .set(key, &change.value)
            .map_err(|e| option_error(&e, at))?;
    }
    options.validate().map_err(|e| option_error(&e, None))
}

/// The token in the file at `path` (option `token_file`).
fn read_token(path: &str) -> Result<String> {
    crate::wire::read_token_file(std::path::Path::new(path)).map_err(|e| {
        plan_error(match e {
            RpcError::TokenFile { source, .. } => {
                format!("cannot read token_file '{path}': {source}")
            }
            other => format!("token_file '{path}': {other}"),
        })
    })
}

/// Does the session's own `udf` return what the service `described` for
/// the described argument types? (Else SQL would plan one type and the
/// service answer another.)
fn same_type(udf: &ScalarUDF, described: &FunctionSignature) -> std::result::Result<(), String> {
    let arguments: Vec<DataType> = described
        .arguments
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let wanted = described.result.data_type();
    let shown: Vec<String> = arguments.iter().map(ToString::to_string).collect();
    let fields: Vec<FieldRef> = described
        .arguments
        .iter()
        .map(|f| Arc::new(Field::new(f.name(), f.data_type().clone(), true)))
        .collect();
    let scalars = vec![None; fields.len()];
    let local = udf
        .return_field_from_args(ReturnFieldArgs {
            arg_fields: &fields,
            scalar_arguments: &scalars,
        })
        .map(|field| field.data_type().clone());
    match local {
        Ok(local) if &local == wanted => Ok(()),
        Ok(local) => Err(format!(
            "its instances describe it as ({}) -> {wanted}, but this session's function of that \
             name returns {local} for those arguments; SQL would plan one type and the service \
             answer another: make them agree, or host it under another name",
            shown.join(", ")
        )),
        Err(e) => Err(format!(
            "its instances describe it as ({}) -> {wanted}, but this session's function of that \
             name cannot take those arguments: {}",
            shown.join(", "),
            e.strip_backtrace()
        )),
    }
}

/// The services of a session and the statements that change them.
#[derive(Debug)]
pub(crate) struct Services {
    pub(crate) catalog: Arc<ServiceCatalog>,
    library: FunctionLibrary,
    serve_program: Option<PathBuf>,
    /// The session's queries run on a cluster's executors: a service with
    /// `placement = 'per_executor'` is started there, not here.
    on_cluster: bool,
    /// Serializes the statements.
    lock: Mutex<()>,
}

impl Services {
    pub(crate) fn new(
        catalog: Arc<ServiceCatalog>,
        library: FunctionLibrary,
        serve_program: Option<PathBuf>,
        on_cluster: bool,
    ) -> Self {
        Self {
            catalog,
            library,
            serve_program,
            on_cluster,
            lock: Mutex::new(()),
        }
    }

    /// Does a pool of `functions` with `options` run on the cluster's
    /// executors only? It does with `placement = 'per_executor'` on a
    /// session whose queries run there, if the session has code for each
    /// function (a command's function it has none for is learnt from
    /// instances started here).
    fn ships(&self, functions: &[String], options: &ServiceOptions, ctx: &SessionContext) -> bool {
        self.on_cluster
            && options.placement == Placement::PerExecutor
            && functions.iter().all(|f| ctx.udf(f).is_ok())
    }

    /// `CREATE RPC SERVICE`: starts a pool, attaches to `ENDPOINTS`, or
    /// (without a name) annotates the function. Returns a note for the user
    /// when the statement changed more than it names (an annotated
    /// function's implicit service now asleep).
    ///
    /// `registry` holds the session's functions: those that no service can
    /// host are refused here, with their reason.
    pub(crate) async fn create(
        &self,
        create: CreateService,
        ctx: &SessionContext,
    ) -> Result<Option<String>> {
        let _one_at_a_time = self.lock.lock().await;
        let target = if create.endpoints.is_empty() {
            Target::Pool
        } else {
            Target::Endpoints
        };
        for endpoint in &create.endpoints {
            crate::wire::check_endpoint(endpoint).map_err(rpc_error)?;
        }
        let mut options = ServiceOptions::default();
        apply(&mut options, &create.options, target)?;
        let name = create
            .name
            .clone()
            .unwrap_or_else(|| create.functions[0].clone());
        if let Some(blank) = std::iter::once(&name)
            .chain(&create.functions)
            .find(|n| n.trim().is_empty())
        {
            return Err(plan_error(format!(
                "a service or function name cannot be blank ('{blank}'): name it, as in \
                 CREATE RPC SERVICE text FOR FUNCTION upper"
            )));
        }
        // neither takes the name of a service, running or pending: an
        // annotation's options change with ALTER, not by annotating again
        if let Ok(existing) = self.catalog.lookup(&name) {
            if create.if_not_exists {
                return Ok(None);
            }
            return Err(plan_error(match (create.name.is_none(), existing) {
                (true, Service::Pending(_)) => format!(
                    "function '{name}' is already annotated (its implicit service '{name}' starts \
                     with the first query that calls it); change its options with ALTER RPC \
                     SERVICE {name} SET (...), or DROP RPC SERVICE {name} first"
                ),
                _ => format!(
                    "RPC service '{name}' already exists; use IF NOT EXISTS, ALTER RPC SERVICE, or DROP it first"
                ),
            }));
        }
        // the functions of ENDPOINTS or a command are whatever their
        // instances say they host
        let source = if target == Target::Endpoints || options.command.is_some() {
            Source::Elsewhere
        } else {
            Source::Library
        };
        for function in &create.functions {
            hostable::check(ctx, &self.library, function, source, options.allow_volatile)?;
        }
        self.check_unserved(&create.functions)?;
        if target == Target::Endpoints {
            return self
                .attach(name, &create, options, ctx)
                .await
                .map(|()| None);
        }
        // a command's function this session has no code for cannot be
        // planned before its instances describe it: started now
        let unknown_here = |f: &String| ctx.udf(f).is_err();
        if create.name.is_none()
            && options.command.is_some()
            && create.functions.iter().any(unknown_here)
        {
            let functions = create.functions.clone();
            return self
                .start(name, functions, options, true, ctx)
                .await
                .map(|()| None);
        }
        if create.name.is_none() {
            // an annotation: the first query that calls it starts the service
            self.catalog.annotate(name, options);
            return Ok(None);
        }
        // the functions' annotations sleep while this service hosts them
        // and wake when it is dropped: the statement says so
        let asleep: Vec<&String> = create
            .functions
            .iter()
            .filter(|f| self.catalog.annotation(f).is_some())
            .collect();
        let functions = create.functions.clone();
        if self.ships(&functions, &options, ctx) {
            let shipped = ShippedService {
                functions,
                options,
                implicit: false,
            };
            self.catalog.insert_shipped(name.clone(), shipped);
        } else {
            Box::pin(self.start(name.clone(), functions, options, false, ctx)).await?;
        }
        let notes: Vec<String> = asleep
            .iter()
            .map(|f| {
                format!(
                    "function '{f}' is annotated: its implicit service stays asleep while \
                     '{name}' hosts it, and hosts it again once '{name}' is dropped"
                )
            })
            .collect();
        Ok((!notes.is_empty()).then(|| notes.join("; ")))
    }

    /// A function is served by one service at most.
    fn check_unserved(&self, functions: &[String]) -> Result<()> {
        for function in functions {
            if let Some(other) = self.catalog.service_of(function) {
                return Err(plan_error(format!(
                    "function '{function}' is already served by RPC service '{}'; \
                     a function is served by one service: DROP RPC SERVICE {} first",
                    other.name, other.name
                )));
            }
        }
        Ok(())
    }

    /// Starts a region and enters it in the catalog. The caller holds the lock.
    async fn start(
        &self,
        name: String,
        functions: Vec<String>,
        options: ServiceOptions,
        implicit: bool,
        ctx: &SessionContext,
    ) -> Result<()> {
        let hosted = functions.clone();
        let builder = match &options.command {
            Some(command) => ServiceRegion::command(name.clone(), functions, command.clone()),
            None => {
                let functions = self
                    .library
                    .select(&functions)
                    .map_err(|e| plan_error(e.to_string()))?;
                let builder = ServiceRegion::builder(name.clone(), functions);
                match &self.serve_program {
                    Some(program) => builder.serve_program(program),
                    None => builder,
                }
            }
        };
        // followed while it starts: SHOW RPC SERVICES and the shell's
        // progress line see its instances load
        let shown = options.clone();
        let mut following = None;
        let follow = |watch| {
            let launching = Launching {
                watch,
                wanted: shown.parallelism,
                functions: hosted,
                implicit,
                options: shown,
            };
            following = Some(self.catalog.follow_start(&name, launching));
        };
        let region = Box::pin(builder.options(options).start_watched(follow))
            .await
            .map_err(rpc_error)?;
        let entered = Box::pin(self.enter(name, region, implicit, ctx)).await;
        drop(following);
        entered
    }

    /// `CREATE RPC SERVICE ... ENDPOINTS (...)`: a service of instances that
    /// run elsewhere. The caller holds the lock.
    async fn attach(
        &self,
        name: String,
        create: &CreateService,
        options: ServiceOptions,
        ctx: &SessionContext,
    ) -> Result<()> {
        let protocol = options.protocol;
        let token = match (&options.token_file, protocol.is_rpcop()) {
            (Some(path), true) => Some(read_token(path)?),
            (None, true) => {
                return Err(plan_error(format!(
                    "a service with ENDPOINTS needs the token its instances were started with \
                     (rpcop serve --token-file): CREATE RPC SERVICE {name} ... WITH (token_file = '/path/to/token')"
                )));
            }
            (Some(_), false) => {
                return Err(plan_error(format!(
                    "option 'token_file' is the token of rpcop's instances; '{protocol}' \
                     servers take none: leave it out"
                )));
            }
            (None, false) => None,
        };
        let mut builder = ServiceRegion::attach(
            name.clone(),
            create.functions.clone(),
            create.endpoints.clone(),
        )
        .options(options);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let region = Box::pin(builder.start()).await.map_err(rpc_error)?;
        Box::pin(self.enter(name, region, false, ctx)).await
    }

    /// Enters a started region in the catalog, with the signature of each
    /// function as its instances describe it; a function they do not host
    /// stops the region and fails. A described function the session has
    /// no code for is registered ([`RemoteFunction`]); one it has must
    /// return the described type.
    async fn enter(
        &self,
        name: String,
        region: ServiceRegion,
        implicit: bool,
        ctx: &SessionContext,
    ) -> Result<()> {
        let client = region.client().map_err(rpc_error)?;
        let mut signatures = BTreeMap::new();
        for function in region.functions() {
            match client.describe(function).await {
                Ok(signature) => {
                    signatures.insert(function.clone(), signature);
                }
                Err(error @ RpcError::NotHosted { .. }) => {
                    region.shutdown().await;
                    return Err(rpc_error(error));
                }
                // callable, but not by rpc_call: no fixed signature to learn
                Err(_) => {}
            }
        }
        let options = region.options();
        let elsewhere = region.is_remote() || options.command.is_some();
        let mut registered = Vec::new();
        for (function, signature) in signatures.iter().filter(|_| elsewhere) {
            let known = match ctx.udf(function) {
                Ok(udf) => udf,
                Err(_) => {
                    let remote = RemoteFunction::new(function, &name, options.protocol, signature);
                    ctx.register_udf(ScalarUDF::new_from_impl(remote));
                    registered.push(function.clone());
                    continue;
                }
            };
            if let Err(mismatch) = same_type(&known, signature) {
                for function in &registered {
                    ctx.deregister_udf(function);
                }
                region.shutdown().await;
                return Err(plan_error(format!(
                    "function '{function}' of RPC service '{name}': {mismatch}"
                )));
            }
        }
        let entry = ServiceEntry {
            region: Arc::new(region),
            client,
            signatures,
            implicit,
            registered,
        };
        self.catalog.insert(name, entry);
        Ok(())
    }

    /// `ALTER RPC SERVICE name SET (...)`.
    pub(crate) async fn alter(&self, name: &str, changes: &[OptionValue]) -> Result<()> {
        let _one_at_a_time = self.lock.lock().await;
        let region = match self.catalog.lookup(name)? {
            Service::Running(entry) => entry.region,
            // a pending implicit service: nothing runs, every option may change
            Service::Pending(mut options) => {
                apply(&mut options, changes, Target::Pool)?;
                self.catalog.annotate(name, *options);
                return Ok(());
            }
            // its pools run on the executors: what changes there as they
            // run, but not their size, which each keeps from its start
            Service::Shipped(mut shipped) => {
                let sized = changes.iter().find(|change| {
                    ServiceOptions::scope_of(&change.key)
                        .is_ok_and(|(_, scope)| scope == OptionScope::Scale)
                });
                if let Some(change) = sized {
                    return Err(plan_error(format!(
                        "option '{}' of RPC service '{name}' cannot change: each executor \
                         started its own pool of it (placement = 'per_executor'), which keeps \
                         the size it started with until the executor exits",
                        change.key
                    )));
                }
                apply(
                    &mut shipped.options,
                    changes,
                    Target::Running { remote: false },
                )?;
                self.catalog.insert_shipped(name.to_string(), *shipped);
                return Ok(());
            }
        };
        let mut options = region.options();
        let remote = region.is_remote();
        apply(&mut options, changes, Target::Running { remote })?;
        // resized first: a refused resize changes nothing
        region
            .resize(options.parallelism)
            .await
            .map_err(rpc_error)?;
        region.set_options(options).map_err(rpc_error)?;
        let client = region.client().map_err(rpc_error)?;
        self.catalog.set_client(name, client);
        Ok(())
    }

    /// `DROP RPC SERVICE [IF EXISTS] name`.
    pub(crate) async fn drop_service(
        &self,
        name: &str,
        if_exists: bool,
        ctx: &SessionContext,
    ) -> Result<()> {
        let one_at_a_time = self.lock.lock().await;
        if let Some(shipped) = self.catalog.remove_shipped(name) {
            // an implicit one's function runs in-process again
            if shipped.implicit {
                self.catalog.remove_annotation(name);
            }
            return Ok(());
        }
        let missing = self.catalog.get(name).err();
        // new queries stop reaching it at once; running ones drain
        if let Some(entry) = self.catalog.remove(name) {
            // its functions without code here go with it
            for function in &entry.registered {
                ctx.deregister_udf(function);
            }
            if entry.implicit {
                // its function runs in-process again
                self.catalog.remove_annotation(name);
            }
            // a service created by name gives its functions back to their
            // annotations, if they have any. The queries already running
            // through it finish first (other DDL need not wait for them)
            drop(one_at_a_time);
            entry.client.streams_closed().await;
            entry.region.shutdown().await;
            return Ok(());
        }
        // a pending implicit service: its annotation goes
        let annotation = self.catalog.remove_annotation(name);
        match missing {
            Some(error) if annotation.is_none() && !if_exists => Err(error),
            _ => Ok(()),
        }
    }

    /// Starts the implicit service of each annotated function in `called`
    /// that has none running yet.
    pub(crate) async fn start_implicit(
        &self,
        called: impl IntoIterator<Item = String>,
        ctx: &SessionContext,
    ) -> Result<()> {
        for function in called {
            let asleep = || self.catalog.is_served(&function);
            if self.catalog.annotation(&function).is_none()
                || self.catalog.contains(&function)
                || asleep()
            {
                continue;
            }
            let _one_at_a_time = self.lock.lock().await;
            // another statement may have started or dropped it meanwhile
            let Some(options) = self.catalog.annotation(&function) else {
                continue;
            };
            if self.catalog.contains(&function) || asleep() {
                continue;
            }
            let functions = vec![function.clone()];
            if self.ships(&functions, &options, ctx) {
                let shipped = ShippedService {
                    functions,
                    options,
                    implicit: true,
                };
                self.catalog.insert_shipped(function, shipped);
                continue;
            }
            Box::pin(self.start(function.clone(), functions, options, true, ctx))
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
}
