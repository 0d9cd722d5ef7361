//! Instances on Unix domain sockets (`listen = 'unix'`, `rpcop serve --bind
//! unix:/path`, `ENDPOINTS ('unix:/path')`): they answer exactly as over
//! TCP, only their user can connect, and their sockets go with them.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpcop::{RpcSession, ServiceRegion};

use common::{region, within};

const ROWS: usize = 50_000;

/// The socket paths of the region's instances (each `unix:/...`).
fn sockets(region: &ServiceRegion) -> Vec<PathBuf> {
    region
        .members()
        .iter()
        .map(|m| {
            let path = m.address.strip_prefix("unix:");
            PathBuf::from(path.unwrap_or_else(|| panic!("{} is not a Unix socket", m.address)))
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Waits (bounded) until `path` no longer exists.
async fn gone(path: &Path) {
    for _ in 0..200 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} still exists", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_and_process_instances_listen_on_sockets_of_their_own() {
    within(async {
        for (isolation, transport) in [
            ("thread", "flight"),
            ("process", "flight"),
            ("process", "auto"),
        ] {
            let region = region(
                &format!("unix-{isolation}-{transport}"),
                &["upper"],
                &[
                    ("isolation", isolation),
                    ("listen", "unix"),
                    ("transport", transport),
                    ("parallelism", "2"),
                ],
            )
            .await;
            common::wait_ready(&region, 2).await;
            let paths = sockets(&region);
            assert_eq!(paths.len(), 2);
            let dir = paths[0].parent().unwrap().to_path_buf();
            assert_eq!(mode(&dir), 0o700, "the sockets' directory is private");
            for path in &paths {
                assert_eq!(path.parent(), Some(dir.as_path()));
                assert_eq!(mode(path), 0o600, "{} is its owner's alone", path.display());
            }
            common::upper_through(&region, ROWS, 4096).await;
            // shared memory rides on any connection on this host
            let stats = region.stats().await;
            let shared: u64 = stats
                .iter()
                .filter_map(|(_, s)| s.as_ref())
                .map(|s| s.shared_bodies)
                .sum();
            assert_eq!(
                shared > 0,
                transport == "auto",
                "{shared} bodies shared over {transport}"
            );
            region.shutdown().await;
            for path in &paths {
                gone(path).await;
            }
        }
    })
    .await;
}

/// `rpcop serve --bind unix:PATH` prints `unix:PATH`; a session attaches it
/// with `ENDPOINTS`; SIGTERM removes the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_unix_socket_is_an_endpoint() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (socket, token) = (dir.path().join("upper.sock"), dir.path().join("token"));
        std::fs::write(&token, "s3cret-token\n").unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rpcop"))
            .args(["serve", "--function", "upper", "--bind"])
            .arg(format!("unix:{}", socket.display()))
            .arg("--token-file")
            .arg(&token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (line, _) = common::first_line_within(
            std::io::BufReader::new(child.stdout.take().unwrap()),
            common::FIRST_LINE,
        )
        .expect("rpcop serve prints its address");
        let address = line.trim().to_string();
        assert_eq!(address, format!("unix:{}", socket.display()));
        assert_eq!(mode(&socket), 0o600);
        let session = RpcSession::new();
        session
            .sql(&format!(
                "CREATE RPC SERVICE remote FOR FUNCTION upper ENDPOINTS ('{address}') \
                 WITH (token_file = '{}')",
                token.display()
            ))
            .await
            .unwrap();
        let batches = session
            .sql("SELECT upper(s) AS u FROM (VALUES ('unix'), ('socket')) AS t(s)")
            .await
            .unwrap();
        assert_eq!(
            common::cells(&batches).unwrap(),
            vec![vec!["UNIX".to_string()], vec!["SOCKET".to_string()]]
        );
        session.sql("DROP RPC SERVICE remote").await.unwrap();
        // SAFETY: a plain signal to the child this test started.
        assert_eq!(
            unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) },
            0
        );
        let exit = common::child_output_within(child).status;
        assert!(exit.success(), "{exit}");
        assert!(!socket.exists(), "the socket goes when the instance stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_refuse_what_cannot_listen_on_them() {
    within(async {
        let session = RpcSession::new();
        for (sql, expected) in [
            (
                "CREATE RPC SERVICE c FOR FUNCTION upper WITH (command = 'python3 my_model.py', listen = 'unix')",
                "listen = 'unix' is for instances of rpcop's serve program",
            ),
            (
                "CREATE RPC SERVICE r FOR FUNCTION upper ENDPOINTS ('unix:relative.sock')",
                "unix:/absolute/path",
            ),
        ] {
            let error = session.sql(sql).await.unwrap_err().to_string();
            assert!(error.contains(expected), "{sql}: {error}");
        }
    })
    .await;
}
