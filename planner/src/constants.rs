//! Hosted calls of constants, which DataFusion would fold while planning.
//!
//! DataFusion's simplifier evaluates a call whose arguments are all
//! constants once, while planning, and puts its value in the plan as a
//! literal: the output is then `NOT NULL` when the value is not null, other
//! expressions read it as a literal (the key of `m[make_array(1, 2)]`), and
//! no row evaluates it again. A hosted call must not be evaluated
//! in-process, so the runtime folds it through its service instead, before
//! DataFusion optimizes the plan: [`constant_calls`] finds the calls to send
//! (their arguments folded in-process to literals), and [`replace_calls`]
//! puts the answers in their place, keeping each expression's name. Inner
//! calls come first: in `f(g(1))` only `g(1)` is found, and `f` in the next
//! round, once `g(1)` is a literal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

use crate::collect::{contains_hosted_call, rewritten_by_datafusion, service_of};
use crate::directory::{ServiceDirectory, ServiceRef};

/// A hosted call whose arguments are constants.
#[derive(Debug, Clone)]
pub struct ConstantCall {
    /// The call as the plan has it: [`replace_calls`] looks for it.
    pub call: Expr,
    /// The service that hosts it.
    pub service: ServiceRef,
    /// The name the service knows the function by.
    pub function: String,
    /// The function.
    pub udf: Arc<ScalarUDF>,
    /// Its arguments, each a literal.
    pub args: Vec<Expr>,
}

