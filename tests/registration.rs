//! Instances that join a session's service from "another host": `rpcop
//! serve --register` processes this test starts itself, as an operator
//! would on a GPU host, here on 127.0.0.1. They register with the
//! session's registry, are routed to like the region's own instances,
//! leave drained on SIGTERM (a query in flight loses nothing and retries
//! nothing), are dropped when their lease runs out (SIGSTOP) and join
//! again when they come back; a registry refuses, with why, a wrong token,
//! an unknown service and an instance that lacks a function.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{demo_session, output_within, spawn_server, within};
use datafusion::arrow::util::pretty::pretty_format_batches;
use rpcop::{Member, MemberState, Registry, RegistryConfig, RpcSession};

const REGISTRY_TOKEN: &str = "registry-token";

fn token_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(format!("token-{}", text.len()));
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// `rpcop serve` hosting `functions` on a free loopback port, joining
/// `service` through the registry at `registry`.
fn joining(registry: &str, token: &Path, service: &str, functions: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcop"));
    command
        .args(["serve", "--bind", "127.0.0.1:0", "--register", registry])
        .args(["--service", service, "--registry-token-file"])
        .arg(token);
    for function in functions {
        command.args(["--function", function]);
    }
    command
}

/// A session with service `sim` (one thread instance of `model_sim`) and a
/// registry with `lease`.
async fn session_with_registry(lease: Duration) -> (Arc<RpcSession>, Registry) {
    let session = Arc::new(demo_session());
    session
        .sql(
            "CREATE RPC SERVICE sim FOR FUNCTION model_sim \
             WITH (parallelism = 1, batch_size = 10, max_in_flight = 8)",
        )
        .await
        .unwrap();
    let config = RegistryConfig {
        lease,
        ..RegistryConfig::new("127.0.0.1:0".parse().unwrap(), REGISTRY_TOKEN)
    };
    let registry = session.start_registry(config).await.unwrap();
    assert!(registry.address().starts_with("http://127.0.0.1:"));
    (session, registry)
}

/// Waits until the members of `sim` satisfy `done`.
async fn members_until(session: &RpcSession, done: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    let region = session.service("sim").unwrap();
    let mut watch = region.membership();
    loop {
        let members = watch.borrow_and_update().members.clone();
        if done(&members) {
            return members;
        }
        watch.changed().await.unwrap();
    }
}

/// The ready registered member at `address`, if any.
fn guest_at<'a>(members: &'a [Member], address: &str) -> Option<&'a Member> {
    members
        .iter()
        .find(|m| m.registered && m.address == address && m.state == MemberState::Ready)
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: signalling our own child, which has not been reaped
    let rc = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), signal) };
    assert_eq!(rc, 0);
}

/// Waits (bounded) for `child` to exit; its status.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const QUERY: &str = "SELECT value, model_sim(CAST(value AS VARCHAR), 30, 0) AS m \
                     FROM generate_series(1, 400) ORDER BY value";

async fn text(session: &RpcSession, sql: &str) -> String {
    pretty_format_batches(&session.sql(sql).await.unwrap())
        .unwrap()
        .to_string()
}

