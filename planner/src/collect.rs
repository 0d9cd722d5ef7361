//! Which calls of a plan node move below it, and on which rows.
//!
//! A [`Collector`] walks a node's expressions with the [`Context`] of each
//! part, replaces every hosted call it can move by the column that will hold
//! its result, and keeps the call with its guard. A call moves when its
//! arguments read only the node's input and contain no hosted call (those
//! move first, in an earlier round), and its guard, if it has one, can be
//! evaluated there too. Calls in a context the rule cannot describe stay
//! where they are, evaluated in-process.
//!
//! Short-circuiting functions (`coalesce`, `nvl`, `nvl2`) are first replaced
//! by the `CASE` DataFusion simplifies them into, so their lazy arguments get
//! guards like any branch.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::expr::{Case, ScalarFunction};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, ScalarUDF, Volatility};
use datafusion::optimizer::OptimizerConfig;

use crate::directory::{ServiceDirectory, ServiceRef};
use crate::guard::{Context, either};

/// A hosted call that moves below the node.
#[derive(Debug)]
pub(crate) struct Moved {
    /// The function, as registered in the session.
    pub(crate) func: Arc<ScalarUDF>,
    /// Its arguments, over the node's input.
    pub(crate) args: Vec<Expr>,
    /// The service that hosts it, and the name it hosts it under.
    pub(crate) service: ServiceRef,
    pub(crate) function: String,
    /// The rows it is evaluated on (`None`: all).
    pub(crate) guard: Option<Expr>,
    /// The column that holds its result.
    pub(crate) name: String,
}

/// The service of a function and the name it hosts it under: the function's
/// own name or one of its aliases.
pub(crate) fn service_of(
    directory: &dyn ServiceDirectory,
    func: &ScalarUDF,
) -> Option<(ServiceRef, String)> {
    std::iter::once(func.name())
        .chain(func.aliases().iter().map(String::as_str))
        .find_map(|name| Some((directory.service_of(name)?, name.to_string())))
}

/// Does `expr` call a function some service hosts?
pub(crate) fn contains_hosted_call(directory: &dyn ServiceDirectory, expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(e, Expr::ScalarFunction(f) if service_of(directory, &f.func).is_some()))
    })
    .unwrap_or(true)
}

