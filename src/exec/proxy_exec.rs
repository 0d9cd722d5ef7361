//! `RpcProxyExec`: the operator that sends a plan's calls to their service.
//!
//! The physical form of the planner's `RpcProxy` node. Per input partition
//! it coalesces small batches and slices big ones into requests of
//! `batch_size` rows (and at most `max_batch_bytes`), sends only the
//! arguments of each call, keeps up to `max_in_flight` requests outstanding,
//! and emits each request's rows with the results appended, in input order.
//! It pulls input only when a request slot is free, so a slow service slows
//! the query instead of filling memory.
//!
//! `EXPLAIN ANALYZE` shows its metrics: `requests`, `retries`, `errors` (rows
//! answered NULL under `on_error = 'null'`), `in_flight_time` (summed time
//! of requests on the wire), `wait_time` (time the output waited for an
//! answer while requests were out) and `instances` (the most ready
//! instances its requests saw: an autoscaled service changes size).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use datafusion::arrow::array::new_empty_array;
use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::equivalence::ProjectionMapping;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet,
    RecordOutput, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{Stream, StreamExt, TryStreamExt};

use super::call::{Call, Rows};
use super::requests::{Waiting, requests};
use super::target::Target;
use crate::client::ServiceClient;
use crate::error::RpcError;

/// Sends calls of one service for each row of its input (see the module
/// documentation).
#[derive(Debug)]
pub(crate) struct RpcProxyExec {
    input: Arc<dyn ExecutionPlan>,
    target: Target,
    calls: Arc<[Call]>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// The most ready instances the query's requests saw, over all
    /// partitions (an autoscaled service changes size while it runs).
    instances: Gauge,
}

impl RpcProxyExec {
    pub(crate) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        target: Target,
        calls: Arc<[Call]>,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let fields: Vec<FieldRef> = input_schema
            .fields()
            .iter()
            .cloned()
            .chain(calls.iter().map(|c| Arc::clone(&c.result)))
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input_schema.metadata().clone(),
        ));
        // the input's columns pass through unchanged, so do its orderings
        let passthrough = input_schema.fields().iter().enumerate().map(|(i, f)| {
            (
                Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                f.name().clone(),
            )
        });
        let mapping = ProjectionMapping::try_new(passthrough, &input_schema)?;
        let properties = PlanProperties::new(
            input.equivalence_properties().project(&mapping, schema),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        let metrics = ExecutionPlanMetricsSet::new();
        let instances = MetricBuilder::new(&metrics).global_gauge("instances");
        Ok(Self {
            input,
            target,
            calls,
            properties: Arc::new(properties),
            metrics,
            instances,
        })
    }

    /// The service the operator calls.
    pub(crate) fn service(&self) -> &str {
        self.target.service()
    }

    /// How it reaches the service.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))] // a plan codec's
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The calls it sends, in the order of their output columns.
    #[cfg_attr(not(feature = "ballista"), allow(dead_code))] // a plan codec's
    pub(crate) fn calls(&self) -> &[Call] {
        &self.calls
    }
}

impl DisplayAs for RpcProxyExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let calls: Vec<String> = self.calls.iter().map(Call::to_string).collect();
        let options = self.target.options();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "RpcProxyExec: service={}, policy={}, calls=[{}], batch_size={}, max_in_flight={}",
                self.service(),
                options.load_balance,
                calls.join(", "),
                options.batch_size,
                options.max_in_flight
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "service={}", self.service())?;
                writeln!(f, "calls={}", calls.join(", "))
            }
        }
    }
}

