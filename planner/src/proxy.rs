//! The `RpcProxy` logical node: its input's columns, plus one column per call
//! of a function that a service evaluates.
//!
//! A call may have a guard: an `Int8` expression over the input that is `1`
//! on the rows the call is evaluated on (a `CASE` branch, the right side of
//! `AND`); elsewhere its column is NULL and nothing is sent.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DFSchema, DFSchemaRef, Result, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlan, ScalarUDF, UserDefinedLogicalNodeCore,
};

use crate::directory::ServiceRef;

/// One call a proxy sends to its service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyCall {
    /// The function, as registered in the session (it gives the result type).
    pub func: Arc<ScalarUDF>,
    /// The name the service hosts it under (its name or an alias).
    pub function: String,
    /// Its arguments: row-wise expressions over the proxy's input.
    pub args: Vec<Expr>,
    /// The rows it is evaluated on: those where this `Int8` expression over
    /// the input is `1`. `None`: every row.
    pub guard: Option<Expr>,
    /// The name of the output column that holds its result.
    pub name: String,
}

impl ProxyCall {
    /// The call as an expression over the proxy's input.
    pub fn expr(&self) -> Expr {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.func),
            self.args.clone(),
        ))
    }
}

impl fmt::Display for ProxyCall {
    /// `upper(t.a) AS name`, with `WHEN guard` before `AS` if it has one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr())?;
        if let Some(guard) = &self.guard {
            write!(f, " WHEN {guard} = 1")?;
        }
        write!(f, " AS {}", self.name)
    }
}

/// Adds one column per call to its input's columns; each call is evaluated
/// by the service `service`, row for row, in input order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RpcProxy {
    input: Arc<LogicalPlan>,
    service: ServiceRef,
    calls: Vec<ProxyCall>,
    schema: DFSchemaRef,
}

impl RpcProxy {
    /// A proxy over `input` for `calls`, all served by `service`.
    ///
    /// The arguments and guards must be expressions over `input`, and the
    /// call names new to `input`.
    pub fn try_new(
        input: Arc<LogicalPlan>,
        service: ServiceRef,
        calls: Vec<ProxyCall>,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let mut fields: Vec<_> = input_schema
            .iter()
            .map(|(qualifier, field)| (qualifier.cloned(), Arc::clone(field)))
            .collect();
        for call in &calls {
            if let Some(guard) = &call.guard
                && guard.get_type(input_schema)? != DataType::Int8
            {
                return plan_err!("RpcProxy: the guard {guard} of {} is not Int8", call.name);
            }
            if input_schema.fields().iter().any(|f| f.name() == &call.name) {
                return plan_err!("RpcProxy: output column {} already exists", call.name);
            }
            let (_, field) = call.expr().to_field(input_schema)?;
            // rows the guard leaves out are NULL
            let nullable = field.is_nullable() || call.guard.is_some();
            let result = Field::new(&call.name, field.data_type().clone(), nullable)
                .with_metadata(field.metadata().clone());
            fields.push((None, Arc::new(result)));
        }
        let schema = DFSchema::new_with_metadata(fields, input_schema.metadata().clone())?
            .with_functional_dependencies(input_schema.functional_dependencies().clone())?;
        Ok(Self {
            input,
            service,
            calls,
            schema: Arc::new(schema),
        })
    }

    /// The service that evaluates the calls.
    pub fn service(&self) -> &ServiceRef {
        &self.service
    }

    /// The calls, in the order of their output columns.
    pub fn calls(&self) -> &[ProxyCall] {
        &self.calls
    }

    /// The input plan.
    pub fn input(&self) -> &LogicalPlan {
        &self.input
    }
}

impl PartialOrd for RpcProxy {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let key = |p: &Self| {
            (
                p.service.name.clone(),
                p.calls.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            )
        };
        match key(self).cmp(&key(other)) {
            Ordering::Equal => self.input.partial_cmp(&other.input),
            unequal => Some(unequal),
        }
    }
}

impl UserDefinedLogicalNodeCore for RpcProxy {
    fn name(&self) -> &str {
        "RpcProxy"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The arguments and guards only: the calls themselves must stay calls
    /// of the service (rules such as constant folding would evaluate them
    /// here).
    fn expressions(&self) -> Vec<Expr> {
        self.calls
            .iter()
            .flat_map(|call| call.args.iter().chain(&call.guard).cloned())
            .collect()
    }

    /// The results depend on every row, but a predicate on the input's own
    /// columns may go below the proxy: fewer rows to send.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.calls.iter().map(|call| call.name.clone()).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let calls: Vec<String> = self.calls.iter().map(ProxyCall::to_string).collect();
        write!(
            f,
            "RpcProxy: service={}, policy={}, calls=[{}]",
            self.service.name,
            self.service.policy,
            calls.join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [input] = <[LogicalPlan; 1]>::try_from(inputs).map_err(|inputs| {
            datafusion::error::DataFusionError::Plan(format!(
                "RpcProxy takes one input, got {}",
                inputs.len()
            ))
        })?;
        // rules that rewrite expressions alias them to keep their names;
        // arguments and guards have none to keep
        let mut exprs = exprs.into_iter().map(Expr::unalias);
        let calls = self
            .calls
            .iter()
            .map(|call| ProxyCall {
                func: Arc::clone(&call.func),
                function: call.function.clone(),
                args: exprs.by_ref().take(call.args.len()).collect(),
                guard: call.guard.as_ref().and_then(|_| exprs.next()),
                name: call.name.clone(),
            })
            .collect();
        Self::try_new(Arc::new(input), self.service.clone(), calls)
    }

    /// The input columns the parent needs; the arguments are added by the
    /// caller from [`Self::expressions`].
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let width = self.input.schema().fields().len();
        Some(vec![
            output_columns
                .iter()
                .copied()
                .filter(|i| *i < width)
                .collect(),
        ])
    }

    /// One row out per row in: a limit above may go below.
    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}