/// Does `plan` (or a subquery of it) call a hosted function with arguments
/// that read no column? If not, there is nothing to fold.
pub fn has_constant_calls(plan: &LogicalPlan, directory: &dyn ServiceDirectory) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && service_of(directory, &f.func).is_some()
                    && f.args.iter().all(|a| a.column_refs().is_empty())
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// The hosted calls of `plan` (subqueries included) that DataFusion would
/// fold: not volatile, not rewritten by DataFusion into another expression,
/// and with arguments that fold in-process to literals (so they call no
/// hosted function). `context` is the statement's, with no columns (the
/// default schema). Calls in `skip` (those that failed) are left out, and
/// each call is listed once.
pub fn constant_calls(
    plan: &LogicalPlan,
    directory: &dyn ServiceDirectory,
    context: &SimplifyContext,
    skip: &HashSet<Expr>,
) -> Result<Vec<ConstantCall>> {
    let simplifier = ExprSimplifier::new(context.clone());
    let mut seen = HashSet::new();
    let mut calls = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && !skip.contains(e)
                    && !seen.contains(e)
                    && let Some(call) = constant_call(f, directory, &simplifier)?
                {
                    seen.insert(e.clone());
                    calls.push(ConstantCall {
                        call: e.clone(),
                        ..call
                    });
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(calls)
}

/// `f` as a [`ConstantCall`] (its `call` left for the caller to set), if it
/// is one.
fn constant_call(
    f: &ScalarFunction,
    directory: &dyn ServiceDirectory,
    simplifier: &ExprSimplifier,
) -> Result<Option<ConstantCall>> {
    let Some((service, function)) = service_of(directory, &f.func) else {
        return Ok(None);
    };
    if f.func.signature().volatility == Volatility::Volatile
        || rewritten_by_datafusion(f)
        || f.args.iter().any(|a| {
            !a.column_refs().is_empty()
                || contains_hosted_call(directory, a)
                || a.exists(|e| Ok(matches!(e, Expr::OuterReferenceColumn(..))))
                    .unwrap_or(true)
        })
    {
        return Ok(None);
    }
    let mut args = Vec::with_capacity(f.args.len());
    for arg in &f.args {
        // a literal, or what DataFusion folds to one (`-1`, a cast); an
        // argument that does not fold (a placeholder, a volatile call)
        // leaves the call to run with the query
        match simplifier.simplify(arg.clone()) {
            Ok(literal @ Expr::Literal(..)) => args.push(literal),
            _ => return Ok(None),
        }
    }
    Ok(Some(ConstantCall {
        call: Expr::ScalarFunction(f.clone()),
        service,
        function,
        udf: Arc::clone(&f.func),
        args,
    }))
}

/// `plan` with each call that is a key of `values` replaced by its value,
/// every expression keeping its name (as DataFusion's simplifier keeps it).
pub fn replace_calls(plan: LogicalPlan, values: &HashMap<Expr, Expr>) -> Result<LogicalPlan> {
    if values.is_empty() {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| {
        let names = NamePreserver::new(&node);
        let replace = |expr: Expr| {
            let name = names.save(&expr);
            let replaced = expr.transform_up(|e| match values.get(&e) {
                Some(value) => Ok(Transformed::yes(value.clone())),
                None => Ok(Transformed::no(e)),
            })?;
            Ok(if replaced.transformed {
                Transformed::yes(name.restore(replaced.data))
            } else {
                replaced
            })
        };
        node.map_expressions(|expr| {
            // each expression of a grouping set keeps its own name
            if let Expr::GroupingSet(_) = &expr {
                expr.map_children(replace)
            } else {
                replace(expr)
            }
        })
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;
    use datafusion::functions::string::{lower, upper};
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};

    #[derive(Debug)]
    struct HostsUpper;

    impl ServiceDirectory for HostsUpper {
        fn service_of(&self, function: &str) -> Option<ServiceRef> {
            (function == "upper").then(|| ServiceRef::new("s", "least_loaded"))
        }
    }

    #[test]
    fn finds_inner_constant_calls_first_and_replaces_them_by_name() {
        // upper(upper('a')), upper(lower('b')), upper(column), lower('c')
        let plan = LogicalPlanBuilder::values(vec![vec![lit("x")]])
            .unwrap()
            .project(vec![
                upper().call(vec![upper().call(vec![lit("a")])]),
                upper().call(vec![lower().call(vec![lit("B")])]),
                upper().call(vec![col("column1")]),
                lower().call(vec![lit("C")]),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert!(has_constant_calls(&plan, &HostsUpper));
        let context = SimplifyContext::default();
        let calls = constant_calls(&plan, &HostsUpper, &context, &HashSet::new()).unwrap();
        // the inner upper('a'), and upper(lower('B')) with lower folded
        // in-process: not the outer upper, upper(column1) or lower('C')
        let shown: Vec<String> = calls.iter().map(|c| c.call.to_string()).collect();
        assert_eq!(shown, ["upper(Utf8(\"a\"))", "upper(lower(Utf8(\"B\")))"]);
        assert_eq!(calls[1].args, vec![lit("b")]);
        // skipped calls (they failed) are not found again
        let skip: HashSet<Expr> = calls.iter().map(|c| c.call.clone()).collect();
        assert!(
            constant_calls(&plan, &HostsUpper, &context, &skip)
                .unwrap()
                .is_empty()
        );
        let values = HashMap::from([(calls[0].call.clone(), lit("A"))]);
        let replaced = replace_calls(plan.clone(), &values).unwrap();
        // the output keeps its names
        assert_eq!(replaced.schema().field_names(), plan.schema().field_names());
        // the outer call is found next, with the value as its argument
        let next = constant_calls(&replaced, &HostsUpper, &context, &skip).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(
            next[0].args,
            vec![Expr::Literal(ScalarValue::from("A"), None)]
        );
    }

    #[test]
    fn volatile_and_placeholder_arguments_are_not_folded() {
        let plan = LogicalPlanBuilder::empty(true)
            .project(vec![upper().call(vec![Expr::Placeholder(
                datafusion::logical_expr::expr::Placeholder::new_with_field("$1".to_string(), None),
            )])])
            .unwrap()
            .build()
            .unwrap();
        let calls = constant_calls(
            &plan,
            &HostsUpper,
            &SimplifyContext::default(),
            &HashSet::new(),
        )
        .unwrap();
        assert!(calls.is_empty());
    }
}
