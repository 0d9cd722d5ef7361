//! Where a region's instances listen (`listen`): a free loopback port, or a
//! Unix domain socket in a directory of the region's own. The directory is
//! made on first use, mode 0700, and removed with the region; each instance
//! start gets a socket of a new name, so a restart never finds the file of
//! the instance it replaces.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

use crate::options::{Listen, ServiceOptions};
use crate::wire::Bind;

/// Instances of a region listen on loopback only.
pub(crate) const BIND_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The Unix sockets' directory of one region, once made.
#[derive(Debug, Default)]
pub(crate) struct SocketDir {
    dir: Mutex<Option<TempDir>>,
    started: AtomicU64,
}

impl SocketDir {
    /// Where the next instance started with `options` listens.
    pub(crate) fn bind_for(&self, options: &ServiceOptions) -> Result<Bind, String> {
        if options.listen == Listen::Tcp {
            return Ok(Bind::Tcp(SocketAddr::from((BIND_HOST, 0))));
        }
        let mut dir = self
            .dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = match &mut *dir {
            Some(dir) => dir,
            empty => empty.insert(
                tempfile::Builder::new()
                    .prefix("rpcop-sockets-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(|e| format!("cannot make a directory for Unix sockets: {e}"))?,
            ),
        };
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        Ok(Bind::Unix(dir.path().join(format!("{n}.sock"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_sockets_get_new_names_in_a_private_directory() {
        let sockets = SocketDir::default();
        let mut options = ServiceOptions::default();
        assert!(matches!(sockets.bind_for(&options), Ok(Bind::Tcp(_))));
        options.listen = Listen::Unix;
        let (Ok(Bind::Unix(first)), Ok(Bind::Unix(second))) =
            (sockets.bind_for(&options), sockets.bind_for(&options))
        else {
            panic!("unix sockets expected");
        };
        assert_ne!(first, second);
        let dir = first.parent().unwrap().to_path_buf();
        assert_eq!(second.parent(), Some(dir.as_path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(sockets);
        assert!(!dir.exists(), "the directory goes with the region");
    }
}
