//! TLS on the wire (rustls, through tonic): an instance's identity, with the
//! certificate authority its callers' certificates must chain to for mutual
//! TLS ([`ServerTls`], `rpcop serve --tls-cert/--tls-key/--tls-client-ca`),
//! and a caller's trust and identity for `https://` endpoints
//! ([`ClientTls`], the service options `tls_ca`, `tls_cert`, `tls_key`).
//! Files are PEM, read when a service is created or an instance starts, and
//! their errors name the file and the option or flag.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::RpcError;
use crate::options::ServiceOptions;

/// The most bytes of a PEM file read: certificates and keys are a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The PEM file at `path`, given as `what`, if it holds a PEM block.
fn pem(path: &Path, what: &str) -> Result<Vec<u8>, RpcError> {
    let tls = |reason: String| RpcError::Tls {
        reason: format!("{what} '{}': {reason}", path.display()),
    };
    let metadata = std::fs::metadata(path).map_err(|e| tls(format!("cannot read it: {e}")))?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(tls(format!(
            "it is {} bytes, more than a PEM file of certificates or a key holds",
            metadata.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| tls(format!("cannot read it: {e}")))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(tls("it holds no PEM block ('-----BEGIN ...')".to_string()));
    }
    Ok(bytes)
}

/// An instance's TLS: its certificate and key, and for mutual TLS the
/// authority its callers' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain of the instance.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM certificates of the authority a caller's certificate must chain
    /// to; callers without one are refused.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// tonic's server configuration, the files read now.
    pub(crate) fn config(&self) -> Result<ServerTlsConfig, RpcError> {
        let identity =
            Identity::from_pem(pem(&self.cert, "--tls-cert")?, pem(&self.key, "--tls-key")?);
        let config = ServerTlsConfig::new().identity(identity);
        Ok(match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(pem(ca, "--tls-client-ca")?)),
            None => config,
        })
    }
}

/// A caller's TLS for `https://` instances: whom it trusts, and who it is.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls(ClientTlsConfig);

impl ClientTls {
    /// The TLS of a service's options: `tls_ca` (else the system's
    /// authorities), and `tls_cert` with `tls_key` for mutual TLS.
    pub(crate) fn of(options: &ServiceOptions) -> Result<Self, RpcError> {
        let mut config = match &options.tls_ca {
            Some(ca) => ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem(Path::new(ca), "tls_ca")?)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
            config = config.identity(Identity::from_pem(
                pem(Path::new(cert), "tls_cert")?,
                pem(Path::new(key), "tls_key")?,
            ));
        }
        Ok(Self(config))
    }

    /// The system's authorities, no client certificate.
    pub(crate) fn system() -> Self {
        Self(ClientTlsConfig::new().with_native_roots())
    }

    pub(crate) fn config(&self) -> ClientTlsConfig {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = ServerTls {
            cert: junk.clone(),
            key: junk,
            client_ca: None,
        };
        let e = tls.config().unwrap_err().to_string();
        assert!(
            e.contains("--tls-cert") && e.contains("no PEM block"),
            "{e}"
        );
        let mut options = ServiceOptions::default();
        options.set("tls_ca", "/nonexistent/ca.pem").unwrap();
        let e = ClientTls::of(&options).unwrap_err().to_string();
        assert!(
            e.contains("tls_ca '/nonexistent/ca.pem': cannot read it"),
            "{e}"
        );
    }
}
