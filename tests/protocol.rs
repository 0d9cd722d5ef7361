//! The wire protocol as docs/protocol.md writes it, exercised with a plain Arrow
//! Flight client (arrow-flight's own, none of rpcop's client code), against
//! in-process instances and a standalone `rpcop serve`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Criteria, FlightData, FlightDescriptor};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result as DFResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use futures::{StreamExt, TryStreamExt};
use rpcop::FunctionLibrary;
use tonic::Code;
use tonic::transport::Channel;

use common::{authorized, raw_client, region_from, within};

/// A handler that panics on the text "boom" and answers the wrong number of
/// rows on "short".
#[derive(Debug, PartialEq, Eq, Hash)]
struct Hostile {
    signature: Signature,
}

impl ScalarUDFImpl for Hostile {
    fn name(&self) -> &str {
        "hostile"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let text = input.as_string::<i32>();
        if text.iter().any(|t| t == Some("boom")) {
            panic!("hostile handler hit a boom");
        }
        let n = if text.iter().any(|t| t == Some("short")) {
            1
        } else {
            text.len()
        };
        Ok(ColumnarValue::Array(Arc::new(
            Int64Array::from_iter_values(0..n as i64),
        )))
    }
}

fn library() -> FunctionLibrary {
    rpcop::demo::library().with_udf(ScalarUDF::new_from_impl(Hostile {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    }))
}

fn texts(values: &[&str]) -> RecordBatch {
    let column: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
    RecordBatch::try_from_iter([("s", column)]).unwrap()
}

/// One plain-Flight exchange: schema + batches without app_metadata, as a
/// RisingWave or Databend client sends them.
async fn exchange(
    client: &mut FlightServiceClient<Channel>,
    token: &str,
    function: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![function.into()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap();
    let response = client
        .do_exchange(authorized(futures::stream::iter(messages), token))
        .await?;
    let stream = FlightRecordBatchStream::new_from_flight_data(
        response
            .into_inner()
            .map_err(arrow_flight::error::FlightError::from),
    );
    stream.try_collect().await.map_err(|e| match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::internal(other.to_string()),
    })
}

/// Runs one `DoAction` and returns the body of its single result.
async fn run_action(
    client: &mut FlightServiceClient<Channel>,
    token: &str,
    action: &str,
) -> Result<bytes::Bytes, tonic::Status> {
    let mut results = client
        .do_action(authorized(Action::new(action.to_string(), ""), token))
        .await?
        .into_inner();
    let first = results.next().await.expect("one result")?;
    Ok(first.body)
}

