//! The connection abstraction handlers see.
//!
//! A QUIC connection yields many bidirectional streams; a single-stream transport (TCP+TLS,
//! WebSocket, an SSH channel) yields its one stream once, and its `open_bi` fails. Handlers only
//! see [`Connection`] and [`BiStream`], so they run over any transport, including the in-memory
//! pair in [`memory`] used by tests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::chunks::Chunks;
use crate::handler::Carrier;

/// Why a connection operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectionError {
    /// The connection is closed (by either side, or the transport failed).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The transport carries one stream only.
    #[error("this transport carries a single stream; open_bi is not available")]
    SingleStream,
    /// Another failure.
    #[error("{0}")]
    Other(String),
}

/// Resolves with the peer's application code once the peer stops reading a stream (QUIC
/// STOP_SENDING), or with `None` once that can no longer happen (the sending side finished and
/// was acknowledged, or the connection is gone).
pub type StoppedFuture = Pin<Box<dyn Future<Output = Option<u32>> + Send + 'static>>;

/// A bidirectional byte stream.
///
/// Shutting down the writing side (`AsyncWriteExt::shutdown`) finishes it (QUIC: FIN); the
/// stream can still be read.
pub trait BiStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Abandons the stream abruptly (QUIC: reset and stop sending); the default shuts it down.
    fn reset(&mut self, _code: u32) {}

    /// Stops the receiving side: asks the peer to stop sending, with an application `code`
    /// (QUIC STOP_SENDING). The sending side is unaffected. Transports without separate stream
    /// directions (a single byte stream) do nothing.
    fn stop(&mut self, _code: u32) {}

    /// Learns when the peer stops reading this stream (see [`StoppedFuture`]). Taken before the
    /// stream is split, so that its writer can watch it. The default never resolves: a single
    /// byte stream has no STOP_SENDING.
    fn stopped(&self) -> StoppedFuture {
        Box::pin(std::future::pending())
    }

    /// Reads what has arrived, about `max` bytes at most, as chunks appended to `into` (see
    /// [`chunks`](crate::chunks)); `Ready(Ok(0))` once the peer finished the stream. A stream
    /// with receive buffers of its own (QUIC) hands them over; the default reads into a new
    /// chunk through `AsyncRead`.
    fn poll_read_chunks(
        &mut self,
        cx: &mut Context<'_>,
        into: &mut Chunks,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        into.poll_read_from(Pin::new(self), cx, max)
    }

    /// Writes from the front of `from` and takes what it wrote out of it, returning the byte
    /// count. A stream that keeps sent data until it is acknowledged (QUIC) keeps the chunks
    /// themselves; the default writes their bytes through `AsyncWrite` (vectored).
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut Chunks,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_write_buf(Pin::new(self), cx, from)
    }
}

/// A boxed [`BiStream`].
pub type BoxedStream = Box<dyn BiStream>;

/// What a transport provides to make a [`Connection`].
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The next stream the peer opened.
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError>;
    /// Opens a new stream to the peer.
    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError>;
    /// Closes the connection with an application code and a reason.
    fn close(&self, code: u32, reason: &str);
    /// Resolves when the connection is closed.
    async fn closed(&self);
    /// Whether the transport carries exactly one stream.
    fn is_single_stream(&self) -> bool;
}

/// An authenticated connection with an ALPN. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    transport: Arc<dyn Transport>,
    alpn: Arc<[u8]>,
    remote_addr: SocketAddr,
    drain: CancellationToken,
    carrier: Option<Carrier>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("alpn", &String::from_utf8_lossy(&self.alpn))
            .field("remote_addr", &self.remote_addr)
            .finish()
    }
}

impl Connection {
    /// Wraps a transport.
    pub fn new(transport: impl Transport, alpn: &[u8], remote_addr: SocketAddr) -> Self {
        Self {
            transport: Arc::new(transport),
            alpn: alpn.into(),
            remote_addr,
            drain: CancellationToken::new(),
            carrier: None,
        }
    }

    /// The same connection, marked as having arrived on `carrier` (the endpoint sets it, so a
    /// handler can apply per-transport rules).
    pub fn with_carrier(mut self, carrier: Carrier) -> Self {
        self.carrier = Some(carrier);
        self
    }

    /// The carrier the connection arrived on; `None` when its maker did not say (an in-memory
    /// pair, a WebSocket).
    pub fn carrier(&self) -> Option<Carrier> {
        self.carrier
    }

    /// The same connection, draining once `drain` is cancelled (the endpoint passes its shutdown
    /// signal here).
    pub fn with_drain(mut self, drain: CancellationToken) -> Self {
        self.drain = drain;
        self
    }

    /// Resolves when the node begins to shut down: stop taking new work on this connection,
    /// finish what is in flight, then return from the handler. Before the drain deadline the
    /// endpoint waits; after it, the connection is closed regardless.
    pub async fn draining(&self) {
        self.drain.cancelled().await
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// The next stream the peer opened.
    pub async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        self.transport.accept_bi().await
    }

