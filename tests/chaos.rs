//! A seeded chaos suite: long queries through SQL (2M rows, 4 partitions)
//! while a seeded schedule kills instances, freezes one, slows one, and
//! resizes the service. Every round's answer must equal the in-process one
//! exactly (every row's value is checked against the same value computed
//! in-process, and the rows counted), the service must come back to full
//! size, and over the rounds retries and restarts must have happened.
//!
//! Each round draws its events from its own seed. A failing round prints
//! it; `RPCOP_CHAOS_SEED=<seed> cargo test --test chaos` replays that round
//! alone (for each isolation). `RPCOP_CHAOS_ROUNDS` sets the rounds (20).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use rpcop::{MemberState, RpcSession, ServiceRegion};

use common::{python, python_tests};

/// Rows of each round's query.
const ROWS: u64 = 2_000_000;
/// The service's size between rounds.
const SIZE: usize = 3;
/// How long one round may take, events and recovery included.
const ROUND_DEADLINE: Duration = Duration::from_secs(90);

/// splitmix64: a seeded stream of numbers, no dependency needed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One thing done to the service while a query runs.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// SIGKILL to an instance process; abort for a thread instance.
    Kill,
    /// SIGSTOP to an instance process, left frozen: the supervisor must
    /// notice and replace it.
    Freeze,
    /// SIGSTOP and SIGCONT in turn, 60 ms stopped in each 80 ms, ten times.
    Slow,
    /// ALTER the service to this many instances (back to `SIZE` after the
    /// round).
    Resize(usize),
}

/// The service and query of one isolation.
struct Setup {
    name: &'static str,
    create: String,
    /// Counts every row, and the rows whose value through the service
    /// equals the same value computed in-process.
    query: &'static str,
    /// Can its instances be signalled (processes)?
    signals: bool,
}

fn setups() -> Vec<Setup> {
    let upper = "SELECT count(*), sum(CASE WHEN upper(s) = replace(s, 'row', 'ROW') THEN 1 ELSE 0 END) \
                 FROM (SELECT 'row' || value AS s FROM generate_series(1, 2000000))";
    let options = "batch_size = 4096, retries = 10, timeout = '20s'";
    vec![
        Setup {
            name: "thread",
            create: format!(
                "CREATE RPC SERVICE chaos FOR FUNCTION upper WITH (parallelism = {SIZE}, {options})"
            ),
            query: upper,
            signals: false,
        },
        Setup {
            name: "process",
            create: format!(
                "CREATE RPC SERVICE chaos FOR FUNCTION upper WITH (isolation = 'process', \
                 parallelism = {SIZE}, {options})"
            ),
            query: upper,
            signals: true,
        },
        Setup {
            name: "command",
            create: format!(
                "CREATE RPC SERVICE chaos FOR FUNCTION add_one_batch WITH (command = \
                 'cd ''{}'' && exec ''{}'' kit_server.py', parallelism = {SIZE}, {options})",
                python_tests().display(),
                python().display()
            ),
            query: "SELECT count(*), sum(CASE WHEN add_one_batch(value) = value + 1 THEN 1 ELSE 0 END) \
                    FROM generate_series(1, 2000000)",
            signals: true,
        },
    ]
}

/// The events of the round of `seed`: at most one kill (two deaths of
/// instances a request ran on would fail it as a poison pill), each on
/// another instance, each when the query has answered so many requests.
fn schedule(seed: u64, signals: bool) -> Vec<(u64, Event, usize)> {
    let mut random = Seeded(seed);
    let mut events = vec![Event::Kill];
    if signals && random.below(2) == 0 {
        events.push(Event::Freeze);
    }
    if signals && random.below(2) == 0 {
        events.push(Event::Slow);
    }
    if random.below(2) == 0 {
        events.push(Event::Resize(if random.below(2) == 0 { 2 } else { 4 }));
    }
    // ~500 requests a round
    events
        .into_iter()
        .enumerate()
        .map(|(victim, event)| (20 + random.below(300), event, victim))
        .collect()
}

/// What the rounds of one isolation did.
#[derive(Debug, Default)]
struct Tally {
    rounds: usize,
    kills: usize,
    freezes: usize,
    slows: usize,
    resizes: usize,
    rows: u64,
}

/// The ready instances, by slot: (member id, process id).
async fn instances(region: &ServiceRegion) -> Vec<(u64, Option<i32>)> {
    region
        .stats()
        .await
        .into_iter()
        .filter(|(m, _)| m.state == MemberState::Ready)
        .map(|(m, s)| {
            (
                m.id,
                s.and_then(|s| s.pid).and_then(|p| i32::try_from(p).ok()),
            )
        })
        .collect()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: signalling an instance process this test's region started
    unsafe {
        libc::kill(pid, signal);
    }
}

