//! Hosted calls of constants, evaluated once through their services while
//! a statement is planned, as DataFusion evaluates calls of constants
//! in-process (see `rpcop_planner`'s `constant_calls`).
//!
//! Before DataFusion optimizes a statement that has such calls, the session
//! analyzes it (so arguments have their coerced types), sends each call as
//! one row of constant arguments, and puts the answer in its place as a
//! literal with the metadata of the call's field, exactly as DataFusion's
//! constant folding does; then the calls that took those literals, until
//! none is left. The calls of one round go at once. A call that fails, or
//! that `on_error = 'null'` answers NULL because it failed, stays in the
//! plan: the query evaluates it and reports its error, as DataFusion leaves
//! a call whose folding failed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{FieldMetadata, ScalarFunction};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_expr::create_physical_expr;
use rpcop_planner::{ConstantCall, constant_calls, has_constant_calls, replace_calls};

use super::catalog::ServiceCatalog;
use crate::exec::{Call, Rows};

/// `plan` with its hosted calls of constants replaced by their values (see
/// the module documentation). A plan without such calls, or one the
/// analyzer rejects (DataFusion then reports why), is returned as it is.
pub(crate) async fn fold_constants(
    plan: LogicalPlan,
    state: &SessionState,
    catalog: &ServiceCatalog,
) -> Result<LogicalPlan> {
    if !has_constant_calls(&plan, catalog) {
        return Ok(plan);
    }
    let options = state.config_options();
    let Ok(mut plan) = state
        .analyzer()
        .execute_and_check(plan.clone(), options, |_, _| {})
    else {
        return Ok(plan);
    };
    let mut context = SimplifyContext::builder().with_config_options(Arc::clone(options));
    if let Some(start) = state.execution_props().query_execution_start_time {
        context = context.with_query_execution_start_time(Some(start));
    }
    let context = context.build();
    let mut failed = HashSet::new();
    loop {
        let calls = constant_calls(&plan, catalog, &context, &failed)?;
        if calls.is_empty() {
            return Ok(plan);
        }
        let values =
            futures::future::join_all(calls.iter().map(|call| value(call, state, catalog))).await;
        let mut folded = HashMap::new();
        for (call, value) in calls.into_iter().zip(values) {
            if let Some(value) = value {
                folded.insert(call.call, value);
            } else {
                failed.insert(call.call);
            }
        }
        plan = replace_calls(plan, &folded)?;
    }
}

/// The value of one call of constants, through its service, as a literal;
/// `None` if the call failed.
async fn value(
    call: &ConstantCall,
    state: &SessionState,
    catalog: &ServiceCatalog,
) -> Option<Expr> {
    let client = catalog.get(&call.service.name).ok()?.client;
    let empty = DFSchema::empty();
    // the field DataFusion plans for the call of these literals (some
    // functions' types follow a literal's value: `round(d, -1)`)
    let with_literals = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::clone(&call.udf),
        call.args.clone(),
    ));
    let (_, field) = with_literals.to_field(&empty).ok()?;
    let props = state.execution_props();
    let planning = PhysicalPlanningContext::default();
    let args = call
        .args
        .iter()
        .map(|arg| create_physical_expr(arg, &empty, props, &planning))
        .collect::<Result<Vec<_>>>()
        .ok()?;
    let no_columns = Schema::empty();
    let one = Call::new(
        call.function.clone(),
        args,
        None,
        Arc::clone(&field),
        &no_columns,
        state.config_options(),
    )
    .ok()?;
    let row = RecordBatch::try_new_with_options(
        Arc::new(no_columns),
        Vec::new(),
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .ok()?;
    let arguments = one.arguments(&row, &Rows::All).ok()?;
    let (result, report) = client
        .call_as(&call.function, &arguments, field.data_type())
        .await
        .ok()?;
    if report.nulled || result.len() != 1 {
        return None;
    }
    // as DataFusion's constant folding makes the literal
    let value = match result.data_type() {
        DataType::List(_) => ScalarValue::List(Arc::new(result.as_list::<i32>().clone())),
        DataType::LargeList(_) => ScalarValue::LargeList(Arc::new(result.as_list::<i64>().clone())),
        _ => ScalarValue::try_from_array(&result, 0).ok()?,
    };
    let metadata = (!field.metadata().is_empty()).then(|| FieldMetadata::from(field.metadata()));
    Some(Expr::Literal(value, metadata))
}