    /// Opens a stream to the peer.
    pub async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        self.transport.open_bi().await
    }

    /// The negotiated ALPN.
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Closes the connection.
    pub fn close(&self, code: u32, reason: &str) {
        self.transport.close(code, reason)
    }

    /// Resolves when the connection is closed.
    pub async fn closed(&self) {
        self.transport.closed().await
    }

    /// Whether this connection carries one stream only.
    pub fn is_single_stream(&self) -> bool {
        self.transport.is_single_stream()
    }
}

/// A stream that ends (reads EOF, writes fail) once a token is cancelled, and cancels the token
/// when dropped: the way a transport without native close reaches into streams it handed out.
pub struct ClosableStream<S> {
    inner: S,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancellationToken,
    cancel_on_drop: bool,
}

impl<S> ClosableStream<S> {
    /// Wraps `inner`; cancelling `token` ends it. If `cancel_on_drop`, dropping it cancels `token`.
    pub fn new(inner: S, token: CancellationToken, cancel_on_drop: bool) -> Self {
        Self {
            inner,
            closed: Box::pin(token.clone().cancelled_owned()),
            token,
            cancel_on_drop,
        }
    }

    fn is_closed(&mut self, cx: &mut Context<'_>) -> bool {
        self.closed.as_mut().poll(cx).is_ready()
    }
}

impl<S> Drop for ClosableStream<S> {
    fn drop(&mut self) {
        if self.cancel_on_drop {
            self.token.cancel();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClosableStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_closed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClosableStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> BiStream for ClosableStream<S> {
    fn reset(&mut self, _code: u32) {
        self.token.cancel();
    }
}

/// A transport over one byte stream (TCP+TLS, WebSocket, SSH channel): `accept_bi` yields the
/// stream once, then waits for the connection to close; `open_bi` fails.
pub struct SingleStreamTransport {
    stream: Mutex<Option<BoxedStream>>,
    closed: CancellationToken,
}

impl SingleStreamTransport {
    /// Wraps `stream`. Dropping or resetting the handed-out stream closes the connection.
    pub fn new<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Self {
        let closed = CancellationToken::new();
        let stream: BoxedStream = Box::new(ClosableStream::new(stream, closed.clone(), true));
        Self {
            stream: Mutex::new(Some(stream)),
            closed,
        }
    }
}

#[async_trait]
impl Transport for SingleStreamTransport {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        let taken = self.stream.lock().map(|mut s| s.take()).unwrap_or(None);
        match taken {
            Some(stream) if !self.closed.is_cancelled() => Ok(stream),
            _ => {
                self.closed.cancelled().await;
                Err(ConnectionError::Closed("single stream ended".into()))
            }
        }
    }

    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        Err(ConnectionError::SingleStream)
    }

    fn close(&self, _code: u32, _reason: &str) {
        self.closed.cancel();
        // Drop a stream nobody took, so the socket closes now.
        if let Ok(mut s) = self.stream.lock() {
            s.take();
        }
    }

    async fn closed(&self) {
        self.closed.cancelled().await
    }

    fn is_single_stream(&self) -> bool {
        true
    }
}

/// In-memory connections for tests: no sockets, same semantics.
pub mod memory {
    use super::*;
    use tokio::sync::{mpsc, Mutex as AsyncMutex};

    struct MemoryTransport {
        incoming: AsyncMutex<mpsc::UnboundedReceiver<BoxedStream>>,
        outgoing: mpsc::UnboundedSender<BoxedStream>,
        closed: CancellationToken,
    }

    #[async_trait]
    impl Transport for MemoryTransport {
        async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
            let mut incoming = self.incoming.lock().await;
            tokio::select! {
                _ = self.closed.cancelled() => Err(ConnectionError::Closed("closed".into())),
                s = incoming.recv() => s.ok_or_else(|| ConnectionError::Closed("peer gone".into())),
            }
        }

        async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
            if self.closed.is_cancelled() {
                return Err(ConnectionError::Closed("closed".into()));
            }
            let (ours, theirs) = MemoryStream::pair(self.closed.child_token());
            self.outgoing
                .send(Box::new(theirs))
                .map_err(|_| ConnectionError::Closed("peer gone".into()))?;
            Ok(Box::new(ours))
        }

        fn close(&self, _code: u32, _reason: &str) {
            self.closed.cancel();
        }

        async fn closed(&self) {
            self.closed.cancelled().await
        }

