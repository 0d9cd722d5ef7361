//! A service's definition as a plan carries it to another process (a
//! distributed engine's scheduler and executors): its name, functions,
//! endpoints, and the options that differ from their defaults.
//!
//! It holds no secret: an `ENDPOINTS` service's token travels as the path
//! of its `token_file`, which each executor host must have; the token of a
//! pool started here never leaves this process. A definition is versioned:
//! a process that reads another version refuses it and says so.

use rpcop_sql::Location;
use rpcop_sql::statement::{CreateService, OptionValue};
use serde::{Deserialize, Serialize};

use crate::error::RpcError;
use crate::options::{Placement, ServiceOptions};
use crate::region::ServiceRegion;

/// The version of the definitions this build writes and reads.
pub(crate) const DEFINITION_VERSION: u32 = 1;

/// What another process needs to reach a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceDefinition {
    /// [`DEFINITION_VERSION`] of the process that wrote it.
    pub(crate) version: u32,
    /// The service's name.
    pub(crate) name: String,
    /// The functions it hosts.
    pub(crate) functions: Vec<String>,
    /// Its instances' addresses (`ENDPOINTS`); empty for a pool.
    pub(crate) endpoints: Vec<String>,
    /// Its options that differ from the defaults, as `key = 'value'` text.
    pub(crate) options: Vec<(String, String)>,
}

impl ServiceDefinition {
    /// The definition of `region` as it runs now.
    pub(crate) fn of(region: &ServiceRegion) -> Self {
        Self::new(
            region.name(),
            region.functions(),
            region.endpoints(),
            &region.options(),
        )
    }

    /// The definition of service `name` hosting `functions`, at `endpoints`
    /// (none for a pool), with `options`.
    pub(crate) fn new(
        name: &str,
        functions: &[String],
        endpoints: &[String],
        options: &ServiceOptions,
    ) -> Self {
        // an ENDPOINTS service has one instance per endpoint; an autoscaled
        // one starts within its bounds (its size now changes as it runs)
        let sized = endpoints.is_empty() && options.max_parallelism.is_none();
        let options = options
            .describe()
            .into_iter()
            .filter(|info| info.value != info.default)
            .filter(|info| sized || info.key != "parallelism")
            .map(|info| (info.key.to_string(), info.value))
            .collect();
        Self {
            version: DEFINITION_VERSION,
            name: name.to_string(),
            functions: functions.to_vec(),
            endpoints: endpoints.to_vec(),
            options,
        }
    }

    /// The definition as a plan carries it.
    pub(crate) fn to_text(&self) -> String {
        // a struct of strings always serializes
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a definition that a plan carried.
    pub(crate) fn parse(text: &str) -> Result<Self, RpcError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let invalid = |e: serde_json::Error| {
            RpcError::InvalidPlan(format!(
                "the definition of an RPC service in the plan is not one rpcop reads ({e})"
            ))
        };
        let Versioned { version } = serde_json::from_str(text).map_err(invalid)?;
        if version != DEFINITION_VERSION {
            return Err(RpcError::InvalidPlan(format!(
                "the plan defines its RPC services in version {version}, this process reads \
                 version {DEFINITION_VERSION}: run the same rpcop release on the client, the \
                 scheduler and the executors"
            )));
        }
        serde_json::from_str(text).map_err(invalid)
    }

    /// What identifies the service it defines in another process: all but
    /// the options that change while it runs (routing, and its size), so
    /// an `ALTER` on the client starts no second copy on the executors.
    pub(crate) fn identity(&self) -> String {
        let options = self
            .options
            .iter()
            .filter(|(key, _)| {
                ServiceOptions::scope_of(key).is_ok_and(|(_, scope)| !scope.changes_while_running())
            })
            .cloned()
            .collect();
        Self {
            options,
            ..self.clone()
        }
        .to_text()
    }

    /// Its options.
    pub(crate) fn options(&self) -> Result<ServiceOptions, RpcError> {
        let mut options = ServiceOptions::default();
        for (key, value) in &self.options {
            options.set(key, value)?;
        }
        Ok(options)
    }

    /// Can a process other than the session's reach it? Only instances at
    /// `ENDPOINTS`, or a pool each executor starts itself; otherwise the
    /// error that says what to do.
    pub(crate) fn check_shippable(&self) -> Result<(), RpcError> {
        if !self.endpoints.is_empty() || self.options()?.placement == Placement::PerExecutor {
            return Ok(());
        }
        Err(RpcError::InvalidPlan(format!(
            "RPC service '{}' runs in this session's process, which a distributed engine's \
             executors cannot reach: CREATE it WITH (placement = 'per_executor') for a copy in \
             each executor, or with ENDPOINTS (...) of instances every executor reaches",
            self.name
        )))
    }

    /// A pool `name` hosting `function` with `options` (`key`, `value`).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, function: &str, options: &[(&str, &str)]) -> Self {
        Self {
            version: DEFINITION_VERSION,
            name: name.into(),
            functions: vec![function.into()],
            endpoints: Vec::new(),
            options: options
                .iter()
                .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
                .collect(),
        }
    }

    /// The statement that creates it in another process's session, under
    /// the name `name`.
    pub(crate) fn statement(&self, name: &str) -> CreateService {
        let at = Location::new(0, 0);
        CreateService {
            name: Some(name.to_string()),
            if_not_exists: false,
            functions: self.functions.clone(),
            endpoints: self.endpoints.clone(),
            options: self
                .options
                .iter()
                .map(|(key, value)| OptionValue {
                    key: key.clone(),
                    value: value.clone(),
                    location: at,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> ServiceDefinition {
        ServiceDefinition::for_tests(
            "embedder",
            "embed",
            &[("placement", "per_executor"), ("batch_size", "64")],
        )
    }

    #[test]
    fn a_definition_reads_back_as_written() {
        let written = definition();
        let read = ServiceDefinition::parse(&written.to_text()).expect("reads");
        assert_eq!(read, written);
        let options = read.options().expect("options");
        assert_eq!(options.batch_size, 64);
        assert_eq!(options.placement, Placement::PerExecutor);
        read.check_shippable().expect("a copy per executor ships");
    }

    #[test]
    fn what_changes_while_it_runs_is_not_its_identity() {
        let first = definition();
        let mut altered = definition();
        altered.options[1].1 = "128".into(); // batch_size
        altered.options.push(("parallelism".into(), "3".into()));
        assert_eq!(first.identity(), altered.identity());
        let mut other = definition();
        other.options.push(("threads".into(), "4".into()));
        assert_ne!(first.identity(), other.identity());
    }

    #[test]
    fn another_version_or_a_session_pool_is_refused_with_what_to_do() {
        let mut other = definition();
        other.version = DEFINITION_VERSION + 1;
        let error = ServiceDefinition::parse(&other.to_text()).expect_err("refused");
        assert!(error.to_string().contains("same rpcop release"), "{error}");
        let error = ServiceDefinition::parse("{}").expect_err("no version");
        assert!(error.to_string().contains("not one rpcop reads"), "{error}");

        let mut local = definition();
        local.options.clear();
        let error = local.check_shippable().expect_err("session pool");
        assert!(
            error.to_string().contains("placement = 'per_executor'"),
            "{error}"
        );
        local.endpoints = vec!["http://10.0.0.7:50051".into()];
        local.check_shippable().expect("endpoints ship");
    }
}