impl ExecutionPlan for RpcProxyExec {
    fn name(&self) -> &str {
        "RpcProxyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// Exactly one output row per input row: optimizers (DataFusion's, and
    /// a distributed engine's) keep row counts across it.
    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    /// The calls' arguments and guards (the calls themselves are sent, not
    /// evaluated here).
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for call in self.calls.iter() {
            for expr in call.arguments.iter().chain(&call.guard) {
                if f(expr)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("RpcProxyExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(
            children.swap_remove(0),
            self.target.clone(),
            Arc::clone(&self.calls),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metrics = ProxyMetrics::new(&self.metrics, partition, self.instances.clone());
        let (schema, calls) = (self.schema(), Arc::clone(&self.calls));
        let output = match &self.target {
            Target::Client(client) => answers(
                input,
                client.clone(),
                calls,
                metrics,
                Arc::clone(&schema),
                partition,
            )
            .boxed(),
            // a shipped plan's service is reached (perhaps started) first
            shipped => {
                let (client, schema) = (shipped.client(), Arc::clone(&schema));
                futures::stream::once(async move {
                    let client = client.await?;
                    Ok::<_, DataFusionError>(answers(
                        input, client, calls, metrics, schema, partition,
                    ))
                })
                .try_flatten()
                .boxed()
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// A limit above the operator holds below it too (one row out per row
    /// in, in order), so the rows past it are never sent to the service.
    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// The output of one partition: the requests cut from `input`, up to
/// `max_in_flight` of them out at once, each answered by `client` and
/// emitted in input order.
fn answers(
    input: SendableRecordBatchStream,
    client: ServiceClient,
    calls: Arc<[Call]>,
    metrics: ProxyMetrics,
    schema: SchemaRef,
    partition: usize,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
    let options = client.options();
    let requests = requests(input, options.batch_size, options.request_bytes());
    let max_in_flight = options.max_in_flight;
    let in_flight = Arc::new(AtomicUsize::new(0));
    // the service's DROP waits until the query is done with it
    let open = client.open_stream();
    let answered = {
        let (in_flight, metrics) = (Arc::clone(&in_flight), metrics.clone());
        // the position of each request in the partition, for errors
        let mut next_row = 0;
        requests
            .map(move |request| {
                let (client, calls) = (client.clone(), Arc::clone(&calls));
                let (in_flight, metrics, schema) =
                    (Arc::clone(&in_flight), metrics.clone(), Arc::clone(&schema));
                let at = Position {
                    partition,
                    first_row: next_row,
                };
                next_row += request.as_ref().map_or(0, RecordBatch::num_rows);
                async move {
                    answer(request?, at, &client, &calls, &in_flight, &metrics, schema).await
                }
            })
            .buffered(max_in_flight)
    };
    Waiting {
        inner: Box::pin(answered),
        in_flight,
        wait_time: metrics.wait_time.clone(),
        since: None,
    }
    .map(move |batch| {
        let _open = &open;
        Ok(batch?.record_output(&metrics.baseline))
    })
}

/// Where a request's rows are in the operator's input.
#[derive(Debug, Clone, Copy)]
struct Position {
    partition: usize,
    first_row: usize,
}

/// Sends every call of one request (only the rows each is evaluated on)
/// and appends the results to its rows.
async fn answer(
    request: RecordBatch,
    at: Position,
    client: &ServiceClient,
    calls: &[Call],
    in_flight: &AtomicUsize,
    metrics: &ProxyMetrics,
    schema: SchemaRef,
) -> Result<RecordBatch> {
    let rows = request.num_rows();
    in_flight.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let answers = futures::future::try_join_all(calls.iter().map(|call| {
        let request = &request;
        async move {
            let selected = call.rows(request)?;
            let arguments = match &selected {
                Rows::None => None,
                rows => Some(call.arguments(request, rows)?),
            };
            let Some(arguments) = arguments else {
                return Ok((
                    call.result_column(&selected, rows, new_empty_array(call.result.data_type()))?,
                    None,
                ));
            };
            let sent = arguments.num_rows();
            let (result, report) = client
                .call_as(&call.function, &arguments, call.result.data_type())
                .await
                .map_err(|error| match error {
                    // name the rows, so that the user can find them
                    RpcError::PoisonPill { .. } | RpcError::RowTooLarge { .. } => {
                        DataFusionError::from(error).context(format!(
                            "the request held rows {}..{} of partition {} of the input of the \
                         RpcProxyExec that calls {}",
                            at.first_row,
                            at.first_row + rows,
                            at.partition,
                            call.function
                        ))
                    }
                    error => DataFusionError::from(error),
                })?;
            Ok::<_, DataFusionError>((
                call.result_column(&selected, rows, result)?,
                Some((report, sent)),
            ))
        }
    }))
    .await;
    in_flight.fetch_sub(1, Ordering::Relaxed);
    metrics.in_flight_time.add_elapsed(started);
    let mut columns = request.columns().to_vec();
    for (result, report) in answers? {
        if let Some((report, sent)) = report {
            metrics.requests.add(1);
            metrics.instances.set_max(client.ready_instances());
            metrics
                .retries
                .add(usize::try_from(report.retries).unwrap_or(usize::MAX));
            if report.nulled {
                metrics.errors.add(sent);
            }
        }
        columns.push(result);
    }
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

/// The operator's metrics for one partition.
#[derive(Debug, Clone)]
pub(crate) struct ProxyMetrics {
    baseline: BaselineMetrics,
    requests: Count,
    retries: Count,
    errors: Count,
    in_flight_time: Time,
    wait_time: Time,
    instances: Gauge,
}

impl ProxyMetrics {
    fn new(metrics: &ExecutionPlanMetricsSet, partition: usize, instances: Gauge) -> Self {
        Self {
            baseline: BaselineMetrics::new(metrics, partition),
            requests: MetricBuilder::new(metrics).counter("requests", partition),
            retries: MetricBuilder::new(metrics).counter("retries", partition),
            errors: MetricBuilder::new(metrics).counter("errors", partition),
            in_flight_time: MetricBuilder::new(metrics).subset_time("in_flight_time", partition),
            wait_time: MetricBuilder::new(metrics).subset_time("wait_time", partition),
            instances,
        }
    }
}
