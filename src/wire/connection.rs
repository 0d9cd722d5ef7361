//! A Flight connection to one instance, with the protocol's HTTP/2 settings
//! and the region's token, and the control actions sent over it.

use std::time::Duration;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::auth::BearerToken;
use super::stats::InstanceStats;
use crate::error::RpcError;

/// A Flight client that sends the region's token.
pub(crate) type FlightClient = FlightServiceClient<InterceptedService<Channel, BearerToken>>;

/// Fails unless `address` is one rpcop can reach as it is meant to be
/// reached: `http://host:port`. An `https://` address is refused rather than
/// used in plain text (which would send the token readable on the wire):
/// rpcop does not speak TLS yet.
pub(crate) fn check_endpoint(address: &str) -> Result<(), RpcError> {
    let invalid = |reason: &str| RpcError::InvalidEndpoint {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    if address.starts_with("https://") {
        return Err(invalid(
            "rpcop does not speak TLS yet, and will not send the token in plain text to an \
             https:// endpoint; reach the instance over http:// on a trusted network (or a \
             TLS-terminating proxy beside it)",
        ));
    }
    let Some(rest) = address.strip_prefix("http://") else {
        return Err(invalid("expected http://host:port"));
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid("expected http://host:port")),
    }
}

/// A Flight client for the instance at `address` (`http://host:port`). The
/// connection is made on first use.
pub(crate) fn connect(
    address: &str,
    token: &BearerToken,
    timeout: Duration,
) -> Result<FlightClient, RpcError> {
    check_endpoint(address)?;
    let endpoint = Endpoint::from_shared(address.to_string())
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
    Ok(
        FlightServiceClient::with_interceptor(endpoint.connect_lazy(), token.clone())
            .max_decoding_message_size(super::constants::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::constants::MAX_MESSAGE_BYTES),
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
    let mut client = client.clone();
    let call = async {
        let mut results = client
            .do_action(Action::new(name, Bytes::new()))
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
pub(crate) async fn instance_stats(address: &str, token: &BearerToken) -> Option<InstanceStats> {
    let client = connect(address, token, Duration::from_secs(2)).ok()?;
    stats_of(&client).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_http_endpoints_are_reached() {
        assert!(super::check_endpoint("http://127.0.0.1:50051").is_ok());
        let https = super::check_endpoint("https://127.0.0.1:443").unwrap_err();
        assert!(https.to_string().contains("TLS"), "{https}");
        for bad in ["127.0.0.1:1", "http://:1", "http://h:port", "ftp://h:1"] {
            assert!(super::check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
