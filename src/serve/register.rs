//! `rpcop serve --register`: joining a session's service from another host,
//! keeping the place, and leaving it drained.
//!
//! The instance registers once it has loaded its functions and bound its
//! address (retrying while the registry cannot be reached, failing at once
//! when it refuses), serves with the token its admission carries, renews
//! every third of its lease, registers again when the region no longer
//! knows it (its lease ran out while it was cut off), and on SIGTERM or
//! SIGINT asks to leave: the session drains it, and the instance stops once
//! its callers' requests in flight have finished. It also leaves, and
//! stops with an error, when the registry refuses a renewal (a new
//! registry token), or the service wants another token.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::RpcError;
use crate::options::ServiceOptions;
use crate::wire::{
    self, Access, Admission, FlightClient, NoAnswer, PROTOCOL_VERSION, Registration, Tenancy,
    connect, registry_action,
};

/// How long one registry call may take; leaving waits for the drain too.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest wait between renewals, and the shortest renewal call.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// Waits between registrations while the registry cannot be reached.
const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Set to `true` once the instance is told to stop (SIGTERM, SIGINT).
pub(crate) type Stop = watch::Receiver<bool>;

/// Resolves once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(stop: &Stop) {
    let mut stop = stop.clone();
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// An instance that joins a service through a registry (`--register`).
#[derive(Debug)]
pub(crate) struct Registrant {
    registry: String,
    client: FlightClient,
    registration: Registration,
}

/// Where the instance stands with the registry: its admission.
pub(crate) struct Joined {
    admission: Admission,
}

impl Joined {
    /// The token callers must send.
    pub(crate) fn token(&self) -> &str {
        &self.admission.token
    }
}

impl Registrant {
    /// A membership of `service` through the registry at `registry`, whose
    /// token is in `token_file`; `ca` verifies an `https://` registry.
    pub(crate) fn new(
        registry: &str,
        service: &str,
        token_file: Option<&PathBuf>,
        ca: Option<&PathBuf>,
        functions: &[String],
    ) -> Result<Self, RpcError> {
        let token_file = token_file.ok_or_else(|| RpcError::Registration {
            registry: registry.to_string(),
            reason: "no registry token: give --registry-token-file (or RPCOP_REGISTRY_TOKEN_FILE) \
                     naming a file with the token the session's registry was started with"
                .to_string(),
        })?;
        let token = wire::read_token_file(token_file)?;
        let mut options = ServiceOptions::default();
        if let Some(ca) = ca {
            options.set("tls_ca", &ca.display().to_string())?;
        }
        let access = Access::of(&token, &options)?;
        let client = connect(registry, &access, CALL_TIMEOUT)?;
        Ok(Self {
            registry: registry.to_string(),
            client,
            registration: Registration {
                service: service.to_string(),
                address: String::new(),
                functions: functions.to_vec(),
                protocol_version: PROTOCOL_VERSION,
            },
        })
    }

    fn failed(&self, reason: String) -> RpcError {
        RpcError::Registration {
            registry: self.registry.clone(),
            reason,
        }
    }

