//! Chunk-wise stream I/O: bytes moved between streams as [`Bytes`] handles instead of being
//! copied through an application buffer.
//!
//! A QUIC stream receives into buffers it owns and keeps what it sends until the peer
//! acknowledges it; reading and writing through `AsyncRead`/`AsyncWrite` copies each byte once
//! more on each side. [`BiStream::poll_read_chunks`] and [`BiStream::poll_write_chunks`] hand
//! those buffers over instead (QUIC overrides them; every other stream uses the copying
//! defaults), and [`pipe`] is the copy loop built on them: a forwarded TCP connection ↔ a stream.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::BiStream;

/// Bytes between a read and a write: a queue of chunks, read as one [`Buf`] (vectored writes
/// take up to 64 chunks at once).
#[derive(Default, Debug)]
pub struct Chunks {
    queue: VecDeque<Bytes>,
    len: usize,
    /// Where reads from a copying stream land before they are split off as a chunk.
    scratch: BytesMut,
}

impl Chunks {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk` (empty chunks are dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.queue.push_back(chunk);
        }
    }

    /// The queued byte count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The queued chunks as one slice, for writers that take `&mut [Bytes]` (quinn's
    /// `write_chunks`, which empties what it wrote and splits a chunk it wrote in part); call
    /// [`Chunks::written`] with the byte count afterwards.
    pub fn as_mut_slice(&mut self) -> &mut [Bytes] {
        self.queue.make_contiguous()
    }

    /// Accounts for `n` bytes taken out of the chunks of [`Chunks::as_mut_slice`].
    pub fn written(&mut self, n: usize) {
        self.len -= n;
        while self.queue.front().is_some_and(Bytes::is_empty) {
            self.queue.pop_front();
        }
    }

    /// Reads up to `max` bytes from a copying stream into a new chunk (a large read keeps the
    /// buffer it was read into, a small one is copied into a chunk of its own size).
    /// `Ready(Ok(0))` is the end of the stream.
    pub fn poll_read_from<R: AsyncRead + ?Sized>(
        &mut self,
        reader: Pin<&mut R>,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        self.scratch.reserve(max);
        let n = ready!(tokio_util::io::poll_read_buf(
            reader,
            cx,
            &mut (&mut self.scratch).limit(max)
        ))?;
        // A chunk shares its allocation with what is split off, and a QUIC sender keeps chunks
        // until the peer acknowledges them: a small read is copied out (so `max` bytes are not
        // held for every few bytes read) and the buffer reused; a read of at least half of
        // `max` keeps its buffer, at most doubling what it holds.
        let chunk = if n < max / 2 {
            let chunk = Bytes::copy_from_slice(&self.scratch);
            self.scratch.clear();
            chunk
        } else {
            self.scratch.split().freeze()
        };
        self.push(chunk);
        Poll::Ready(Ok(n))
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.queue.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the chunks");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.queue.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.queue) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }
}

/// One direction of [`pipe`]: what was read and not yet written, and how far it got.
#[derive(Default)]
struct Flow {
    chunks: Chunks,
    /// Written since the output was last flushed (a buffered writer holds it until then).
    unflushed: bool,
    read_done: bool,
    done: bool,
    total: u64,
}

/// What [`poll_flow`] asks of one direction's ends.
enum Op {
    Read,
    Write,
    Flush,
    Shutdown,
}

/// How many bytes one read of either side takes at most (64 KiB: one stream write and one
/// vectored TCP write per 64 KiB).
const READ_MAX: usize = 64 * 1024;

/// Copies both ways between `stream` and `other` (a TCP connection, say) until both directions
/// ended, or one failed; returns the bytes copied `stream → other` and `other → stream`. At the
/// end of one direction's input its output is shut down (QUIC: FIN), as
/// `tokio::io::copy_bidirectional` does; each direction holds at most 64 KiB it has read and
/// not written. Chunks go from the stream's receive buffers to `other` and from `other`'s reads
/// into the stream's send buffer without a copy where the stream supports it.
pub async fn pipe<S, O>(stream: &mut S, other: &mut O) -> io::Result<(u64, u64)>
where
    S: BiStream + ?Sized,
    O: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut down = Flow::default();
    let mut up = Flow::default();
    poll_fn(|cx| {
        let down_done = poll_flow(&mut down, cx, |op, chunks, cx| match op {
            Op::Read => stream.poll_read_chunks(cx, chunks, READ_MAX),
            Op::Write => tokio_util::io::poll_write_buf(Pin::new(&mut *other), cx, chunks),
            Op::Flush => Pin::new(&mut *other).poll_flush(cx).map_ok(|()| 0),
            Op::Shutdown => Pin::new(&mut *other).poll_shutdown(cx).map_ok(|()| 0),
        })?;
        let up_done = poll_flow(&mut up, cx, |op, chunks, cx| match op {
            Op::Read => chunks.poll_read_from(Pin::new(&mut *other), cx, READ_MAX),
            Op::Write => stream.poll_write_chunks(cx, chunks),
            Op::Flush => Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| 0),
            Op::Shutdown => Pin::new(&mut *stream).poll_shutdown(cx).map_ok(|()| 0),
        })?;
        if down_done && up_done {
            Poll::Ready(Ok((down.total, up.total)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Drives one direction as far as it goes without waiting: `Ok(true)` once its output is shut
/// down after the end of its input.
fn poll_flow(
    flow: &mut Flow,
    cx: &mut Context<'_>,
    mut step: impl FnMut(Op, &mut Chunks, &mut Context<'_>) -> Poll<io::Result<usize>>,
) -> io::Result<bool> {
    while !flow.done {
        if flow.chunks.is_empty() && !flow.read_done {
            match step(Op::Read, &mut flow.chunks, cx)? {
                // Nothing more to read for now: what was written must not wait in a buffer.
                Poll::Pending if flow.unflushed => {
                    if step(Op::Flush, &mut flow.chunks, cx)?.is_ready() {
                        flow.unflushed = false;
                    }
                    return Ok(false);
                }
                Poll::Pending => return Ok(false),
                Poll::Ready(0) => flow.read_done = true,
                Poll::Ready(_) => {}
            }
        }
        while !flow.chunks.is_empty() {
            match step(Op::Write, &mut flow.chunks, cx)? {
                Poll::Pending => return Ok(false),
                Poll::Ready(0) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(n) => {
                    flow.total += n as u64;
                    flow.unflushed = true;
                }
            }
        }
        if flow.read_done {
            match step(Op::Shutdown, &mut flow.chunks, cx)? {
                Poll::Pending => return Ok(false),
                Poll::Ready(_) => flow.done = true,
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::memory;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn chunks_read_as_one_buffer_across_chunk_edges() {
        let mut chunks = Chunks::new();
        chunks.push(Bytes::from_static(b"abc"));
        chunks.push(Bytes::new());
        chunks.push(Bytes::from_static(b"defg"));
        assert_eq!(chunks.len(), 7);
        chunks.advance(4);
        assert_eq!(chunks.chunk(), b"efg");
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(chunks.chunks_vectored(&mut slices), 1);
        // A writer that takes chunks themselves empties what it wrote and splits the rest.
        let slice = chunks.as_mut_slice();
        slice[0].advance(2);
        chunks.written(2);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks.copy_to_bytes(1), Bytes::from_static(b"g"));
        assert!(chunks.is_empty());
    }

    #[tokio::test]
    async fn pipe_copies_both_ways_and_passes_each_end_on() {
        let (a, b) = memory::pair(b"test");
        let mut near = a.open_bi().await.unwrap();
        near.write_all(b"x").await.unwrap();
        let mut far = b.accept_bi().await.unwrap();
        let (outside, mut inside) = tokio::io::duplex(4096);
        let piping = tokio::spawn(async move { pipe(&mut *far, &mut inside).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let (to_near, to_outside) = (down.clone(), up.clone());
        let near_side = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(near);
            let mut got = Vec::new();
            let (sent, received) = tokio::join!(
                async {
                    write.write_all(&to_outside).await?;
                    write.shutdown().await
                },
                read.read_to_end(&mut got)
            );
            sent.and(received).map(|_| got)
        });
        let (mut read, mut write) = tokio::io::split(outside);
        let mut got = Vec::new();
        let (sent, received) = tokio::join!(
            async {
                write.write_all(&to_near).await?;
                write.shutdown().await
            },
            read.read_to_end(&mut got)
        );
        sent.unwrap();
        received.unwrap();
        assert!(got == [b"x".as_slice(), &up].concat());
        assert!(near_side.await.unwrap().unwrap() == down);
        assert_eq!(
            piping.await.unwrap().unwrap(),
            (up.len() as u64 + 1, down.len() as u64)
        );
    }
}