async fn healthy(client: &mut FlightServiceClient<Channel>, token: &str) -> bool {
    run_action(client, token, "health")
        .await
        .is_ok_and(|body| body.as_ref() == b"ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_flight_client_follows_the_contract() {
    within(async {
        let region = region_from(&library(), "plain", &["upper", "embed", "hostile"], &[]).await;
        let token = region.token().to_string();
        let address = region.members()[0].address.clone();
        let mut client = raw_client(&address).await;

        // answered in request order, without app_metadata
        let out = exchange(
            &mut client,
            &token,
            "upper",
            vec![texts(&["a", "b"]), texts(&["c"])],
        )
        .await
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].column(0).as_string::<i32>().value(1), "B");
        assert_eq!(out[1].column(0).as_string::<i32>().value(0), "C");

        // ListFlights / GetFlightInfo in the Flight UDF convention
        let infos: Vec<_> = client
            .list_flights(authorized(Criteria::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(infos.len(), 3);
        let info = client
            .get_flight_info(authorized(
                FlightDescriptor::new_path(vec!["embed".into()]),
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.total_records, 1);
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert_eq!(schema.field(1).name(), "embed");
        let signature = rpcop::wire::signature_of(info).unwrap();
        assert!(matches!(
            signature.result.data_type(),
            DataType::FixedSizeList(_, 16)
        ));

        // the actions
        for (action, expect) in [("protocol_version", "1"), ("drain", "draining")] {
            let body = run_action(&mut client, &token, action).await.unwrap();
            assert_eq!(body.as_ref(), expect.as_bytes(), "{action}");
        }
        let stats = run_action(&mut client, &token, "stats").await.unwrap();
        let stats: rpcop::wire::InstanceStats = serde_json::from_slice(&stats).unwrap();
        assert_eq!(stats.requests, 2);
        assert!(stats.draining);
        // draining: no new exchange
        let err = exchange(&mut client, &token, "upper", vec![texts(&["a"])])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_instance_survives() {
    within(async {
        let region = region_from(&library(), "bad", &["upper", "sha256", "hostile"], &[]).await;
        let token = region.token().to_string();
        let address = region.members()[0].address.clone();
        let mut client = raw_client(&address).await;

        // no token, wrong token
        let err = client
            .do_action(Action::new("health", ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("missing bearer token"), "{err}");
        let err = client
            .do_action(authorized(Action::new("health", ""), "not-the-token"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("wrong bearer token"), "{err}");

        // garbage bytes on the Flight port
        let port = address.rsplit(':').next().unwrap().to_string();
        let mut socket = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        socket
            .write_all(b"\x00\xffGARBAGE\r\n\r\nnot http/2 at all")
            .unwrap();
        drop(socket);

        // unknown function
        let err = exchange(&mut client, &token, "nope", vec![texts(&["a"])])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("unknown function 'nope'"), "{err}");
        assert!(err.message().contains("upper"), "{err}");

        // wrong schema
        let two = RecordBatch::try_from_iter([
            ("a", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
            ("b", Arc::new(StringArray::from(vec!["y"])) as ArrayRef),
        ])
        .unwrap();
        let err = exchange(&mut client, &token, "sha256", vec![two])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("sha256"), "{err}");

        // corrupt IPC after a valid descriptor
        let corrupt = vec![
            FlightData::new()
                .with_descriptor(FlightDescriptor::new_path(vec!["upper".into()]))
                .with_data_header(vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9]),
        ];
        let err = client
            .do_exchange(authorized(futures::stream::iter(corrupt), &token))
            .await;
        let err = match err {
            Err(status) => status,
            Ok(response) => response.into_inner().next().await.unwrap().unwrap_err(),
        };
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        // a valid schema, then a batch whose body is cut short: Arrow's IPC
        // reader panics on it; the answer is an error status, not a clean end
        let mut messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["upper".into()])))
            .build(futures::stream::iter([Ok(texts(&[
                "a long enough text to have a body",
                "another",
            ]))]))
            .try_collect()
            .await
            .unwrap();
        let last = messages.last_mut().unwrap();
        last.data_body = last.data_body.slice(0..last.data_body.len() / 4);
        let response = client
            .do_exchange(authorized(futures::stream::iter(messages), &token))
            .await;
        let err = match response {
            Err(status) => status,
            Ok(response) => {
                let answers: Vec<_> = response.into_inner().collect().await;
                answers
                    .into_iter()
                    .find_map(Result::err)
                    .expect("an error status, not a clean end of stream")
            }
        };
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("corrupt request"), "{err}");

        // no descriptor at all
        let err = client
            .do_exchange(authorized(
                futures::stream::iter(vec![FlightData::new()]),
                &token,
            ))
            .await
            .unwrap_err();
        assert!(err.message().contains("PATH descriptor"), "{err}");

        // a handler that panics, one that answers the wrong length
        let err = exchange(&mut client, &token, "hostile", vec![texts(&["boom"])])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains("'hostile' panicked: hostile handler hit a boom"),
            "{err}"
        );
        let err = exchange(&mut client, &token, "hostile", vec![texts(&["short", "x"])])
            .await
            .unwrap_err();
        assert!(
            err.message().contains("returned 1 values for 2 rows"),
            "{err}"
        );

        // still healthy, still serving
        assert!(healthy(&mut client, &token).await);
        let out = exchange(&mut client, &token, "upper", vec![texts(&["ok"])])
            .await
            .unwrap();
        assert_eq!(out[0].column(0).as_string::<i32>().value(0), "OK");
        let stats = region.stats().await;
        // the three evaluated requests that failed: wrong schema, panic, wrong length
        assert_eq!(stats[0].1.as_ref().unwrap().errors, 3);

        // through the rpcop client, a rejected request names the service
        let err = region
            .client()
            .unwrap()
            .call("hostile", texts(&["short", "x"]))
            .await;
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("service 'bad'") && err.contains("hostile"),
            "{err}"
        );
        region.shutdown().await;
    })
    .await;
}