async fn apply(
    session: &RpcSession,
    event: Event,
    victim: usize,
    signals: bool,
    tally: &mut Tally,
) {
    let region = session.service("chaos").unwrap();
    let ready = instances(&region).await;
    let Some(&(id, pid)) = ready.get(victim % ready.len().max(1)) else {
        return;
    };
    // a thread instance's process is this one: never signalled
    let pid = pid.filter(|_| signals);
    match (event, pid) {
        (Event::Kill, Some(pid)) => {
            signal(pid, libc::SIGKILL);
            tally.kills += 1;
        }
        (Event::Kill, None) => {
            if region.kill(id).await {
                tally.kills += 1;
            }
        }
        (Event::Freeze, Some(pid)) => {
            signal(pid, libc::SIGSTOP);
            tally.freezes += 1;
        }
        (Event::Slow, Some(pid)) => {
            for _ in 0..10 {
                signal(pid, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(60)).await;
                signal(pid, libc::SIGCONT);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tally.slows += 1;
        }
        (Event::Resize(to), _) => {
            Box::pin(session.sql(&format!("ALTER RPC SERVICE chaos SET (parallelism = {to})")))
                .await
                .unwrap();
            tally.resizes += 1;
        }
        (Event::Freeze | Event::Slow, None) => {}
    }
}

/// Waits until the service has `SIZE` instances, all ready.
async fn full_size(session: &RpcSession) {
    let region = session.service("chaos").unwrap();
    let mut watch = region.membership();
    loop {
        {
            let m = watch.borrow_and_update();
            if m.members.len() == SIZE && m.members.iter().all(|m| m.state == MemberState::Ready) {
                return;
            }
        }
        watch.changed().await.unwrap();
    }
}

/// One round: the query, with the events of `seed` applied as it goes.
async fn round(session: &RpcSession, setup: &Setup, seed: u64, tally: &mut Tally) {
    let client = session.client("chaos").unwrap();
    let start = client.stats().requests;
    let mut events = schedule(seed, setup.signals);
    events.sort_by_key(|(at, _, _)| *at);
    let query = async {
        let batches = session.sql(setup.query).await.unwrap();
        let row = &batches[0];
        (
            row.column(0).as_primitive::<Int64Type>().value(0),
            row.column(1).as_primitive::<Int64Type>().value(0),
        )
    };
    let chaos = async {
        for (at, event, victim) in events {
            while client.stats().requests < start + at {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            apply(session, event, victim, setup.signals, tally).await;
        }
    };
    let ((count, matching), ()) = tokio::join!(query, chaos);
    let expected = i64::try_from(ROWS).unwrap();
    assert_eq!(
        (count, matching),
        (expected, expected),
        "rows, rows equal in-process"
    );
    tally.rows += ROWS;
    if session.service("chaos").unwrap().options().parallelism != SIZE {
        Box::pin(session.sql(&format!(
            "ALTER RPC SERVICE chaos SET (parallelism = {SIZE})"
        )))
        .await
        .unwrap();
    }
    full_size(session).await;
    tally.rounds += 1;
}

async fn chaos(setup: &Setup) {
    let session = RpcSession::builder()
        .serve_program(env!("CARGO_BIN_EXE_rpcop"))
        .build();
    session
        .sql("SET datafusion.execution.target_partitions = 4")
        .await
        .unwrap();
    Box::pin(session.sql(&setup.create)).await.unwrap();
    let seeds: Vec<u64> = match std::env::var("RPCOP_CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("RPCOP_CHAOS_SEED is a number")],
        Err(_) => {
            let rounds = std::env::var("RPCOP_CHAOS_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(20);
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (0..rounds).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let mut tally = Tally::default();
    for seed in seeds {
        let replay = format!(
            "chaos round of {} instances failed; replay it with RPCOP_CHAOS_SEED={seed} \
             cargo test --test chaos {}",
            setup.name, setup.name
        );
        eprintln!(
            "{}: round with seed {seed} (replay: RPCOP_CHAOS_SEED={seed}): {:?}",
            setup.name,
            schedule(seed, setup.signals)
        );
        let outcome =
            tokio::time::timeout(ROUND_DEADLINE, round(&session, setup, seed, &mut tally)).await;
        assert!(
            outcome.is_ok(),
            "{replay}: it did not finish within {ROUND_DEADLINE:?}"
        );
    }
    let region = session.service("chaos").unwrap();
    let stats = session.client("chaos").unwrap().stats();
    eprintln!(
        "{}: {tally:?}; {} restarts; client {stats:?}",
        setup.name,
        region.restarts()
    );
    assert!(tally.kills > 0 && region.restarts() > 0, "{tally:?}");
    assert!(stats.retries > 0, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
    Box::pin(session.sql("DROP RPC SERVICE chaos"))
        .await
        .unwrap();
}

fn setup(name: &str) -> Setup {
    setups().into_iter().find(|s| s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread() {
    chaos(&setup("thread")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process() {
    chaos(&setup("process")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command() {
    chaos(&setup("command")).await;
}
