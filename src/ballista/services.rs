//! The services of one Ballista process: on an executor, one client per
//! service, shared by all its tasks; on the scheduler, the services the
//! plans it gets define.
//!
//! A plan defines each service it calls ([`ServiceDefinition`]). The first
//! task of an executor that calls it creates it in a session of its own, as
//! `CREATE RPC SERVICE` would: a pool of its own for `placement =
//! 'per_executor'`, or the `ENDPOINTS` every executor shares. (A session of
//! its own: plans of two clients may define two services that host one
//! function, which one session would refuse.) The service stays, warm, for
//! the tasks and queries that follow, whatever routing options (`ALTER`) or
//! size their plans give it; each set of routing options gets one client. A
//! service that failed to start fails the tasks of the next
//! [`RETRY_AFTER`] at once, then is tried again.
//!
//! With [`ExecutorServices::idle_timeout`], a service no task has used for
//! that long (no caller's stream open through it meanwhile) is stopped: a
//! pool frees its instances (a model's memory, a GPU) once its queries are
//! done, or once the client dropped it, and the next task that calls it
//! starts it again.
//!
//! A plan is the client's word, so an executor refuses what would let a
//! plan run a program or read a file of its choosing: a `command` service
//! unless [`ExecutorServices::allow_commands`], and a `token_file` outside
//! the directory [`ExecutorServices::token_dir`] names.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use futures::future::BoxFuture;
use rpcop_planner::ServiceRef;
use rpcop_sql::parser::Statement;
use rpcop_sql::statement::RpcStatement;
use tokio::runtime::Handle;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::client::ServiceClient;
use crate::exec::{ServiceResolver, Shipped, Target, TargetSource};
use crate::region::ServiceRegion;
use crate::session::{RpcSession, ServiceDefinition};

/// How long a service that failed to start fails tasks at once.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Makes the session an executor process creates a service in.
type MakeSession = Arc<dyn Fn() -> RpcSession + Send + Sync>;

/// A service of this process, by identity: started, failed, or neither.
#[derive(Default)]
struct Slot {
    started: Option<Arc<Started>>,
    failed: Option<(Instant, String)>,
}

/// A service started in this process: its session, its region, and one
/// client per set of routing options its plans gave.
struct Started {
    /// Kept: the service lives as long as its session.
    _session: RpcSession,
    region: Arc<ServiceRegion>,
    clients: Mutex<HashMap<Arc<str>, ServiceClient>>,
    /// When a task last asked for it, or was last seen calling it.
    used: Mutex<Instant>,
}

impl Started {
    fn touch(&self) {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Has no task used it for `timeout`? A caller's stream open through
    /// it now counts as a use.
    fn idle_for(&self, timeout: Duration) -> bool {
        let busy = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|client| client.open_streams() > 0);
        if busy {
            self.touch();
            return false;
        }
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            >= timeout
    }
}

/// The services of one Ballista process (see the module documentation).
/// Clones share them.
#[derive(Clone)]
pub struct ExecutorServices {
    inner: Arc<Inner>,
}

struct Inner {
    make_session: MakeSession,
    /// The scalar functions of a session `make_session` makes.
    functions: OnceLock<Vec<Arc<ScalarUDF>>>,
    commands: bool,
    token_dir: Option<PathBuf>,
    /// Services unused this long are stopped; `None`: kept for good.
    idle_timeout: Option<Duration>,
    /// Set once the task that stops idle services runs.
    reaping: OnceLock<()>,
    /// The runtime services start on (the executor's own, not the one its
    /// tasks run on); `None`: the task's.
    runtime: Mutex<Option<Handle>>,
    slots: Mutex<HashMap<String, Arc<AsyncMutex<Slot>>>>,
}

impl fmt::Debug for ExecutorServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorServices")
            .field("services", &self.lock_slots().len())
            .field("commands", &self.inner.commands)
            .field("token_dir", &self.inner.token_dir)
            .finish_non_exhaustive()
    }
}

impl Default for ExecutorServices {
    /// Services hosted by [`RpcSession::new`]'s functions (the demo and
    /// model functions, and the built-ins); no commands, no token files.
    fn default() -> Self {
        Self::new(RpcSession::new)
    }
}

