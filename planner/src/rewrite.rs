//! The rule that turns calls of service-hosted functions into [`RpcProxy`]
//! nodes.
//!
//! For a projection, filter, aggregate, sort, window or join, [`RpcRewrite`]
//! finds the calls it can move: calls of a function some service hosts whose
//! arguments read only the node's input (no aggregate, window, subquery or
//! outer reference inside). Arguments that are neither columns nor literals
//! are computed by a projection below; then one [`RpcProxy`] per service adds
//! the calls' results as columns, and the node reads those columns instead.
//! A call repeated in a node is sent once. A hosted call nested in another
//! one's arguments is sent first, by a proxy of its own below. Names of the
//! node's output are kept, and a node whose output is its input's (a filter,
//! a sort, a join) gets a projection on top that drops the added columns.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, Projection, ScalarUDF};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::config::RpcopConfig;
use crate::directory::{ServiceDirectory, ServiceRef};
use crate::proxy::{ProxyCall, RpcProxy};

/// A function some service hosts, and the name it hosts it under.
#[derive(Debug, Clone)]
struct Hosted {
    service: ServiceRef,
    function: String,
}

/// The optimizer rule that moves calls of service-hosted functions into
/// [`RpcProxy`] nodes (see the module documentation).
#[derive(Debug)]
pub struct RpcRewrite {
    directory: Arc<dyn ServiceDirectory>,
}

impl RpcRewrite {
    /// A rule asking `directory` which service serves a function.
    pub fn new(directory: Arc<dyn ServiceDirectory>) -> Self {
        Self { directory }
    }

    /// The service of `func` and the name it hosts it under: the
    /// function's own name or one of its aliases.
    fn service_of(&self, func: &ScalarUDF) -> Option<Hosted> {
        std::iter::once(func.name())
            .chain(func.aliases().iter().map(String::as_str))
            .find_map(|name| {
                let service = self.directory.service_of(name)?;
                Some(Hosted {
                    service,
                    function: name.to_string(),
                })
            })
    }

    fn contains_hosted_call(&self, expr: &Expr) -> bool {
        expr.exists(|e| {
            Ok(matches!(e, Expr::ScalarFunction(f) if self.service_of(&f.func).is_some()))
        })
        .unwrap_or(true)
    }

    /// The hosted calls in `exprs` that can move below the node, onto
    /// `input`, and contain no hosted call themselves; each once, with its
    /// service, in the order first seen.
    fn movable_calls(&self, exprs: &[Expr], input: &DFSchema) -> Result<Vec<(Expr, Hosted)>> {
        let mut found: Vec<(Expr, Hosted)> = Vec::new();
        for expr in exprs {
            expr.apply(|e| {
                let Expr::ScalarFunction(ScalarFunction { func, args }) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let Some(hosted) = self.service_of(func) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                if args.iter().any(|a| self.contains_hosted_call(a)) {
                    return Ok(TreeNodeRecursion::Continue);
                }
                if args.iter().all(|a| evaluable_on(a, input)) && !found.iter().any(|(c, _)| c == e)
                {
                    found.push((e.clone(), hosted));
                }
                Ok(TreeNodeRecursion::Jump)
            })?;
        }
        Ok(found)
    }
}

/// Can `expr` be computed by a projection over `input`? Only row-wise
/// expressions of `input`'s columns can.
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

/// Puts `calls` (all evaluable on `input`) below a node: a projection for
/// arguments that are not columns or literals, then one proxy per service.
/// Returns the new input and, per call, the column that now holds it.
fn hoist(
    input: LogicalPlan,
    calls: Vec<(Expr, Hosted)>,
    config: &dyn OptimizerConfig,
) -> Result<(LogicalPlan, HashMap<Expr, Expr>)> {
    let (mut plan, computed) = compute_arguments(input, &calls, config)?;
    let mut taken: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut replacements = HashMap::new();
    let mut by_service: Vec<(ServiceRef, Vec<ProxyCall>)> = Vec::new();
    for (call, Hosted { service, function }) in calls {
        let Expr::ScalarFunction(f) = &call else {
            continue;
        };
        let args = f
            .args
            .iter()
            .map(|arg| match computed.iter().find(|(e, _)| e == arg) {
                Some((_, name)) => Expr::Column(Column::new_unqualified(name)),
                None => arg.clone(),
            })
            .collect();
        let mut name = call.schema_name().to_string();
        if taken.contains(&name) {
            name = config.alias_generator().next("__rpcop_call");
        }
        taken.push(name.clone());
        replacements.insert(call.clone(), Expr::Column(Column::new_unqualified(&name)));
        let proxy_call = ProxyCall {
            func: Arc::clone(&f.func),
            function,
            args,
            name,
        };
        match by_service.iter_mut().find(|(s, _)| *s == service) {
            Some((_, calls)) => calls.push(proxy_call),
            None => by_service.push((service, vec![proxy_call])),
        }
    }
    for (service, calls) in by_service {
        let proxy = RpcProxy::try_new(Arc::new(plan), service, calls)?;
        plan = LogicalPlan::Extension(Extension {
            node: Arc::new(proxy),
        });
    }
    Ok((plan, replacements))
}

