//! TLS and mutual TLS between a session and `rpcop serve`, with
//! certificates this test makes (rcgen): an authority, a server certificate
//! for 127.0.0.1, and a client certificate. Plain text beyond loopback is
//! refused; tokens never show in SHOW, DESCRIBE, EXPLAIN or rpc_options().

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{FIRST_LINE, first_line_within, within};
use datafusion::arrow::util::pretty::pretty_format_batches;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rpcop::RpcSession;

const TOKEN: &str = "tls-token-a7f3e9d2c41b";

/// The files of one test: an authority, a server certificate for
/// 127.0.0.1 and a client certificate, both signed by it, and a token.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, names) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["rpcop-client".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        // an authority that signed neither
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("other-ca.pem", other.self_signed(&other_key).unwrap().pem());
        write("token", format!("{TOKEN}\n"));
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `rpcop serve` hosting `upper` over TLS (mutual with `client_ca`),
/// logging everything (`RPCOP_LOG=trace`) into the file `serve.log`; its
/// address, `https://127.0.0.1:port`.
fn serve(pki: &Pki, client_ca: bool) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcop"));
    command
        .env("RPCOP_LOG", "trace")
        .args(["serve", "--bind", "127.0.0.1:0", "--function", "upper"])
        .arg("--token-file")
        .arg(pki.path("token"))
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server.key"));
    if client_ca {
        command.arg("--tls-client-ca").arg(pki.path("ca.pem"));
    }
    let log = std::fs::File::create(pki.path("serve.log")).unwrap();
    let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let (address, _) = first_line_within(reader, FIRST_LINE).expect("serve prints its address");
    assert!(address.starts_with("https://127.0.0.1:"), "{address}");
    (child, address)
}

fn attach(address: &str, pki: &Pki, options: &[(&str, &Path)]) -> String {
    let mut with = vec![format!("token_file = '{}'", pki.path("token").display())];
    with.extend(
        options
            .iter()
            .map(|(k, v)| format!("{k} = '{}'", v.display())),
    );
    format!(
        "CREATE RPC SERVICE s FOR FUNCTION upper ENDPOINTS ('{address}') WITH ({}, timeout = '5s')",
        with.join(", ")
    )
}

async fn text(session: &RpcSession, sql: &str) -> String {
    pretty_format_batches(&session.sql(sql).await.unwrap())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoints_answer_and_strangers_are_refused() {
    let pki = Pki::new();
    let (mut child, address) = serve(&pki, false);
    within(async {
        // trusted by its authority: served, and the token shows nowhere
        let session = RpcSession::new();
        session
            .sql(&attach(&address, &pki, &[("tls_ca", &pki.path("ca.pem"))]))
            .await
            .unwrap();
        let answer = text(&session, "SELECT upper('over tls') AS u").await;
        assert!(answer.contains("OVER TLS"), "{answer}");
        for sql in [
            "SHOW RPC SERVICES",
            "DESCRIBE RPC SERVICE s",
            "SELECT * FROM rpc_options('s')",
            "EXPLAIN VERBOSE SELECT upper(column1) FROM (VALUES ('a'))",
        ] {
            let shown = text(&session, sql).await;
            assert!(!shown.contains(TOKEN), "{sql} shows the token:\n{shown}");
        }
        // an authority that did not sign it: refused, saying so
        let session = RpcSession::new();
        let e = session
            .sql(&attach(
                &address,
                &pki,
                &[("tls_ca", &pki.path("other-ca.pem"))],
            ))
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(
            e.contains(&address) && e.contains("TLS failed") && e.contains("tls_ca"),
            "{e}"
        );
        // plain http to a TLS instance: refused, not answered
        let session = RpcSession::new();
        let plain = address.replace("https://", "http://");
        let e = session.sql(&attach(&plain, &pki, &[])).await.unwrap_err();
        assert!(
            e.to_string().contains("give its address as https://"),
            "{e}"
        );
        // a key without its certificate: refused before any connection
        let e = session
            .sql(&attach(
                &address,
                &pki,
                &[("tls_key", &pki.path("client.key"))],
            ))
            .await
            .unwrap_err()
            .strip_backtrace();
        assert!(e.contains("'tls_cert' and 'tls_key' go together"), "{e}");
    })
    .await;
    // the shell, logging everything, attached over TLS: its log and output
    // show calls, never the token
    let sql = format!(
        "{}; SELECT upper('logged') AS u; SHOW RPC SERVICES; DESCRIBE RPC SERVICE s",
        attach(&address, &pki, &[("tls_ca", &pki.path("ca.pem"))])
    );
    let shell = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_rpcop"))
            .env("RPCOP_LOG", "trace")
            .args(["-c", &sql]),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&shell.stdout),
        String::from_utf8_lossy(&shell.stderr),
    );
    assert!(
        shell.status.success() && stdout.contains("LOGGED"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("TRACE"),
        "the shell logged nothing:\n{stderr}"
    );
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "the shell shows the token"
    );
    let _ = child.kill();
    let _ = child.wait();
    // the instance logged its calls, and not the token they carried
    let log = std::fs::read_to_string(pki.path("serve.log")).unwrap();
    assert!(log.contains("serving"), "the instance logged nothing");
    assert!(!log.contains(TOKEN), "the instance's log shows the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_wants_the_clients_certificate() {
    let pki = Pki::new();
    let (mut child, address) = serve(&pki, true);
    within(async {
        // without a client certificate: refused
        let session = RpcSession::new();
        let refused = session
            .sql(&attach(&address, &pki, &[("tls_ca", &pki.path("ca.pem"))]))
            .await;
        let e = refused.unwrap_err().strip_backtrace();
        assert!(e.contains("TLS failed") && e.contains("tls_cert"), "{e}");
        // with one the authority signed: served
        let session = RpcSession::new();
        session
            .sql(&attach(
                &address,
                &pki,
                &[
                    ("tls_ca", &pki.path("ca.pem")),
                    ("tls_cert", &pki.path("client.pem")),
                    ("tls_key", &pki.path("client.key")),
                ],
            ))
            .await
            .unwrap();
        let answer = text(
            &session,
            "SELECT count(DISTINCT upper('r' || value)) FROM generate_series(1, 5000)",
        )
        .await;
        assert!(answer.contains("5000"), "{answer}");
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn plain_text_beyond_loopback_is_refused() {
    let out = common::output_within(Command::new(env!("CARGO_BIN_EXE_rpcop")).args([
        "serve",
        "--bind",
        "0.0.0.0:0",
        "--function",
        "upper",
        "--token",
        "t",
    ]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without TLS")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    // a certificate without its key: refused by the flags
    let out = common::output_within(Command::new(env!("CARGO_BIN_EXE_rpcop")).args([
        "serve",
        "--function",
        "upper",
        "--token",
        "t",
        "--tls-cert",
        "cert.pem",
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
