//! Shared memory between the engine and instances on this host
//! (`transport = 'auto'`, docs/protocol.md "Shared memory on one host"):
//! bodies go through it and come back exactly as over the wire;
//! `transport = 'flight'` keeps them on the stream; a bad placement is the
//! request's error and the instance lives on.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, FlightDescriptor};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use rpcop::ServiceRegion;
use tonic::Code;

use common::{assert_upper_in_order, authorized, raw_client, region, text_batches, within};

const ROWS: usize = 200_000;
/// 4,096 rows of `row-N`: bodies of about 60 KB, above the 4 KiB below
/// which bodies stay inline.
const BATCH: usize = 4096;

/// Runs `upper` over [`ROWS`] rows through `region`; checks every row.
async fn upper_through(region: &ServiceRegion) {
    common::upper_through(region, ROWS, BATCH).await;
}

/// The instances' requests and bodies that went through shared memory.
async fn counted(region: &ServiceRegion) -> (u64, u64) {
    let stats = region.stats().await;
    let stats: Vec<_> = stats.into_iter().filter_map(|(_, s)| s).collect();
    (
        stats.iter().map(|s| s.requests).sum(),
        stats.iter().map(|s| s.shared_bodies).sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_instances_on_this_host_share_memory_unless_told_flight() {
    within(async {
        for (transport, shares) in [("auto", true), ("flight", false)] {
            let region = region(
                &format!("shm-{transport}"),
                &["upper"],
                &[
                    ("isolation", "process"),
                    ("parallelism", "2"),
                    ("transport", transport),
                ],
            )
            .await;
            common::wait_ready(&region, 2).await;
            upper_through(&region).await;
            let (requests, shared) = counted(&region).await;
            assert_eq!(requests, ROWS.div_ceil(BATCH) as u64);
            if shares {
                // every answer, and every request but those sent before the
                // instance accepted (at most the first 16 of each exchange:
                // 2 partitions of 8 in flight)
                assert!(
                    shared >= 2 * requests - 2 * 16 && shared <= 2 * requests,
                    "{shared} bodies shared of {requests} requests"
                );
            } else {
                assert_eq!(shared, 0, "transport = 'flight' keeps bodies on the wire");
            }
            region.shutdown().await;
        }
    })
    .await;
}

/// A process instance's answers through shared memory equal a thread
/// instance's handed over in-process, pass after pass on one exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_through_shared_memory_equal_the_in_process_hand_off() {
    within(async {
        let hand_off = region("shm-local", &["upper"], &[]).await;
        upper_through(&hand_off).await;
        assert_eq!(counted(&hand_off).await.1, 0, "handed over, not shared");
        hand_off.shutdown().await;
        let process = region("shm-process", &["upper"], &[("isolation", "process")]).await;
        common::wait_ready(&process, 1).await;
        // a second pass on the same exchange reuses the ring's space
        upper_through(&process).await;
        upper_through(&process).await;
        let (requests, shared) = counted(&process).await;
        assert!(shared >= 2 * requests - 2 * 16, "{shared} of {requests}");
        process.shutdown().await;
    })
    .await;
}

fn texts(rows: usize) -> RecordBatch {
    let column: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|i| format!("text {i}")),
    ));
    RecordBatch::try_from_iter([("s", column)]).unwrap()
}