/// `input` with a projection on top that computes the calls' arguments that
/// are neither columns nor literals, each once; returns it with each such
/// argument and the name of its column.
fn compute_arguments(
    input: LogicalPlan,
    calls: &[(Expr, Hosted)],
    config: &dyn OptimizerConfig,
) -> Result<(LogicalPlan, Vec<(Expr, String)>)> {
    let aliases = config.alias_generator();
    let mut computed: Vec<(Expr, String)> = Vec::new();
    for (call, _) in calls {
        if let Expr::ScalarFunction(f) = call {
            for arg in &f.args {
                if !is_column_or_literal(arg) && !computed.iter().any(|(e, _)| e == arg) {
                    computed.push((arg.clone(), aliases.next("__rpcop_arg")));
                }
            }
        }
    }
    if computed.is_empty() {
        return Ok((input, computed));
    }
    let mut exprs: Vec<Expr> = input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.extend(computed.iter().map(|(e, name)| e.clone().alias(name)));
    let plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
    Ok((plan, computed))
}

/// Levels of hosted calls nested in each other's arguments that get
/// proxies; calls nested deeper stay in-process.
const MAX_NESTING: usize = 16;

fn is_column_or_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(_) | Expr::Literal(..))
}

fn replace(exprs: Vec<Expr>, replacements: &HashMap<Expr, Expr>) -> Result<Vec<Expr>> {
    exprs
        .into_iter()
        .map(|expr| {
            expr.transform_down(|e| match replacements.get(&e) {
                Some(column) => Ok(Transformed::new(
                    column.clone(),
                    true,
                    TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(e)),
            })
            .map(|t| t.data)
        })
        .collect()
}

/// `plan`, with a projection on top if its output differs from `schema`.
fn with_schema(plan: LogicalPlan, schema: &DFSchema) -> Result<LogicalPlan> {
    let same = plan.schema().fields().len() == schema.fields().len()
        && plan
            .schema()
            .iter()
            .zip(schema.iter())
            .all(|((q1, f1), (q2, f2))| q1 == q2 && f1.name() == f2.name());
    if same {
        return Ok(plan);
    }
    let exprs = schema.columns().into_iter().map(Expr::Column).collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(plan),
    )?))
}