impl ExecutorServices {
    /// Services each created in a session `make_session` makes when a task
    /// first needs it: its functions are those a pool of the process can
    /// host (give it the same functions as the client's).
    pub fn new(make_session: impl Fn() -> RpcSession + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                make_session: Arc::new(make_session),
                functions: OnceLock::new(),
                commands: false,
                token_dir: None,
                idle_timeout: None,
                reaping: OnceLock::new(),
                runtime: Mutex::new(None),
                slots: Mutex::default(),
            }),
        }
    }

    /// Lets plans start services whose instances are a `command` (with its
    /// `env` and `working_dir`): a plan can then run any program here.
    pub fn allow_commands(self, allow: bool) -> Self {
        self.configured(|inner| inner.commands = allow)
    }

    /// The directory the token files of `ENDPOINTS` services must be in
    /// (a plan names the file; without this, none is read).
    pub fn token_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.configured(|inner| inner.token_dir = Some(dir))
    }

    /// Stops a service that no task has used for `timeout` (see the module
    /// documentation), checked a few times per timeout; without this,
    /// services live as long as the process. Give a second or more (the
    /// binary's `--idle-timeout` insists): a shorter one may take a task
    /// that has just asked for a service, and not yet opened its stream,
    /// for no use at all.
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.configured(|inner| inner.idle_timeout = Some(timeout))
    }

    /// Starts services on `runtime` rather than on the runtime of the task
    /// that first needs them.
    pub(crate) fn start_on(&self, runtime: Handle) {
        *self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(runtime);
    }

    /// These services, configured by `change`: a copy if they are shared
    /// (configure them before use).
    fn configured(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            make_session: Arc::clone(&shared.make_session),
            functions: OnceLock::new(),
            commands: shared.commands,
            token_dir: shared.token_dir.clone(),
            idle_timeout: shared.idle_timeout,
            reaping: OnceLock::new(),
            runtime: Mutex::new(None),
            slots: Mutex::default(),
        });
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The scalar functions a session of these services has: those a plan
    /// may call outside a proxy (with the rewrite off, say), which the
    /// scheduler and the executors must know too.
    pub fn functions(&self) -> Vec<Arc<ScalarUDF>> {
        self.inner
            .functions
            .get_or_init(|| {
                let session = (self.inner.make_session)();
                let state = session.context().state();
                state.scalar_functions().values().cloned().collect()
            })
            .clone()
    }

    /// The services started in this process so far, by name: each client
    /// its tasks share (one per set of routing options their plans gave),
    /// with the service's region.
    pub fn started(&self) -> Vec<(ServiceClient, Arc<ServiceRegion>)> {
        let slots: Vec<_> = self.lock_slots().values().cloned().collect();
        let mut started: Vec<_> = slots
            .iter()
            .filter_map(|slot| slot.try_lock().ok()?.started.clone())
            .flat_map(|started| {
                let clients = started
                    .clients
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                clients
                    .values()
                    .map(|client| (client.clone(), Arc::clone(&started.region)))
                    .collect::<Vec<_>>()
            })
            .collect();
        started.sort_by(|(a, _), (b, _)| a.service().cmp(b.service()));
        started
    }

    /// The target of an operator that calls the service `definition`
    /// defines.
    pub(crate) fn shipped(&self, definition: Arc<str>) -> Result<Shipped> {
        let parsed = ServiceDefinition::parse(&definition)?;
        parsed.check_shippable()?;
        Ok(Shipped {
            options: parsed.options()?,
            name: parsed.name,
            definition,
            resolver: Arc::new(self.clone()),
        })
    }

    fn lock_slots(&self) -> MutexGuard<'_, HashMap<String, Arc<AsyncMutex<Slot>>>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The client for `definition`: its service started first if it is not
    /// yet (or was refused long enough ago).
    async fn client_of(&self, definition: Arc<str>) -> Result<ServiceClient> {
        let parsed = ServiceDefinition::parse(&definition)?;
        let slot = Arc::clone(self.lock_slots().entry(parsed.identity()).or_default());
        let mut slot = slot.lock().await;
        let started = match (&slot.started, &slot.failed) {
            (Some(started), _) => {
                started.touch();
                Arc::clone(started)
            }
            (None, Some((at, error))) if at.elapsed() < RETRY_AFTER => {
                return Err(DataFusionError::Execution(error.clone()));
            }
            (None, _) => match self.start(&parsed).await {
                Ok(started) => {
                    slot.started = Some(Arc::clone(&started));
                    slot.failed = None;
                    self.reap_idle();
                    started
                }
                Err(error) => {
                    slot.failed = Some((Instant::now(), error.to_string()));
                    return Err(error);
                }
            },
        };
        drop(slot);
        let mut clients = started
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&definition) {
            return Ok(client.clone());
        }
        let client = started.region.client_with(parsed.options()?)?;
        clients.insert(definition, client.clone());
        Ok(client)
    }

    /// Creates the service `parsed` defines, in a session of its own, on
    /// the services' runtime.
    async fn start(&self, parsed: &ServiceDefinition) -> Result<Arc<Started>> {
        self.check(parsed)?;
        let services = self.clone();
        let name = parsed.name.clone();
        let create = Statement::Rpc(RpcStatement::Create(parsed.statement(&name)));
        let starting = async move {
            let session = (services.inner.make_session)();
            Box::pin(session.execute(create)).await?;
            let region = session.service(&name).ok_or_else(|| {
                DataFusionError::Internal(format!("service '{name}' did not start"))
            })?;
            Ok(Arc::new(Started {
                _session: session,
                region,
                clients: Mutex::default(),
                used: Mutex::new(Instant::now()),
            }))
        };
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let started: Result<Arc<Started>> = match runtime {
            Some(runtime) => runtime
                .spawn(starting)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
            None => starting.await,
        };
        started.map_err(|error| {
            error.context(format!(
                "starting RPC service '{}' in this executor (placement = 'per_executor' or \
                 ENDPOINTS)",
                parsed.name
            ))
        })
    }

    /// Starts, once, the task that stops the services idle for
    /// `idle_timeout`, if one is set. It looks a few times per timeout
    /// (at most every 5 s), and ends with the last clone of these services.
    fn reap_idle(&self) {
        let Some(timeout) = self.inner.idle_timeout else {
            return;
        };
        let runtime = self
            .inner
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(Handle::current);
        self.inner.reaping.get_or_init(|| {
            let services = Arc::downgrade(&self.inner);
            let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
            runtime.spawn(reap(services, timeout, every));
        });
    }

    /// Takes the services idle for `timeout` out of their slots; a slot a
    /// task holds (starting its service, or asking for it) is not idle.
    /// Each stays locked until the service has stopped, so that a task
    /// that needs it again starts no second copy beside the one stopping.
    fn take_idle(&self, timeout: Duration) -> Vec<Idle> {
        let slots: Vec<_> = self.lock_slots().values().cloned().collect();
        slots
            .into_iter()
            .filter_map(|slot| {
                let mut slot = slot.try_lock_owned().ok()?;
                if !slot.started.as_ref()?.idle_for(timeout) {
                    return None;
                }
                let started = slot.started.take()?;
                Some(Idle { slot, started })
            })
            .collect()
    }

    /// Refuses what this executor does not let a plan do.
    fn check(&self, parsed: &ServiceDefinition) -> Result<()> {
        let options = parsed.options()?;
        let name = &parsed.name;
        if !self.inner.commands
            && (options.command.is_some()
                || !options.env.is_empty()
                || options.working_dir.is_some())
        {
            return Err(DataFusionError::Plan(format!(
                "RPC service '{name}' runs a command, which this executor does not let plans \
                 start: start it with --allow-commands (ExecutorServices::allow_commands), or \
                 give the service ENDPOINTS"
            )));
        }
        if let Some(file) = &options.token_file {
            let inside = self
                .inner
                .token_dir
                .as_deref()
                .is_some_and(|dir| is_inside(Path::new(file), dir));
            if !inside {
                return Err(DataFusionError::Plan(format!(
                    "RPC service '{name}' reads its token from {file}, which is not in this \
                     executor's token directory: start the executor with --token-dir DIR \
                     (ExecutorServices::token_dir) and keep the token files there"
                )));
            }
        }
        Ok(())
    }
}

