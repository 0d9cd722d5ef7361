//! The rule that turns calls of service-hosted functions into [`RpcProxy`]
//! nodes.
//!
//! For a projection, filter, aggregate, sort, window or the keys of a join,
//! [`RpcRewrite`] moves each call of a function some service hosts below the
//! node: one [`RpcProxy`] per service adds the calls' results as columns,
//! and the node reads those columns instead. A call moves when its arguments
//! read only the node's input (no aggregate, window, subquery or outer
//! reference inside); a call that DataFusion evaluates only on some rows (a
//! `CASE` branch, a later argument of `coalesce`, the right side of
//! `AND`/`OR`) moves with a guard, and the proxy sends only those rows
//! (`collect` and `guard`). A call repeated in a node is sent once (unless
//! it is volatile). A hosted call nested in another one's arguments is sent
//! first, by a proxy of its own below. The names of the node's output are
//! kept, and a node whose output is its input's (a filter, a sort, a join)
//! gets a projection on top that drops the added columns.
//!
//! The rule runs last among DataFusion's optimizer rules
//! ([`RpcRewrite::install`]): by then subqueries are joins and filters have
//! been pushed down, so each call moves from the place DataFusion would
//! evaluate it, and the optimizer's next pass prunes and pushes through the
//! new nodes. A first run, before everything else, moves only calls whose
//! arguments read no column, which constant folding would otherwise
//! evaluate in-process. Calls in the filters pushed into a table scan leave
//! it (`scan`). Neither touches a correlated subquery, which the
//! decorrelation rules must see unchanged. Every column the rule adds has a
//! new name (`__rpcop_call_N`), so none collides with a column of the same
//! name on the other side of a join.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, Projection, Subquery};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::collect::{Collector, Moved, contains_hosted_call};
use crate::config::RpcopConfig;
use crate::directory::{ServiceDirectory, ServiceRef};
use crate::guard::Context;
use crate::proxy::{ProxyCall, RpcProxy};
use crate::scan::unpush_hosted_filters;

/// The optimizer rule that moves calls of service-hosted functions into
/// [`RpcProxy`] nodes (see the module documentation).
#[derive(Debug)]
pub struct RpcRewrite {
    directory: Arc<dyn ServiceDirectory>,
    constants_only: bool,
}

/// A list of optimizer rules, as DataFusion's [`Optimizer`] holds them.
///
/// [`Optimizer`]: datafusion::optimizer::Optimizer
pub type OptimizerRules = Vec<Arc<dyn OptimizerRule + Send + Sync>>;

impl RpcRewrite {
    /// A rule asking `directory` which service serves a function; it moves
    /// every call it can.
    pub fn new(directory: Arc<dyn ServiceDirectory>) -> Self {
        Self {
            directory,
            constants_only: false,
        }
    }

    /// `rules` (DataFusion's, such as `Optimizer::new().rules`) with the
    /// rule added where it must run: last, once DataFusion has turned
    /// subqueries into joins and pushed filters down, so each call moves
    /// from where DataFusion would evaluate it; and, for calls of constants
    /// only, first, before constant folding would evaluate them in-process.
    pub fn install(
        mut rules: OptimizerRules,
        directory: Arc<dyn ServiceDirectory>,
    ) -> OptimizerRules {
        let constants = Self {
            directory: Arc::clone(&directory),
            constants_only: true,
        };
        rules.insert(0, Arc::new(constants));
        rules.push(Arc::new(Self::new(directory)));
        rules
    }

