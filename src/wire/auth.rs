//! The bearer token every call carries, and its check on the instance.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::constants::AUTHORIZATION_KEY;
use crate::error::RpcError;

/// The `authorization` metadata value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Adds the region's bearer token to every call.
#[derive(Debug, Clone)]
pub(crate) struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// The interceptor for `token`, which must be non-empty printable ASCII
    /// without spaces.
    pub(crate) fn new(token: &str) -> Result<Self, RpcError> {
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(RpcError::InvalidToken);
        }
        MetadataValue::try_from(bearer(token))
            .map(Self)
            .map_err(|_| RpcError::InvalidToken)
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_KEY, self.0.clone());
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
