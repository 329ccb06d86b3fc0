//! quinn and iroh connections as [`alknet_core::Transport`]s (TCP+TLS uses the core's
//! single-stream transport).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use alknet_core::{BiStream, BoxedStream, Chunks, ConnectionError, StoppedFuture, Transport};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The stream credit a connection starts with, before [`StreamCredit`] grows it.
///
/// quinn (and iroh) keep a little state for every stream the peer *may* open, allocated when the
/// credit is given (about 80 bytes a stream): a connection offered the full default of 1 024
/// streams would cost some 84 KiB while idle. So a connection starts with 128 and grows.
pub const INITIAL_STREAM_CREDIT: u32 = 128;

/// A connection's credit for peer-opened streams, grown with use: whenever half of what was
/// granted is open, the credit doubles, up to the configured limit. The credit never shrinks
/// (the state a busy connection allocated stays until it closes), and a peer can still hold no
/// more than the limit at once.
pub(crate) struct StreamCredit {
    open: AtomicU32,
    granted: AtomicU32,
    limit: u32,
}

impl StreamCredit {
    /// Credit that starts at `initial` (as the transport config announced it) and may grow to
    /// `limit`.
    pub(crate) fn new(initial: u32, limit: u32) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicU32::new(0),
            granted: AtomicU32::new(initial.min(limit)),
            limit,
        })
    }

    /// Counts a stream the peer opened; `grant` announces a larger credit when it is time.
    fn accepted(self: &Arc<Self>, grant: impl FnOnce(u32)) -> CreditHold {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let granted = self.granted.load(Ordering::Relaxed);
        if granted < self.limit && open.saturating_mul(2) >= granted {
            let next = granted.saturating_mul(2).min(self.limit);
            if self
                .granted
                .compare_exchange(granted, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                grant(next);
            }
        }
        CreditHold(self.clone())
    }
}

/// One open peer-opened stream, as [`StreamCredit`] counts it; dropped with the stream.
struct CreditHold(Arc<StreamCredit>);

impl Drop for CreditHold {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A QUIC connection.
pub struct QuicTransport {
    conn: quinn::Connection,
    credit: Option<Arc<StreamCredit>>,
}

impl QuicTransport {
    /// A connection whose stream credit stays as its transport config set it.
    pub fn new(conn: quinn::Connection) -> Self {
        Self { conn, credit: None }
    }

    /// A connection whose stream credit grows with use (see [`StreamCredit`]).
    pub(crate) fn with_credit(conn: quinn::Connection, credit: Arc<StreamCredit>) -> Self {
        Self {
            conn,
            credit: Some(credit),
        }
    }
}

/// One QUIC bidirectional stream.
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _credit: Option<CreditHold>,
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
        let (send, recv) = self.conn.accept_bi().await.map_err(closed)?;
        let credit = self
            .credit
            .as_ref()
            .map(|credit| credit.accepted(|n| self.conn.set_max_concurrent_bi_streams(n.into())));
        Ok(Box::new(QuicStream {
            send,
            recv,
            _credit: credit,
        }))
    }

    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.conn.open_bi().await.map_err(closed)?;
        Ok(Box::new(QuicStream {
            send,
            recv,
            _credit: None,
        }))
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(code.into(), reason.as_bytes());
    }

    async fn closed(&self) {
        self.conn.closed().await;
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
pub struct IrohTransport {
    conn: ::iroh::endpoint::Connection,
    credit: Option<Arc<StreamCredit>>,
}

#[cfg(feature = "iroh")]
impl IrohTransport {
    /// A connection whose stream credit stays as its transport config set it.
    pub fn new(conn: ::iroh::endpoint::Connection) -> Self {
        Self { conn, credit: None }
    }

    /// A connection whose stream credit grows with use (see [`StreamCredit`]).
    pub(crate) fn with_credit(
        conn: ::iroh::endpoint::Connection,
        credit: Arc<StreamCredit>,
    ) -> Self {
        Self {
            conn,
            credit: Some(credit),
        }
    }
}

/// One bidirectional stream of an iroh connection.
#[cfg(feature = "iroh")]
pub struct IrohStream {
    send: ::iroh::endpoint::SendStream,
    recv: ::iroh::endpoint::RecvStream,
    _credit: Option<CreditHold>,
}

#[cfg(feature = "iroh")]
#[async_trait]
impl Transport for IrohTransport {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.conn.accept_bi().await.map_err(closed)?;
        let credit = self
            .credit
            .as_ref()
            .map(|credit| credit.accepted(|n| self.conn.set_max_concurrent_bi_streams(n.into())));
        Ok(Box::new(IrohStream {
            send,
            recv,
            _credit: credit,
        }))
    }

    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let (send, recv) = self.conn.open_bi().await.map_err(closed)?;
        Ok(Box::new(IrohStream {
            send,
            recv,
            _credit: None,
        }))
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(code.into(), reason.as_bytes());
    }

    async fn closed(&self) {
        self.conn.closed().await;
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