    /// `plan` with the calls of every node moved, except inside correlated
    /// subqueries.
    fn rewrite_plan(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.transform_down_up(
            |node| {
                Ok(match &node {
                    LogicalPlan::Subquery(s) if correlated(&s.subquery) => {
                        Transformed::new(node, false, TreeNodeRecursion::Jump)
                    }
                    _ => Transformed::no(node),
                })
            },
            |node| {
                node.map_subqueries(|subquery| match subquery {
                    LogicalPlan::Subquery(s) if !correlated(&s.subquery) => {
                        let Subquery {
                            subquery,
                            outer_ref_columns,
                            spans,
                        } = s;
                        self.rewrite_plan(Arc::unwrap_or_clone(subquery), config)?
                            .map_data(|plan| {
                                Ok(LogicalPlan::Subquery(Subquery {
                                    subquery: Arc::new(plan),
                                    outer_ref_columns,
                                    spans,
                                }))
                            })
                    }
                    other => Ok(Transformed::no(other)),
                })?
                .transform_data(|node| self.rewrite_node(node, config))
            },
        )
    }

    /// One node with its hosted calls moved below it.
    fn rewrite_node(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !self.constants_only && matches!(plan, LogicalPlan::TableScan(_)) {
            let unpushed = unpush_hosted_filters(plan, self.directory.as_ref())?;
            return match unpushed.data {
                LogicalPlan::TableScan(_) => Ok(unpushed),
                // an exact filter back above the scan: its calls move now
                above => Ok(Transformed::yes(self.rewrite_plan(above, config)?.data)),
            };
        }
        // the expressions evaluated on every row: all, but a join's filter,
        // which sees only the pairs of rows whose keys match
        let (keeps_names, always) = match &plan {
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_) => {
                (true, usize::MAX)
            }
            LogicalPlan::Filter(_) | LogicalPlan::Sort(_) => (false, usize::MAX),
            LogicalPlan::Join(join) => (false, 2 * join.on.len()),
            _ => return Ok(Transformed::no(plan)),
        };
        let mut exprs = plan.expressions();
        if !exprs
            .iter()
            .any(|e| contains_hosted_call(self.directory.as_ref(), e))
        {
            return Ok(Transformed::no(plan));
        }
        let contexts: Vec<Context> = (0..exprs.len())
            .map(|i| {
                if i < always {
                    Context::Always
                } else {
                    Context::Unknown
                }
            })
            .collect();
        let preserver = NamePreserver::new(&plan);
        let names: Vec<_> = exprs.iter().map(|e| preserver.save(e)).collect();
        let mut inputs: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
        let mut changed = false;
        for input in &mut inputs {
            // one round per level of hosted calls nested in hosted calls (or
            // in the conditions guarding them)
            for _ in 0..MAX_ROUNDS {
                let mut collector = Collector::new(
                    self.directory.as_ref(),
                    input.schema(),
                    config,
                    self.constants_only,
                );
                exprs = exprs
                    .into_iter()
                    .zip(&contexts)
                    .map(|(e, context)| collector.visit(e, context))
                    .collect::<Result<_>>()?;
                let moved = collector.finish();
                if moved.is_empty() {
                    break;
                }
                *input = hoist(input.clone(), moved)?;
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
                .map(|(e, name)| match e {
                    // its columns are named after the expressions inside;
                    // `with_schema` renames them
                    Expr::GroupingSet(_) => e,
                    e => name.restore(e),
                })
                .collect()
        } else {
            exprs
        };
        let schema = Arc::clone(plan.schema());
        let rewritten = plan.with_new_exprs(exprs, inputs)?;
        Ok(Transformed::yes(with_schema(rewritten, &schema)?))
    }
}

/// Does `plan` read a column of a query around it?
fn correlated(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(node.contains_outer_reference()
            || node
                .apply_subqueries(|sub| {
                    Ok(if correlated(sub) {
                        TreeNodeRecursion::Stop
                    } else {
                        TreeNodeRecursion::Continue
                    })
                })
                .is_ok_and(|r| r == TreeNodeRecursion::Stop))
    })
    .unwrap_or(true)
}

