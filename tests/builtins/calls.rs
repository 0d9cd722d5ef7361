//! Which argument-type lists each built-in accepts, and the calls made of
//! them: every argument a column, or one of them a literal.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{Expr, ScalarUDF, Volatility};
use datafusion::prelude::{col, lit};
use rpcop::{FunctionLibrary, RpcSession};

use crate::pool::{Column, LITERAL_ROWS};

/// The longest argument list tried.
const MAX_ARITY: usize = 3;
/// How many of DataFusion's example argument lists of each length are tried.
const EXAMPLES: usize = 8;

/// The scalar built-ins a service may host, one per implementation (an
/// alias calls the same function), with at least one argument: a call
/// without arguments is a constant DataFusion folds before any service
/// could be asked.
pub(crate) fn hostable(session: &RpcSession) -> Vec<Arc<ScalarUDF>> {
    let state = session.context().state();
    let mut seen = BTreeSet::new();
    FunctionLibrary::default()
        .names()
        .filter_map(|name| state.scalar_functions().get(name).cloned())
        .filter(|udf| seen.insert(udf.name().to_string()))
        .filter(|udf| !udf.short_circuits() && udf.signature().volatility != Volatility::Volatile)
        .collect()
}

/// The argument-type lists of `udf` found in the pool, each as the pool's
/// column indices: one argument of every pool type it accepts; for two and
/// more arguments, the lists DataFusion's own examples of the signature
/// name (a few of each length), and every list that differs in one position
/// from the first accepted one (an example, or one pool type repeated).
pub(crate) fn accepted(udf: &ScalarUDF, pool: &[Column]) -> Vec<Vec<usize>> {
    let field = |i: usize| -> FieldRef {
        Arc::new(Field::new("x", pool[i].values.data_type().clone(), true))
    };
    let accepts = |types: &[usize]| {
        let fields: Vec<FieldRef> = types.iter().map(|&i| field(i)).collect();
        fields_with_udf(&fields, udf).is_ok()
    };
    let mut found: Vec<Vec<usize>> = Vec::new();
    let keep = |types: Vec<usize>, found: &mut Vec<Vec<usize>>| {
        if !found.contains(&types) && accepts(&types) {
            found.push(types);
        }
    };
    let examples: Vec<Vec<usize>> = udf
        .signature()
        .type_signature
        .get_example_types()
        .iter()
        .filter_map(|example| {
            example
                .iter()
                .map(|t| pool.iter().position(|c| c.values.data_type() == t))
                .collect::<Option<Vec<usize>>>()
        })
        .filter(|i| !i.is_empty() && i.len() <= MAX_ARITY)
        .collect();
    for i in 0..pool.len() {
        keep(vec![i], &mut found);
    }
    for arity in 2..=MAX_ARITY {
        for example in examples.iter().filter(|e| e.len() == arity).take(EXAMPLES) {
            keep(example.clone(), &mut found);
        }
        let base = found
            .iter()
            .find(|t| t.len() == arity)
            .cloned()
            .or_else(|| {
                (0..pool.len())
                    .map(|i| vec![i; arity])
                    .find(|types| accepts(types))
            });
        let Some(base) = base else {
            continue;
        };
        keep(base.clone(), &mut found);
        for position in 0..arity {
            for i in 0..pool.len() {
                let mut types = base.clone();
                types[position] = i;
                keep(types, &mut found);
            }
        }
    }
    found
}

/// A call of `udf` on the pool's columns `types`, all of them columns, or
/// with argument `literal.0` the value of row `literal.1`.
fn call(
    udf: &Arc<ScalarUDF>,
    pool: &[Column],
    types: &[usize],
    literal: Option<(usize, usize)>,
) -> Expr {
    let args = types
        .iter()
        .enumerate()
        .map(|(position, &i)| match literal {
            Some((at, row)) if at == position => {
                lit(ScalarValue::try_from_array(&pool[i].values, row).unwrap())
            }
            _ => col(pool[i].name.as_str()),
        })
        .collect();
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))
}

/// The calls of one argument-type list: all columns, then each argument in
/// turn a literal. Calls DataFusion would name alike are left out (a NULL
/// column gives three `NULL` literals).
pub(crate) fn calls(udf: &Arc<ScalarUDF>, pool: &[Column], types: &[usize]) -> Vec<Expr> {
    let mut names = BTreeSet::new();
    std::iter::once(None)
        .chain((0..types.len()).flat_map(|at| LITERAL_ROWS.map(|row| Some((at, row)))))
        .map(|literal| call(udf, pool, types, literal))
        .filter(|e| names.insert(e.schema_name().to_string()))
        .collect()
}
