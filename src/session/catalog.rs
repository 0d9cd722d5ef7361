//! The catalog of a session's services.
//!
//! One entry per running service: its region, a client with its options, and
//! the result field of each function as the service describes it. Beside
//! them, the *annotations*: functions marked as heavy, whose implicit
//! service (named after the function) starts with the first query that
//! calls them. And the services being started, followed until they enter
//! the catalog, whose instances `RpcSession::startups` and `SHOW RPC
//! SERVICES` show loading. The session's DDL writes the catalog; the
//! rewrite rule, `rpc_call` and users' own UDFs read it while queries plan
//! and run, so it is behind (briefly held) `RwLock`s and a `Mutex`. It is the rewrite rule's
//! [`ServiceDirectory`] and the physical planner's [`TargetSource`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use datafusion::error::DataFusionError;
use rpcop_planner::{ServiceDirectory, ServiceRef};

#[cfg(feature = "ballista")]
use super::definition::ServiceDefinition;
use crate::client::ServiceClient;
use crate::exec::{Target, TargetSource};
use crate::options::ServiceOptions;
use crate::region::{MemberState, MembershipWatch, ServiceRegion};
use crate::wire::FunctionSignature;

/// A running service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceEntry {
    /// Its instances.
    pub(crate) region: Arc<ServiceRegion>,
    /// A client with the service's options.
    pub(crate) client: ServiceClient,
    /// Signature by function name, as the service describes it
    /// (`GetFlightInfo`); a function without a fixed signature is absent.
    pub(crate) signatures: BTreeMap<String, FunctionSignature>,
    /// Started for an annotated function, rather than by a named `CREATE`.
    pub(crate) implicit: bool,
    /// The functions registered in the session for it, which have no code
    /// here ([`super::remote::RemoteFunction`]).
    pub(crate) registered: Vec<String>,
}

/// A service of the catalog, as [`ServiceCatalog::lookup`] finds it.
#[derive(Debug, Clone)]
pub(crate) enum Service {
    /// Started: its entry.
    Running(ServiceEntry),
    /// The implicit service of an annotated function, not started yet: the
    /// options it will start with.
    Pending(Box<ServiceOptions>),
    /// A service whose pools run on a cluster's executors only.
    Shipped(Box<ShippedService>),
}

/// A service of a session whose queries run on a cluster (a Ballista
/// session) with `placement = 'per_executor'`: each executor starts its own
/// pool, so the session keeps only its definition and starts nothing.
#[derive(Debug, Clone)]
pub(crate) struct ShippedService {
    /// The functions it hosts.
    pub(crate) functions: Vec<String>,
    /// Its options.
    pub(crate) options: ServiceOptions,
    /// Made for an annotated function (its implicit service), rather than
    /// by a named `CREATE`.
    pub(crate) implicit: bool,
}

impl ShippedService {
    /// Does it host `function`?
    pub(crate) fn hosts(&self, function: &str) -> bool {
        self.functions.iter().any(|f| f == function)
    }
}

/// A service whose instances are not all ready yet: what a statement that
/// waits for it is waiting for ([`crate::RpcSession::startups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// The service.
    pub service: String,
    /// Its instances that are ready.
    pub ready: usize,
    /// Its instances that are still starting (loading their functions).
    pub starting: usize,
    /// How many it should have (`parallelism`).
    pub wanted: usize,
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}/{} instances ready, loading…",
            self.service, self.ready, self.wanted
        )
    }
}

impl Startup {
    /// The start-up of a service with these members, if any is starting
    /// (or, while it is `created`, not ready yet).
    fn of(service: &str, watch: &MembershipWatch, wanted: usize, created: bool) -> Option<Self> {
        let members = Arc::clone(&watch.borrow());
        let count = |state| members.members.iter().filter(|m| m.state == state).count();
        let (ready, starting) = (count(MemberState::Ready), count(MemberState::Starting));
        (starting > 0 || (created && ready < wanted)).then(|| Self {
            service: service.to_string(),
            ready,
            starting,
            wanted,
        })
    }
}

/// The running services of a session, by name.
#[derive(Debug, Default)]
pub(crate) struct ServiceCatalog {
    services: RwLock<BTreeMap<String, ServiceEntry>>,
    /// Services that run on a cluster's executors only.
    shipped: RwLock<BTreeMap<String, ShippedService>>,
    /// The service options of each annotated function's implicit service.
    annotations: RwLock<BTreeMap<String, ServiceOptions>>,
    /// Services being started (not in `services` yet).
    starting: Mutex<BTreeMap<String, Launching>>,
}