/// Puts `moved` below a node: one proxy per service, in the order the
/// services were first seen.
fn hoist(input: LogicalPlan, moved: Vec<Moved>) -> Result<LogicalPlan> {
    let mut by_service: Vec<(ServiceRef, Vec<ProxyCall>)> = Vec::new();
    for call in moved {
        let proxy_call = ProxyCall {
            func: call.func,
            function: call.function,
            args: call.args,
            guard: call.guard,
            name: call.name,
        };
        match by_service.iter_mut().find(|(s, _)| *s == call.service) {
            Some((_, calls)) => calls.push(proxy_call),
            None => by_service.push((call.service, vec![proxy_call])),
        }
    }
    let mut plan = input;
    for (service, calls) in by_service {
        let proxy = RpcProxy::try_new(Arc::new(plan), service, calls)?;
        plan = LogicalPlan::Extension(Extension {
            node: Arc::new(proxy),
        });
    }
    Ok(plan)
}

/// Rounds of moving calls per node: calls nested deeper in each other's
/// arguments (or guards) stay in-process.
const MAX_ROUNDS: usize = 16;

/// `plan`, with a projection on top if its output differs from `schema`:
/// one that drops the columns it added, or renames its columns as they were.
fn with_schema(plan: LogicalPlan, schema: &DFSchema) -> Result<LogicalPlan> {
    let same_width = plan.schema().fields().len() == schema.fields().len();
    let same = same_width
        && plan
            .schema()
            .iter()
            .zip(schema.iter())
            .all(|((q1, f1), (q2, f2))| q1 == q2 && f1.name() == f2.name());
    if same {
        return Ok(plan);
    }
    let exprs = if same_width {
        plan.schema()
            .iter()
            .zip(schema.iter())
            .map(|((q1, f1), (q2, f2))| {
                let column = Expr::Column(Column::new(q1.cloned(), f1.name()));
                if q1 == q2 && f1.name() == f2.name() {
                    column
                } else {
                    column.alias_qualified(q2.cloned(), f2.name())
                }
            })
            .collect()
    } else {
        schema.columns().into_iter().map(Expr::Column).collect()
    };
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(plan),
    )?))
}

impl OptimizerRule for RpcRewrite {
    fn name(&self) -> &str {
        if self.constants_only {
            "rpc_rewrite_constants"
        } else {
            "rpc_rewrite"
        }
    }

