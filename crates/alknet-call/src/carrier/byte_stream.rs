//! The byte-stream carrier adapter: length-prefixed frames over a
//! [`BiStream`] (a QUIC stream, or the one stream of TCP+TLS).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use alknet_core::{BiStream, BoxedStream, Chunks};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{EnvelopeSource, FrameSink, ReceiveError};
use crate::framing::FrameDecoder;

/// How much more room a read asks for when the decoder needs bytes.
const READ_CHUNK: usize = 16 * 1024;
/// The room of a reader's first read: most streams carry one small request or answer, and a
/// small buffer comes from the allocator's per-thread cache (16 KiB, per stream on both ends,
/// made unary calls spend a tenth of their time in `malloc` and `free`).
const FIRST_READ: usize = 1024;

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    io: R,
    decoder: FrameDecoder,
    guard: Option<InputGuard>,
    /// Room the next read asks for: [`FIRST_READ`], then [`READ_CHUNK`].
    read_room: usize,
}

/// What a node lets one stream of a peer buffer: the peer's input budget (bytes of partly
/// received frames, shared by the streams of a connection, or by every connection without an
/// identity) and how long a frame may take to arrive once begun.
pub struct InputGuard {
    budget: Arc<Semaphore>,
    /// The budget's size: a frame takes at most this many permits.
    size: usize,
    deadline: Duration,
    held: Option<OwnedSemaphorePermit>,
    began: Option<Instant>,
}

impl InputGuard {
    /// A guard drawing on `budget` (of `size` bytes), with `deadline` per frame.
    pub fn new(budget: Arc<Semaphore>, size: usize, deadline: Duration) -> Self {
        Self {
            budget,
            size,
            deadline,
            held: None,
            began: None,
        }
    }
}

impl<R: AsyncRead + Unpin + Send> FrameReader<R> {
    /// Reads frames of at most `max_frame` bytes from `io`.
    pub fn new(io: R, max_frame: usize) -> Self {
        Self {
            io,
            decoder: FrameDecoder::new(max_frame),
            guard: None,
            read_room: FIRST_READ,
        }
    }

    /// Buffers partly received frames only within `guard`'s budget (reading waits for room, so
    /// the peer's flow control holds the rest), and ends the stream with a violation when a frame
    /// takes longer than its deadline to arrive.
    pub fn with_guard(mut self, guard: InputGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The stream underneath (to stop or reset it).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The next frame's body if it is already buffered, without reading; `Ok(None)` when more
    /// bytes are needed.
    pub fn buffered_frame(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        match self.decoder.next_frame() {
            Ok(Some(frame)) => {
                if let Some(guard) = &mut self.guard {
                    guard.held = None;
                    guard.began = None;
                }
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(ReceiveError::Violation(e.to_string())),
        }
    }

    /// The next frame's body; `Ok(None)` at the end of the stream.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Waits for more bytes and buffers them (see [`buffered_frame`](Self::buffered_frame));
    /// `Ok(false)` at the end of the stream. Cancel safe.
    pub async fn read_more(&mut self) -> Result<bool, ReceiveError> {
        let deadline = match &mut self.guard {
            Some(guard) => guard.admit(&self.decoder).await?,
            None => None,
        };
        self.decoder.buffer_mut().reserve(self.read_room);
        self.read_room = READ_CHUNK;
        let read = self.io.read_buf(self.decoder.buffer_mut());
        let read = match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), read)
                .await
                .map_err(|_| late())?,
            None => read.await,
        };
        match read {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(ReceiveError::Broken(e.to_string())),
        }
    }
}

fn late() -> ReceiveError {
    ReceiveError::Violation("protocol violation: a frame did not arrive within its deadline".into())
}

impl InputGuard {
    /// Before reading more of a frame: starts its deadline, and takes room in the budget for
    /// it once its length is known (waiting, within the deadline, while there is none).
    /// Returns the deadline of the frame in progress.
    async fn admit(&mut self, decoder: &FrameDecoder) -> Result<Option<Instant>, ReceiveError> {
        if decoder.buffered() == 0 {
            return Ok(None);
        }
        let began = *self.began.get_or_insert_with(Instant::now);
        let deadline = began + self.deadline;
        if let (None, Some(len)) = (&self.held, decoder.announced()) {
            let want = len.saturating_add(4).min(self.size);
            let want = u32::try_from(want).unwrap_or(u32::MAX);
            let permit = self.budget.clone().acquire_many_owned(want);
            let permit = tokio::time::timeout_at(deadline.into(), permit)
                .await
                .map_err(|_| late())?
                .map_err(|_| ReceiveError::Broken("the input budget is closed".into()))?;
            self.held = Some(permit);
        }
        Ok(Some(deadline))
    }
}

/// A stream shared by the task that reads it and the task that writes it. Unlike
/// `tokio::io::split`, both keep the stream's controls: the reader resets it on a violation, the
/// writer learns that the peer stopped reading.
#[derive(Clone)]
pub struct SharedStream(Arc<Mutex<BoxedStream>>);

impl SharedStream {
    /// Shares `stream`.
    pub fn new(stream: BoxedStream) -> Self {
        Self(Arc::new(Mutex::new(stream)))
    }

    /// Runs `f` on the stream (held for the duration of `f` only; never across an await).
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn BiStream) -> T) -> T {
        let mut stream = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut **stream)
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_shutdown(cx))
    }
}

impl EnvelopeSource for FrameReader<SharedStream> {
    async fn next_envelope(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        self.next_frame().await
    }

    fn abandon(&mut self, code: u32) {
        self.io.with(|s| s.reset(code));
    }
}

/// The sending side of a shared byte stream.
pub struct FrameWriter(pub SharedStream);

impl FrameSink for FrameWriter {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        self.0.write_all(frames).await?;
        self.0.flush().await
    }

    async fn send_chunks(&mut self, frames: &mut Chunks) -> io::Result<()> {
        while !frames.is_empty() {
            let written =
                std::future::poll_fn(|cx| self.0.with(|s| s.poll_write_chunks(cx, frames))).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        self.0.flush().await
    }

    async fn finish(&mut self) {
        let _ = self.0.shutdown().await;
    }
}
