//! Filters that DataFusion pushed into a table scan and that call a hosted
//! function: taken out of the scan, so the call goes to its service.
//!
//! The rewrite runs after DataFusion pushed filters down. A filter a table
//! takes as `Inexact` (Parquet's, for pruning) stays above the scan too, so
//! the copy in the scan is dropped: left there, the scan would evaluate the
//! call in-process (with `pushdown_filters`), and a plan sent to other
//! processes would name a function they have no code for. A filter the
//! table takes as `Exact` (on a listing table's partition columns) is not
//! above the scan any more: it becomes a filter above it again, whose calls
//! the rewrite then moves; the scan returns the columns it reads (a
//! projection above drops them), and a limit pushed into the scan goes
//! above the filter.

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableScan, TableScanBuilder,
};

use crate::collect::contains_hosted_call;
use crate::directory::ServiceDirectory;

/// `plan` (a table scan) without its pushed filters that call a hosted
/// function: those the table evaluates exactly become a filter above it.
pub(crate) fn unpush_hosted_filters(
    plan: LogicalPlan,
    directory: &dyn ServiceDirectory,
) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::TableScan(mut scan) = plan else {
        return Ok(Transformed::no(plan));
    };
    let (hosted, kept): (Vec<Expr>, Vec<Expr>) = std::mem::take(&mut scan.filters)
        .into_iter()
        .partition(|filter| contains_hosted_call(directory, filter));
    scan.filters = kept;
    if hosted.is_empty() {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    let support = scan
        .source
        .supports_filters_pushdown(&hosted.iter().collect::<Vec<_>>())?;
    let exact: Vec<Expr> = hosted
        .into_iter()
        .zip(support)
        .filter(|(_, support)| *support == TableProviderFilterPushDown::Exact)
        .map(|(filter, _)| filter)
        .collect();
    let Some(predicate) = conjunction(exact) else {
        return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
    };
    above(scan, predicate).map(Transformed::yes)
}

/// `predicate` as a filter above `scan`, which returns the columns it reads
/// and no longer stops at its limit; the plan's output is the scan's.
fn above(scan: TableScan, predicate: Expr) -> Result<LogicalPlan> {
    let output: Vec<Expr> = scan
        .projected_schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let source = scan.source.schema();
    let mut projection = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..source.fields().len()).collect());
    for column in predicate.column_refs() {
        if !scan.projected_schema.has_column(column) {
            projection.push(source.index_of(&column.name)?);
        }
    }
    let widened = projection.len() != scan.projected_schema.fields().len();
    let fetch = scan.fetch;
    let scan = TableScanBuilder::new(scan.table_name, scan.source)
        .with_projection(Some(projection))
        .with_filters(scan.filters)
        .with_statistics_requests(scan.statistics_requests)
        .build()?;
    let mut plan = LogicalPlanBuilder::from(LogicalPlan::TableScan(scan)).filter(predicate)?;
    if fetch.is_some() {
        plan = plan.limit(0, fetch)?;
    }
    if widened {
        plan = plan.project(output)?;
    }
    plan.build()
}
