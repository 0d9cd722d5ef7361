//! The catalog of a session's running services.
//!
//! One entry per service: its region, a client with its options, and the
//! result field of each function as the service describes it. The session's
//! DDL writes it; `rpc_call` and users' own UDFs read it while queries plan
//! and run, so it is behind a (briefly held) `RwLock`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use datafusion::arrow::datatypes::FieldRef;
use datafusion::error::DataFusionError;

use crate::client::ServiceClient;
use crate::region::ServiceRegion;

/// A running service.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Its instances.
    pub region: Arc<ServiceRegion>,
    /// A client with the service's options.
    pub client: ServiceClient,
    /// Result field by function name, as the service describes it
    /// (`GetFlightInfo`); a function without a fixed signature is absent.
    pub results: BTreeMap<String, FieldRef>,
}

/// The running services of a session, by name.
#[derive(Debug, Default)]
pub struct ServiceCatalog {
    services: RwLock<BTreeMap<String, ServiceEntry>>,
}

impl ServiceCatalog {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ServiceEntry>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ServiceEntry>> {
        self.services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The service `name`, or an error that lists the services there are.
    pub fn get(&self, name: &str) -> Result<ServiceEntry, DataFusionError> {
        let services = self.read();
        services.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            DataFusionError::Plan(format!(
                "no RPC service named '{name}'; services: [{}]; create it first with \
                 CREATE RPC SERVICE {name} FOR FUNCTION ... (SHOW RPC SERVICES lists them)",
                known.join(", ")
            ))
        })
    }

    /// Is there a service called `name`?
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The service that hosts `function`, if one does.
    pub fn host_of(&self, function: &str) -> Option<String> {
        self.read()
            .iter()
            .find(|(_, entry)| entry.region.functions().iter().any(|f| f == function))
            .map(|(name, _)| name.clone())
    }

    /// Every service, by name.
    pub fn entries(&self) -> Vec<ServiceEntry> {
        self.read().values().cloned().collect()
    }

    /// Adds or replaces a service.
    pub fn insert(&self, name: String, entry: ServiceEntry) {
        self.write().insert(name, entry);
    }

    /// Gives a service a new client (after its options changed).
    pub fn set_client(&self, name: &str, client: ServiceClient) {
        if let Some(entry) = self.write().get_mut(name) {
            entry.client = client;
        }
    }

    /// Removes a service; new queries no longer reach it.
    pub fn remove(&self, name: &str) -> Option<ServiceEntry> {
        self.write().remove(name)
    }
}
