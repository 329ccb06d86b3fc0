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

/// How many received chunks a stream's `poll_read_chunks` takes at most (64 ≈ 90 KB at a
/// 1 452-byte MTU; also the most one vectored write passes on).
const READ_CHUNKS: usize = 64;

/// What a stream's chunk read gave, moved into `into`: `Ok(0)` at the end of the stream.
fn take_read_chunks<E>(
    read: Result<Option<usize>, E>,
    chunks: [Bytes; READ_CHUNKS],
    into: &mut Chunks,
) -> io::Result<usize>
where
    io::Error: From<E>,
{
    match read? {
        Some(n) => {
            let before = into.len();
            chunks.into_iter().take(n).for_each(|c| into.push(c));
            Ok(into.len() - before)
        }
        None => Ok(0),
    }
}

/// quinn's and iroh's connections and streams have the same shape under different types (iroh
/// runs `noq`, a quinn fork); one definition makes both transports. `$read` and `$write` are the
/// backend's cancel-safe chunk read and write, `$write` returning the bytes it took.
macro_rules! quic_like_transport {
    (
        $(#[$cfg:meta])*
        $doc:literal $Transport:ident($Conn:ty),
        $stream_doc:literal $Stream:ident($Send:ty, $Recv:ty),
        read_chunks: $read:ident,
        write_chunks: |$send:ident, $bufs:ident| $write:expr
    ) => {
        #[doc = $doc]
        $(#[$cfg])*
        pub struct $Transport {
            conn: $Conn,
            credit: Option<Arc<StreamCredit>>,
        }

        $(#[$cfg])*
        impl $Transport {
            /// A connection whose stream credit stays as its transport config set it.
            pub fn new(conn: $Conn) -> Self {
                Self { conn, credit: None }
            }

            /// A connection whose stream credit grows with use (see [`StreamCredit`]).
            pub(crate) fn with_credit(conn: $Conn, credit: Arc<StreamCredit>) -> Self {
                Self {
                    conn,
                    credit: Some(credit),
                }
            }
        }

        #[doc = $stream_doc]
        $(#[$cfg])*
        pub struct $Stream {
            send: $Send,
            recv: $Recv,
            _credit: Option<CreditHold>,
        }

        $(#[$cfg])*
        #[async_trait]
        impl Transport for $Transport {
            async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
                let (send, recv) = self.conn.accept_bi().await.map_err(closed)?;
                let credit = self.credit.as_ref().map(|credit| {
                    credit.accepted(|n| self.conn.set_max_concurrent_bi_streams(n.into()))
                });
                Ok(Box::new($Stream {
                    send,
                    recv,
                    _credit: credit,
                }))
            }

            async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
                let (send, recv) = self.conn.open_bi().await.map_err(closed)?;
                Ok(Box::new($Stream {
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

        $(#[$cfg])*
        impl AsyncRead for $Stream {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.recv).poll_read(cx, buf)
            }
        }

        $(#[$cfg])*
        impl AsyncWrite for $Stream {
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

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
            }
        }

        $(#[$cfg])*
        impl BiStream for $Stream {
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
                // The receive buffers, one chunk per STREAM frame (about a packet each): take
                // up to READ_CHUNKS at once so that the copy loop writes them out together. The
                // read is cancel-safe: a future dropped while pending has taken nothing.
                let mut chunks: [Bytes; READ_CHUNKS] = std::array::from_fn(|_| Bytes::new());
                let read = ready!(pin!(self.recv.$read(&mut chunks)).poll(cx));
                Poll::Ready(take_read_chunks(read, chunks, into))
            }

            fn poll_write_chunks(
                &mut self,
                cx: &mut Context<'_>,
                from: &mut Chunks,
            ) -> Poll<io::Result<usize>> {
                let $send = &mut self.send;
                let $bufs = from.as_mut_slice();
                // Cancel-safe: a future dropped while pending has written nothing.
                let written: usize = ready!(pin!(async { $write }).poll(cx))?;
                from.written(written);
                Poll::Ready(Ok(written))
            }
        }
    };
}

quic_like_transport!(
    "A QUIC connection." QuicTransport(quinn::Connection),
    "One QUIC bidirectional stream." QuicStream(quinn::SendStream, quinn::RecvStream),
    read_chunks: read_chunks,
    write_chunks: |send, bufs| send.write_chunks(bufs).await.map(|w| w.bytes)
);

quic_like_transport!(
    #[cfg(feature = "iroh")]
    "An iroh connection (feature `iroh`): QUIC over iroh's paths (direct UDP or a relay)."
    IrohTransport(::iroh::endpoint::Connection),
    "One bidirectional stream of an iroh connection."
    IrohStream(::iroh::endpoint::SendStream, ::iroh::endpoint::RecvStream),
    read_chunks: read_many_chunks,
    write_chunks: |send, bufs| send.write_many_chunks(&mut { bufs }).await
);
