//! Annotated functions: a UDF marked as heavy where it is registered.
//!
//! [`RpcFunction`] is FLIP-582's implicit path. A user wraps a UDF and the
//! options of its service, and hands it to the session builder; the user
//! never writes a service by hand. The first query that calls the function
//! starts its *implicit* service (named after the function, shown by
//! `SHOW RPC SERVICES` as implicit); later queries reuse the warm instances.
//! `CREATE RPC SERVICE FOR FUNCTION f WITH (...)`, without a name, annotates
//! an existing function the same way from SQL.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions,
};

use super::rpc_call::RPC_CALL;

use crate::options::{Isolation, ServiceOptions};

/// A UDF whose calls run on an implicit service with these options.
///
/// ```no_run
/// # async fn example(my_model: datafusion::logical_expr::ScalarUDF) -> datafusion::error::Result<()> {
/// use rpcop::{RpcFunction, RpcSession};
///
/// let session = RpcSession::builder()
///     .function(RpcFunction::new(my_model).parallelism(2).batch_size(1024))
///     .build();
/// // starts the service `my_model` with 2 instances, then runs the query
/// session.sql("SELECT my_model(body) FROM docs").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RpcFunction {
    udf: ScalarUDF,
    options: ServiceOptions,
}

impl RpcFunction {
    /// `udf`, served with the default service options.
    pub fn new(udf: ScalarUDF) -> Self {
        Self {
            udf,
            options: ServiceOptions::default(),
        }
    }

    /// Number of instances.
    pub fn parallelism(mut self, instances: usize) -> Self {
        self.options.parallelism = instances;
        self
    }

    /// Rows per request.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.options.batch_size = rows;
        self
    }

    /// Requests outstanding per query partition.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.options.max_in_flight = requests;
        self
    }

    /// Per-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Where instances run.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.options.isolation = isolation;
        self
    }

    /// Every option at once.
    pub fn options(mut self, options: ServiceOptions) -> Self {
        self.options = options;
        self
    }

    /// The function's name (and its implicit service's).
    pub fn name(&self) -> &str {
        self.udf.name()
    }

    /// The UDF and its service options.
    pub(crate) fn into_parts(self) -> (ScalarUDF, ServiceOptions) {
        (self.udf, self.options)
    }
}

/// The names of the scalar functions `plan` calls, subqueries included:
/// those that are annotated get their implicit service before it runs.
pub(crate) fn called_functions(plan: &LogicalPlan) -> Result<BTreeSet<String>> {
    let mut called = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    called.insert(f.func.name().to_string());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(called)
}

/// The services a statement names in `rpc_call('service', ...)` with a
/// literal: an annotated function's implicit service among them must start
/// before the statement is planned, since `rpc_call` is typed by the
/// running service.
pub(crate) fn rpc_call_targets(statement: &DfStatement) -> BTreeSet<String> {
    let mut targets = BTreeSet::new();
    let mut note = |expr: &ast::Expr| {
        if let ast::Expr::Function(function) = expr
            && function.name.to_string().eq_ignore_ascii_case(RPC_CALL)
            && let FunctionArguments::List(list) = &function.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Value(first)))) =
                list.args.first()
            && let Value::SingleQuotedString(service) = &first.value
        {
            targets.insert(service.clone());
        }
        ControlFlow::<()>::Continue(())
    };
    let mut statement = statement;
    loop {
        match statement {
            DfStatement::Explain(explain) => statement = &explain.statement,
            DfStatement::Statement(sql) => {
                let _ = visit_expressions(sql.as_ref(), &mut note);
                break;
            }
            DfStatement::CopyTo(copy) => {
                if let CopyToSource::Query(query) = &copy.source {
                    let _ = visit_expressions(query.as_ref(), &mut note);
                }
                break;
            }
            DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => break,
        }
    }
    targets
}
