//! The caller's session options on each request: DataFusion functions read
//! them (`to_timestamp` its result's time zone from
//! `datafusion.execution.time_zone`), so an instance must evaluate with the
//! caller's, not its own defaults.
//!
//! Each `datafusion.*` option whose value differs from its default travels
//! in the argument batch's schema metadata as
//! [`SESSION_OPTION_PREFIX`]`<key>` = value. A session's options rarely
//! change, so the schema (and with it these entries) is sent once per
//! stream, not per request. An instance starts from the defaults and sets
//! each entry; a request without entries runs with the defaults.

use std::collections::HashMap;
use std::sync::LazyLock;

use datafusion::config::ConfigOptions;

use super::constants::SESSION_OPTION_PREFIX;

/// The options of DataFusion's defaults, by key.
static DEFAULTS: LazyLock<HashMap<String, Option<String>>> = LazyLock::new(|| {
    ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect()
});

/// The schema metadata entries that carry `options` (see the module
/// documentation): its `datafusion.*` options that differ from their
/// defaults. Extensions' options (rpcop's own) are the caller's, not the
/// function's, and are not sent.
pub fn session_metadata(options: &ConfigOptions) -> HashMap<String, String> {
    options
        .entries()
        .into_iter()
        .filter(|entry| entry.key.starts_with("datafusion."))
        .filter_map(|entry| {
            let value = entry.value?;
            let default = DEFAULTS.get(&entry.key).and_then(Option::as_deref);
            (default != Some(value.as_str()))
                .then(|| (format!("{SESSION_OPTION_PREFIX}{}", entry.key), value))
        })
        .collect()
}

/// Does this schema metadata carry session options?
pub fn has_session_options(metadata: &HashMap<String, String>) -> bool {
    metadata
        .keys()
        .any(|k| k.starts_with(SESSION_OPTION_PREFIX))
}

/// The options a request's schema metadata carries, over DataFusion's
/// defaults; or why one cannot be set.
pub fn session_options(metadata: &HashMap<String, String>) -> Result<ConfigOptions, String> {
    let mut options = ConfigOptions::default();
    for (key, value) in metadata {
        let Some(key) = key.strip_prefix(SESSION_OPTION_PREFIX) else {
            continue;
        };
        options.set(key, value).map_err(|e| {
            format!(
                "the request's session option {key} = '{value}' cannot be set: {}",
                e.strip_backtrace()
            )
        })?;
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_options_travel_and_come_back() {
        assert!(session_metadata(&ConfigOptions::default()).is_empty());
        let mut options = ConfigOptions::default();
        options
            .set("datafusion.execution.time_zone", "+05:00")
            .unwrap();
        options
            .set("datafusion.execution.batch_size", "100")
            .unwrap();
        let metadata = session_metadata(&options);
        assert_eq!(metadata.len(), 2, "{metadata:?}");
        assert_eq!(
            metadata["rpcop.session.datafusion.execution.time_zone"],
            "+05:00"
        );
        assert!(has_session_options(&metadata));
        let back = session_options(&metadata).unwrap();
        assert_eq!(back.execution.time_zone.as_deref(), Some("+05:00"));
        assert_eq!(back.execution.batch_size.to_string(), "100");
    }

    #[test]
    fn an_option_that_cannot_be_set_is_named() {
        let metadata = HashMap::from([(
            "rpcop.session.datafusion.execution.batch_size".to_string(),
            "many".to_string(),
        )]);
        let e = session_options(&metadata).unwrap_err();
        assert!(
            e.contains("datafusion.execution.batch_size = 'many'"),
            "{e}"
        );
        let unknown = HashMap::from([(
            "rpcop.session.datafusion.no_such.option".to_string(),
            "1".to_string(),
        )]);
        assert!(session_options(&unknown).is_err());
        // other metadata is not an option
        let other = HashMap::from([("owner".to_string(), "x".to_string())]);
        assert!(!has_session_options(&other));
        assert!(session_options(&other).is_ok());
    }
}
