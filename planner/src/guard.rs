//! On which rows a call is evaluated: the [`Context`] of a sub-expression.
//!
//! DataFusion evaluates some parts of an expression only for some rows: a
//! `CASE` branch only where its `WHEN` is the first to hold, the right side of
//! `AND` only where the left is not false, of `OR` only where the left is not
//! true. A call moved out of such a place must still be evaluated only on
//! those rows, or it could fail (or cost) where the query never asked for it.
//! Its context carries a *guard*: an `Int8` expression that is `1` on the rows
//! the call is evaluated on and `0` elsewhere. It is built from the same
//! conditions, nested in `CASE`, so evaluating the guard evaluates each
//! condition only where DataFusion would (the guard is `Int8`, not boolean,
//! because the simplifier turns boolean `CASE` into `AND`/`OR`, which may
//! evaluate every side).

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::Case;
use datafusion::logical_expr::{Expr, lit};

/// Where a sub-expression of a plan node's expression is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Context {
    /// On every row of the node's input.
    Always,
    /// On the rows where the guard is `1`.
    When(Expr),
    /// On rows the rule cannot describe (a lazy argument of a function it
    /// does not know, a guard that would need a volatile condition): calls
    /// here stay in-process.
    Unknown,
}

impl Context {
    /// The context of a part evaluated where `self` holds and where `guard`
    /// (an `Int8` guard, evaluated only where `self` holds) is `1`.
    fn and(&self, guard: Expr) -> Context {
        if guard.is_volatile() {
            // evaluating it again would not give the rows the query took
            return Context::Unknown;
        }
        match self {
            Context::Always => Context::When(guard),
            Context::When(outer) => Context::When(case(None, vec![(is_one(outer), guard)], 0)),
            Context::Unknown => Context::Unknown,
        }
    }

    /// The context of the `index`-th `THEN` of a `CASE` in this context: the
    /// rows where its `WHEN` is the first to hold.
    pub(crate) fn then(&self, base: Option<&Expr>, whens: &[Expr], index: usize) -> Context {
        let mut branches: Vec<(Expr, Expr)> = whens[..index]
            .iter()
            .map(|w| (w.clone(), flag(0)))
            .collect();
        branches.push((whens[index].clone(), flag(1)));
        self.and(case(base, branches, 0))
    }

    /// The context of what a `CASE` evaluates after its first `count` `WHEN`s
    /// failed: the next `WHEN`, or the `ELSE` when `count` is all of them.
    pub(crate) fn none_of(&self, base: Option<&Expr>, whens: &[Expr], count: usize) -> Context {
        if count == 0 {
            return self.clone();
        }
        let branches = whens[..count]
            .iter()
            .map(|w| (w.clone(), flag(0)))
            .collect();
        self.and(case(base, branches, 1))
    }

    /// The context of the right side of `left AND right`.
    pub(crate) fn unless_false(&self, left: &Expr) -> Context {
        self.and(case(None, vec![(left.clone().is_not_false(), flag(1))], 0))
    }

    /// The context of the right side of `left OR right`.
    pub(crate) fn unless_true(&self, left: &Expr) -> Context {
        self.and(case(None, vec![(left.clone().is_not_true(), flag(1))], 0))
    }

    /// The guard, if the context has one.
    pub(crate) fn guard(&self) -> Option<&Expr> {
        match self {
            Context::When(guard) => Some(guard),
            _ => None,
        }
    }
}

/// The guard of a call evaluated on the rows of either guard (`None`: all
/// rows). Each guard is safe to evaluate on every row, so both may be.
pub(crate) fn either(a: Option<Expr>, b: Option<Expr>) -> Option<Expr> {
    match (a, b) {
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(a), Some(b)) => Some(case(
            None,
            vec![(is_one(&a), flag(1)), (is_one(&b), flag(1))],
            0,
        )),
        _ => None,
    }
}

fn flag(value: i8) -> Expr {
    lit(ScalarValue::Int8(Some(value)))
}

fn is_one(guard: &Expr) -> Expr {
    guard.clone().eq(flag(1))
}

fn case(base: Option<&Expr>, when_then: Vec<(Expr, Expr)>, otherwise: i8) -> Expr {
    Expr::Case(Case {
        expr: base.map(|b| Box::new(b.clone())),
        when_then_expr: when_then
            .into_iter()
            .map(|(w, t)| (Box::new(w), Box::new(t)))
            .collect(),
        else_expr: Some(Box::new(flag(otherwise))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::col;

    #[test]
    fn a_branch_is_taken_where_its_when_is_the_first_to_hold() {
        let whens = [col("a"), col("b")];
        let Context::When(guard) = Context::Always.then(None, &whens, 1) else {
            panic!("a guard")
        };
        assert_eq!(
            guard.to_string(),
            "CASE WHEN a THEN Int8(0) WHEN b THEN Int8(1) ELSE Int8(0) END"
        );
        let Context::When(guard) = Context::Always.none_of(None, &whens, 2) else {
            panic!("a guard")
        };
        assert_eq!(
            guard.to_string(),
            "CASE WHEN a THEN Int8(0) WHEN b THEN Int8(0) ELSE Int8(1) END"
        );
        assert_eq!(Context::Always.none_of(None, &whens, 0), Context::Always);
    }

    #[test]
    fn nested_guards_evaluate_the_inner_only_where_the_outer_holds() {
        let outer = Context::Always.unless_false(&col("a"));
        let Context::When(guard) = outer.unless_true(&col("b")) else {
            panic!("a guard")
        };
        assert_eq!(
            guard.to_string(),
            "CASE WHEN CASE WHEN a IS NOT FALSE THEN Int8(1) ELSE Int8(0) END = Int8(1) \
             THEN CASE WHEN b IS NOT TRUE THEN Int8(1) ELSE Int8(0) END ELSE Int8(0) END"
        );
    }

    #[test]
    fn volatile_conditions_and_unknown_contexts_stay_unknown() {
        let random = datafusion::functions::math::random().call(vec![]);
        let whens = [random.gt(lit(0.5))];
        assert_eq!(Context::Always.then(None, &whens, 0), Context::Unknown);
        assert_eq!(Context::Unknown.unless_false(&col("a")), Context::Unknown);
    }

    #[test]
    fn either_guard_covers_both() {
        assert_eq!(either(Some(col("g")), None), None);
        assert_eq!(either(Some(col("g")), Some(col("g"))), Some(col("g")));
        let both = either(Some(col("g")), Some(col("h"))).unwrap();
        assert_eq!(
            both.to_string(),
            "CASE WHEN g = Int8(1) THEN Int8(1) WHEN h = Int8(1) THEN Int8(1) ELSE Int8(0) END"
        );
    }
}
