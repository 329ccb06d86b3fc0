//! quinn and iroh connections as [`alknet_core::Transport`]s (TCP+TLS uses the core's
//! single-stream transport).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use alknet_core::{BiStream, BoxedStream, Chunks, ConnectionError, StoppedFuture, Transport};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A QUIC connection.
pub struct QuicTransport(pub quinn::Connection);

/// One QUIC bidirectional stream.
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

fn closed(e: impl std::fmt::Display) -> ConnectionError {
    ConnectionError::Closed(e.to_string())
}

/// quinn's (or iroh's) `SendStream::stopped()` as a [`StoppedFuture`]: the peer's code, or `None`
/// once the stream can no longer be stopped (finished and acknowledged, connection lost).
fn stopped_code<V: Into<u64>, E>(
    stopped: impl Future<Output = Result<Option<V>, E>> + Send + 'static,
) -> StoppedFuture {
    Box::pin(async move {
        match stopped.await {
            Ok(Some(code)) => Some(u32::try_from(code.into()).unwrap_or(u32::MAX)),
            _ => None,
        }
    })
}

#[async_trait]
impl Transport for QuicTransport {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.0.accept_bi().await.map_err(closed)?;
        Ok(Box::new(QuicStream { send, recv }))
    }

    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.0.open_bi().await.map_err(closed)?;
        Ok(Box::new(QuicStream { send, recv }))
    }

    fn close(&self, code: u32, reason: &str) {
        self.0.close(code.into(), reason.as_bytes());
    }

    async fn closed(&self) {
        self.0.closed().await;
    }

    fn is_single_stream(&self) -> bool {
        false
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

impl BiStream for QuicStream {
    fn reset(&mut self, code: u32) {
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
    }

    fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }

    fn stopped(&self) -> StoppedFuture {
        stopped_code(self.send.stopped())
    }

    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut Chunks,
        _max: usize,
    ) -> Poll<io::Result<usize>> {
        // quinn's receive buffers, one chunk per STREAM frame (about a packet each): take up to
        // READ_CHUNKS at once so that the copy loop writes them out together.
        let mut chunks: [Bytes; READ_CHUNKS] = std::array::from_fn(|_| Bytes::new());
        // `read_chunks` is cancel-safe: a future dropped while pending has taken nothing.
        let read = ready!(pin!(self.recv.read_chunks(&mut chunks)).poll(cx));
        match read {
            Ok(Some(n)) => {
                let before = into.len();
                chunks.into_iter().take(n).for_each(|c| into.push(c));
                Poll::Ready(Ok(into.len() - before))
            }
            Ok(None) => Poll::Ready(Ok(0)),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Chunks,
    ) -> Poll<io::Result<usize>> {
        // `write_chunks` is cancel-safe: a future dropped while pending has written nothing.
        let written = ready!(pin!(self.send.write_chunks(from.as_mut_slice())).poll(cx))?;
        from.written(written.bytes);
        Poll::Ready(Ok(written.bytes))
    }
}

/// How many received chunks [`QuicStream::poll_read_chunks`] takes at most (64 ≈ 90 KB at a
/// 1 452-byte MTU; also the most one vectored write passes on).
const READ_CHUNKS: usize = 64;

/// An iroh connection (feature `iroh`): QUIC over iroh's paths (direct UDP or a relay).
#[cfg(feature = "iroh")]
pub struct IrohTransport(pub ::iroh::endpoint::Connection);

/// One bidirectional stream of an iroh connection.
#[cfg(feature = "iroh")]
pub struct IrohStream {
    send: ::iroh::endpoint::SendStream,
    recv: ::iroh::endpoint::RecvStream,
}

#[cfg(feature = "iroh")]
#[async_trait]
impl Transport for IrohTransport {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.0.accept_bi().await.map_err(closed)?;
        Ok(Box::new(IrohStream { send, recv }))
    }

    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.0.open_bi().await.map_err(closed)?;
        Ok(Box::new(IrohStream { send, recv }))
    }

    fn close(&self, code: u32, reason: &str) {
        self.0.close(code.into(), reason.as_bytes());
    }

    async fn closed(&self) {
        self.0.closed().await;
    }

    fn is_single_stream(&self) -> bool {
        false
    }
}

#[cfg(feature = "iroh")]
impl AsyncRead for IrohStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

#[cfg(feature = "iroh")]
impl AsyncWrite for IrohStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

#[cfg(feature = "iroh")]
impl BiStream for IrohStream {
    fn reset(&mut self, code: u32) {
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
    }

    fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }

    fn stopped(&self) -> StoppedFuture {
        stopped_code(self.send.stopped())
    }
}