        fn is_single_stream(&self) -> bool {
            false
        }
    }

    /// One direction's STOP_SENDING: set by the reading end, seen by the writing end.
    #[derive(Default)]
    struct StopSignal {
        stopped: CancellationToken,
        code: AtomicU32,
    }

    /// One end of an in-memory QUIC-like stream: resettable, and each direction can be stopped
    /// by its reader.
    struct MemoryStream {
        inner: ClosableStream<tokio::io::DuplexStream>,
        /// Our receiving direction: [`BiStream::stop`] sets it.
        receiving: Arc<StopSignal>,
        /// Our sending direction: once the peer stops it, writes fail and `stopped` resolves.
        sending: Arc<StopSignal>,
        /// Cancelled by a reset of either end or the connection closing.
        ended: CancellationToken,
    }

    impl MemoryStream {
        /// Both ends of a new stream; cancelling `ended` ends both (not the connection).
        fn pair(ended: CancellationToken) -> (MemoryStream, MemoryStream) {
            let (a, b) = tokio::io::duplex(256 * 1024);
            let a_to_b = Arc::new(StopSignal::default());
            let b_to_a = Arc::new(StopSignal::default());
            let end = |io, receiving: &Arc<StopSignal>, sending: &Arc<StopSignal>| MemoryStream {
                inner: ClosableStream::new(io, ended.clone(), false),
                receiving: receiving.clone(),
                sending: sending.clone(),
                ended: ended.clone(),
            };
            (end(a, &b_to_a, &a_to_b), end(b, &a_to_b, &b_to_a))
        }
    }

    impl AsyncRead for MemoryStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for MemoryStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            // As QUIC: writing to a stream the peer stopped fails.
            if self.sending.stopped.is_cancelled() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl BiStream for MemoryStream {
        fn reset(&mut self, code: u32) {
            self.inner.reset(code);
        }

        fn stop(&mut self, code: u32) {
            self.receiving.code.store(code, Ordering::Release);
            self.receiving.stopped.cancel();
        }

        fn stopped(&self) -> StoppedFuture {
            let sending = self.sending.clone();
            let ended = self.ended.clone();
            Box::pin(async move {
                tokio::select! {
                    _ = sending.stopped.cancelled() => Some(sending.code.load(Ordering::Acquire)),
                    _ = ended.cancelled() => None,
                }
            })
        }
    }

    /// Two connected multi-stream connections, as a QUIC connection would look from each end.
    /// Closing either closes both.
    pub fn pair(alpn: &[u8]) -> (Connection, Connection) {
        let closed = CancellationToken::new();
        let (tx_a, rx_a) = mpsc::unbounded_channel();
        let (tx_b, rx_b) = mpsc::unbounded_channel();
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let a = MemoryTransport {
            incoming: AsyncMutex::new(rx_a),
            outgoing: tx_b,
            closed: closed.clone(),
        };
        let b = MemoryTransport {
            incoming: AsyncMutex::new(rx_b),
            outgoing: tx_a,
            closed,
        };
        (
            Connection::new(a, alpn, addr),
            Connection::new(b, alpn, addr),
        )
    }

    /// Two connected single-stream connections, as TCP+TLS would look from each end.
    pub fn single_stream_pair(alpn: &[u8]) -> (Connection, Connection) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        (
            Connection::new(SingleStreamTransport::new(a), alpn, addr),
            Connection::new(SingleStreamTransport::new(b), alpn, addr),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn memory_pair_carries_streams_both_ways() {
        let (a, b) = memory::pair(b"test");
        let mut s = a.open_bi().await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut r = b.accept_bi().await.unwrap();
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn a_memory_stream_stopped_by_its_reader_fails_the_peers_writes_and_tells_it() {
        let (a, b) = memory::pair(b"test");
        let mut writer = a.open_bi().await.unwrap();
        writer.write_all(b"ping").await.unwrap();
        let mut reader = b.accept_bi().await.unwrap();
        let stopped = writer.stopped();
        reader.stop(7);
        assert_eq!(stopped.await, Some(7));
        assert!(writer.write_all(b"more").await.is_err());
    }

    #[tokio::test]
    async fn a_finished_memory_stream_can_still_be_read_and_written_back() {
        let (a, b) = memory::pair(b"test");
        let mut caller = a.open_bi().await.unwrap();
        caller.write_all(b"ask").await.unwrap();
        caller.shutdown().await.unwrap();
        let mut callee = b.accept_bi().await.unwrap();
        let mut asked = Vec::new();
        callee.read_to_end(&mut asked).await.unwrap();
        assert_eq!(asked, b"ask");
        callee.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        caller.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }

    #[tokio::test]
    async fn single_stream_yields_once_and_refuses_open() {
        let (a, b) = memory::single_stream_pair(b"test");
        assert!(matches!(
            a.open_bi().await,
            Err(ConnectionError::SingleStream)
        ));
        let mut s = a.accept_bi().await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut r = b.accept_bi().await.unwrap();
        let mut buf = [0u8; 1];
        r.read_exact(&mut buf).await.unwrap();
        drop(s);
        // The stream is gone, so a second accept reports the connection closed.
        assert!(matches!(
            a.accept_bi().await,
            Err(ConnectionError::Closed(_))
        ));
    }
}
