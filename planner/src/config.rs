//! The `rpcop.*` settings of a session, changed with `SET rpcop.key = value`
//! and read with `SHOW rpcop.key` or `SHOW ALL`.

use std::any::Any;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{Result, plan_err};

/// rpcop's settings in a DataFusion session (`SET rpcop.rewrite = false`).
///
/// Written out rather than with DataFusion's `extensions_options!`, whose
/// entries drop the `rpcop.` prefix: `SHOW rpcop.rewrite` would not find the
/// setting, and `SHOW ALL` would list it as `rewrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcopConfig {
    /// Rewrite calls of service-hosted functions into RPC proxies. With
    /// `false`, every function runs in-process, as if no service existed.
    pub rewrite: bool,
}

impl Default for RpcopConfig {
    fn default() -> Self {
        Self { rewrite: true }
    }
}

/// The description of `rpcop.rewrite`, as `SHOW ALL` prints it.
const REWRITE_DOC: &str = "Rewrite calls of service-hosted functions into RPC proxies. With false, \
     every function runs in-process, as if no service existed.";

impl ConfigExtension for RpcopConfig {
    const PREFIX: &'static str = "rpcop";
}

impl ExtensionOptions for RpcopConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    /// `key` without the prefix (`rewrite`), as DataFusion passes it.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "rewrite" => match value.trim().to_ascii_lowercase().as_str() {
                "true" => self.rewrite = true,
                "false" => self.rewrite = false,
                _ => {
                    return plan_err!("rpcop.rewrite takes true or false, not '{value}'");
                }
            },
            _ => return plan_err!("unknown setting 'rpcop.{key}'; rpcop has rpcop.rewrite"),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![ConfigEntry {
            key: format!("{}.rewrite", Self::PREFIX),
            value: Some(self.rewrite.to_string()),
            description: REWRITE_DOC,
        }]
    }
}

impl RpcopConfig {
    /// Is rewriting on in `options`? (On when the extension is absent.)
    pub fn rewrite_enabled(options: &datafusion::common::config::ConfigOptions) -> bool {
        options
            .extensions
            .get::<RpcopConfig>()
            .is_none_or(|config| config.rewrite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    async fn one(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn set_and_show_by_the_full_name() {
        let config = SessionConfig::new().with_option_extension(RpcopConfig::default());
        let ctx = SessionContext::new_with_config(config.with_information_schema(true));
        assert!(
            one(&ctx, "SHOW rpcop.rewrite")
                .await
                .contains("| rpcop.rewrite | true  |")
        );
        ctx.sql("SET rpcop.rewrite = false").await.unwrap();
        assert!(
            one(&ctx, "SHOW rpcop.rewrite")
                .await
                .contains("| rpcop.rewrite | false |")
        );
        let all = one(&ctx, "SHOW ALL").await;
        assert!(all.contains("| rpcop.rewrite "), "{all}");
        let e = ctx.sql("SET rpcop.rewrite = maybe").await.unwrap_err();
        assert!(e.to_string().contains("takes true or false"), "{e}");
        let e = ctx.sql("SET rpcop.rewrit = true").await.unwrap_err();
        assert!(
            e.to_string().contains("unknown setting 'rpcop.rewrit'"),
            "{e}"
        );
    }
}
