//! How a proxy operator reaches its service: the session's own client, or
//! a service that a plan from another process names (a distributed engine's
//! executor), which this process starts or attaches on first use.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion::common::Result;
use futures::future::BoxFuture;

use crate::client::ServiceClient;
use crate::options::ServiceOptions;

/// Gives the client of a service that a shipped plan defines: started or
/// attached on first use, then shared by every task of the process.
pub(crate) trait ServiceResolver: Debug + Send + Sync {
    /// The client of the service `definition` describes.
    fn client(&self, definition: Arc<str>) -> BoxFuture<'static, Result<ServiceClient>>;
}

/// The service a proxy operator calls, as this process reaches it.
#[derive(Debug, Clone)]
// only the Ballista layer (feature `ballista`) ships plans to other processes
#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
pub(crate) enum Target {
    /// The running service of the session that planned the query.
    Client(ServiceClient),
    /// A service defined by the plan, reached through a resolver when the
    /// operator first runs.
    Shipped(Box<Shipped>),
}

/// A service a plan from another process defines.
#[derive(Debug, Clone)]
pub(crate) struct Shipped {
    /// The service's name.
    pub(crate) name: String,
    /// Its options, as the definition gives them.
    pub(crate) options: ServiceOptions,
    /// The definition, as the plan carries it.
    pub(crate) definition: Arc<str>,
    /// Where its client comes from.
    pub(crate) resolver: Arc<dyn ServiceResolver>,
}

impl Target {
    /// The service's name.
    pub(crate) fn service(&self) -> &str {
        match self {
            Self::Client(client) => client.service(),
            Self::Shipped(shipped) => &shipped.name,
        }
    }

    /// The service's options.
    pub(crate) fn options(&self) -> &ServiceOptions {
        match self {
            Self::Client(client) => client.options(),
            Self::Shipped(shipped) => &shipped.options,
        }
    }

    /// The client: the session's, or the resolver's (which may start the
    /// service first).
    pub(crate) fn client(&self) -> BoxFuture<'static, Result<ServiceClient>> {
        match self {
            Self::Client(client) => {
                let client = client.clone();
                Box::pin(async move { Ok(client) })
            }
            Self::Shipped(shipped) => shipped.resolver.client(Arc::clone(&shipped.definition)),
        }
    }
}
