//! What an instance hosts and how it evaluates one request: its loaded
//! functions, its counters, and its evaluation threads. The Flight server
//! and the in-process hand-off both evaluate through a [`Host`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::config::ConfigOptions;
use tonic::Status;

use super::counters::{Counters, InFlight, Outstanding};
use super::evaluator::{Evaluator, Unfinished};
use crate::error::FunctionError;
use crate::function::LoadedFunction;
use crate::wire::{InstanceStats, has_session_options, session_options, with_sequence};

/// The functions of one instance and the threads that evaluate them.
pub(crate) struct Host {
    pub(crate) functions: BTreeMap<String, LoadedFunction>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) evaluator: Evaluator,
    /// Requests evaluated at once.
    pub(crate) threads: usize,
    /// DataFusion's default options: those of a request that carries none.
    pub(crate) config: Arc<ConfigOptions>,
    /// The options of the last request that carried the caller's session
    /// options, and their metadata: a caller's requests carry the same.
    pub(crate) session: Mutex<Option<SessionOptions>>,
}

/// A caller's session options as its requests' schema metadata carries
/// them, and as set over DataFusion's defaults.
pub(crate) type SessionOptions = (HashMap<String, String>, Arc<ConfigOptions>);

impl Host {
    /// The function `name`, or `NOT_FOUND` naming the ones hosted.
    pub(crate) fn function(&self, name: &str) -> Result<&LoadedFunction, Status> {
        self.functions.get(name).ok_or_else(|| {
            let hosted: Vec<&str> = self.functions.keys().map(String::as_str).collect();
            Status::not_found(format!(
                "unknown function '{name}': this instance hosts [{}]",
                hosted.join(", ")
            ))
        })
    }

    /// The instance's counters, and how long its oldest running request has
    /// run (the `stats` action).
    pub(crate) fn stats(&self) -> InstanceStats {
        let longest = self.evaluator.longest_running().as_millis();
        InstanceStats {
            longest_running_ms: u64::try_from(longest).unwrap_or(u64::MAX),
            pid: Some(std::process::id()),
            ..self.counters.snapshot()
        }
    }

    /// Counts a request as received: outstanding until it is answered or
    /// dropped (see [`Outstanding`]).
    pub(crate) fn receive(&self) -> Outstanding {
        Outstanding::enter(&self.counters)
    }

    /// Evaluates one request (`received`: its count, from
    /// [`Self::receive`]) on the instance's evaluation threads; an error
    /// names the request's sequence number, if it has one.
    pub(crate) async fn evaluate(
        &self,
        mut received: Outstanding,
        function: LoadedFunction,
        seq: Option<u64>,
        arguments: RecordBatch,
    ) -> Result<(Option<u64>, ArrayRef), Status> {
        let rows = arguments.num_rows() as u64;
        let config = match self.options(arguments.schema_ref().metadata()) {
            Ok(config) => config,
            Err(status) => {
                received.taken();
                return Err(with_sequence(status, seq));
            }
        };
        let counters = Arc::clone(&self.counters);
        let named = function.clone();
        // counted where the work is done: a caller that stopped waiting
        // (its timeout) does not stop the evaluation or its count. The
        // request stays outstanding while it is queued, even once its
        // caller gave up, and is dropped (counted cancelled) with the work
        let outcome = self
            .evaluator
            .run(move || {
                received.taken();
                let _received = received;
                let _in_flight = InFlight::enter(&counters.in_flight);
                let result = function.invoke(&arguments, &config);
                let counter = match &result {
                    Ok(_) => {
                        counters.rows.fetch_add(rows, Ordering::Relaxed);
                        &counters.requests
                    }
                    Err(_) => &counters.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                result
            })
            .await;
        let result = match outcome {
            Ok(Ok(array)) => Ok(array),
            Ok(Err(error)) => Err(function_status(&error)),
            Err(Unfinished::Stopped) => Err(Status::unavailable(
                "the instance stopped; send to another instance",
            )),
            Err(Unfinished::Panicked(message)) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                // the function's own failure on these rows, as an error is:
                // any instance would panic the same, so it is not retried
                Err(Status::invalid_argument(format!(
                    "function '{}' panicked: {message}",
                    named.name()
                )))
            }
        };
        result
            .map(|array| (seq, array))
            .map_err(|status| with_sequence(status, seq))
    }

    /// The options a request's functions run with: the caller's session
    /// options its schema metadata carries, over DataFusion's defaults.
    fn options(&self, metadata: &HashMap<String, String>) -> Result<Arc<ConfigOptions>, Status> {
        if !has_session_options(metadata) {
            return Ok(Arc::clone(&self.config));
        }
        let mut last = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, options)) = last.as_ref()
            && seen == metadata
        {
            return Ok(Arc::clone(options));
        }
        let options = Arc::new(session_options(metadata).map_err(Status::invalid_argument)?);
        *last = Some((metadata.clone(), Arc::clone(&options)));
        Ok(options)
    }
}

/// The Flight status of a function's error.
fn function_status(error: &FunctionError) -> Status {
    match error {
        // answers any instance would give: not retried
        FunctionError::Arguments { .. } | FunctionError::Invoke { .. } => {
            Status::invalid_argument(error.to_string())
        }
        FunctionError::Unknown { .. } => Status::not_found(error.to_string()),
        FunctionError::Transient { .. } => Status::unavailable(error.to_string()),
        FunctionError::Load { .. } => Status::internal(error.to_string()),
    }
}
