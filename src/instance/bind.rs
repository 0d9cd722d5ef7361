//! Where an instance listens: a TCP address, or a Unix domain socket on
//! this host (`unix:PATH`). A Unix socket is made readable and writable by
//! its owner only (0600), so only processes of the same user connect, and
//! its file is removed when the instance stops serving.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::net::{TcpListener, UnixListener};

use crate::error::RpcError;

/// How a Unix socket's address starts (tonic dials such addresses).
pub const UNIX_PREFIX: &str = "unix:";

/// Where an instance listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A TCP address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A Unix domain socket at this path (absolute), made anew.
    Unix(PathBuf),
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(UNIX_PREFIX) {
            Some(path) => {
                let path = Path::new(path.strip_prefix("//").unwrap_or(path));
                if !path.is_absolute() {
                    return Err(format!(
                        "'{s}': a Unix socket's path must be absolute (unix:/run/me/rpcop.sock)"
                    ));
                }
                Ok(Self::Unix(path.to_path_buf()))
            }
            None => s.parse().map(Self::Tcp).map_err(|e| {
                format!("'{s}': expected host:port (127.0.0.1:50051) or unix:/absolute/path ({e})")
            }),
        }
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "{address}"),
            Self::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub(crate) enum Listener {
    /// On TCP.
    Tcp(TcpListener),
    /// On a Unix socket, whose file goes when this is dropped.
    Unix(UnixListener, SocketFile),
}

impl Listener {
    /// The address callers dial: `http://host:port` (TCP; `https` is the
    /// caller's to choose) or `unix:PATH`.
    pub(crate) fn address(&self) -> Result<String, RpcError> {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map(|a| format!("http://{a}"))
                .map_err(|source| RpcError::Bind {
                    address: "?".to_string(),
                    source,
                }),
            Self::Unix(_, file) => Ok(format!("{UNIX_PREFIX}{}", file.0.display())),
        }
    }
}

/// A Unix socket's file, removed when dropped.
#[derive(Debug)]
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        // gone already (its directory removed) is fine
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds `address` for an instance to serve on.
pub(crate) async fn bind(address: &Bind) -> Result<Listener, RpcError> {
    let failed = |source| RpcError::Bind {
        address: address.to_string(),
        source,
    };
    match address {
        Bind::Tcp(at) => TcpListener::bind(at)
            .await
            .map(Listener::Tcp)
            .map_err(failed),
        Bind::Unix(path) => {
            let listener = UnixListener::bind(path).map_err(failed)?;
            let file = SocketFile(path.clone());
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
            Ok(Listener::Unix(listener, file))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for (text, shown) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("unix:/run/rpcop.sock", "unix:/run/rpcop.sock"),
            ("unix:///run/rpcop.sock", "unix:/run/rpcop.sock"),
        ] {
            assert_eq!(text.parse::<Bind>().unwrap().to_string(), shown);
        }
        let relative = "unix:rpcop.sock".parse::<Bind>().unwrap_err();
        assert!(relative.contains("must be absolute"), "{relative}");
        let neither = "localhost".parse::<Bind>().unwrap_err();
        assert!(neither.contains("unix:/absolute/path"), "{neither}");
    }

    #[tokio::test]
    async fn a_unix_socket_is_its_owners_alone_and_goes_with_its_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.sock");
        let listener = bind(&Bind::Unix(path.clone())).await.unwrap();
        assert_eq!(
            listener.address().unwrap(),
            format!("unix:{}", path.display())
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // a second instance cannot take a socket in use
        let taken = bind(&Bind::Unix(path.clone())).await.unwrap_err();
        assert!(
            taken.to_string().contains(&path.display().to_string()),
            "{taken}"
        );
        drop(listener);
        assert!(!path.exists());
    }
}
