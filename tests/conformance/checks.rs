//! The checks of `docs/protocol.md`, each run on one implementation
//! through a plain Flight client (arrow-flight's own, none of rpcop's
//! client code).

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Criteria, FlightData, FlightDescriptor};
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, AsArray, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use rpcop::wire::{self, BatchEncoder, InstanceStats};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::implementations::{Implementation, TOKEN};

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            wire::AUTHORIZATION_KEY,
            wire::bearer(token).parse().unwrap(),
        );
    }
    request
}

/// What one check is given.
pub(crate) struct Target {
    pub(crate) implementation: Implementation,
    pub(crate) client: FlightServiceClient<Channel>,
}

impl Target {
    /// The token, for implementations that take one.
    fn token(&self) -> Option<&'static str> {
        self.implementation.speaks_rpcop().then_some(TOKEN)
    }

    /// Sends `requests` (batch, sequence number) on one exchange for
    /// `function`; the answers (batch, sequence number) and how it ended.
    async fn exchange(
        &mut self,
        function: &str,
        requests: &[(RecordBatch, Option<u64>)],
    ) -> (Vec<(RecordBatch, Option<u64>)>, Result<(), Status>) {
        let numbered: Vec<(&RecordBatch, Bytes)> = requests
            .iter()
            .map(|(batch, seq)| (batch, seq.map_or_else(Bytes::new, wire::encode_sequence)))
            .collect();
        self.send(encoded(function, &numbered), self.token()).await
    }

    /// Sends `messages` as one exchange with `token`; the answers (batch,
    /// sequence number) and how it ended, whether the status came at once
    /// or after answers.
    async fn send(
        &mut self,
        messages: Vec<FlightData>,
        token: Option<&str>,
    ) -> (Vec<(RecordBatch, Option<u64>)>, Result<(), Status>) {
        let request = with_token(futures::stream::iter(messages), token);
        let response = match self.client.do_exchange(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Err(status)),
        };
        let mut decoder = FlightDataDecoder::new(response.map(|m| m.map_err(FlightError::from)));
        let mut answers = Vec::new();
        while let Some(decoded) = decoder.next().await {
            match decoded {
                Ok(decoded) => {
                    if let DecodedPayload::RecordBatch(batch) = decoded.payload {
                        let seq = wire::decode_sequence(&decoded.inner.app_metadata).unwrap();
                        answers.push((batch, seq));
                    }
                }
                Err(FlightError::Tonic(status)) => return (answers, Err(*status)),
                Err(other) => return (answers, Err(Status::unknown(other.to_string()))),
            }
        }
        (answers, Ok(()))
    }

    async fn action(&mut self, kind: &str, token: Option<&str>) -> Result<Bytes, Status> {
        let action = Action::new(kind, Bytes::new());
        let mut results = self
            .client
            .do_action(with_token(action, token))
            .await?
            .into_inner();
        match results.next().await {
            Some(Ok(result)) => Ok(result.body),
            Some(Err(status)) => Err(status),
            None => Err(Status::unknown("no result")),
        }
    }
}

/// `requests` (batch, `app_metadata`) as the messages of one exchange for
/// `function`.
fn encoded(function: &str, requests: &[(&RecordBatch, Bytes)]) -> Vec<FlightData> {
    let mut encoder = BatchEncoder::new(Some(wire::function_descriptor(function)));
    let mut messages = Vec::new();
    for (batch, metadata) in requests {
        encoder
            .encode(batch, metadata.clone(), &mut messages)
            .unwrap();
    }
    messages
}

fn texts(values: &[Option<&str>]) -> RecordBatch {
    let column: ArrayRef = std::sync::Arc::new(StringArray::from(values.to_vec()));
    RecordBatch::try_from_iter([("s", column)]).unwrap()
}

fn codes(values: &[i64]) -> RecordBatch {
    let column: ArrayRef = std::sync::Arc::new(Int64Array::from(values.to_vec()));
    RecordBatch::try_from_iter([("code", column)]).unwrap()
}

