//! The connections an instance accepts, bounded: at most
//! [`MAX_CONNECTIONS`] at once, and each TCP connection must send its first
//! bytes within [`FIRST_BYTES_TIMEOUT`] of being accepted. Without these
//! bounds, a peer that opens TCP connections and sends nothing would hold
//! them (and their memory) for as long as it liked; a connection over the
//! bound is closed at once. A Unix socket's peers are processes of the
//! instance's own user (the socket is 0600), which could stop the instance
//! anyway: its connections are bounded in number only.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Connected;

/// Connections an instance holds open at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Time a new connection has to send its first bytes (the HTTP/2 preface).
pub(crate) const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for their first bytes at once.
const MAX_WAITING: usize = 64;

/// An accepted connection, holding its place among [`MAX_CONNECTIONS`].
pub(crate) struct Accepted<S> {
    stream: S,
    _place: OwnedSemaphorePermit,
}

/// The connections of `listener` that fit the bounds (see the module
/// documentation); the others are closed.
pub(crate) fn bounded_unix(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<Accepted<UnixStream>>> {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    UnixListenerStream::new(listener).filter_map(move |accepted| {
        // an accept error concerns that connection only
        let accepted = accepted.ok().and_then(|stream| {
            let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                tracing::warn!(
                    "closing a connection: {MAX_CONNECTIONS} connections are open already"
                );
                return None;
            };
            Some(Ok(Accepted {
                stream,
                _place: place,
            }))
        });
        std::future::ready(accepted)
    })
}

/// The connections of `listener` that fit the bounds (see the module
/// documentation); the others are closed.
pub(crate) fn bounded(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<Accepted<TcpStream>>> {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    TcpListenerStream::new(listener)
        .map(move |accepted| {
            let places = Arc::clone(&places);
            async move {
                // an accept error (a connection reset before it was taken,
                // too many open files) concerns that connection only
                let stream = accepted.ok()?;
                // answers are many small HTTP/2 frames: without this, Nagle's
                // algorithm holds each one back until the caller's (delayed)
                // acknowledgement of the one before. tonic's own tcp_nodelay
                // applies only to the listeners it makes itself.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
                }
                let Ok(place) = places.try_acquire_owned() else {
                    tracing::warn!(
                        "closing a connection: {MAX_CONNECTIONS} connections are open already"
                    );
                    return None;
                };
                // peek waits for a byte (readiness alone may be spurious);
                // a peer that closed at once (0 bytes) is dropped too
                let mut first = [0u8; 1];
                match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(1..)) => Some(Ok(Accepted {
                        stream,
                        _place: place,
                    })),
                    _ => None,
                }
            }
        })
        .buffer_unordered(MAX_WAITING)
        .filter_map(std::future::ready)
}

impl<S: Connected> Connected for Accepted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Accepted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Accepted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn accepted_connections_send_small_frames_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut accepted = Box::pin(bounded(listener));
        let mut caller = TcpStream::connect(address).await.unwrap();
        caller.write_all(b"x").await.unwrap();
        let accepted = accepted.next().await.unwrap().unwrap();
        assert!(accepted.stream.nodelay().unwrap(), "TCP_NODELAY is set");
    }
}
