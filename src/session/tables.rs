//! The services as tables: `rpc_services()` and `rpc_instances('name')`.
//!
//! `SHOW RPC SERVICES` answers with the rows of `rpc_services()` and
//! `DESCRIBE RPC SERVICE name` with those of `rpc_instances('name')`; the
//! table functions let a query filter, join or aggregate them like any
//! table. `rpc_options('name')` lists every option of a service with its
//! value, its default, what it means and what values it takes:
//!
//! ```sql
//! SELECT name, instances FROM rpc_services() WHERE kind = 'implicit';
//! SELECT count(*) FROM rpc_instances('embedder') WHERE state = 'ready';
//! SELECT option, value FROM rpc_options('embedder') WHERE value <> "default";
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::catalog::{Service, ServiceCatalog, ServiceEntry};
use crate::options::{OptionInfo, ServiceOptions};
use crate::region::{Member, MemberState};
use crate::wire::InstanceStats;

fn schema(text: &[&str], counts: &[&str]) -> SchemaRef {
    let fields = text
        .iter()
        .map(|name| Field::new(*name, DataType::Utf8, true))
        .chain(
            counts
                .iter()
                .map(|name| Field::new(*name, DataType::UInt64, true)),
        );
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

fn services_schema() -> SchemaRef {
    let columns = schema(
        &[
            "name",
            "kind",
            "functions",
            "instances",
            "isolation",
            "load_balance",
        ],
        &[
            "requests",
            "rows",
            "errors",
            "retries",
            "restarts",
            "min_instances",
            "max_instances",
        ],
    );
    let mut fields = columns.fields().to_vec();
    fields.push(Arc::new(Field::new("last_scaling", DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

/// One `rpc_services()` row after its name: text columns, counts, and the
/// autoscaler's last decision.
type ServiceRow = ([String; 5], [u64; COUNTS], Option<String>);

/// The smallest and largest sizes of a service with `options`: its bounds
/// when autoscaled, else its fixed size twice.
fn sizes(options: &ServiceOptions) -> [u64; 2] {
    let (min, max) = options
        .scaling_bounds()
        .unwrap_or((options.parallelism, options.parallelism));
    [min as u64, max as u64]
}

/// The counts of a service that has not run: none, and its sizes.
fn unused(options: &ServiceOptions) -> [u64; COUNTS] {
    let [min, max] = sizes(options);
    [0, 0, 0, 0, 0, min, max]
}

fn options_schema() -> SchemaRef {
    schema(&["option", "value", "default", "description", "takes"], &[])
}

fn instances_schema() -> SchemaRef {
    let text = |name| Field::new(name, DataType::Utf8, true);
    let count = |name| Field::new(name, DataType::UInt64, true);
    Arc::new(Schema::new(vec![
        text("instance"),
        text("address"),
        text("state"),
        count("in_flight"),
        count("requests"),
        count("rows"),
        count("errors"),
        count("restarts"),
        text("last_error"),
        count("restart_in_ms"),
    ]))
}

/// One row per service, running or pending (an annotated function whose
/// implicit service has not started yet), by name.
pub(crate) async fn services(catalog: &ServiceCatalog) -> Result<RecordBatch> {
    let mut rows: BTreeMap<String, ServiceRow> = BTreeMap::new();
    for (function, options) in catalog.annotations() {
        // an annotation sleeps while a service created by name hosts its
        // function, and wakes when that service is dropped
        if !catalog.contains(&function) && !catalog.is_served(&function) {
            let text = [
                "implicit".to_string(),
                function.clone(),
                "not started".to_string(),
                options.isolation.to_string(),
                options.load_balance.to_string(),
            ];
            rows.insert(function, (text, unused(&options), None));
        }
    }
    for (name, launching) in catalog.launching() {
        let members = Arc::clone(&launching.watch.borrow());
        let text = [
            kind(launching.implicit),
            launching.functions.join(", "),
            instances_text(&members.members, launching.wanted),
            launching.options.isolation.to_string(),
            launching.options.load_balance.to_string(),
        ];
        rows.insert(name, (text, unused(&launching.options), None));
    }
    for entry in catalog.entries() {
        rows.insert(entry.region.name().to_string(), running_row(&entry).await);
    }
    // each executor starts its own pool: none here, and no calls seen here
    for (name, shipped) in catalog.shipped() {
        let text = [
            kind(shipped.implicit),
            shipped.functions.join(", "),
            "on executors".to_string(),
            shipped.options.isolation.to_string(),
            shipped.options.load_balance.to_string(),
        ];
        rows.insert(name, (text, unused(&shipped.options), None));
    }
    let text = |i: usize| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.values().map(|(t, ..)| t[i].as_str()),
        ))
    };
    let count = |i: usize| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            rows.values().map(|(_, c, _)| c[i]),
        ))
    };
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(rows.keys()));
    let mut columns = vec![names];
    columns.extend((0..5).map(text));
    columns.extend((0..COUNTS).map(count));
    columns.push(Arc::new(StringArray::from_iter(
        rows.values().map(|(.., scaling)| scaling.as_deref()),
    )));
    Ok(RecordBatch::try_new(services_schema(), columns)?)
}

