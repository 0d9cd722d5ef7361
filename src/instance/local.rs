//! Instances serving in this process, reached without the network.
//!
//! While an instance serves, it is registered here under its address. A
//! caller in the same process (a query reaching a `thread`-isolated
//! service) finds it with [`LocalInstance::find`] and hands it record
//! batches directly, with no IPC encoding and no socket; the instance
//! evaluates them exactly as it evaluates a Flight request, on its own
//! evaluation threads, with the same concurrency, counters and caught panics.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use tonic::Status;

use super::host::Host;

/// The instances serving in this process, by address.
static LOCAL: LazyLock<Mutex<HashMap<String, LocalInstance>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// An instance serving in this process (see the module documentation).
#[derive(Clone)]
pub(crate) struct LocalInstance {
    host: Arc<Host>,
}

impl std::fmt::Debug for LocalInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalInstance").finish_non_exhaustive()
    }
}

impl LocalInstance {
    /// The instance serving on `address` (`http://host:port`) in this
    /// process, if there is one.
    pub(crate) fn find(address: &str) -> Option<Self> {
        LOCAL
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(address)
            .cloned()
    }

    /// Evaluates `function` on `arguments`. A draining or stopped instance
    /// answers `UNAVAILABLE`, as its Flight server would.
    pub(crate) async fn call(
        &self,
        function: &str,
        arguments: RecordBatch,
    ) -> Result<ArrayRef, Status> {
        if self.host.counters.is_draining() {
            return Err(Status::unavailable(
                "instance is draining: it takes no new request; send to another instance",
            ));
        }
        let function = self.host.function(function)?.clone();
        // straight onto the instance's evaluation threads: no hop through
        // its I/O worker
        self.host
            .evaluate(self.host.receive(), function, None, arguments)
            .await
            .map(|(_, array)| array)
    }
}

/// While an instance serves: keeps it registered. When it stops: takes it
/// out and stops its evaluation threads (queued requests answer
/// `UNAVAILABLE`).
pub(crate) struct Serving {
    address: String,
    host: Arc<Host>,
}

impl Serving {
    pub(crate) fn new(address: String, host: &Arc<Host>) -> Self {
        LOCAL.lock().unwrap_or_else(PoisonError::into_inner).insert(
            address.clone(),
            LocalInstance {
                host: Arc::clone(host),
            },
        );
        Self {
            address,
            host: Arc::clone(host),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.host.evaluator.stop();
        let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
        // a newer instance may have taken the address meanwhile: leave it
        if local
            .get(&self.address)
            .is_some_and(|i| Arc::ptr_eq(&i.host, &self.host))
        {
            local.remove(&self.address);
        }
    }
}
