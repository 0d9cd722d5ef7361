//! Is a server ready, and does it speak the protocol its service declares?
//!
//! One probe per protocol, used both to learn that a new instance is ready
//! and, every second after, that it is still alive:
//! - `rpcop`: the `protocol_version` action, with the token, answers `1`;
//! - `arrow-udf`: RisingWave's servers answer the same action, without a
//!   token, with the single byte `0x02` (and have no other action);
//! - `databend`: Databend's servers have no action at all; they describe
//!   their health function `builtin_healthy` (`GetFlightInfo`).
//!
//! Each protocol's answer tells the others apart, so a server of another
//! protocol than declared fails with a message that names the one it speaks.

use std::time::Duration;

use bytes::Bytes;
use tonic::Code;

use super::connection::{FlightClient, NoAnswer, try_action};
use super::constants::{ACTION_PROTOCOL_VERSION, PROTOCOL_VERSION};
use super::descriptor::function_descriptor;
use super::message::message_of;
use crate::options::Protocol;

/// The body of arrow-udf's answer to `protocol_version`.
pub const ARROW_UDF_PROTOCOL_VERSION: &[u8] = b"\x02";

/// The function a Databend UDF server describes to say it is healthy.
pub const DATABEND_HEALTH_FUNCTION: &str = "builtin_healthy";

/// Why a probe failed.
#[derive(Debug)]
pub(crate) enum ProbeFailure {
    /// No answer (yet): nothing listening, no answer in time.
    Unanswered(NoAnswer),
    /// An answer that shows the server speaks another protocol, or none
    /// rpcop knows: waiting will not help.
    WrongProtocol(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unanswered(NoAnswer::Status(status)) => {
                write!(f, "{} ({:?})", message_of(status), status.code())
            }
            Self::Unanswered(NoAnswer::Silent(timeout)) => {
                write!(f, "no answer within {timeout:?}")
            }
            Self::Unanswered(NoAnswer::Empty) => f.write_str("an empty answer"),
            Self::WrongProtocol(why) => f.write_str(why),
        }
    }
}

/// Probes the server behind `client` for `protocol`.
pub(crate) async fn probe(
    client: &FlightClient,
    protocol: Protocol,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    match protocol {
        Protocol::Rpcop | Protocol::ArrowUdf => {
            let answer = try_action(client, ACTION_PROTOCOL_VERSION, timeout).await;
            version_answer(protocol, answer)
        }
        Protocol::Databend => {
            let mut client = client.clone();
            let call = client.get_flight_info(function_descriptor(DATABEND_HEALTH_FUNCTION));
            let answer = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(_)) => Ok(Bytes::new()),
                Ok(Err(status)) => Err(NoAnswer::Status(status)),
                Err(_) => Err(NoAnswer::Silent(timeout)),
            };
            databend_answer(answer)
        }
    }
}

/// What an answer to `protocol_version` says about a server declared to
/// speak `protocol`.
fn version_answer(protocol: Protocol, answer: Result<Bytes, NoAnswer>) -> Result<(), ProbeFailure> {
    let rpcop = PROTOCOL_VERSION.to_string();
    match answer {
        Ok(body) if protocol == Protocol::Rpcop && body == rpcop.as_bytes() => Ok(()),
        Ok(body) if protocol == Protocol::ArrowUdf && body == ARROW_UDF_PROTOCOL_VERSION => Ok(()),
        Ok(body) if body == ARROW_UDF_PROTOCOL_VERSION => Err(ProbeFailure::WrongProtocol(
            "it answers protocol_version as RisingWave's arrow-udf servers do (0x02): it speaks \
             arrow-udf; set protocol = 'arrow-udf'"
                .to_string(),
        )),
        Ok(body) if body == rpcop.as_bytes() => Err(ProbeFailure::WrongProtocol(format!(
            "it answers protocol_version '{rpcop}' as rpcop's instances do: it speaks rpcop's \
             protocol; set protocol = 'rpcop'"
        ))),
        Ok(body) => Err(ProbeFailure::WrongProtocol(format!(
            "it answers protocol_version with {body:?}, which no protocol rpcop speaks does"
        ))),
        Err(NoAnswer::Status(status)) => match status.code() {
            Code::Unauthenticated if protocol != Protocol::Rpcop => {
                Err(ProbeFailure::WrongProtocol(format!(
                    "it asks for a token ({}): it speaks rpcop's protocol; set protocol = 'rpcop'",
                    message_of(&status)
                )))
            }
            Code::Unimplemented | Code::InvalidArgument => {
                Err(ProbeFailure::WrongProtocol(format!(
                    "it has no protocol_version action ({}), which {} servers answer; a \
                     databend-udf server has none: set protocol = 'databend'",
                    message_of(&status).lines().next().unwrap_or_default(),
                    protocol
                )))
            }
            _ => Err(ProbeFailure::Unanswered(NoAnswer::Status(status))),
        },
        Err(other) => Err(ProbeFailure::Unanswered(other)),
    }
}

/// What a Databend server's description of its health function says.
fn databend_answer(answer: Result<Bytes, NoAnswer>) -> Result<(), ProbeFailure> {
    match answer {
        Ok(_) => Ok(()),
        Err(NoAnswer::Status(status)) => match status.code() {
            Code::Unauthenticated => Err(ProbeFailure::WrongProtocol(format!(
                "it asks for a token ({}): it speaks rpcop's protocol; set protocol = 'rpcop'",
                message_of(&status)
            ))),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Err(ProbeFailure::Unanswered(NoAnswer::Status(status)))
            }
            _ => Err(ProbeFailure::WrongProtocol(format!(
                "it does not describe {DATABEND_HEALTH_FUNCTION}, the health function every \
                 databend-udf server has ({}); an arrow-udf server: set protocol = 'arrow-udf'",
                message_of(&status).lines().next().unwrap_or_default()
            ))),
        },
        Err(other) => Err(ProbeFailure::Unanswered(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn wrong(result: Result<(), ProbeFailure>) -> String {
        match result {
            Err(ProbeFailure::WrongProtocol(why)) => why,
            other => panic!("expected a wrong protocol, got {other:?}"),
        }
    }

    #[test]
    fn each_protocol_is_told_from_the_others() {
        let rpcop = || Ok(Bytes::from_static(b"1"));
        let arrow_udf = || Ok(Bytes::from_static(ARROW_UDF_PROTOCOL_VERSION));
        assert!(version_answer(Protocol::Rpcop, rpcop()).is_ok());
        assert!(version_answer(Protocol::ArrowUdf, arrow_udf()).is_ok());
        assert!(wrong(version_answer(Protocol::Rpcop, arrow_udf())).contains("'arrow-udf'"));
        assert!(wrong(version_answer(Protocol::ArrowUdf, rpcop())).contains("'rpcop'"));
        let token = Err(NoAnswer::Status(Status::unauthenticated(
            "missing bearer token",
        )));
        assert!(wrong(version_answer(Protocol::ArrowUdf, token)).contains("'rpcop'"));
        let none = Err(NoAnswer::Status(Status::unimplemented(
            "NotImplementedError",
        )));
        assert!(wrong(version_answer(Protocol::ArrowUdf, none)).contains("'databend'"));
        let missing = Err(NoAnswer::Status(Status::not_found("'builtin_healthy'")));
        assert!(wrong(databend_answer(missing)).contains("'arrow-udf'"));
        let down = Err(NoAnswer::Status(Status::unavailable("connection refused")));
        assert!(matches!(
            databend_answer(down),
            Err(ProbeFailure::Unanswered(_))
        ));
    }
}
