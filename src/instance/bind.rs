//! Listening where an instance is told to ([`Bind`]): a TCP address, or a
//! Unix domain socket on this host. A Unix socket is made readable and
//! writable by its owner only (0600), so only processes of the same user
//! connect, and its file is removed when the instance stops serving.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};

use crate::error::RpcError;
use crate::wire::{Bind, UNIX_PREFIX};

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