    /// The rule walks the plan itself, to leave correlated subqueries alone.
    fn apply_order(&self) -> Option<ApplyOrder> {
        None
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !RpcopConfig::rewrite_enabled(&config.options()) {
            return Ok(Transformed::no(plan));
        }
        self.rewrite_plan(plan, config)
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
        let rules = RpcRewrite::install(
            datafusion::optimizer::Optimizer::new().rules,
            Arc::new(TwoServices),
        );
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

    /// The optimized plan of `sql`, with the generated column names left out
    /// (` AS __rpcop_call_N` dropped, other uses shown as `#`).
    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let text = plan.display_indent().to_string();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("__rpcop_call_") {
            let (before, after) = rest.split_at(at);
            let digits = after["__rpcop_call_".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            match before.strip_suffix(" AS ") {
                Some(before) => out.push_str(before),
                None => {
                    out.push_str(before);
                    out.push('#');
                }
            }
            rest = &after["__rpcop_call_".len() + digits..];
        }
        out.push_str(rest);
        out
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
            p.contains("calls=[upper(t.a)]") && p.contains("Filter: # = Utf8"),
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
        let md5 = p.find("calls=[md5(#)]").unwrap();
        assert!(md5 < upper, "{p}");
        // an expression argument is evaluated by the proxy
        let p = plan(&ctx, "SELECT upper(concat(a, b)) FROM t").await;
        assert!(p.contains("calls=[upper(concat(t.a, t.b))]"), "{p}");
        // a repeated call is sent once
        let p = plan(&ctx, "SELECT upper(a) AS x, upper(a) || '!' AS y FROM t").await;
        assert_eq!(p.matches("upper(t.a)]").count(), 1, "{p}");
        // a volatile one as often as it is written
        let p = plan(
            &ctx,
            "SELECT upper(a || random()) AS x, upper(a || random()) AS y FROM t",
        )
        .await;
        assert_eq!(p.matches("upper(t.a || CAST(random()").count(), 2, "{p}");
    }

    #[tokio::test]
    async fn conditional_calls_move_with_the_rows_they_are_evaluated_on() {
        let ctx = context().await;
        let p = plan(
            &ctx,
            "SELECT CASE WHEN n > 0 THEN upper(a) ELSE md5(b) END FROM t",
        )
        .await;
        assert!(
            p.contains(
                "calls=[upper(t.a) WHEN CASE WHEN t.n > Int32(0) THEN Int8(1) ELSE Int8(0) END = 1]"
            ),
            "{p}"
        );
        assert!(
            p.contains(
                "calls=[md5(t.b) WHEN CASE WHEN t.n > Int32(0) THEN Int8(0) ELSE Int8(1) END = 1]"
            ),
            "{p}"
        );
        // coalesce's later arguments are evaluated where the earlier are NULL
        let p = plan(&ctx, "SELECT coalesce(b, upper(a)) FROM t").await;
        assert!(
            p.contains("calls=[upper(t.a) WHEN CASE WHEN t.b IS NOT NULL THEN Int8(0) ELSE Int8(1) END = 1]"),
            "{p}"
        );
        // the right side of AND where the left is not false
        let p = plan(&ctx, "SELECT n FROM t WHERE n > 0 AND upper(a) = 'X'").await;
        assert!(
            p.contains("calls=[upper(t.a) WHEN CASE WHEN t.n > Int32(0) IS NOT FALSE THEN Int8(1) ELSE Int8(0) END = 1]"),
            "{p}"
        );
        // a hosted call in a WHEN moves first; the branch's guard reads it
        let p = plan(
            &ctx,
            "SELECT CASE WHEN upper(a) = 'X' THEN md5(b) END FROM t",
        )
        .await;
        let md5 = p
            .find("calls=[md5(t.b) WHEN CASE WHEN # = Utf8View(\"X\") THEN Int8(1) ELSE Int8(0) END = 1]")
            .unwrap_or_else(|| panic!("{p}"));
        let upper = p
            .find("calls=[upper(t.a)]")
            .unwrap_or_else(|| panic!("{p}"));
        assert!(md5 < upper, "{p}");
    }

    #[tokio::test]
    async fn calls_whose_rows_cannot_be_told_stay_in_process() {
        let ctx = context().await;
        // evaluating random() again would not pick the same rows
        let p = plan(
            &ctx,
            "SELECT CASE WHEN random() > 0.5 THEN upper(a) END FROM t",
        )
        .await;
        assert!(!p.contains("RpcProxy"), "{p}");
        // a join filter sees only the pairs whose keys match
        let p = plan(
            &ctx,
            "SELECT n FROM t LEFT JOIN u ON t.a = u.k AND upper(t.b) = 'Y'",
        )
        .await;
        assert!(!p.contains("RpcProxy"), "{p}");
    }

    #[tokio::test]
    async fn subqueries_are_decorrelated_before_their_calls_move() {
        let ctx = context().await;
        // a correlated scalar subquery becomes a join first
        let p = plan(
            &ctx,
            "SELECT n, (SELECT max(upper(k)) FROM u WHERE u.k = t.a) FROM t",
        )
        .await;
        assert!(
            p.contains("calls=[upper(u.k)]") && !p.contains("Subquery:"),
            "{p}"
        );
        // the same call on both sides of IN: no two columns share a name
        let p = plan(
            &ctx,
            "SELECT n FROM t WHERE upper(a) IN (SELECT upper(k) FROM u)",
        )
        .await;
        assert_eq!(p.matches("calls=[upper(").count(), 2, "{p}");
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
