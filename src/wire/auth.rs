//! The bearer token every call carries, and its check on the instance.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::constants::AUTHORIZATION_KEY;
use crate::error::RpcError;
use crate::options::Protocol;

/// The `authorization` metadata value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The most bytes a token file may hold; a token is a short line.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Reads the token from the file at `path`: a regular file (not a FIFO or a
/// device, which could block or never end) of at most
/// [`MAX_TOKEN_FILE_BYTES`], whose trimmed text is a valid token.
pub fn read_token_file(path: &std::path::Path) -> Result<String, RpcError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let failed = |source: std::io::Error| RpcError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(failed)?;
    if !file.metadata().map_err(failed)?.is_file() {
        return Err(failed(std::io::Error::other(
            "not a regular file; write the token into a file",
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(failed(std::io::Error::other(format!(
            "larger than {MAX_TOKEN_FILE_BYTES} bytes; a token file holds one short token"
        ))));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| failed(std::io::Error::other("not UTF-8 text")))?;
    let token = text.trim().to_string();
    BearerToken::new(&token)?;
    Ok(token)
}

/// A token, kept out of `Debug` output (and so out of logs): only
/// [`Secret::expose`] gives its text.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(std::sync::Arc<str>);

impl Secret {
    pub(crate) fn new(text: impl Into<std::sync::Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The token's text, for the one place that sends or checks it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Adds the region's bearer token to every call (or, for a server of
/// another protocol, which takes none, nothing).
#[derive(Clone)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "Bearer (redacted)"
        } else {
            "none"
        };
        f.debug_tuple("BearerToken").field(&shown).finish()
    }
}

impl BearerToken {
    /// The interceptor for `token`, which must be non-empty printable ASCII
    /// without spaces.
    pub(crate) fn new(token: &str) -> Result<Self, RpcError> {
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(RpcError::InvalidToken);
        }
        MetadataValue::try_from(bearer(token))
            .map(|mut value| {
                // kept out of HPACK's table and of `Debug`
                value.set_sensitive(true);
                Self(Some(value))
            })
            .map_err(|_| RpcError::InvalidToken)
    }

    /// `token` for instances of rpcop's protocol; none for the others.
    pub(crate) fn for_protocol(token: &str, protocol: Protocol) -> Result<Self, RpcError> {
        if protocol.is_rpcop() {
            Self::new(token)
        } else {
            Ok(Self::none())
        }
    }

    /// No token: for Flight UDF servers of other protocols, which take
    /// none (and should not learn the region's).
    pub(crate) fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_KEY, value.clone());
        }
        Ok(request)
    }
}

/// Accepts a call that carries `expected` (`Bearer <token>`); otherwise says
/// what is missing, as `UNAUTHENTICATED`.
pub(crate) fn check_token(request: &Request<()>, expected: &str) -> Result<(), Status> {
    let given = request
        .metadata()
        .get(AUTHORIZATION_KEY)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
        Ok(())
    } else if given.is_empty() {
        Err(Status::unauthenticated(
            "missing bearer token: send metadata 'authorization: Bearer <token>' with the region's token",
        ))
    } else {
        Err(Status::unauthenticated(
            "wrong bearer token: send metadata 'authorization: Bearer <token>' with the region's token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let token = "s3cr3t-t0ken";
        let shown = format!(
            "{:?} {:?}",
            Secret::new(token),
            BearerToken::new(token).unwrap()
        );
        assert!(!shown.contains(token), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn a_token_file_is_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("rpcop-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\n").unwrap();
        assert_eq!(read_token_file(&good).unwrap(), "s3cret");
        let big = dir.join("big");
        std::fs::write(&big, "x".repeat(5000)).unwrap();
        let error = read_token_file(&big).unwrap_err().to_string();
        assert!(error.contains("larger than 4096 bytes"), "{error}");
        // a device that never ends, and a FIFO nobody writes: refused at once
        let error = read_token_file(std::path::Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let fifo = dir.join("fifo");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let error = read_token_file(&fifo).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_token_file(&empty).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    #[test]
    fn token_check() {
        let mut request = Request::new(());
        assert!(
            check_token(&request, "Bearer t")
                .unwrap_err()
                .message()
                .contains("missing")
        );
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, MetadataValue::from_static("Bearer x"));
        assert!(
            check_token(&request, "Bearer t")
                .unwrap_err()
                .message()
                .contains("wrong")
        );
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, MetadataValue::from_static("Bearer t"));
        assert!(check_token(&request, "Bearer t").is_ok());
    }

    #[test]
    fn tokens_must_travel_as_metadata() {
        assert!(BearerToken::new("s3cret").is_ok());
        for bad in ["", "two words", "ünïcode", "line\nbreak"] {
            assert!(
                matches!(BearerToken::new(bad), Err(RpcError::InvalidToken)),
                "{bad:?}"
            );
        }
    }
}
