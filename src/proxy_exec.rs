//! `RpcProxyExec`: the operator that sends a plan's calls to their service.
//!
//! The physical form of the planner's `RpcProxy` node. Per input partition
//! it coalesces small batches and slices big ones into requests of
//! `batch_size` rows (and at most `max_batch_bytes`), sends only the
//! arguments of each call, keeps up to `max_in_flight` requests outstanding,
//! and emits each request's rows with the results appended, in input order.
//! It pulls input only when a request slot is free, so a slow service slows
//! the query instead of filling memory. [`RpcQueryPlanner`] is the session's
//! query planner: DataFusion's own, with the proxy added.
//!
//! `EXPLAIN ANALYZE` shows its metrics: `requests`, `retries`, `errors` (rows
//! answered NULL under `on_error = 'null'`), `in_flight_time` (summed time
//! of requests on the wire) and `wait_time` (time the output waited for an
//! answer while requests were out).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::equivalence::ProjectionMapping;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{Stream, StreamExt, TryFutureExt, stream};
use rpcop_planner::RpcProxy;

use crate::catalog::ServiceCatalog;
use crate::client::{ServiceClient, slices};
use crate::protocol::scalar_argument;

/// An argument of a call: a column of the input, or a constant.
#[derive(Debug, Clone)]
enum Argument {
    Column(usize, FieldRef),
    Constant(ScalarValue),
}

/// One call the operator sends per request.
#[derive(Debug, Clone)]
struct Call {
    function: String,
    arguments: Vec<Argument>,
    result: FieldRef,
}

