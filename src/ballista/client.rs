//! The client: a session whose queries run on a Ballista cluster.

use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;

use super::logical::RpcopLogicalCodec;
use crate::session::{RpcSession, RpcSessionBuilder};

/// The session `builder` makes, running its queries on the Ballista
/// scheduler at `scheduler_url` (`df://host:port`): its statements, its
/// services and its rewrite stay here, the plan runs on the cluster.
pub fn remote_session(builder: RpcSessionBuilder, scheduler_url: &str) -> Result<RpcSession> {
    builder.build_with(|state| {
        // the client sends logical plans only; the scheduler plans them
        let config = state
            .config()
            .clone()
            .with_ballista_logical_extension_codec(Arc::new(RpcopLogicalCodec::default()));
        SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build()
            .upgrade_for_ballista(scheduler_url.to_string())
    })
}