/// `ready/wanted`, and how many are starting or restarting if any are:
/// `1/2 (1 starting)`, `2/3 (1 restarting)`; instances that registered
/// from other hosts count apart: `2/2 (+1 registered)`.
fn instances_text(members: &[Member], wanted: usize) -> String {
    let count = |state| {
        members
            .iter()
            .filter(|m| m.state == state && !m.registered)
            .count()
    };
    let ready = count(MemberState::Ready);
    let guests = members
        .iter()
        .filter(|m| m.registered && m.state == MemberState::Ready)
        .count();
    let others: Vec<String> = [MemberState::Starting, MemberState::Restarting]
        .into_iter()
        .filter(|state| count(*state) > 0)
        .map(|state| format!("{} {state}", count(state)))
        .chain((guests > 0).then(|| format!("+{guests} registered")))
        .collect();
    if others.is_empty() {
        format!("{ready}/{wanted}")
    } else {
        format!("{ready}/{wanted} ({})", others.join(", "))
    }
}

/// The `kind` of a service: made for an annotated function, or by name.
fn kind(implicit: bool) -> String {
    if implicit { "implicit" } else { "explicit" }.to_string()
}

/// How many counts a `rpc_services()` row has: requests, rows, errors,
/// retries, restarts, and the smallest and largest sizes.
const COUNTS: usize = 7;

/// The `rpc_services()` row of a running service (after its name).
async fn running_row(entry: &ServiceEntry) -> ServiceRow {
    let region = &entry.region;
    let options = region.options();
    let members = region.members();
    // as this session's callers saw them, over the service's life: an
    // attempt that timed out or lost its instance (a crash), or a request
    // answered NULL under on_error = 'null', is an error though no instance
    // reported one; the instances' own counters start again with each one
    let callers = entry.client.stats();
    let [min, max] = sizes(&options);
    let counts = [
        callers.requests + callers.failures,
        callers.rows,
        callers.errors,
        callers.retries,
        region.restarts(),
        min,
        max,
    ];
    let text = [
        kind(entry.implicit),
        region.functions().join(", "),
        instances_text(&members, options.parallelism),
        if region.is_remote() {
            "remote".to_string()
        } else {
            options.isolation.to_string()
        },
        options.load_balance.to_string(),
    ];
    let scaling = region.last_scaling().map(|s| s.to_string());
    (text, counts, scaling)
}

/// One row per instance of the service `name`; none for a pending implicit
/// service, or one whose pools run on a cluster's executors.
pub(crate) async fn instances(catalog: &ServiceCatalog, name: &str) -> Result<RecordBatch> {
    let mut stats = match catalog.lookup(name)? {
        Service::Running(entry) => entry.region.stats().await,
        Service::Pending(_) | Service::Shipped(_) => Vec::new(),
    };
    stats.sort_by_key(|(member, _)| member.id);
    let text = |f: &dyn Fn(&Member) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            stats.iter().map(|(m, _)| f(m)),
        ))
    };
    let count = |f: &dyn Fn(&InstanceStats) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter(
            stats.iter().map(|(_, s)| s.as_ref().map(f)),
        ))
    };
    let restarts: ArrayRef = Arc::new(UInt64Array::from_iter_values(
        stats.iter().map(|(m, _)| u64::from(m.restarts)),
    ));
    let last_error: ArrayRef = Arc::new(StringArray::from_iter(
        stats.iter().map(|(m, _)| m.last_error.as_deref()),
    ));
    let now = std::time::Instant::now();
    let restart_in: ArrayRef = Arc::new(UInt64Array::from_iter(stats.iter().map(|(m, _)| {
        m.next_start.map(|at| {
            u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        })
    })));
    let columns = vec![
        text(&|m| m.id.to_string()),
        text(&|m| m.address.clone()),
        text(&|m| m.state.to_string()),
        count(&|s| s.in_flight),
        count(&|s| s.requests),
        count(&|s| s.rows),
        count(&|s| s.errors),
        restarts,
        last_error,
        restart_in,
    ];
    Ok(RecordBatch::try_new(instances_schema(), columns)?)
}

