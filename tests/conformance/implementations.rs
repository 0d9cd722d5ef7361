//! The implementations under test, each started as a process that hosts
//! `upper(VARCHAR)` and `chr(BIGINT)`: `rpcop serve`, the Python kit
//! (`tests/python/conformance_kit.py`) and an arrow-udf server
//! (`tests/python/conformance_arrow_udf.py`).

use std::path::PathBuf;
use std::process::{Child, Command};

use arrow_flight::flight_service_client::FlightServiceClient;
use rpcop::wire;
use tonic::transport::Channel;

use crate::common::{python, python_tests, spawn_server};

/// The token of the implementations that take one.
pub(crate) const TOKEN: &str = "conformance-token";

/// The implementations under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Implementation {
    /// `rpcop serve`.
    Rust,
    /// The Python kit.
    Kit,
    /// RisingWave's arrow-udf `UdfServer`.
    ArrowUdf,
}

impl Implementation {
    pub(crate) fn speaks_rpcop(self) -> bool {
        self != Self::ArrowUdf
    }
}

/// A running implementation, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: String,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn start(implementation: Implementation) -> Server {
    let dir = std::env::temp_dir().join(format!(
        "rpcop-conformance-{}-{implementation:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let mut command = match implementation {
        Implementation::Rust => {
            let mut command = Command::new(env!("CARGO_BIN_EXE_rpcop"));
            command.args(["serve", "--bind", "127.0.0.1:0", "--threads", "2"]);
            command.args(["--function", "upper", "--function", "chr", "--token-file"]);
            command.arg(&token_file);
            command
        }
        Implementation::Kit | Implementation::ArrowUdf => {
            let script = match implementation {
                Implementation::Kit => "conformance_kit.py",
                _ => "conformance_arrow_udf.py",
            };
            let mut command = Command::new(python());
            command
                .arg(script)
                .current_dir(python_tests())
                .env("RPCOP_BIND", "127.0.0.1:0")
                .env("RPCOP_TOKEN_FILE", &token_file)
                .env("RPCOP_THREADS", "2");
            command
        }
    };
    let (child, address) = spawn_server(&mut command);
    Server {
        child,
        address,
        _dir: TempDir(dir),
    }
}

pub(crate) async fn client(address: &str) -> FlightServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightServiceClient::new(channel)
        .max_decoding_message_size(wire::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(wire::MAX_MESSAGE_BYTES)
}