    /// Registers the instance reachable at `address`: retries while the
    /// registry cannot be reached, fails at once when it refuses; `None`
    /// if told to stop first.
    pub(crate) async fn join(
        &mut self,
        address: String,
        stop: &Stop,
    ) -> Result<Option<Joined>, RpcError> {
        self.registration.address = address;
        let mut wait = RETRY_START;
        loop {
            let answer = tokio::select! {
                answer = registry_action(
                    &self.client,
                    wire::ACTION_REGISTER,
                    &self.registration,
                    CALL_TIMEOUT,
                ) => answer,
                () = stopped(stop) => return Ok(None),
            };
            match answer {
                Ok(body) => {
                    let admission: Admission = serde_json::from_slice(&body).map_err(|e| {
                        self.failed(format!("the registry's answer is not an admission: {e}"))
                    })?;
                    tracing::info!(registry = %self.registry, service = %self.registration.service,
                        member = admission.member, lease = ?admission.lease(), "registered");
                    return Ok(Some(Joined { admission }));
                }
                Err(no_answer) if unreachable(&no_answer) => {
                    tracing::warn!(registry = %self.registry, reason = %describe(&no_answer),
                        "cannot reach the registry; trying again in {wait:?}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopped(stop) => return Ok(None),
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(no_answer) => return Err(self.failed(refusal(&no_answer))),
            }
        }
    }

    /// Keeps the place of `joined` until `stop` says so, then leaves,
    /// drained. Renews every third of the lease, and soon again after a
    /// renewal that got no answer; joins again when the region forgot the
    /// instance. Fails (having left) when the registry refuses otherwise,
    /// or when the region, joined again, wants another token (the service
    /// was created anew): the instance must restart.
    pub(crate) async fn keep(&mut self, mut joined: Joined, stop: &Stop) -> Result<(), RpcError> {
        let outcome = loop {
            let lease = joined.admission.lease();
            let mut next = lease / 3;
            let renewed = loop {
                tokio::select! {
                    () = tokio::time::sleep(next.max(MIN_WAIT)) => {}
                    () = stopped(stop) => break None,
                }
                let tenancy = self.tenancy(&joined);
                let call = (lease / 4).max(MIN_WAIT);
                match registry_action(&self.client, wire::ACTION_RENEW, &tenancy, call).await {
                    Ok(_) => next = lease / 3,
                    Err(no_answer) if unreachable(&no_answer) => {
                        tracing::warn!(registry = %self.registry, reason = %describe(&no_answer),
                            "renewal failed; trying again");
                        next = lease / 10;
                    }
                    Err(no_answer) => break Some(no_answer),
                }
            };
            match renewed {
                None => break Ok(()),
                Some(NoAnswer::Status(status)) if status.code() == tonic::Code::NotFound => {
                    tracing::warn!(registry = %self.registry, reason = %status.message(),
                        "the region no longer knows this instance; registering again");
                    let address = self.registration.address.clone();
                    let Some(again) = self.join(address, stop).await? else {
                        return Ok(());
                    };
                    let changed = again.token() != joined.token();
                    joined = again;
                    if changed {
                        break Err(self.failed(format!(
                            "service '{}' now requires another token (it was created again); \
                             restart this instance to join it",
                            self.registration.service
                        )));
                    }
                }
                Some(refused) => break Err(self.failed(refusal(&refused))),
            }
        };
        self.leave(&joined).await;
        outcome
    }

    /// Asks to leave, and waits while the region drains the instance.
    async fn leave(&self, joined: &Joined) {
        let tenancy = self.tenancy(joined);
        let drain = Duration::from_millis(joined.admission.drain_ms) + CALL_TIMEOUT;
        match registry_action(&self.client, wire::ACTION_LEAVE, &tenancy, drain).await {
            Ok(_) => tracing::info!(registry = %self.registry, service = %tenancy.service,
                "left the service, drained"),
            Err(no_answer) => tracing::warn!(registry = %self.registry,
                reason = %describe(&no_answer), "could not leave cleanly; stopping anyway"),
        }
    }

    fn tenancy(&self, joined: &Joined) -> Tenancy {
        Tenancy {
            service: self.registration.service.clone(),
            member: joined.admission.member,
            secret: joined.admission.secret.clone(),
        }
    }
}

/// Is this a failure to reach the registry (worth retrying), rather than
/// its refusal?
fn unreachable(no_answer: &NoAnswer) -> bool {
    match no_answer {
        NoAnswer::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        NoAnswer::Silent(_) | NoAnswer::Empty => true,
    }
}

fn describe(no_answer: &NoAnswer) -> String {
    match no_answer {
        NoAnswer::Status(status) => format!("{:?}: {}", status.code(), status.message()),
        NoAnswer::Silent(waited) => format!("no answer in {waited:?}"),
        NoAnswer::Empty => "an empty answer".to_string(),
    }
}

/// What to tell the user when the registry refused.
fn refusal(no_answer: &NoAnswer) -> String {
    match no_answer {
        NoAnswer::Status(status) if status.code() == tonic::Code::Unauthenticated => format!(
            "the registry refused its token ({}); give --registry-token-file the token the \
             session's registry was started with",
            status.message()
        ),
        NoAnswer::Status(status) => status.message().to_string(),
        other => describe(other),
    }
}

/// The address the session reaches an instance bound at `bound` by:
/// `advertise` if given, else the bound address unless it is a wildcard.
pub(crate) fn advertised(bound: &str, advertise: Option<&str>) -> Result<String, RpcError> {
    if let Some(address) = advertise {
        wire::check_endpoint(address)?;
        return Ok(address.to_string());
    }
    let wildcard = ["://0.0.0.0:", "://[::]:"]
        .iter()
        .any(|w| bound.contains(w));
    if wildcard || bound.starts_with(wire::UNIX_PREFIX) {
        return Err(RpcError::InvalidEndpoint {
            address: bound.to_string(),
            reason: "other hosts cannot reach this address; give --advertise \
                     http://HOST:PORT, the address the session reaches this instance at"
                .to_string(),
        });
    }
    Ok(bound.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_or_unix_bind_needs_an_advertised_address() {
        assert_eq!(
            advertised("http://127.0.0.1:5000", None).unwrap(),
            "http://127.0.0.1:5000"
        );
        for bound in ["http://0.0.0.0:5000", "http://[::]:5000", "unix:/tmp/s"] {
            let refused = advertised(bound, None).unwrap_err().to_string();
            assert!(refused.contains("--advertise"), "{refused}");
        }
        assert_eq!(
            advertised("http://0.0.0.0:5000", Some("http://gpu-7:5000")).unwrap(),
            "http://gpu-7:5000"
        );
        assert!(advertised("http://0.0.0.0:5000", Some("gpu-7:5000")).is_err());
    }

    #[test]
    fn only_an_unreachable_registry_is_retried() {
        assert!(unreachable(&NoAnswer::Status(tonic::Status::unavailable(
            "connection refused"
        ))));
        assert!(unreachable(&NoAnswer::Silent(Duration::from_secs(1))));
        for refused in [
            tonic::Status::unauthenticated("wrong bearer token"),
            tonic::Status::not_found("no RPC service named 'x'"),
            tonic::Status::failed_precondition("does not host f"),
        ] {
            assert!(!unreachable(&NoAnswer::Status(refused)));
        }
        let told = refusal(&NoAnswer::Status(tonic::Status::unauthenticated("wrong")));
        assert!(told.contains("--registry-token-file"), "{told}");
    }
}
