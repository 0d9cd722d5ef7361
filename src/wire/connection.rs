//! A Flight connection to one instance, with the protocol's HTTP/2 settings
//! and the region's token, and the control actions sent over it.

use std::time::Duration;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::address::{Bind, UNIX_PREFIX};
use super::auth::BearerToken;
use super::stats::InstanceStats;
use super::tls::ClientTls;
use crate::error::RpcError;
use crate::options::ServiceOptions;

/// A Flight client that sends the region's token.
pub(crate) type FlightClient = FlightServiceClient<InterceptedService<Channel, BearerToken>>;

/// Fails unless `address` is one rpcop can reach: `http://host:port`,
/// `https://host:port` (TLS: the service's `tls_*` options, or the
/// system's certificate authorities), or `unix:/path` (a Unix domain socket
/// on this host).
pub(crate) fn check_endpoint(address: &str) -> Result<(), RpcError> {
    let invalid = |reason: &str| RpcError::InvalidEndpoint {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    const EXPECTED: &str = "expected http://host:port, https://host:port or unix:/absolute/path";
    if address.starts_with(UNIX_PREFIX) {
        // tonic dials unix:/path and unix:///path, as Bind reads them
        return match address.parse::<Bind>() {
            Ok(Bind::Unix(_)) => Ok(()),
            _ => Err(invalid(EXPECTED)),
        };
    }
    let Some(rest) = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
    else {
        return Err(invalid(EXPECTED));
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid(EXPECTED)),
    }
}

/// What a caller needs to talk to an instance: the token it presents, its
/// TLS for an `https://` address, and the largest message it sends or
/// accepts.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) token: BearerToken,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) max_message: usize,
}

impl Access {
    /// The token of a service whose instances speak `options.protocol`,
    /// and the TLS its options ask for.
    pub(crate) fn of(token: &str, options: &ServiceOptions) -> Result<Self, RpcError> {
        let tls = [&options.tls_ca, &options.tls_cert, &options.tls_key]
            .iter()
            .any(|o| o.is_some())
            .then(|| ClientTls::of(options))
            .transpose()?;
        Ok(Self {
            token: BearerToken::for_protocol(token, options.protocol)?,
            tls,
            max_message: options.max_message_size,
        })
    }

    /// `token`, the system's authorities for an `https://` address, and
    /// the default message limit.
    pub(crate) fn token(token: BearerToken) -> Self {
        Self {
            token,
            tls: None,
            max_message: super::constants::MAX_MESSAGE_BYTES,
        }
    }
}

/// A Flight client for the instance at `address` (`http://host:port` or
/// `https://host:port`). The connection is made on first use.
pub(crate) fn connect(
    address: &str,
    access: &Access,
    timeout: Duration,
) -> Result<FlightClient, RpcError> {
    check_endpoint(address)?;
    let mut endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| RpcError::InvalidEndpoint {
            address: address.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(super::constants::KEEPALIVE_INTERVAL)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(super::constants::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(super::constants::CONNECTION_WINDOW_BYTES)
        .max_frame_size(super::constants::MAX_FRAME_BYTES);
    if address.starts_with("https://") {
        let tls = access.tls.clone().unwrap_or_else(ClientTls::system);
        endpoint = endpoint
            .tls_config(tls.config())
            .map_err(|e| RpcError::Tls {
                reason: format!("{address}: {e}"),
            })?;
    }
    Ok(
        FlightServiceClient::with_interceptor(endpoint.connect_lazy(), access.token.clone())
            .max_decoding_message_size(access.max_message)
            .max_encoding_message_size(access.max_message),
    )
}

/// Why an action got no answer.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The instance, or the connection to it, failed the call with this
    /// status (a refused connection is `UNAVAILABLE`, a wrong token
    /// `UNAUTHENTICATED`).
    Status(tonic::Status),
    /// No answer within the time allowed.
    Silent(Duration),
    /// The call ended without a result.
    Empty,
}

/// Runs one action on an instance: its first result, or why there is none.
pub(crate) async fn try_action(
    client: &FlightClient,
    name: &str,
    timeout: Duration,
) -> Result<Bytes, NoAnswer> {
    try_action_with(client, name, Bytes::new(), timeout).await
}

/// Runs one action with `body`: its first result, or why there is none.
pub(crate) async fn try_action_with(
    client: &FlightClient,
    name: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, NoAnswer> {
    let mut client = client.clone();
    let call = async {
        let mut results = client
            .do_action(Action::new(name, body))
            .await
            .map_err(NoAnswer::Status)?
            .into_inner();
        match results.next().await {
            Some(Ok(result)) => Ok(result.body),
            Some(Err(status)) => Err(NoAnswer::Status(status)),
            None => Err(NoAnswer::Empty),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(NoAnswer::Silent(timeout)))
}

/// Runs one action on an instance; `None` on any failure or timeout.
pub(crate) async fn action(client: &FlightClient, name: &str, timeout: Duration) -> Option<Bytes> {
    try_action(client, name, timeout).await.ok()
}

/// An instance's counters (the `stats` action), if it answers within 2 s.
pub(crate) async fn stats_of(client: &FlightClient) -> Option<InstanceStats> {
    stats_within(client, Duration::from_secs(2)).await
}

/// An instance's counters, if it answers within `timeout`.
pub(crate) async fn stats_within(
    client: &FlightClient,
    timeout: Duration,
) -> Option<InstanceStats> {
    let body = action(client, super::constants::ACTION_STATS, timeout).await?;
    serde_json::from_slice(&body).ok()
}

/// Asks the instance at `address` for its counters.
pub(crate) async fn instance_stats(address: &str, access: &Access) -> Option<InstanceStats> {
    let client = connect(address, access, Duration::from_secs(2)).ok()?;
    stats_of(&client).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_and_https_endpoints_are_reached() {
        assert!(super::check_endpoint("http://127.0.0.1:50051").is_ok());
        assert!(super::check_endpoint("https://models.example:443").is_ok());
        for bad in [
            "127.0.0.1:1",
            "http://:1",
            "http://h:port",
            "ftp://h:1",
            "https://h",
        ] {
            assert!(super::check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