/// Every option of the service `name` (running or pending): its value, its
/// default and its meaning.
pub(crate) fn options(catalog: &ServiceCatalog, name: &str) -> Result<RecordBatch> {
    let options = match catalog.lookup(name)? {
        Service::Running(entry) => entry.region.options(),
        Service::Pending(options) => *options,
        Service::Shipped(shipped) => shipped.options,
    };
    let described = options.describe();
    let column = |text: &dyn Fn(&OptionInfo) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(described.iter().map(text)))
    };
    let columns = vec![
        column(&|o| o.key),
        column(&|o| &o.value),
        column(&|o| &o.default),
        column(&|o| o.doc),
        column(&|o| &o.expected),
    ];
    Ok(RecordBatch::try_new(options_schema(), columns)?)
}

/// What a [`ServiceTable`] lists.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Services,
    Instances,
    Options,
}

/// Is `provider` one of the session's listings (`rpc_services()`,
/// `rpc_instances()`, `rpc_options()`)? Only the session can scan them: a
/// Ballista session plans a query over them alone here.
#[cfg(feature = "ballista")]
pub(crate) fn is_listing(provider: &dyn TableProvider) -> bool {
    provider.is::<ServiceTable>()
}

/// A table read from the catalog when a query scans it.
#[derive(Debug)]
struct ServiceTable {
    catalog: Arc<ServiceCatalog>,
    listing: Listing,
    /// The service, for instances and options.
    service: String,
}

#[async_trait]
impl TableProvider for ServiceTable {
    fn schema(&self) -> SchemaRef {
        match self.listing {
            Listing::Services => services_schema(),
            Listing::Instances => instances_schema(),
            Listing::Options => options_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = match self.listing {
            Listing::Services => services(&self.catalog).await?,
            Listing::Instances => instances(&self.catalog, &self.service).await?,
            Listing::Options => options(&self.catalog, &self.service)?,
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// `rpc_services()`: the services of the session.
#[derive(Debug)]
pub(crate) struct RpcServices(pub(crate) Arc<ServiceCatalog>);

impl TableFunctionImpl for RpcServices {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        if !args.is_empty() {
            return plan_err!("rpc_services() takes no arguments");
        }
        Ok(Arc::new(ServiceTable {
            catalog: Arc::clone(&self.0),
            listing: Listing::Services,
            service: String::new(),
        }))
    }
}

/// `rpc_instances('name')`: the instances of one service.
#[derive(Debug)]
pub(crate) struct RpcInstances(pub(crate) Arc<ServiceCatalog>);

impl TableFunctionImpl for RpcInstances {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        service_table(&self.0, "rpc_instances", Listing::Instances, args)
    }
}

/// `rpc_options('name')`: the options of one service.
#[derive(Debug)]
pub(crate) struct RpcOptions(pub(crate) Arc<ServiceCatalog>);

impl TableFunctionImpl for RpcOptions {
    fn call(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        service_table(&self.0, "rpc_options", Listing::Options, args)
    }
}

/// The table `listing` of the service named by `args`, a missing service
/// named now rather than when the table is scanned.
fn service_table(
    catalog: &Arc<ServiceCatalog>,
    function: &str,
    listing: Listing,
    args: &[Expr],
) -> Result<Arc<dyn TableProvider>> {
    let service = match args {
        [Expr::Literal(ScalarValue::Utf8(Some(name)), _)] => name.clone(),
        _ => {
            return plan_err!(
                "{function} takes the service's name as a string: {function}('name')"
            );
        }
    };
    catalog.lookup(&service)?;
    Ok(Arc::new(ServiceTable {
        catalog: Arc::clone(catalog),
        listing,
        service,
    }))
}