/// The same query evaluated in this process, without the service.
async fn in_process(session: &RpcSession) -> String {
    session.sql("SET rpcop.rewrite = false").await.unwrap();
    let expected = text(session, QUERY).await;
    session.sql("SET rpcop.rewrite = true").await.unwrap();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joins_serves_and_leaves_drained() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), REGISTRY_TOKEN);
    within(async {
        let (session, registry) = session_with_registry(Duration::from_secs(10)).await;
        let expected = in_process(&session).await;
        let (mut child, address) = spawn_server(&mut joining(
            registry.address(),
            &token,
            "sim",
            &["model_sim"],
        ));
        let members = members_until(&session, |m| guest_at(m, &address).is_some()).await;
        assert_eq!(
            members
                .iter()
                .filter(|m| m.state == MemberState::Ready)
                .count(),
            2,
            "{members:?}"
        );
        let guest = guest_at(&members, &address).unwrap().id;
        let shown = text(
            &session,
            "SELECT instance, address, state FROM rpc_instances('sim')",
        )
        .await;
        assert!(shown.contains(&address), "{shown}");
        let shown = text(
            &session,
            "SELECT instances FROM rpc_services() WHERE name = 'sim'",
        )
        .await;
        assert!(shown.contains("1/1 (+1 registered)"), "{shown}");

        // balanced with the region's own instance, every row right
        assert_eq!(text(&session, QUERY).await, expected);
        let region = session.service("sim").unwrap();
        let served = |stats: &[(Member, Option<rpcop::wire::InstanceStats>)]| {
            stats
                .iter()
                .find(|(m, _)| m.id == guest)
                .and_then(|(_, s)| s.clone())
                .unwrap()
        };
        let took = served(&region.stats().await).requests;
        assert!(took > 0, "the registered instance took no request");

        // SIGTERM while a query runs through it: it leaves drained, the
        // query loses no row and retries nothing
        let before = session.client("sim").unwrap().stats();
        let running = {
            let session = Arc::clone(&session);
            tokio::spawn(async move { text(&session, QUERY).await })
        };
        loop {
            if served(&region.stats().await).in_flight > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        signal(&child, libc::SIGTERM);
        members_until(&session, |m| {
            m.iter()
                .any(|m| m.id == guest && m.state == MemberState::Draining)
                || !m.iter().any(|m| m.id == guest)
        })
        .await;
        assert_eq!(running.await.unwrap(), expected);
        let status = exit_of(&mut child).await;
        assert!(status.success(), "{status:?}");
        let members = members_until(&session, |m| !m.iter().any(|m| m.id == guest)).await;
        assert_eq!(members.len(), 1, "{members:?}");
        let after = session.client("sim").unwrap().stats();
        assert_eq!(after.retries, before.retries, "{after:?}");
        assert_eq!(after.failures, before.failures, "{after:?}");
        assert_eq!(text(&session, QUERY).await, expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_instance_is_dropped_after_its_lease_and_joins_again() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), REGISTRY_TOKEN);
    within(async {
        let lease = Duration::from_secs(1);
        let (session, registry) = session_with_registry(lease).await;
        let (mut child, address) =
            spawn_server(&mut joining(registry.address(), &token, "sim", &["model_sim"]));
        let members = members_until(&session, |m| guest_at(m, &address).is_some()).await;
        let first = guest_at(&members, &address).unwrap().id;

        // frozen: no renewal. Health checks would take it out of routing
        // at 1.5 s and drop it at 4.5 s; its lease drops it within 1 s
        signal(&child, libc::SIGSTOP);
        let stopped = Instant::now();
        members_until(&session, |m| !m.iter().any(|m| m.id == first)).await;
        let dropped = stopped.elapsed();
        assert!(dropped < Duration::from_secs(3), "dropped after {dropped:?}");

        // back: its renewal is refused, so it registers again
        signal(&child, libc::SIGCONT);
        let members = members_until(&session, |m| guest_at(m, &address).is_some()).await;
        let second = guest_at(&members, &address).unwrap().id;
        assert_ne!(second, first);
        assert_eq!(
            text(&session, "SELECT count(DISTINCT model_sim(CAST(value AS VARCHAR), 0, 0)) AS n FROM generate_series(1, 100)").await,
            text(&session, "SELECT count(DISTINCT CAST(value AS VARCHAR)) AS n FROM generate_series(1, 100)").await
        );

        signal(&child, libc::SIGTERM);
        assert!(exit_of(&mut child).await.success());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refuses_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let good = token_file(dir.path(), REGISTRY_TOKEN);
    let wrong = token_file(dir.path(), "not-the-registry-token");
    within(async {
        let (session, registry) = session_with_registry(Duration::from_secs(10)).await;
        let address = registry.address().to_string();
        let refused = |command: &mut Command| {
            let output = output_within(command);
            assert!(!output.status.success());
            String::from_utf8_lossy(&output.stderr).to_string()
        };
        let cases = tokio::task::spawn_blocking(move || {
            [
                refused(&mut joining(&address, &wrong, "sim", &["model_sim"])),
                refused(&mut joining(&address, &good, "nosuch", &["model_sim"])),
                refused(&mut joining(&address, &good, "sim", &["upper"])),
                refused(
                    joining(&address, &good, "sim", &["model_sim"])
                        .args(["--advertise", "gpu-7:5000"]),
                ),
            ]
        })
        .await
        .unwrap();
        let expect = [
            "refused its token",
            "no RPC service named 'nosuch'",
            "does not host model_sim",
            "gpu-7:5000",
        ];
        for (told, expected) in cases.iter().zip(expect) {
            assert!(told.contains(expected), "{expected}: {told}");
        }
        // nothing joined
        let members = session.service("sim").unwrap().members();
        assert!(!members.iter().any(|m| m.registered), "{members:?}");

        // a registry that would send tokens in plain text beyond loopback,
        // or with a lease too short to renew, does not start
        let wide = RegistryConfig::new("0.0.0.0:0".parse().unwrap(), REGISTRY_TOKEN);
        let refusal = session.start_registry(wide).await.unwrap_err().to_string();
        assert!(refusal.contains("--registry-tls-cert"), "{refusal}");
        let short = RegistryConfig {
            lease: Duration::from_millis(100),
            ..RegistryConfig::new("127.0.0.1:0".parse().unwrap(), REGISTRY_TOKEN)
        };
        let refusal = session.start_registry(short).await.unwrap_err().to_string();
        assert!(refusal.contains("too short"), "{refusal}");
    })
    .await;
}

/// The lines a child writes to `pipe`, as they come, read on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The next line of `lines` that satisfies `wanted`, within the deadline.
fn line_where(lines: &std::sync::mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the line came within the deadline");
        if wanted(&line) {
            return line;
        }
    }
}

#[test]
fn the_shell_takes_instances_that_register() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), REGISTRY_TOKEN);
    let mut shell = Command::new(env!("CARGO_BIN_EXE_rpcop"))
        .args(["--registry", "127.0.0.1:0", "--format", "csv", "-q"])
        .arg("--registry-token-file")
        .arg(&token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errors = lines_of(shell.stderr.take().unwrap());
    let output = lines_of(shell.stdout.take().unwrap());
    let mut input = shell.stdin.take().unwrap();
    // rpcop: registry at http://127.0.0.1:PORT (lease 10s): instances join with ...
    let told = line_where(&errors, |l| l.contains("registry at "));
    let registry = told
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    writeln!(
        input,
        "CREATE RPC SERVICE sim FOR FUNCTION model_sim;\nSELECT 'created' AS step;"
    )
    .unwrap();
    line_where(&output, |l| l == "created");
    let (instance, _) = spawn_server(&mut joining(&registry, &token, "sim", &["model_sim"]));
    let mut joined = false;
    for _ in 0..400 {
        writeln!(
            input,
            "SELECT instances FROM rpc_services() WHERE name = 'sim';"
        )
        .unwrap();
        let instances = line_where(&output, |l| l.starts_with("1/1"));
        if instances.contains("+1 registered") {
            joined = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(joined, "the instance never showed as registered");
    writeln!(
        input,
        "SELECT count(*) AS n FROM (SELECT model_sim(CAST(value AS VARCHAR), 0, 0) AS m \
         FROM generate_series(1, 1000)) WHERE m IS NOT NULL;"
    )
    .unwrap();
    line_where(&output, |l| l == "1000");
    signal(&instance, libc::SIGTERM);
    let status = common::child_output_within(instance).status;
    assert!(status.success(), "{status:?}");
    writeln!(input, "\\q").unwrap();
    drop(input);
    let status = common::child_output_within(shell).status;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_address_that_never_answers_is_dropped_within_its_lease() {
    use rpcop::wire::{PROTOCOL_VERSION, Registration};
    within(async {
        let (session, _registry) = session_with_registry(Duration::from_secs(10)).await;
        let region = session.service("sim").unwrap();
        let registration = |address: &str| Registration {
            service: "sim".into(),
            address: address.into(),
            functions: vec!["model_sim".into()],
            protocol_version: PROTOCOL_VERSION,
        };
        let lease = Duration::from_secs(1);
        // never a Unix socket of this host, whatever an instance says
        let refused = region
            .admit(&registration("unix:/tmp/elsewhere.sock"), lease)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("not an http:// or https:// address"),
            "{refused}"
        );

        // nothing listens at port 1: renewed all along, it is still dropped
        // once a lease has passed without a health answer
        let admission = region
            .admit(&registration("http://127.0.0.1:1"), lease)
            .unwrap();
        let member = admission.member;
        assert!(!region.renew(member, "not-its-secret"));
        assert!(!region.leave(member, "not-its-secret").await);
        let renewing = {
            let (region, secret) = (Arc::clone(&region), admission.secret.clone());
            tokio::spawn(async move {
                while region.renew(member, &secret) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let admitted = Instant::now();
        let members = members_until(&session, |m| {
            m.iter()
                .any(|m| m.id == member && m.state == MemberState::Starting)
                || !m.iter().any(|m| m.id == member)
        })
        .await;
        assert!(
            !members
                .iter()
                .any(|m| m.id == member && m.state == MemberState::Ready)
        );
        members_until(&session, |m| !m.iter().any(|m| m.id == member)).await;
        let dropped = admitted.elapsed();
        assert!(
            dropped >= lease && dropped < lease * 3,
            "dropped after {dropped:?}"
        );
        // its renewals are refused from then on
        renewing.await.unwrap();
        assert!(!region.renew(member, &admission.secret));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_service_lets_its_registered_instances_go_with_why() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), REGISTRY_TOKEN);
    within(async {
        let (session, registry) = session_with_registry(Duration::from_secs(1)).await;
        let mut child = joining(registry.address(), &token, "sim", &["model_sim"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (address, _) = common::first_line_within(
            std::io::BufReader::new(child.stdout.take().unwrap()),
            common::FIRST_LINE,
        )
        .unwrap();
        members_until(&session, |m| guest_at(m, &address).is_some()).await;
        session.sql("DROP RPC SERVICE sim").await.unwrap();
        // its next renewal finds no member, its registration no service
        let output = tokio::task::spawn_blocking(move || common::child_output_within(child))
            .await
            .unwrap();
        assert!(!output.status.success());
        let told = String::from_utf8_lossy(&output.stderr);
        assert!(told.contains("no RPC service named 'sim'"), "{told}");
    })
    .await;
}
