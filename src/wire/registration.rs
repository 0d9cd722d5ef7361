//! Registration: how an instance started on another host (`rpcop serve
//! --register`) joins a session's service region, keeps its place, and
//! leaves.
//!
//! A session that runs a registry (`rpcop --registry HOST:PORT`) answers
//! three Flight `DoAction`s, each with a JSON body, each call carrying the
//! registry's own bearer token:
//!
//! - [`ACTION_REGISTER`] with a [`Registration`]: the region admits the
//!   instance and answers an [`Admission`] — its member id and secret, the
//!   token the instance must then require from callers (the service's), its
//!   lease, and how long leaving may take;
//! - [`ACTION_RENEW`] with a [`Tenancy`] (the member id and the secret its
//!   admission gave), at least once per lease (rpcop
//!   renews every third of it): a member whose lease runs out is dropped;
//!   one the region no longer knows is refused with `NOT_FOUND`, and
//!   registers again;
//! - [`ACTION_LEAVE`] with a [`Tenancy`]: the region takes the instance out
//!   of routing, drains it (its callers' requests in flight finish), and
//!   answers once it is done; the instance may then stop.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::connection::{FlightClient, NoAnswer, try_action_with};

/// `DoAction` type of the registry: admit an instance ([`Registration`]).
pub const ACTION_REGISTER: &str = "register";
/// `DoAction` type of the registry: keep a member's place ([`Tenancy`]).
pub const ACTION_RENEW: &str = "renew";
/// `DoAction` type of the registry: drain a member and let it go
/// ([`Tenancy`]); answered once it has drained.
pub const ACTION_LEAVE: &str = "leave";

/// What an instance tells the registry when it asks to join a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The service to join.
    pub service: String,
    /// Where the session reaches the instance: `http://host:port` or
    /// `https://host:port`.
    pub address: String,
    /// The functions it hosts: at least the service's.
    pub functions: Vec<String>,
    /// The rpcop protocol version it speaks.
    pub protocol_version: u32,
}

/// The registry's answer to a [`Registration`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// The instance's member id in the region (in `rpc_instances()`).
    pub member: u64,
    /// The bearer token the instance must require from callers.
    pub token: String,
    /// The member's own secret, which its renewals and its leaving carry
    /// (so one registered host cannot renew or drain another's member).
    pub secret: String,
    /// How long the member keeps its place without a renewal, in
    /// milliseconds.
    pub lease_ms: u64,
    /// The longest a `leave` may wait for the member to drain, in
    /// milliseconds (the service's timeout and a grace).
    pub drain_ms: u64,
}

impl Admission {
    /// The lease.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("member", &self.member)
            .field("token", &"(redacted)")
            .field("secret", &"(redacted)")
            .field("lease_ms", &self.lease_ms)
            .field("drain_ms", &self.drain_ms)
            .finish()
    }
}

/// A member of a service, as its renewals and its leaving name it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    /// The service.
    pub service: String,
    /// The member id its [`Admission`] gave.
    pub member: u64,
    /// The secret its [`Admission`] gave.
    pub secret: String,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("service", &self.service)
            .field("member", &self.member)
            .field("secret", &"(redacted)")
            .finish()
    }
}

/// Sends the registry action `name` with `body` as JSON and returns its
/// first result, within `timeout`.
pub(crate) async fn registry_action(
    client: &FlightClient,
    name: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<Bytes, NoAnswer> {
    let body = serde_json::to_vec(body)
        .map_err(|e| NoAnswer::Status(tonic::Status::internal(e.to_string())))?;
    try_action_with(client, name, Bytes::from(body), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_keeps_its_token_out_of_debug_output() {
        let admission = Admission {
            member: 7,
            token: "s3cret".into(),
            secret: "m3mber".into(),
            lease_ms: 10_000,
            drain_ms: 34_000,
        };
        let shown = format!("{admission:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("m3mber"),
            "{shown}"
        );
        let tenancy = Tenancy {
            service: "sim".into(),
            member: 7,
            secret: "m3mber".into(),
        };
        assert!(!format!("{tenancy:?}").contains("m3mber"));
        assert!(shown.contains("member: 7"), "{shown}");
        assert_eq!(admission.lease(), Duration::from_secs(10));
        let text = serde_json::to_string(&admission).unwrap();
        assert_eq!(serde_json::from_str::<Admission>(&text).unwrap(), admission);
    }
}