/// Collects the calls one round moves onto `input` (see the module
/// documentation).
pub(crate) struct Collector<'a> {
    directory: &'a dyn ServiceDirectory,
    input: &'a DFSchema,
    config: &'a dyn OptimizerConfig,
    /// Move only calls whose arguments read no column.
    constants_only: bool,
    moved: Vec<Moved>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(
        directory: &'a dyn ServiceDirectory,
        input: &'a DFSchema,
        config: &'a dyn OptimizerConfig,
        constants_only: bool,
    ) -> Self {
        Self {
            directory,
            input,
            config,
            constants_only,
            moved: Vec::new(),
        }
    }

    /// The calls moved so far.
    pub(crate) fn finish(self) -> Vec<Moved> {
        self.moved
    }

    /// `expr`, evaluated in `context`, with each call that moves replaced by
    /// its column.
    pub(crate) fn visit(&mut self, expr: Expr, context: &Context) -> Result<Expr> {
        if !contains_hosted_call(self.directory, &expr) {
            return Ok(expr);
        }
        match expr {
            Expr::ScalarFunction(f) => self.visit_function(f, context),
            Expr::Case(case) => self.visit_case(case, context),
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: op @ (Operator::And | Operator::Or),
                right,
            }) => {
                let left = self.visit(*left, context)?;
                let lazy = match op {
                    Operator::And => context.unless_false(&left),
                    _ => context.unless_true(&left),
                };
                let right = self.visit(*right, &lazy)?;
                Ok(Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(left),
                    op,
                    Box::new(right),
                )))
            }
            other => other
                .map_children(|child| self.visit(child, context).map(Transformed::yes))
                .map(|t| t.data),
        }
    }

    fn visit_function(&mut self, f: ScalarFunction, context: &Context) -> Result<Expr> {
        if let Some((service, function)) = service_of(self.directory, &f.func) {
            if *context == Context::Unknown {
                return Ok(Expr::ScalarFunction(f));
            }
            if f.args
                .iter()
                .any(|a| contains_hosted_call(self.directory, a))
            {
                // the arguments are evaluated where the call is
                let args = f
                    .args
                    .into_iter()
                    .map(|a| self.visit(a, context))
                    .collect::<Result<_>>()?;
                return Ok(Expr::ScalarFunction(ScalarFunction::new_udf(f.func, args)));
            }
            // a call DataFusion rewrites into another expression while
            // planning (`arrow_cast` becomes CAST) is never evaluated as a
            // call in-process; it stays for the simplifier, and what that
            // leaves is moved by a later pass
            if rewritten_by_datafusion(&f) {
                return Ok(Expr::ScalarFunction(f));
            }
            let guard = context.guard();
            let reads_columns = || f.args.iter().any(|a| !a.column_refs().is_empty());
            let movable = f.args.iter().all(|a| evaluable_on(a, self.input))
                && !(self.constants_only && reads_columns())
                && guard.is_none_or(|g| {
                    !contains_hosted_call(self.directory, g) && evaluable_on(g, self.input)
                });
            if !movable {
                return Ok(Expr::ScalarFunction(f));
            }
            return Ok(self.add(f, service, function, guard.cloned()));
        }
        if f.func.short_circuits() {
            let simplified = f
                .func
                .simplify(f.args.clone(), &SimplifyContext::default())
                .ok();
            if let Some(ExprSimplifyResult::Simplified(expr)) = simplified {
                return self.visit(expr, context);
            }
        }
        let eager: Vec<bool> = match f.func.conditional_arguments(&f.args) {
            Some((eager, _)) => f
                .args
                .iter()
                .map(|a| eager.iter().any(|e| std::ptr::eq(*e, a)))
                .collect(),
            None => vec![true; f.args.len()],
        };
        let args = f
            .args
            .into_iter()
            .zip(eager)
            .map(|(a, eager)| {
                let context = if eager { context } else { &Context::Unknown };
                self.visit(a, context)
            })
            .collect::<Result<_>>()?;
        Ok(Expr::ScalarFunction(ScalarFunction::new_udf(f.func, args)))
    }

    fn visit_case(&mut self, case: Case, context: &Context) -> Result<Expr> {
        let base = match case.expr {
            Some(base) => Some(self.visit(*base, context)?),
            None => None,
        };
        let mut whens = Vec::with_capacity(case.when_then_expr.len());
        let mut thens = Vec::with_capacity(case.when_then_expr.len());
        for (i, (when, then)) in case.when_then_expr.into_iter().enumerate() {
            let tried = context.none_of(base.as_ref(), &whens, i);
            whens.push(self.visit(*when, &tried)?);
            let taken = context.then(base.as_ref(), &whens, i);
            thens.push(self.visit(*then, &taken)?);
        }
        let else_expr = match case.else_expr {
            Some(e) => {
                let taken = context.none_of(base.as_ref(), &whens, whens.len());
                Some(Box::new(self.visit(*e, &taken)?))
            }
            None => None,
        };
        Ok(Expr::Case(Case {
            expr: base.map(Box::new),
            when_then_expr: whens
                .into_iter()
                .zip(thens)
                .map(|(w, t)| (Box::new(w), Box::new(t)))
                .collect(),
            else_expr,
        }))
    }

    /// Keeps a call that moves and returns the column of its result. A call
    /// already moved is sent once, on the rows of either guard; a volatile
    /// one is sent for each time it is written.
    fn add(
        &mut self,
        f: ScalarFunction,
        service: ServiceRef,
        function: String,
        guard: Option<Expr>,
    ) -> Expr {
        let volatile = f.func.signature().volatility == Volatility::Volatile
            || f.args.iter().any(Expr::is_volatile);
        if !volatile
            && let Some(moved) = self
                .moved
                .iter_mut()
                .find(|m| m.func == f.func && m.args == f.args)
        {
            moved.guard = either(moved.guard.take(), guard);
            return Expr::Column(Column::new_unqualified(&moved.name));
        }
        let ScalarFunction { func, args } = f;
        let name = self.config.alias_generator().next("__rpcop_call");
        self.moved.push(Moved {
            func,
            args,
            service,
            function,
            guard,
            name: name.clone(),
        });
        Expr::Column(Column::new_unqualified(name))
    }
}

/// Does DataFusion's simplifier replace this call by another expression
/// (`arrow_cast(x, 'Int64')` by `CAST(x AS BIGINT)`)?
pub(crate) fn rewritten_by_datafusion(f: &ScalarFunction) -> bool {
    matches!(
        f.func.simplify(f.args.clone(), &SimplifyContext::default()),
        Ok(ExprSimplifyResult::Simplified(_))
    )
}

/// Can `expr` be evaluated row by row over `input`? Only expressions of
/// `input`'s columns without aggregates, windows, subqueries or outer
/// references can.
fn evaluable_on(expr: &Expr, input: &DFSchema) -> bool {
    !expr
        .exists(|e| {
            Ok(match e {
                Expr::Column(column) => !input.has_column(column),
                Expr::Alias(_)
                | Expr::ScalarVariable(..)
                | Expr::Literal(..)
                | Expr::BinaryExpr(_)
                | Expr::Like(_)
                | Expr::SimilarTo(_)
                | Expr::Not(_)
                | Expr::IsNotNull(_)
                | Expr::IsNull(_)
                | Expr::IsTrue(_)
                | Expr::IsFalse(_)
                | Expr::IsUnknown(_)
                | Expr::IsNotTrue(_)
                | Expr::IsNotFalse(_)
                | Expr::IsNotUnknown(_)
                | Expr::Negative(_)
                | Expr::Between(_)
                | Expr::Case(_)
                | Expr::Cast(_)
                | Expr::TryCast(_)
                | Expr::ScalarFunction(_)
                | Expr::InList(_) => false,
                _ => true,
            })
        })
        .unwrap_or(true)
}