/// A service taken out of its slot to be stopped; its slot stays locked
/// until it has.
struct Idle {
    slot: OwnedMutexGuard<Slot>,
    started: Arc<Started>,
}

impl Idle {
    /// Stops the service, then lets its slot go.
    async fn stop(self) {
        self.started.region.shutdown().await;
        drop(self.slot);
    }
}

/// Every `every`, stops the services of `services` idle for `timeout`,
/// until they are gone.
async fn reap(services: Weak<Inner>, timeout: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = services.upgrade() else {
            return;
        };
        let idle = ExecutorServices { inner }.take_idle(timeout);
        for idle in idle {
            tracing::info!(
                service = idle.started.region.name(),
                idle_for = ?timeout,
                "stopping an RPC service no task has used"
            );
            idle.stop().await;
        }
    }
}

/// Is `file` (once links are resolved) in `dir`?
fn is_inside(file: &Path, dir: &Path) -> bool {
    match (file.canonicalize(), dir.canonicalize()) {
        (Ok(file), Ok(dir)) => file.starts_with(dir),
        _ => false,
    }
}

impl ServiceResolver for ExecutorServices {
    fn client(&self, definition: Arc<str>) -> BoxFuture<'static, Result<ServiceClient>> {
        let services = self.clone();
        Box::pin(async move { services.client_of(definition).await })
    }
}

