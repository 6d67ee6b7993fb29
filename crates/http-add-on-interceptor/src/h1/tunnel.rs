//! Upgraded HTTP/1.1 connections (WebSocket and the like): after the backend's `101`, the
//! client and upstream connections are joined until either closes.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::conn::{Conn, Next, send};
use super::exchange::Failure;
use crate::backend_tls::BackendStream;
use crate::backends::Upstream;

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    /// Relays the `101` head (the first `len` bytes of `ubuf`, with the cold-start header when
    /// `cold` is given) and joins the client and the upstream connection until either closes.
    pub(super) async fn tunnel(
        &mut self,
        upstream: &Upstream,
        mut stream: BackendStream,
        len: usize,
        cold: Option<bool>,
    ) -> Result<Next, Failure> {
        // The head and whatever followed it go to the client; whatever the client sent after
        // its request goes to the upstream.
        self.out.clear();
        match cold {
            Some(cold) if self.ubuf[..len].ends_with(b"\r\n\r\n") => {
                self.out.extend_from_slice(&self.ubuf[..len - 2]);
                self.out.extend_from_slice(if cold {
                    b"x-keda-http-cold-start: true\r\n\r\n"
                } else {
                    b"x-keda-http-cold-start: false\r\n\r\n"
                });
                self.out.extend_from_slice(&self.ubuf[len..]);
            }
            _ => self.out.extend_from_slice(&self.ubuf),
        }
        if send(&mut self.client, &self.out).await.is_err()
            || stream.write_all(&self.buf).await.is_err()
            || stream.flush().await.is_err()
        {
            return Err(Failure::Aborted);
        }
        self.ubuf.clear();
        self.buf.clear();
        match tokio::io::copy_bidirectional(&mut self.client, &mut stream).await {
            Ok((up, down)) => {
                tracing::debug!(upstream = %upstream.addr(), up, down, "upgraded connection closed");
            }
            Err(error) => {
                tracing::debug!(upstream = %upstream.addr(), %error, "upgraded connection failed");
            }
        }
        Ok(Next::Close)
    }
}