impl OptimizerRule for RpcRewrite {
    fn name(&self) -> &str {
        "rpc_rewrite"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !RpcopConfig::rewrite_enabled(&config.options()) {
            return Ok(Transformed::no(plan));
        }
        let keeps_names = match &plan {
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => true,
            LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Join(_) => false,
            _ => return Ok(Transformed::no(plan)),
        };
        let mut exprs = plan.expressions();
        if !exprs.iter().any(|e| self.contains_hosted_call(e)) {
            return Ok(Transformed::no(plan));
        }
        let preserver = NamePreserver::new(&plan);
        let names: Vec<_> = exprs.iter().map(|e| preserver.save(e)).collect();
        let mut inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
        let mut changed = false;
        for input in &mut inputs {
            // one round per level of hosted calls nested in hosted calls
            for _ in 0..MAX_NESTING {
                let calls = self.movable_calls(&exprs, input.schema())?;
                if calls.is_empty() {
                    break;
                }
                let (hoisted, replacements) = hoist(input.clone(), calls, config)?;
                exprs = replace(exprs, &replacements)?;
                *input = hoisted;
                changed = true;
            }
        }
        if !changed {
            return Ok(Transformed::no(plan));
        }
        let exprs = if keeps_names {
            exprs
                .into_iter()
                .zip(names)
                .map(|(e, name)| name.restore(e))
                .collect()
        } else {
            exprs
        };
        let schema = Arc::clone(plan.schema());
        let rewritten = plan.with_new_exprs(exprs, inputs)?;
        Ok(Transformed::yes(with_schema(rewritten, &schema)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RpcopConfig;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// `upper` and `character_length` are served by `text`, `md5` by `hash`.
    #[derive(Debug)]
    struct TwoServices;

    impl ServiceDirectory for TwoServices {
        fn service_of(&self, function: &str) -> Option<ServiceRef> {
            match function {
                "upper" | "character_length" => Some(ServiceRef::new("text", "round_robin")),
                "md5" => Some(ServiceRef::new("hash", "least_outstanding")),
                _ => None,
            }
        }
    }

    async fn context() -> SessionContext {
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        rules.insert(0, Arc::new(RpcRewrite::new(Arc::new(TwoServices))));
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_option_extension(RpcopConfig::default()))
            .with_default_features()
            .with_optimizer_rules(rules)
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE t (a VARCHAR, b VARCHAR, n INT) AS VALUES ('x', 'y', 1)")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE u (k VARCHAR) AS VALUES ('X')")
            .await
            .unwrap();
        ctx
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        plan.display_indent().to_string()
    }

    #[tokio::test]
    async fn calls_move_into_one_proxy_per_service() {
        let ctx = context().await;
        let p = plan(&ctx, "SELECT upper(a), md5(b), lower(a) FROM t").await;
        assert!(
            p.contains("RpcProxy: service=text, policy=round_robin, calls=[upper(t.a)]"),
            "{p}"
        );
        assert!(
            p.contains("RpcProxy: service=hash, policy=least_outstanding, calls=[md5(t.b)]"),
            "{p}"
        );
        // lower is hosted by no service: it stays in the projection
        assert!(
            p.contains("lower(t.a)") && !p.contains("calls=[lower"),
            "{p}"
        );
    }

    #[tokio::test]
    async fn filters_keys_and_arguments_are_rewritten() {
        let ctx = context().await;
        let p = plan(&ctx, "SELECT n FROM t WHERE upper(a) = 'X'").await;
        assert!(
            p.contains("calls=[upper(t.a)]") && p.contains("Filter: upper(t.a) = Utf8"),
            "{p}"
        );
        let p = plan(
            &ctx,
            "SELECT upper(a), sum(character_length(b)) FROM t GROUP BY upper(a) ORDER BY upper(a)",
        )
        .await;
        assert!(
            p.contains("calls=[upper(t.a), character_length(t.b)]"),
            "{p}"
        );
        let p = plan(&ctx, "SELECT n FROM t JOIN u ON upper(t.a) = u.k").await;
        assert!(p.contains("calls=[upper(t.a)]"), "{p}");
        let p = plan(&ctx, "SELECT n FROM t ORDER BY character_length(b)").await;
        assert!(p.contains("calls=[character_length(t.b)]"), "{p}");
    }

    #[tokio::test]
    async fn nested_calls_and_expression_arguments() {
        let ctx = context().await;
        // md5(upper(a)): upper first, by its own proxy below md5's
        let p = plan(&ctx, "SELECT md5(upper(a)) FROM t").await;
        let upper = p.find("calls=[upper(t.a)]").unwrap();
        let md5 = p.find("calls=[md5(upper(t.a))]").unwrap();
        assert!(md5 < upper, "{p}");
        // an expression argument is computed by a projection below the proxy
        let p = plan(&ctx, "SELECT upper(concat(a, b)) FROM t").await;
        assert!(p.contains("AS __rpcop_arg"), "{p}");
        // a repeated call is sent once
        let p = plan(&ctx, "SELECT upper(a) AS x, upper(a) || '!' AS y FROM t").await;
        assert_eq!(p.matches("upper(t.a)]").count(), 1, "{p}");
    }

    #[tokio::test]
    async fn the_setting_turns_rewriting_off() {
        let ctx = context().await;
        ctx.sql("SET rpcop.rewrite = false").await.unwrap();
        let p = plan(&ctx, "SELECT upper(a) FROM t").await;
        assert!(!p.contains("RpcProxy"), "{p}");
    }

    #[tokio::test]
    async fn the_output_schema_is_kept() {
        let ctx = context().await;
        // the proxy node cannot execute without the runtime; the logical
        // rewrite must at least keep the output schema of the query
        let sql = "SELECT upper(a) AS u, character_length(b) FROM t WHERE md5(a) IS NOT NULL";
        let rewritten = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        ctx.sql("SET rpcop.rewrite = false").await.unwrap();
        let plain = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        assert_eq!(rewritten.schema(), plain.schema());
    }
}