impl Call {
    /// The argument batch of this call for the rows of `request`.
    fn arguments(&self, request: &RecordBatch) -> Result<RecordBatch> {
        let rows = request.num_rows();
        let mut fields = Vec::with_capacity(self.arguments.len());
        let mut columns = Vec::with_capacity(self.arguments.len());
        for (i, argument) in self.arguments.iter().enumerate() {
            match argument {
                Argument::Column(index, field) => {
                    fields.push(Field::new(
                        format!("arg{i}"),
                        field.data_type().clone(),
                        true,
                    ));
                    columns.push(Arc::clone(request.column(*index)));
                }
                Argument::Constant(value) => {
                    let field = Field::new(format!("arg{i}"), value.data_type(), true);
                    fields.push(scalar_argument(&field));
                    columns.push(value.to_array_of_size(rows)?);
                }
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arguments: Vec<String> = self
            .arguments
            .iter()
            .map(|a| match a {
                Argument::Column(index, field) => format!("{}@{index}", field.name()),
                Argument::Constant(value) => value.to_string(),
            })
            .collect();
        write!(f, "{}({})", self.function, arguments.join(", "))
    }
}

/// Sends calls of one service for each row of its input (see the module
/// documentation).
#[derive(Debug)]
pub struct RpcProxyExec {
    input: Arc<dyn ExecutionPlan>,
    client: ServiceClient,
    calls: Arc<[Call]>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RpcProxyExec {
    fn try_new(
        input: Arc<dyn ExecutionPlan>,
        client: ServiceClient,
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
        Ok(Self {
            input,
            client,
            calls,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The service the operator calls.
    pub fn service(&self) -> &str {
        self.client.service()
    }
}

impl DisplayAs for RpcProxyExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let calls: Vec<String> = self.calls.iter().map(Call::to_string).collect();
        let options = self.client.options();
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

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // the calls are sent, not evaluated here: no physical expressions
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
            self.client.clone(),
            Arc::clone(&self.calls),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metrics = ProxyMetrics::new(&self.metrics, partition);
        let options = self.client.options();
        let requests = requests(input, options.batch_size, options.max_batch_bytes);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let schema = self.schema();
        let (client, calls) = (self.client.clone(), Arc::clone(&self.calls));
        let answered = {
            let (in_flight, metrics, schema) =
                (Arc::clone(&in_flight), metrics.clone(), Arc::clone(&schema));
            requests
                .map(move |request| {
                    let (client, calls) = (client.clone(), Arc::clone(&calls));
                    let (in_flight, metrics, schema) = (Arc::clone(&in_flight), metrics.clone(), Arc::clone(&schema));
                    async move { answer(request?, &client, &calls, &in_flight, &metrics, schema).await }
                })
                .buffered(options.max_in_flight)
        };
        let output = Waiting {
            inner: Box::pin(answered),
            in_flight,
            wait_time: metrics.wait_time.clone(),
            since: None,
        }
        .map(move |batch| Ok(batch?.record_output(&metrics.baseline)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// Sends every call of one request and appends the results to its rows.
async fn answer(
    request: RecordBatch,
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
        let arguments = call.arguments(&request);
        async move {
            let arguments = arguments?;
            client
                .call_as(&call.function, &arguments, call.result.data_type())
                .map_err(datafusion::error::DataFusionError::from)
                .await
        }
    }))
    .await;
    in_flight.fetch_sub(1, Ordering::Relaxed);
    metrics.in_flight_time.add_elapsed(started);
    let mut columns = request.columns().to_vec();
    for (result, report) in answers? {
        metrics.requests.add(1);
        metrics
            .retries
            .add(usize::try_from(report.retries).unwrap_or(usize::MAX));
        if report.nulled {
            metrics.errors.add(rows);
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
struct ProxyMetrics {
    baseline: BaselineMetrics,
    requests: Count,
    retries: Count,
    errors: Count,
    in_flight_time: Time,
    wait_time: Time,
}

impl ProxyMetrics {
    fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        Self {
            baseline: BaselineMetrics::new(metrics, partition),
            requests: MetricBuilder::new(metrics).counter("requests", partition),
            retries: MetricBuilder::new(metrics).counter("retries", partition),
            errors: MetricBuilder::new(metrics).counter("errors", partition),
            in_flight_time: MetricBuilder::new(metrics).subset_time("in_flight_time", partition),
            wait_time: MetricBuilder::new(metrics).subset_time("wait_time", partition),
        }
    }
}

/// The input cut into requests: small batches coalesced, big ones sliced,
/// to `rows` rows and about `bytes` bytes each.
fn requests(
    input: SendableRecordBatchStream,
    rows: usize,
    bytes: usize,
) -> impl Stream<Item = Result<RecordBatch>> + Send {
    let schema = input.schema();
    // a batch without columns (a call of constants only) has nothing to copy
    let coalescer = (!schema.fields().is_empty()).then(|| {
        BatchCoalescer::new(schema, rows).with_biggest_coalesce_batch_size(Some(rows / 2))
    });
    let state = (Some(input), coalescer, VecDeque::<RecordBatch>::new());
    stream::unfold(
        state,
        move |(mut input, mut coalescer, mut ready)| async move {
            loop {
                if let Some(request) = ready.pop_front() {
                    return Some((Ok(request), (input, coalescer, ready)));
                }
                let stream = input.as_mut()?;
                let pushed = match stream.next().await {
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => match coalescer.as_mut() {
                        Some(c) => c.push_batch(batch),
                        None => {
                            ready.extend(slices(&batch, rows, bytes));
                            continue;
                        }
                    },
                    Some(Err(error)) => return Some((Err(error), (None, coalescer, ready))),
                    None => {
                        input = None;
                        match coalescer.as_mut() {
                            Some(c) => c.finish_buffered_batch(),
                            None => continue,
                        }
                    }
                };
                if let Err(error) = pushed {
                    return Some((Err(error.into()), (None, coalescer, ready)));
                }
                if let Some(c) = coalescer.as_mut() {
                    while let Some(batch) = c.next_completed_batch() {
                        ready.extend(slices(&batch, rows, bytes));
                    }
                }
            }
        },
    )
}

/// Adds to `wait_time` the time the output is pending while requests are out.
struct Waiting<S> {
    inner: Pin<Box<S>>,
    in_flight: Arc<AtomicUsize>,
    wait_time: Time,
    since: Option<Instant>,
}

impl<S: Stream> Stream for Waiting<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = this.inner.as_mut().poll_next(cx);
        match poll {
            Poll::Pending => {
                if this.since.is_none() && this.in_flight.load(Ordering::Relaxed) > 0 {
                    this.since = Some(Instant::now());
                }
            }
            Poll::Ready(_) => {
                if let Some(since) = this.since.take() {
                    this.wait_time.add_elapsed(since);
                }
            }
        }
        poll
    }
}

/// Plans `RpcProxy` nodes as [`RpcProxyExec`], with the client of the
/// service from the session's catalog.
#[derive(Debug)]
pub struct RpcProxyPlanner {
    catalog: Arc<ServiceCatalog>,
}

impl RpcProxyPlanner {
    /// A planner taking clients from `catalog`.
    pub fn new(catalog: Arc<ServiceCatalog>) -> Self {
        Self { catalog }
    }
}

#[async_trait]
impl ExtensionPlanner for RpcProxyPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(proxy) = node.as_any().downcast_ref::<RpcProxy>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return internal_err!("RpcProxy takes one input");
        };
        let service = &proxy.service().name;
        let Ok(entry) = self.catalog.get(service) else {
            return plan_err!(
                "RPC service '{service}' was dropped while this query was planned; run the query again"
            );
        };
        let input_schema = proxy.input().schema();
        let calls = proxy
            .calls()
            .iter()
            .map(|call| {
                let arguments = call
                    .args
                    .iter()
                    .map(|arg| match arg {
                        Expr::Column(column) => {
                            let index = input_schema.index_of_column(column)?;
                            Ok(Argument::Column(
                                index,
                                Arc::clone(input_schema.field(index)),
                            ))
                        }
                        Expr::Literal(value, _) => Ok(Argument::Constant(value.clone())),
                        other => {
                            internal_err!("RpcProxy argument {other} is not a column or literal")
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (_, result) = proxy
                    .schema()
                    .qualified_field_with_unqualified_name(&call.name)?;
                Ok(Call {
                    function: call.function.clone(),
                    arguments,
                    result: Arc::clone(result),
                })
            })
            .collect::<Result<Arc<[Call]>>>()?;
        Ok(Some(Arc::new(RpcProxyExec::try_new(
            Arc::clone(input),
            entry.client,
            calls,
        )?)))
    }
}

/// DataFusion's physical planner with [`RpcProxyPlanner`] added.
#[derive(Debug)]
pub struct RpcQueryPlanner {
    catalog: Arc<ServiceCatalog>,
}

impl RpcQueryPlanner {
    /// A query planner whose proxies take clients from `catalog`.
    pub fn new(catalog: Arc<ServiceCatalog>) -> Self {
        Self { catalog }
    }
}

#[async_trait]
impl QueryPlanner for RpcQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(RpcProxyPlanner::new(
            Arc::clone(&self.catalog),
        ))])
        .create_physical_plan(logical_plan, session)
        .await
    }
}
