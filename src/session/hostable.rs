//! What a service may host, decided at `CREATE RPC SERVICE` time.
//!
//! A service evaluates scalar functions, one result per row, for rows the
//! rewrite sends it. Some functions named in `FOR FUNCTION` can never be
//! called that way, and are refused with their reason instead of failing
//! every later query:
//! - functions DataFusion plans away: the short-circuiting ones (`coalesce`,
//!   `nvl`, `nvl2`) become `CASE`, and those without arguments that it
//!   replaces by a value when it plans a query (`now()`, `current_date`);
//! - volatile functions (`random()`), unless `allow_volatile = true`: a
//!   request retried, or answered by another instance, would answer
//!   differently;
//! - aggregate and window functions, which see many rows for one result;
//! - rpcop's own `rpc_call`.
//!
//! An unknown name gets the closest known ones as suggestions.

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{ScalarUDF, Volatility};

use super::advice::{did_you_mean, plan_error};
use super::rpc_call::RPC_CALL;
use crate::function::FunctionLibrary;

/// Where the functions of a new service come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Instances started here, from the session's function library.
    Library,
    /// Instances of other code (`ENDPOINTS`, a `command`), which say what
    /// they host.
    Elsewhere,
}

/// Fails, saying why, if `function` cannot be hosted by a service.
pub(crate) fn check(
    registry: &dyn FunctionRegistry,
    library: &FunctionLibrary,
    function: &str,
    source: Source,
    allow_volatile: bool,
) -> Result<()> {
    if function == RPC_CALL {
        return Err(plan_error(format!(
            "{RPC_CALL} is rpcop's own way to call a service; it cannot be hosted by one"
        )));
    }
    if let Ok(udf) = registry.udf(function) {
        return check_scalar(&udf, function, allow_volatile);
    }
    if registry.udaf(function).is_ok() {
        return Err(plan_error(format!(
            "{function} is an aggregate function: a service evaluates scalar functions, one result \
             per row, and aggregates run in DataFusion; host the scalar function inside it instead \
             (in sum(f(x)), host f)"
        )));
    }
    if registry.udwf(function).is_ok() {
        return Err(plan_error(format!(
            "{function} is a window function: a service evaluates scalar functions, one result \
             per row, and window functions run in DataFusion; host the scalar functions in its \
             arguments instead"
        )));
    }
    match source {
        // the instances say what they host when the service attaches
        Source::Elsewhere => Ok(()),
        Source::Library if library.get(function).is_some() => Ok(()),
        Source::Library => Err(plan_error(unknown(registry, library, function))),
    }
}

fn check_scalar(udf: &ScalarUDF, function: &str, allow_volatile: bool) -> Result<()> {
    if udf.short_circuits() {
        return Err(plan_error(format!(
            "{function} evaluates its arguments lazily: DataFusion turns every call of it into \
             CASE, so no call is left for a service; host the functions in its arguments instead"
        )));
    }
    if planned_away(udf) {
        return Err(plan_error(format!(
            "DataFusion replaces {function}() by its value when it plans a query (one value per \
             query), so no call is left for a service"
        )));
    }
    if udf.signature().volatility == Volatility::Volatile && !allow_volatile {
        return Err(plan_error(format!(
            "{function} is volatile: each call may answer differently, and a request that is \
             retried or answered by another instance would; add WITH (allow_volatile = true) to \
             host it anyway"
        )));
    }
    Ok(())
}

/// Does DataFusion replace a call of `udf` without arguments by a value
/// (`now()`, `current_date`)?
fn planned_away(udf: &ScalarUDF) -> bool {
    if !udf.signature().type_signature.supports_zero_argument() {
        return false;
    }
    let context = SimplifyContext::builder()
        .with_query_execution_start_time(Some(Default::default()))
        .build();
    matches!(
        udf.simplify(Vec::new(), &context),
        Ok(ExprSimplifyResult::Simplified(_))
    )
}

/// "unknown function", with the closest names a service could host.
fn unknown(registry: &dyn FunctionRegistry, library: &FunctionLibrary, function: &str) -> String {
    let mut names: Vec<String> = registry
        .udfs()
        .into_iter()
        .chain(library.names().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    let hint = did_you_mean(function, names.iter().map(String::as_str)).unwrap_or_else(|| {
        "SELECT * FROM information_schema.routines lists the session's functions".to_string()
    });
    format!("unknown function '{function}': {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn refused(function: &str) -> String {
        let state = SessionContext::new().state();
        check(
            &state,
            &FunctionLibrary::default(),
            function,
            Source::Library,
            false,
        )
        .unwrap_err()
        .strip_backtrace()
    }

    #[test]
    fn each_refusal_says_why() {
        assert!(refused("now").contains("replaces now() by its value"));
        assert!(refused("current_date").contains("replaces current_date()"));
        assert!(refused("coalesce").contains("evaluates its arguments lazily"));
        assert!(refused("random").contains("allow_volatile = true"));
        assert!(refused("count").contains("count is an aggregate function"));
        assert!(refused("row_number").contains("row_number is a window function"));
        assert!(refused("rpc_call").contains("rpcop's own"));
        let e = refused("uper");
        assert!(
            e.contains("unknown function 'uper': did you mean upper"),
            "{e}"
        );
        let e = refused("no_such_fn_at_all");
        assert!(e.contains("information_schema.routines"), "{e}");
    }

    #[test]
    fn hostable_functions_pass() {
        let state = SessionContext::new().state();
        let library = FunctionLibrary::default();
        for function in ["upper", "to_timestamp", "md5", "character_length"] {
            check(&state, &library, function, Source::Library, false).unwrap();
        }
        check(&state, &library, "random", Source::Library, true).unwrap();
        // instances started elsewhere say what they host
        check(&state, &library, "remote_model", Source::Elsewhere, false).unwrap();
    }
}
