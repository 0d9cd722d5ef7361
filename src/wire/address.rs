//! An instance's address as `rpcop serve --bind` and a region take it: a
//! TCP address, or a Unix domain socket on this host (`unix:PATH`, as tonic
//! dials it and `ENDPOINTS` names it).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
}
