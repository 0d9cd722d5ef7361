//! Reaching one instance: a [`Connection`] sends a request by the cheapest
//! way the instance allows.
//!
//! An instance serving in this process (a `thread` instance, with
//! `transport = 'auto'`) is handed the batch directly: no IPC encoding, no
//! socket. Any other is reached over Flight, on one persistent `DoExchange`
//! per function (`exchange`), multiplexed by sequence number; a Flight UDF
//! server of another protocol, on an exchange per request in flight
//! (`udf_server`). Either way an
//! attempt fails with a [`Failure`] that tells the client whether another
//! instance could do better.

mod exchange;
mod failure;
mod udf_server;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::instance::LocalInstance;
use crate::options::Protocol;
use crate::wire::FlightClient;
use exchange::{Exchange, lock};
pub(crate) use failure::{Failure, MAX_COLLATERAL_RESENDS, failure_of};
use udf_server::UdfServer;

/// A connection to one instance and its exchanges, one per function.
pub(crate) struct Connection {
    /// The instance's member id.
    pub(crate) id: u64,
    /// The region slot it fills.
    pub(crate) slot: usize,
    /// Its address, `http://host:port`.
    pub(crate) address: String,
    /// A Flight client of it, for the wire and for `GetFlightInfo`.
    pub(crate) client: FlightClient,
    /// The instance itself, when it serves in this process and the
    /// service's transport allows reaching it directly.
    local: Option<LocalInstance>,
    /// The server, when it speaks another protocol than rpcop's.
    udf_server: Option<UdfServer>,
    /// Requests outstanding on it from this client.
    pub(crate) outstanding: AtomicUsize,
    exchanges: Mutex<HashMap<String, Arc<Exchange>>>,
}

impl Connection {
    /// A connection to the instance `id` at `address`, which speaks
    /// `protocol`; `direct` allows the in-process hand-off when the
    /// instance serves in this process.
    pub(crate) fn new(
        id: u64,
        slot: usize,
        address: &str,
        client: FlightClient,
        direct: bool,
        protocol: Protocol,
    ) -> Self {
        let udf_server = (!protocol.is_rpcop()).then(|| UdfServer::new(client.clone(), address));
        Self {
            id,
            slot,
            address: address.to_string(),
            client,
            local: direct.then(|| LocalInstance::find(address)).flatten(),
            udf_server,
            outstanding: AtomicUsize::new(0),
            exchanges: Mutex::new(HashMap::new()),
        }
    }

    /// Evaluates `function` on `arguments` on this instance, as request
    /// `seq` of its exchange; one value per argument row is the caller's to
    /// check.
    pub(crate) async fn evaluate(
        &self,
        function: &str,
        arguments: &RecordBatch,
        seq: u64,
    ) -> Result<ArrayRef, Failure> {
        if let Some(server) = &self.udf_server {
            return server.evaluate(function, arguments).await;
        }
        match &self.local {
            // handed over in-process: the array itself comes back
            Some(local) => local
                .call(function, arguments.clone())
                .await
                .map_err(|status| failure_of(&status, &self.address)),
            None => {
                let exchange = self.exchange(function, arguments.schema_ref());
                let answer = exchange.request(seq, arguments).await?;
                match answer.columns() {
                    [column] => Ok(Arc::clone(column)),
                    columns => Err(Failure::Retry(format!(
                        "{}: answered {} columns; expected one",
                        self.address,
                        columns.len()
                    ))),
                }
            }
        }
    }

    /// The open exchange for `function` and arguments of `schema`, or a
    /// new one (the old one ends once its requests are answered).
    fn exchange(&self, function: &str, schema: &SchemaRef) -> Arc<Exchange> {
        let mut exchanges = lock(&self.exchanges);
        match exchanges.get(function) {
            Some(exchange) if exchange.serves(schema) => Arc::clone(exchange),
            _ => {
                let exchange = Exchange::open(&self.client, &self.address, function, schema);
                exchanges.insert(function.to_string(), Arc::clone(&exchange));
                exchange
            }
        }
    }
}
