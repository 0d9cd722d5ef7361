//! Errors as the SQL user sees them: the runtime's typed errors with the
//! statement to run next, and option errors pointing at the option.
//!
//! The runtime ([`RpcError`], [`OptionError`]) says what went wrong in its
//! own terms; only here is it told which SQL statement helps (`DESCRIBE RPC
//! SERVICE`, `DROP` and `CREATE`), decided by the error's variant, never by
//! its text.

use std::fmt;

use datafusion::common::utils::datafusion_strsim::levenshtein;
use datafusion::error::DataFusionError;
use rpcop_sql::Location;

use crate::error::RpcError;
use crate::options::OptionError;

/// A runtime error and the SQL that helps with it.
#[derive(Debug)]
pub(crate) struct Advised {
    error: RpcError,
    advice: String,
}

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.error, self.advice)
    }
}

impl std::error::Error for Advised {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The SQL-level advice for an option error, if there is one.
fn option_advice(error: &OptionError) -> Option<String> {
    match error {
        OptionError::FixedWhileRunning { .. } => {
            Some("DROP and CREATE the service again".to_string())
        }
        _ => None,
    }
}

/// The SQL-level advice for a runtime error, if there is one.
fn advice(error: &RpcError) -> Option<String> {
    match error {
        RpcError::NoInstance { service, .. } => Some(format!(
            "DESCRIBE RPC SERVICE {service} shows each instance's state and restarts"
        )),
        RpcError::Exhausted { service, .. } => Some(format!(
            "DESCRIBE RPC SERVICE {service} shows its instances; with on_error = 'null' \
             the rows of a failed request get NULL instead"
        )),
        RpcError::FixedEndpoints { .. } => {
            Some("DROP it and CREATE it with other ENDPOINTS".to_string())
        }
        RpcError::Option(option) => option_advice(option),
        _ => None,
    }
}

/// A runtime error as a `DataFusionError`, with SQL advice where one helps.
pub(crate) fn rpc_error(error: RpcError) -> DataFusionError {
    match advice(&error) {
        Some(advice) => DataFusionError::External(Box::new(Advised { error, advice })),
        None => DataFusionError::from(error),
    }
}

/// `did you mean a, b?` naming up to three of `candidates` close to `name`
/// (by edit distance, ignoring case), if any is.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let wanted = name.to_ascii_lowercase();
    let mut close: Vec<(usize, &str)> = candidates
        .map(|c| (levenshtein(&wanted, &c.to_ascii_lowercase()), c))
        .filter(|(distance, c)| *distance > 0 && *distance <= (c.len() / 3).max(2))
        .collect();
    close.sort();
    close.dedup();
    if close.is_empty() {
        return None;
    }
    let names: Vec<&str> = close.iter().take(3).map(|(_, c)| *c).collect();
    Some(format!("did you mean {}?", names.join(", ")))
}

/// A planning error as the session shows it.
pub(crate) fn plan_error(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

/// A bad option of a statement: the error, the SQL that helps, and where
/// the option stands in the statement.
pub(crate) fn option_error(error: &OptionError, at: Option<Location>) -> DataFusionError {
    let mut message = error.to_string();
    if let Some(advice) = option_advice(error) {
        message = format!("{message}; {advice}");
    }
    if let Some(at) = at {
        message = format!("{message} (at Line: {}, Column: {})", at.line, at.column);
    }
    plan_error(message)
}

/// Adds SQL advice to a runtime error that a query's execution raised.
pub(crate) fn advise(error: DataFusionError) -> DataFusionError {
    match error {
        DataFusionError::External(inner) => match inner.downcast::<RpcError>() {
            Ok(rpc) => rpc_error(*rpc),
            Err(inner) => DataFusionError::External(inner),
        },
        DataFusionError::Context(context, inner) => {
            DataFusionError::Context(context, Box::new(advise(*inner)))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn advice_follows_the_variant() {
        let error = rpc_error(RpcError::NoInstance {
            service: "s".into(),
            function: "f".into(),
            waited: Duration::from_millis(5),
        });
        let text = error.to_string();
        assert!(
            text.contains("no ready instance") && text.contains("DESCRIBE RPC SERVICE s"),
            "{text}"
        );
        let plain = rpc_error(RpcError::InvalidToken).to_string();
        assert!(!plain.contains("; "), "{plain}");
        // advice reaches errors raised while a query runs
        let raised = DataFusionError::from(RpcError::FixedEndpoints {
            service: "r".into(),
            endpoints: 2,
        });
        assert!(advise(raised).to_string().contains("DROP it and CREATE it"));
    }

    #[test]
    fn option_errors_point_at_the_option() {
        let error = OptionError::FixedWhileRunning { key: "threads" };
        let text = option_error(&error, Some(Location::new(1, 30))).to_string();
        assert!(
            text.contains("option 'threads' of a running service cannot change; DROP and CREATE the service again (at Line: 1, Column: 30)"),
            "{text}"
        );
    }
}