impl TargetSource for ExecutorServices {
    /// The service the plan defines: the scheduler plans operators that
    /// the executors run.
    fn target(&self, service: &ServiceRef) -> Result<Target> {
        let Some(definition) = &service.definition else {
            return Err(DataFusionError::Plan(format!(
                "the plan calls RPC service '{}' without its definition: plan it in an \
                 RpcSession",
                service.name
            )));
        };
        Ok(Target::Shipped(Box::new(
            self.shipped(Arc::clone(definition))?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ServiceDefinition;

    fn definition(options: &[(&str, &str)]) -> ServiceDefinition {
        ServiceDefinition::for_tests("sim", "upper", options)
    }

    #[tokio::test]
    async fn a_service_that_failed_to_start_fails_the_next_tasks_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&made);
        let services = ExecutorServices::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            RpcSession::new()
        });
        // no session here hosts it: CREATE fails
        let mut unknown = definition(&[("placement", "per_executor")]);
        unknown.functions = vec!["no_such_function".into()];
        let text: Arc<str> = unknown.to_text().into();
        let first = services.client_of(Arc::clone(&text)).await.unwrap_err();
        let first = first.to_string();
        assert!(
            first.contains("starting RPC service 'sim' in this executor")
                && first.contains("no_such_function"),
            "{first}"
        );
        let again = services.client_of(text).await.unwrap_err().to_string();
        assert!(again.contains("no_such_function"), "{again}");
        assert_eq!(made.load(Ordering::SeqCst), 1, "started again at once");
        assert!(services.started().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_no_task_uses_is_stopped_and_starts_again_when_called() {
        let services = ExecutorServices::default();
        let text: Arc<str> = definition(&[("placement", "per_executor")])
            .to_text()
            .into();
        let client = services.client_of(Arc::clone(&text)).await.unwrap();
        // a caller's stream open through it is a use, however long ago
        // the service was asked for
        let open = client.open_stream();
        assert!(services.take_idle(Duration::ZERO).is_empty());
        drop(open);
        assert!(services.take_idle(Duration::from_secs(3600)).is_empty());
        let mut idle = services.take_idle(Duration::ZERO);
        assert_eq!(idle.len(), 1);
        assert!(services.started().is_empty());
        // a task that needs it meanwhile waits for the stop, then starts it
        let again = {
            let (services, text) = (services.clone(), Arc::clone(&text));
            tokio::spawn(async move { services.client_of(text).await })
        };
        let stopping = idle.pop().unwrap();
        let region = Arc::clone(&stopping.started.region);
        stopping.stop().await;
        assert!(region.members().is_empty());
        again.await.unwrap().unwrap();
        assert_eq!(services.started().len(), 1);
        assert!(!Arc::ptr_eq(&services.started()[0].1, &region));

        // with a timeout, the services' own task stops it once its last
        // stream closed, and it is the region that task stopped
        let services = ExecutorServices::default().idle_timeout(Duration::from_millis(50));
        let client = services.client_of(Arc::clone(&text)).await.unwrap();
        let open = client.open_stream();
        let region = Arc::clone(&services.started()[0].1);
        assert!(!region.members().is_empty());
        drop(open);
        tokio::time::timeout(Duration::from_secs(20), async {
            while !services.started().is_empty() || !region.members().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the idle service was not stopped within 20 s");
    }

    #[test]
    fn a_plan_may_not_run_a_command_or_read_a_file_of_its_choosing() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let services = ExecutorServices::default();
        let command = definition(&[("command", "python3 model.py")]);
        let error = services.check(&command).unwrap_err().to_string();
        assert!(error.contains("--allow-commands"), "{error}");
        let services = services.allow_commands(true);
        services.check(&command).unwrap();

        let mut endpoints = definition(&[("token_file", token.to_str().unwrap())]);
        endpoints.endpoints = vec!["http://127.0.0.1:1".into()];
        let error = services.check(&endpoints).unwrap_err().to_string();
        assert!(error.contains("--token-dir"), "{error}");
        let services = services.token_dir(dir.path());
        services.check(&endpoints).unwrap();
        // a path that leads out of the directory is not in it
        let outside = format!("{}/../{}", dir.path().display(), "etc-passwd");
        let escaping = definition(&[("token_file", &outside)]);
        assert!(services.check(&escaping).is_err());
    }
}