/// A standalone `rpcop serve`, killed when dropped.
struct Served(Child, String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rpcop_serve(args: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rpcop serve starts");
    let Some((line, _)) = common::first_line_within(
        BufReader::new(child.stdout.take().unwrap()),
        common::FIRST_LINE,
    ) else {
        let _ = child.kill();
        panic!("rpcop serve printed no address");
    };
    let address = line.trim().to_string();
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");
    Served(child, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcop_serve_is_reachable_from_its_flags_alone() {
    within(async {
        let dir = std::env::temp_dir().join(format!("rpcop-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "s3cret\n").unwrap();
        let served = rpcop_serve(&[
            "--bind",
            "127.0.0.1:0",
            "--function",
            "upper",
            "--function",
            "classify",
            "--token-file",
            token_file.to_str().unwrap(),
        ]);
        assert!(served.1.starts_with("http://127.0.0.1:"), "{}", served.1);
        let mut client = raw_client(&served.1).await;
        let out = exchange(
            &mut client,
            "s3cret",
            "classify",
            vec![texts(&["a rust gpu"])],
        )
        .await
        .unwrap();
        assert_eq!(out[0].column(0).as_string::<i32>().value(0), "tech");
        assert!(healthy(&mut client, "s3cret").await);
        assert!(!healthy(&mut client, "wrong").await);

        // app_metadata sequence numbers come back as sent
        let mut encoder =
            rpcop::wire::BatchEncoder::new(Some(FlightDescriptor::new_path(vec!["upper".into()])));
        let mut messages = Vec::new();
        for seq in [41u64, 7] {
            encoder
                .encode(
                    &texts(&["x"]),
                    bytes::Bytes::copy_from_slice(&seq.to_le_bytes()),
                    &mut messages,
                )
                .unwrap();
        }
        let answers: Vec<_> = client
            .do_exchange(authorized(futures::stream::iter(messages), "s3cret"))
            .await
            .unwrap()
            .into_inner()
            .try_collect()
            .await
            .unwrap();
        let seqs: Vec<Vec<u8>> = answers
            .iter()
            .filter(|m| !m.app_metadata.is_empty())
            .map(|m| m.app_metadata.to_vec())
            .collect();
        assert_eq!(
            seqs,
            vec![41u64.to_le_bytes().to_vec(), 7u64.to_le_bytes().to_vec()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// `--max-message-size` bounds what a caller can make an instance read: a
/// message over it is refused with `OUT_OF_RANGE`, and the instance serves
/// the next exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_limit_are_refused() {
    within(async {
        let served = rpcop_serve(&[
            "--bind",
            "127.0.0.1:0",
            "--function",
            "upper",
            "--token",
            "t",
            "--max-message-size",
            "64KiB",
        ]);
        let mut client = raw_client(&served.1).await;
        let big = "x".repeat(100_000);
        let refused = exchange(&mut client, "t", "upper", vec![texts(&[&big])])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::OutOfRange, "{refused}");
        assert!(refused.message().contains("too large"), "{refused}");
        let answered = exchange(&mut client, "t", "upper", vec![texts(&["small"])])
            .await
            .unwrap();
        assert_eq!(answered[0].column(0).as_string::<i32>().value(0), "SMALL");
    })
    .await;
}

#[test]
fn rpcop_serve_refuses_bad_flags_clearly() {
    let out = common::output_within(Command::new(env!("CARGO_BIN_EXE_rpcop")).args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--function",
        "upper",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token-file"), "{stderr}");
    let out = common::output_within(Command::new(env!("CARGO_BIN_EXE_rpcop")).args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--function",
        "no_such_fn",
        "--token",
        "t",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown function 'no_such_fn'"), "{stderr}");
    // limits the process could not start with: refused before it tries
    for (flag, value, says) in [
        ("--memory-limit", "1", "at least 16777216 bytes"),
        ("--threads", "100000", "threads"),
        ("--threads", "0", "threads"),
    ] {
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_rpcop"))
                .args(["serve", "--bind", "127.0.0.1:0", "--function", "upper"])
                .args(["--token", "t", flag, value]),
        );
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A connection that never speaks is closed after a few seconds, an exchange
/// that never sends its first message is refused, and SIGTERM
/// stops `rpcop serve` within its grace period even while a caller keeps an
/// exchange open without sending a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcop_serve_bounds_silent_connections_and_stops_on_sigterm() {
    within(async {
        let served = rpcop_serve(&[
            "--bind",
            "127.0.0.1:0",
            "--function",
            "upper",
            "--token",
            "t0ken",
        ]);
        let address = served.1.trim_start_matches("http://").to_string();
        // a TCP connection with no bytes: the instance closes it
        let silent = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut socket = std::net::TcpStream::connect(address).unwrap();
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(60)))
                .unwrap();
            let mut byte = [0u8; 1];
            socket.read(&mut byte)
        });
        // meanwhile, an exchange that never sends its first message
        let mut quiet_client = raw_client(&served.1).await;
        let (_quiet, nothing) = tokio::sync::mpsc::channel::<FlightData>(1);
        let quiet = tokio::spawn(async move {
            quiet_client
                .do_exchange(authorized(
                    tokio_stream::wrappers::ReceiverStream::new(nothing),
                    "t0ken",
                ))
                .await
        });
        let read = silent.await.unwrap();
        assert!(matches!(read, Ok(0)), "{read:?}");
        let refused = quiet.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused}");
        assert!(refused.message().contains("no first message"), "{refused}");
        // an exchange that sent its first message and then nothing
        let mut client = raw_client(&served.1).await;
        let (keep, requests) = tokio::sync::mpsc::channel::<FlightData>(1);
        keep.send(
            FlightData::new().with_descriptor(FlightDescriptor::new_path(vec!["upper".into()])),
        )
        .await
        .unwrap();
        let open = client
            .do_exchange(authorized(
                tokio_stream::wrappers::ReceiverStream::new(requests),
                "t0ken",
            ))
            .await
            .unwrap();
        let mut served = served;
        let pid = i32::try_from(served.0.id()).unwrap();
        // SAFETY: signalling the child this test started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let mut child = std::mem::replace(&mut served.0, Command::new("true").spawn().unwrap());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
        drop((open, keep));
    })
    .await;
}