/// One exchange of `messages` with `offer` as the shared-memory header, if
/// any: the response's header and the first error status.
async fn exchange_with(
    address: &str,
    token: &str,
    offer: Option<&str>,
    messages: Vec<FlightData>,
) -> (Option<String>, Option<tonic::Status>) {
    let mut client = raw_client(address).await;
    let mut request = authorized(futures::stream::iter(messages), token);
    if let Some(offer) = offer {
        request
            .metadata_mut()
            .insert(rpcop::wire::SHARED_MEMORY_HEADER, offer.parse().unwrap());
    }
    match client.do_exchange(request).await {
        Err(status) => (None, Some(status)),
        Ok(response) => {
            let accepted = response
                .metadata()
                .get(rpcop::wire::SHARED_MEMORY_HEADER)
                .map(|v| v.to_str().unwrap().to_string());
            let answers: Vec<_> = response.into_inner().collect().await;
            (accepted, answers.into_iter().find_map(Result::err))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_cannot_be_mapped_and_forged_placements_are_refused() {
    within(async {
        let region = region("shm-hostile", &["upper"], &[]).await;
        let token = region.token().to_string();
        let address = region.members()[0].address.clone();
        let mut messages: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["upper".into()])))
            .build(futures::stream::iter([Ok(texts(1000))]))
            .try_collect()
            .await
            .unwrap();
        // an offer of no segment (this process's stdin; a pid that is not
        // running): not accepted, and the exchange is served inline
        for offer in [
            format!("{}:0:00", std::process::id()),
            "4194305:3:00".into(),
        ] {
            let (accepted, error) =
                exchange_with(&address, &token, Some(&offer), messages.clone()).await;
            assert_eq!(accepted, None, "{offer}");
            assert!(error.is_none(), "{error:?}");
        }
        // a body said to lie in shared memory nobody shared
        let batch = messages.last_mut().unwrap();
        batch.data_body = bytes::Bytes::new();
        let mut forged = Vec::from(rpcop::wire::PLACEMENT_PREFIX);
        forged.extend_from_slice(&0u32.to_le_bytes());
        forged.extend_from_slice(&0u64.to_le_bytes());
        forged.extend_from_slice(&4096u64.to_le_bytes());
        batch.app_metadata = forged.into();
        let (_, error) = exchange_with(&address, &token, None, messages).await;
        let error = error.expect("an error status");
        assert_eq!(error.code(), Code::InvalidArgument, "{error}");
        assert!(error.message().contains("no segment was shared"), "{error}");
        // the instance lives on
        upper_through(&region).await;
        region.shutdown().await;
    })
    .await;
}

/// Through SQL, as the shell runs it: a process service's requests and
/// answers go through shared memory.
/// Answers of rpcop's own instances are read in place, and each holds its
/// slot of the ring for as long as the caller keeps it: with every answer
/// kept, the caller holds half the ring in place and copies the rest out,
/// and the instance places the rest around the ones held, so every answer
/// still comes through shared memory (none inline, through the socket),
/// every row right; dropped, their slots serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_kept_by_the_caller_all_come_through_shared_memory() {
    within(async {
        let process = region("shm-kept", &["upper"], &[("isolation", "process")]).await;
        common::wait_ready(&process, 1).await;
        // more requests than the ring has slots; bodies of about 15 KB
        let (requests, batch) = (rpcop::wire::SLOTS as u64 + 144, 1024);
        let rows = requests as usize * batch;
        let client = process.client().unwrap();
        let pass = || {
            client
                .call_stream("upper", futures::stream::iter(text_batches(rows, batch)))
                .try_collect::<Vec<ArrayRef>>()
        };
        let kept = pass().await.unwrap();
        assert_upper_in_order(&kept, rows);
        let (first, shared) = counted(&process).await;
        assert_eq!(first, requests);
        // every request and every answer but the few sent before the offer
        // was taken: more answers than the ring has slots
        let answers = |shared: u64| shared.saturating_sub(requests);
        assert!(
            shared >= 2 * requests - 32 && answers(shared) > rpcop::wire::SLOTS as u64,
            "{shared} bodies shared of {requests} requests, all answers kept"
        );
        drop(kept);
        let again = pass().await.unwrap();
        assert_upper_in_order(&again, rows);
        let (_, after) = counted(&process).await;
        // the same exchange: every request and answer placed
        assert!(
            after - shared >= 2 * requests,
            "{} bodies shared in the second pass: the slots did not come back",
            after - shared
        );
        process.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_service_shares_memory_through_sql() {
    within(async {
        let session = common::demo_session();
        session
            .sql("CREATE RPC SERVICE text FOR FUNCTION upper WITH (isolation = 'process')")
            .await
            .unwrap();
        let counted_rows = session
            .sql(
                "SELECT count(upper(s)) FROM (SELECT 'row-' || CAST(value AS VARCHAR) AS s \
                 FROM generate_series(1, 100000))",
            )
            .await
            .unwrap();
        assert_eq!(
            common::cells(&counted_rows).unwrap(),
            vec![vec!["100000".to_string()]]
        );
        let (requests, shared) = counted(&session.service("text").unwrap()).await;
        assert!(requests > 0 && shared >= requests, "{shared} of {requests}");
    })
    .await;
}
