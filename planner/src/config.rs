//! The `rpcop.*` settings of a session, changed with `SET rpcop.key = value`.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// rpcop's settings in a DataFusion session (`SET rpcop.rewrite = false`).
    pub struct RpcopConfig {
        /// Rewrite calls of service-hosted functions into RPC proxies. With
        /// `false`, every function runs in-process, as if no service existed.
        pub rewrite: bool, default = true
    }
}

impl ConfigExtension for RpcopConfig {
    const PREFIX: &'static str = "rpcop";
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