/// A service being started.
#[derive(Debug, Clone)]
pub(crate) struct Launching {
    /// Its instances.
    pub(crate) watch: MembershipWatch,
    /// How many it should have.
    pub(crate) wanted: usize,
    /// The functions it will host.
    pub(crate) functions: Vec<String>,
    /// Started for an annotated function.
    pub(crate) implicit: bool,
    /// Its options.
    pub(crate) options: ServiceOptions,
}

/// Keeps a service among those starting until dropped.
pub(crate) struct StartingGuard<'a> {
    catalog: &'a ServiceCatalog,
    name: String,
}

impl Drop for StartingGuard<'_> {
    fn drop(&mut self) {
        self.catalog.starting().remove(&self.name);
    }
}

impl ServiceCatalog {
    fn starting(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Launching>> {
        self.starting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows the start of service `name` until the guard is dropped.
    pub(crate) fn follow_start(&self, name: &str, launching: Launching) -> StartingGuard<'_> {
        self.starting().insert(name.to_string(), launching);
        StartingGuard {
            catalog: self,
            name: name.to_string(),
        }
    }

    /// The services being started, and the running ones with instances
    /// not all ready (a restart, a resize), by name.
    pub(crate) fn startups(&self) -> Vec<Startup> {
        let mut out: BTreeMap<String, Startup> = BTreeMap::new();
        for (name, launching) in self.starting().iter() {
            if let Some(startup) = Startup::of(name, &launching.watch, launching.wanted, true) {
                out.insert(name.clone(), startup);
            }
        }
        for (name, entry) in self.read().iter() {
            let wanted = entry.region.options().parallelism;
            if let Some(startup) = Startup::of(name, &entry.region.membership(), wanted, false) {
                out.insert(name.clone(), startup);
            }
        }
        out.into_values().collect()
    }

    /// The services being started, by name.
    pub(crate) fn launching(&self) -> Vec<(String, Launching)> {
        self.starting()
            .iter()
            .map(|(name, l)| (name.clone(), l.clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ServiceEntry>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ServiceEntry>> {
        self.services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The service `name`, or an error that lists the services there are.
    pub(crate) fn get(&self, name: &str) -> Result<ServiceEntry, DataFusionError> {
        if let Some(entry) = self.read().get(name) {
            return Ok(entry.clone());
        }
        if self.shipped_read().contains_key(name) {
            return Err(DataFusionError::Plan(format!(
                "RPC service '{name}' runs on the cluster's executors only (placement = \
                 'per_executor'): this session holds none of its instances, so its functions \
                 are called only by queries the cluster runs (a query that reads only \
                 rpc_services(), rpc_instances() or rpc_options() runs in the session)"
            )));
        }
        let mut known: Vec<String> = self.read().keys().cloned().collect();
        known.extend(self.shipped_read().keys().cloned());
        // pending implicit services; not annotations asleep under a
        // service created by name
        known.extend(
            self.annotations()
                .into_iter()
                .map(|(function, _)| function)
                .filter(|f| !self.is_served(f)),
        );
        known.sort();
        known.dedup();
        Err(DataFusionError::Plan(format!(
            "no RPC service named '{name}'; services: [{}]; create it first with \
             CREATE RPC SERVICE {name} FOR FUNCTION ... (SHOW RPC SERVICES lists them)",
            known.join(", ")
        )))
    }

    /// The service `name`: running, or pending (an annotated function
    /// whose implicit service has not started yet, with its options); an
    /// error that lists the services there are otherwise.
    pub(crate) fn lookup(&self, name: &str) -> Result<Service, DataFusionError> {
        if let Some(shipped) = self.shipped_read().get(name) {
            return Ok(Service::Shipped(Box::new(shipped.clone())));
        }
        match self.get(name) {
            Ok(entry) => Ok(Service::Running(entry)),
            Err(error) => self
                .annotation(name)
                .map(|o| Service::Pending(Box::new(o)))
                .ok_or(error),
        }
    }

    /// Is there a service called `name` (running, or on the executors)?
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name) || self.shipped_read().contains_key(name)
    }

    /// Does a service (running, or on the executors) host `function`? (Its
    /// annotation, if any, sleeps meanwhile.)
    pub(crate) fn is_served(&self, function: &str) -> bool {
        self.read()
            .values()
            .any(|entry| entry.region.hosts(function))
            || self
                .shipped_read()
                .values()
                .any(|shipped| shipped.hosts(function))
    }

    fn shipped_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ShippedService>> {
        self.shipped.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn shipped_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ShippedService>> {
        self.shipped.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The services that run on the executors only, by name.
    pub(crate) fn shipped(&self) -> Vec<(String, ShippedService)> {
        self.shipped_read()
            .iter()
            .map(|(name, shipped)| (name.clone(), shipped.clone()))
            .collect()
    }

    /// Adds or replaces a service that runs on the executors only.
    pub(crate) fn insert_shipped(&self, name: String, shipped: ShippedService) {
        self.shipped_write().insert(name, shipped);
    }

    /// Removes a service that runs on the executors only.
    pub(crate) fn remove_shipped(&self, name: &str) -> Option<ShippedService> {
        self.shipped_write().remove(name)
    }

    /// Every service, by name.
    pub(crate) fn entries(&self) -> Vec<ServiceEntry> {
        self.read().values().cloned().collect()
    }

    /// Adds or replaces a service.
    pub(crate) fn insert(&self, name: String, entry: ServiceEntry) {
        self.write().insert(name, entry);
    }

    /// Gives a service a new client (after its options changed), which
    /// goes on counting where the old one stopped.
    pub(crate) fn set_client(&self, name: &str, client: ServiceClient) {
        if let Some(entry) = self.write().get_mut(name) {
            entry.client = client.counting_with(&entry.client);
        }
    }

    /// Removes a service; new queries no longer reach it.
    pub(crate) fn remove(&self, name: &str) -> Option<ServiceEntry> {
        self.write().remove(name)
    }

    /// Marks `function` as heavy: its first call starts an implicit service
    /// with `options`.
    pub(crate) fn annotate(&self, function: impl Into<String>, options: ServiceOptions) {
        self.annotations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(function.into(), options);
    }

    /// The implicit service options of `function`, if it is annotated.
    pub(crate) fn annotation(&self, function: &str) -> Option<ServiceOptions> {
        self.annotations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(function)
            .cloned()
    }

    /// Every annotation, by function name.
    pub(crate) fn annotations(&self) -> Vec<(String, ServiceOptions)> {
        self.annotations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(f, o)| (f.clone(), o.clone()))
            .collect()
    }

    /// Removes the annotation of `function`: it runs in-process again.
    pub(crate) fn remove_annotation(&self, function: &str) -> Option<ServiceOptions> {
        self.annotations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(function)
    }
}

impl ServiceDirectory for ServiceCatalog {
    fn service_of(&self, function: &str) -> Option<ServiceRef> {
        let running = self
            .read()
            .iter()
            .find(|(_, entry)| entry.region.hosts(function))
            .map(|(name, entry)| {
                let service =
                    ServiceRef::new(name, entry.client.options().load_balance.to_string());
                // what a plan shipped to a Ballista cluster carries
                #[cfg(feature = "ballista")]
                let service =
                    service.with_definition(ServiceDefinition::of(&entry.region).to_text());
                service
            });
        running.or_else(|| {
            let shipped = self.shipped_read();
            let (name, shipped) = shipped
                .iter()
                .find(|(_, shipped)| shipped.hosts(function))?;
            let service = ServiceRef::new(name, shipped.options.load_balance.to_string());
            #[cfg(feature = "ballista")]
            let service = service.with_definition(
                ServiceDefinition::new(name, &shipped.functions, &[], &shipped.options).to_text(),
            );
            Some(service)
        })
    }
}

impl TargetSource for ServiceCatalog {
    /// The session's own service, whatever its placement.
    fn target(&self, service: &ServiceRef) -> Result<Target, DataFusionError> {
        let name = &service.name;
        self.get(name)
            .map(|entry| Target::Client(entry.client))
            .map_err(|error| {
                if self.shipped_read().contains_key(name) {
                    return error;
                }
                DataFusionError::Plan(format!(
                    "RPC service '{name}' was dropped while this query was planned; run the \
                     query again"
                ))
            })
    }
}