fn strings(batch: &RecordBatch) -> Vec<Option<String>> {
    let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

/// `status` has `code`, and its message says `text`.
fn status_is(status: &Status, code: Code, text: &str) -> Outcome {
    check(
        status.code() == code && status.message().contains(text),
        || format!("{status:?}"),
    )
}

pub(crate) type Outcome = Result<(), String>;

fn check(condition: bool, why: impl FnOnce() -> String) -> Outcome {
    if condition { Ok(()) } else { Err(why()) }
}

/// GetFlightInfo: the argument fields, then the result field named after
/// the function; total_records the number of arguments.
pub(crate) async fn describes_functions(t: &mut Target) -> Outcome {
    for (function, argument) in [("upper", DataType::Utf8), ("chr", DataType::Int64)] {
        let descriptor = FlightDescriptor::new_path(vec![function.to_string()]);
        let info = t
            .client
            .get_flight_info(with_token(descriptor, t.token()))
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let signature = wire::signature_of(info).map_err(|e| e.to_string())?;
        check(signature.arguments.len() == 1, || {
            format!("{function}: {signature:?}")
        })?;
        check(signature.arguments[0].data_type() == &argument, || {
            format!("{function}'s argument: {:?}", signature.arguments[0])
        })?;
        check(
            signature.result.name() == function && signature.result.data_type() == &DataType::Utf8,
            || format!("{function}'s result: {:?}", signature.result),
        )?;
    }
    Ok(())
}

/// GetSchema: the same schema as the function's FlightInfo.
pub(crate) async fn schema_matches_info(t: &mut Target) -> Outcome {
    let descriptor = FlightDescriptor::new_path(vec!["chr".to_string()]);
    let info = t
        .client
        .get_flight_info(with_token(descriptor.clone(), t.token()))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let schema = t
        .client
        .get_schema(with_token(descriptor, t.token()))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let described = info.try_decode_schema().map_err(|e| e.to_string())?;
    let answered =
        datafusion::arrow::datatypes::Schema::try_from(&schema).map_err(|e| e.to_string())?;
    check(described == answered, || {
        format!("{described:?} vs {answered:?}")
    })
}

/// ListFlights lists both functions.
pub(crate) async fn lists_functions(t: &mut Target) -> Outcome {
    let listing = t
        .client
        .list_flights(with_token(Criteria::default(), t.token()))
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let infos: Vec<_> = listing.collect().await;
    let mut names: Vec<String> = infos
        .into_iter()
        .filter_map(|info| info.ok()?.flight_descriptor?.path.first().cloned())
        .collect();
    names.sort();
    check(names == ["chr", "upper"], || format!("listed {names:?}"))
}

/// Many requests on one exchange: one answer each, in order, with the
/// request's row count (and, numbered, its number).
pub(crate) async fn answers_in_order(t: &mut Target) -> Outcome {
    let numbered = t.implementation.speaks_rpcop();
    let requests: Vec<(RecordBatch, Option<u64>)> = (0..20u64)
        .map(|i| {
            let text = format!("row {i}");
            let rows: Vec<Option<&str>> = (0..=i % 4).map(|_| Some(text.as_str())).collect();
            (texts(&rows), numbered.then_some(1000 - i * 7))
        })
        .collect();
    let (answers, end) = t.exchange("upper", &requests).await;
    end.map_err(|s| s.to_string())?;
    check(answers.len() == requests.len(), || {
        format!("{} answers", answers.len())
    })?;
    for ((request, seq), (answer, answered)) in requests.iter().zip(&answers) {
        check(answered == seq, || {
            format!("answered {answered:?} for {seq:?}")
        })?;
        check(answer.num_columns() == 1, || "one column".to_string())?;
        let wanted: Vec<Option<String>> = strings(request)
            .into_iter()
            .map(|v| v.map(|s| s.to_uppercase()))
            .collect();
        check(strings(answer) == wanted, || {
            format!("{:?}", strings(answer))
        })?;
    }
    Ok(())
}

/// Requests without a number get answers without one.
pub(crate) async fn unnumbered_requests(t: &mut Target) -> Outcome {
    let (answers, end) = t
        .exchange("upper", &[(texts(&[Some("a"), None]), None)])
        .await;
    end.map_err(|s| s.to_string())?;
    check(
        answers.len() == 1
            && answers[0].1.is_none()
            && strings(&answers[0].0) == [Some("A".into()), None],
        || format!("{answers:?}"),
    )
}

/// A zero-row request gets a zero-row answer.
pub(crate) async fn zero_rows(t: &mut Target) -> Outcome {
    let seq = t.implementation.speaks_rpcop().then_some(5);
    let (answers, end) = t.exchange("upper", &[(texts(&[]), seq)]).await;
    end.map_err(|s| s.to_string())?;
    check(answers.len() == 1 && answers[0].0.num_rows() == 0, || {
        format!("{answers:?}")
    })
}

/// An argument of another integer type is coerced to the declared one.
pub(crate) async fn coerces_arguments(t: &mut Target) -> Outcome {
    let column: ArrayRef = std::sync::Arc::new(Int32Array::from(vec![65, 97]));
    let batch = RecordBatch::try_from_iter([("code", column)]).unwrap();
    let seq = t.implementation.speaks_rpcop().then_some(1);
    let (answers, end) = t.exchange("chr", &[(batch, seq)]).await;
    end.map_err(|s| s.to_string())?;
    check(
        answers.len() == 1 && strings(&answers[0].0) == [Some("A".into()), Some("a".into())],
        || format!("{answers:?}"),
    )
}

/// A failing request: the answers before it arrive, then INVALID_ARGUMENT
/// naming the function and the request (`x-rpcop-seq`).
pub(crate) async fn a_failure_names_its_request(t: &mut Target) -> Outcome {
    let requests = [
        (codes(&[72, 105]), Some(1)),
        (codes(&[-1]), Some(2)),
        (codes(&[33]), Some(3)),
    ];
    let (answers, end) = t.exchange("chr", &requests).await;
    check(
        answers.len() == 1 && strings(&answers[0].0) == [Some("H".into()), Some("i".into())],
        || format!("answers before the failure: {answers:?}"),
    )?;
    let status = end.err().ok_or("the exchange did not fail")?;
    check(status.code() == Code::InvalidArgument, || {
        format!("{status:?}")
    })?;
    check(status.message().contains("function 'chr' failed"), || {
        status.message().to_string()
    })?;
    check(
        status
            .message()
            .contains("invalid Unicode scalar value: -1"),
        || status.message().to_string(),
    )?;
    let named = status
        .metadata()
        .get(wire::SEQUENCE_STATUS_KEY)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    check(named == Some(2), || {
        format!(
            "x-rpcop-seq: {:?}",
            status.metadata().get(wire::SEQUENCE_STATUS_KEY)
        )
    })
}

/// A function error of a server without sequence numbers still fails the
/// exchange with INVALID_ARGUMENT and the message.
pub(crate) async fn a_failure_fails_the_exchange(t: &mut Target) -> Outcome {
    let (answers, end) = t.exchange("chr", &[(codes(&[-1]), None)]).await;
    let status = end.err().ok_or("the exchange did not fail")?;
    check(answers.is_empty(), || format!("{answers:?}"))?;
    status_is(
        &status,
        Code::InvalidArgument,
        "invalid Unicode scalar value: -1",
    )
}

/// Without the token, or with another, every call is UNAUTHENTICATED.
pub(crate) async fn requires_the_token(t: &mut Target) -> Outcome {
    for (token, wanted) in [
        (None, "missing bearer token"),
        (Some("wrong"), "wrong bearer token"),
    ] {
        let status = t
            .action(wire::ACTION_HEALTH, token)
            .await
            .err()
            .ok_or("answered")?;
        status_is(&status, Code::Unauthenticated, wanted)?;
    }
    let messages = encoded("upper", &[(&texts(&[Some("a")]), Bytes::new())]);
    let (_, end) = t.send(messages, None).await;
    let code = end.err().map(|status| status.code());
    check(code == Some(Code::Unauthenticated), || format!("{code:?}"))
}

/// An unknown function: NOT_FOUND, naming what the instance hosts.
pub(crate) async fn unknown_function(t: &mut Target) -> Outcome {
    let (_, end) = t.exchange("nope", &[(texts(&[Some("a")]), Some(1))]).await;
    let status = end.err().ok_or("the exchange did not fail")?;
    status_is(
        &status,
        Code::NotFound,
        "unknown function 'nope': this instance hosts [chr, upper]",
    )
}

/// `health`, `stats` (parsed strictly) and unknown actions.
pub(crate) async fn actions(t: &mut Target) -> Outcome {
    let health = t
        .action(wire::ACTION_HEALTH, Some(TOKEN))
        .await
        .map_err(|s| s.to_string())?;
    check(health.as_ref() == b"ok", || format!("health: {health:?}"))?;
    let stats = t
        .action(wire::ACTION_STATS, Some(TOKEN))
        .await
        .map_err(|s| s.to_string())?;
    let stats: InstanceStats = serde_json::from_slice(&stats).map_err(|e| e.to_string())?;
    check(
        stats.requests > 0 && stats.errors > 0 && !stats.draining,
        || format!("{stats:?}"),
    )?;
    let status = t
        .action("nope", Some(TOKEN))
        .await
        .err()
        .ok_or("answered")?;
    check(
        status.code() == Code::InvalidArgument
            && status.message().contains(
                "unknown action 'nope'; actions are: health, drain, stats, protocol_version",
            ),
        || format!("{status:?}"),
    )
}

/// `protocol_version` answers the protocol's own version: `1` for rpcop,
/// the byte 2 for arrow-udf.
pub(crate) async fn protocol_version(t: &mut Target) -> Outcome {
    let body = t
        .action(wire::ACTION_PROTOCOL_VERSION, t.token())
        .await
        .map_err(|s| s.to_string())?;
    let wanted: &[u8] = if t.implementation.speaks_rpcop() {
        b"1"
    } else {
        wire::ARROW_UDF_PROTOCOL_VERSION
    };
    check(body.as_ref() == wanted, || format!("{body:?}"))
}

/// `app_metadata` neither empty nor 8 bytes: INVALID_ARGUMENT.
pub(crate) async fn bad_app_metadata(t: &mut Target) -> Outcome {
    let messages = encoded(
        "upper",
        &[(&texts(&[Some("a")]), Bytes::from_static(b"abc"))],
    );
    let (_, end) = t.send(messages, t.token()).await;
    let status = end.err().ok_or("accepted")?;
    status_is(
        &status,
        Code::InvalidArgument,
        "app_metadata must be a sequence number of 8 bytes",
    )
}

/// After `drain`, a new exchange is UNAVAILABLE. (Run last.)
pub(crate) async fn drain(t: &mut Target) -> Outcome {
    let body = t
        .action(wire::ACTION_DRAIN, Some(TOKEN))
        .await
        .map_err(|s| s.to_string())?;
    check(body.as_ref() == b"draining", || format!("{body:?}"))?;
    let (_, end) = t.exchange("upper", &[(texts(&[Some("a")]), Some(1))]).await;
    let status = end.err().ok_or("a new exchange was served")?;
    status_is(&status, Code::Unavailable, "instance is draining")
}
