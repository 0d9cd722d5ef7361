//! A session's registry: the small endpoint through which instances started
//! on other hosts (`rpcop serve --register`) join its services.
//!
//! It is an Arrow Flight server that answers only `DoAction`
//! `register`, `renew` and `leave` (`wire::registration` has the
//! messages), each call carrying the registry's bearer token, which is not
//! any service's. It looks the named service up in the session's catalog
//! when each call comes, so a service created after the registry started
//! takes registrations too, and one dropped and created again has lost its
//! guests, which register again. Beyond loopback it serves over TLS, or in
//! plain text only when told that the network is trusted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use bytes::Bytes;
use futures::stream;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use super::catalog::ServiceCatalog;
use crate::error::RpcError;
use crate::instance::FlightStream;
use crate::region::ServiceRegion;
use crate::wire::{self, BearerToken, Registration, ServerTls, Tenancy, check_token};

/// How a registry is started ([`crate::RpcSession::start_registry`]).
#[derive(Clone)]
pub struct RegistryConfig {
    /// Where it listens (port 0: a free port; see [`Registry::address`]).
    pub bind: SocketAddr,
    /// The bearer token instances must send to register.
    pub token: String,
    /// How long a registered instance keeps its place without renewing
    /// (it renews every third of it).
    pub lease: Duration,
    /// Serve over TLS.
    pub tls: Option<ServerTls>,
    /// Serve in plain text beyond loopback (refused without it): tokens
    /// and the services' tokens cross the network readable.
    pub insecure: bool,
}

impl RegistryConfig {
    /// The lease when none is given.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    /// The shortest lease: below it, renewals would be most of the traffic.
    pub const MIN_LEASE: Duration = Duration::from_millis(300);

    /// A registry on `bind` taking `token`, with the default lease, in
    /// plain text.
    pub fn new(bind: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            bind,
            token: token.into(),
            lease: Self::DEFAULT_LEASE,
            tls: None,
            insecure: false,
        }
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("bind", &self.bind)
            .field("token", &"(redacted)")
            .field("lease", &self.lease)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A running registry; dropping it stops it (the instances that joined
/// stay members while their leases last).
#[derive(Debug)]
pub struct Registry {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Registry {
    /// Its address, as `rpcop serve --register` takes it
    /// (`http://host:port`, or `https://` with TLS).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

/// Starts a registry for the services of `catalog`
/// ([`crate::RpcSession::start_registry`]).
pub(crate) async fn start(
    catalog: Arc<ServiceCatalog>,
    config: RegistryConfig,
) -> Result<Registry, RpcError> {
    BearerToken::new(&config.token)?;
    if config.lease < RegistryConfig::MIN_LEASE {
        return Err(RpcError::InvalidRegistry {
            reason: format!(
                "a lease of {:?} is too short: at least {:?}",
                config.lease,
                RegistryConfig::MIN_LEASE
            ),
        });
    }
    if config.tls.is_none() && !config.bind.ip().is_loopback() && !config.insecure {
        return Err(RpcError::InvalidRegistry {
            reason: format!(
                "refusing to listen on {} without TLS: the registry's token and the \
                 services' tokens would cross the network readable. Give \
                 --registry-tls-cert and --registry-tls-key, bind a loopback address, or \
                 pass --registry-insecure on a network you trust",
                config.bind
            ),
        });
    }
    let tls = config.tls.as_ref().map(ServerTls::config).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| RpcError::Bind {
            address: config.bind.to_string(),
            source,
        })?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let address = format!("{scheme}://{bound}");
    let handler = RegistryHandler {
        catalog,
        lease: config.lease,
    };
    let expected = wire::bearer(&config.token);
    let service = InterceptedService::new(
        FlightServiceServer::new(handler),
        move |request: Request<()>| {
            check_token(&request, &expected)?;
            Ok(request)
        },
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| RpcError::Tls {
            reason: format!("the registry's certificate or key: {e}"),
        })?;
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = builder.add_service(service);
    let served = address.clone();
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(address = %served, %error, "the registry stopped");
        }
    });
    tracing::info!(%address, lease = ?config.lease, "registry listening");
    Ok(Registry {
        address,
        stop: Some(stop),
        server,
    })
}

/// Answers the registry's actions from the session's catalog.
struct RegistryHandler {
    catalog: Arc<ServiceCatalog>,
    lease: Duration,
}

impl RegistryHandler {
    fn region(&self, service: &str) -> Result<Arc<ServiceRegion>, Status> {
        self.catalog
            .get(service)
            .map(|entry| entry.region)
            .map_err(|e| Status::not_found(e.strip_backtrace()))
    }

    async fn act(&self, action: &Action) -> Result<Bytes, Status> {
        match action.r#type.as_str() {
            wire::ACTION_REGISTER => {
                let registration: Registration = parse(&action.body)?;
                let region = self.region(&registration.service)?;
                let admission = region
                    .admit(&registration, self.lease)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                tracing::info!(service = %registration.service, address = %registration.address,
                    member = admission.member, "instance registered");
                serde_json::to_vec(&admission)
                    .map(Bytes::from)
                    .map_err(|e| Status::internal(e.to_string()))
            }
            wire::ACTION_RENEW | wire::ACTION_LEAVE => {
                let tenancy: Tenancy = parse(&action.body)?;
                let region = self.region(&tenancy.service)?;
                let known = if action.r#type == wire::ACTION_RENEW {
                    region.renew(tenancy.member, &tenancy.secret)
                } else {
                    region.leave(tenancy.member, &tenancy.secret).await
                };
                if known {
                    Ok(Bytes::from_static(b"ok"))
                } else {
                    Err(Status::not_found(format!(
                        "service '{}' has no registered member {} with that secret (its \
                         lease ran out, or it left); register again",
                        tenancy.service, tenancy.member
                    )))
                }
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action '{other}'; this registry answers {}, {} and {}",
                wire::ACTION_REGISTER,
                wire::ACTION_RENEW,
                wire::ACTION_LEAVE
            ))),
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("the action's JSON body: {e}")))
}

fn only_actions<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "this is an rpcop registry: it answers only DoAction register, renew and leave",
    ))
}

#[tonic::async_trait]
impl FlightService for RegistryHandler {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        only_actions()
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        only_actions()
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        only_actions()
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        only_actions()
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        only_actions()
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        only_actions()
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        only_actions()
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        only_actions()
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let body = self.act(request.get_ref()).await?;
        let result = arrow_flight::Result { body };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                wire::ACTION_REGISTER,
                "join a service: a Registration as JSON",
            ),
            (
                wire::ACTION_RENEW,
                "keep a member's place: a Tenancy as JSON",
            ),
            (
                wire::ACTION_LEAVE,
                "drain a member and let it go: a Tenancy as JSON",
            ),
        ]
        .map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(stream::iter(actions))))
    }
}
