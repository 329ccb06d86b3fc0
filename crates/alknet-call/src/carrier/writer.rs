//! The task that writes one stream's frames, so that many requests answer on one stream without
//! waiting for each other, and what is ready is written in one go.

use alknet_core::{Chunks, StoppedFuture};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FrameSink;
use crate::envelope::RESPONDED_TAIL;
use crate::pubsub::Charge;

/// Frames a stream's writer queues before senders wait.
const WRITER_QUEUE: usize = 256;
/// Bytes gathered into one write at most.
const WRITE_BATCH: usize = 256 * 1024;
/// Frames below this size are copied together when they queue up behind others.
const COPY_BELOW: usize = 4 * 1024;

/// A `call.responded` frame whose output is a shared, already-encoded pub/sub item: handed to
/// the sink as the shared buffer, between its head and [`RESPONDED_TAIL`], not copied (unless
/// it is small and queued behind other frames).
pub(crate) struct SharedFrame {
    /// The length prefix and envelope head ([`responded_head`](crate::envelope::responded_head)).
    pub(crate) head: Bytes,
    /// The shared output.
    pub(crate) body: Bytes,
    /// Given back once written.
    pub(crate) held: Charge,
}

/// What a writer is asked to do.
enum Item {
    /// Frames to write, dropped unwritten if their request was cancelled meanwhile; `held` is
    /// given back once they are written.
    Frames(Bytes, Option<CancellationToken>, Vec<Charge>),
    /// One frame around a shared body.
    Shared(SharedFrame, Option<CancellationToken>),
    /// A request's last frame, dropped unwritten if the request was cancelled meanwhile; then
    /// the request ends (see [`Ending`]).
    Last(Bytes, Ending),
    /// Ends a request once everything queued before it has been handled.
    End(Ending),
    /// Answer once everything queued before has been written.
    Flush(oneshot::Sender<()>),
}

/// Cancels a request's token when dropped: handed to the writer with the request's last frame
/// (or after it), it ends the request once that frame is in the writer's buffer, so the token
/// that tells the writer the request was aborted can also be the one its handler watches,
/// without the end of the request suppressing its own answer. Dropped unhandled (the writer
/// gone), it cancels at once.
pub(crate) struct Ending(CancellationToken);

impl Ending {
    /// Ends the request of `token`.
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self(token)
    }

    /// Whether the request was cancelled already.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Frames waiting to be written: handed to the sink as the chunks they came in (a subscription's
/// batch, an answer), except that a small frame queued behind others is copied into one chunk
/// with the small frames around it, so that many small answers do not make many small writes.
#[derive(Default)]
struct Pending {
    chunks: Chunks,
    /// Small frames copied together, after `chunks`.
    staged: BytesMut,
}

impl Pending {
    fn push(&mut self, frames: Bytes) {
        if frames.len() < COPY_BELOW && self.len() > 0 {
            self.staged.extend_from_slice(&frames);
        } else {
            self.unstage();
            self.chunks.push(frames);
        }
    }

    fn unstage(&mut self) {
        if !self.staged.is_empty() {
            self.chunks.push(self.staged.split().freeze());
        }
    }

    fn len(&self) -> usize {
        self.chunks.len() + self.staged.len()
    }

    /// Writes everything pending.
    async fn send(&mut self, sink: &mut impl FrameSink) -> std::io::Result<()> {
        self.unstage();
        sink.send_chunks(&mut self.chunks).await
    }
}

/// A handle to one stream's writer task. Cheap to clone; the task finishes the stream once every
/// handle is gone.
#[derive(Clone)]
pub(crate) struct Writer(mpsc::Sender<Item>);

impl Writer {
    /// Spawns the writer of one stream.
    ///
    /// `stream` is the stream's token: the requests answered on it are its children. The writer
    /// stops at once when it is cancelled, and cancels it itself when the peer stops reading the
    /// stream (`stopped`, QUIC STOP_SENDING): the contract treats that as `call.aborted` for every
    /// request answered there, and nothing more is written.
    ///
    /// The task runs on `tasks`, and with `acknowledged` (QUIC streams, whose `stopped` resolves
    /// once what was sent is acknowledged) it ends only when the peer has everything: a session
    /// that waits for its writers before closing the connection loses no answer (closing a QUIC
    /// connection discards what was not yet acknowledged).
    pub(crate) fn spawn(
        sink: impl FrameSink,
        stopped: StoppedFuture,
        stream: CancellationToken,
        tasks: &TaskTracker,
        acknowledged: bool,
    ) -> Self {
        let (writer, writing) = Self::new(sink, stopped, stream, acknowledged);
        tasks.spawn(writing);
        writer
    }

    /// A writer as [`spawn`](Self::spawn) makes it, with the work it does as a future for the
    /// caller to run (in the task that reads the stream, so that a per-request stream costs one
    /// task instead of two).
    pub(crate) fn new(
        mut sink: impl FrameSink,
        mut stopped: StoppedFuture,
        stream: CancellationToken,
        acknowledged: bool,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let (tx, mut rx) = mpsc::channel::<Item>(WRITER_QUEUE);
        let mut watching = acknowledged;
        let writing = async move {
            let mut pending = Pending::default();
            loop {
                let first = tokio::select! {
                    biased;
                    _ = stream.cancelled() => return,
                    code = &mut stopped => {
                        match code {
                            Some(_) => {
                                stream.cancel();
                                return;
                            }
                            // It can no longer be stopped (connection gone): stop watching.
                            None => {
                                watching = false;
                                stopped = Box::pin(std::future::pending());
                            }
                        }
                        continue;
                    }
                    first = rx.recv() => first,
                };
                let Some(first) = first else { break };
                // Batch whatever is queued into one write.
                let mut next = Some(first);
                let mut flushed = Vec::new();
                let mut held = Vec::new();
                while let Some(item) = next.take() {
                    match item {
                        Item::Frames(frames, token, charges) => {
                            if !token.is_some_and(|t| t.is_cancelled()) {
                                pending.push(frames);
                                held.extend(charges);
                            }
                        }
                        Item::Shared(frame, token) => {
                            if !token.is_some_and(|t| t.is_cancelled()) {
                                pending.push(frame.head);
                                pending.push(frame.body);
                                pending.push(Bytes::from_static(RESPONDED_TAIL));
                                held.push(frame.held);
                            }
                        }
                        Item::Last(frames, ending) => {
                            if !ending.is_cancelled() {
                                pending.push(frames);
                            }
                        }
                        Item::End(ending) => drop(ending),
                        Item::Flush(done) => flushed.push(done),
                    }
                    let full = pending.len() >= WRITE_BATCH || !flushed.is_empty();
                    if full && pending.len() > 0 {
                        if pending.send(&mut sink).await.is_err() {
                            return;
                        }
                        held.clear();
                    } else if flushed.is_empty() {
                        // Back to watching for cancellation after each write.
                        next = rx.try_recv().ok();
                    }
                }
                if pending.len() > 0 {
                    if pending.send(&mut sink).await.is_err() {
                        return;
                    }
                    held.clear();
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
            sink.finish().await;
            if watching {
                // Resolves once the peer acknowledged everything (or stopped, or left).
                stopped.await;
            }
        };
        (Writer(tx), writing)
    }

    /// Queues frames, dropped unwritten if `token` is cancelled before their turn; `false` once
    /// the stream can take no more.
    pub(crate) async fn send(&self, frames: Bytes, token: Option<&CancellationToken>) -> bool {
        self.send_holding(frames, token, Vec::new()).await
    }

    /// Queues frames like [`send`](Self::send), keeping `held` until they are written.
    pub(crate) async fn send_holding(
        &self,
        frames: Bytes,
        token: Option<&CancellationToken>,
        held: Vec<Charge>,
    ) -> bool {
        self.0
            .send(Item::Frames(frames, token.cloned(), held))
            .await
            .is_ok()
    }

    /// Queues a request's last frame, dropped unwritten if its token is cancelled before its
    /// turn; once it is taken (or dropped) the request ends: `ending` cancels its token.
    pub(crate) async fn send_last(&self, frames: Bytes, ending: Ending) -> bool {
        self.0.send(Item::Last(frames, ending)).await.is_ok()
    }

    /// Ends a request (cancels the token of `ending`) once what was queued before is handled.
    pub(crate) async fn end(&self, ending: Ending) {
        if !ending.is_cancelled() {
            let _ = self.0.send(Item::End(ending)).await;
        }
    }

    /// Queues one frame around a shared body (see [`SharedFrame`]).
    pub(crate) async fn send_shared(
        &self,
        frame: SharedFrame,
        token: Option<&CancellationToken>,
    ) -> bool {
        self.0
            .send(Item::Shared(frame, token.cloned()))
            .await
            .is_ok()
    }

    /// Resolves once everything queued before has been written (or the stream can take no more).
    pub(crate) async fn flushed(&self) {
        let (done, written) = oneshot::channel();
        if self.0.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Queues frames without waiting, for where waiting is not possible (an abort sent from a
    /// `Drop`): when the queue is full they are queued from a task, so they are not lost.
    pub(crate) fn send_detached(&self, frames: Bytes) {
        let item = Item::Frames(frames, None, Vec::new());
        if let Err(mpsc::error::TrySendError::Full(item)) = self.0.try_send(item) {
            let tx = self.0.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { tx.send(item).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tokio::sync::Semaphore;

    /// A sink that writes only when given a permit, and records what it wrote.
    struct Gated {
        gate: Arc<Semaphore>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl FrameSink for Gated {
        async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
            self.gate.acquire().await.unwrap().forget();
            self.written.lock().unwrap().extend_from_slice(frames);
            Ok(())
        }
        async fn finish(&mut self) {}
    }

    #[tokio::test]
    async fn a_detached_frame_is_not_lost_when_the_queue_is_full() {
        let gate = Arc::new(Semaphore::new(0));
        let written = Arc::new(Mutex::new(Vec::new()));
        let tasks = TaskTracker::new();
        let sink = Gated {
            gate: gate.clone(),
            written: written.clone(),
        };
        let writer = Writer::spawn(
            sink,
            Box::pin(std::future::pending()),
            CancellationToken::new(),
            &tasks,
            false,
        );
        // The writer holds one batch at the gate; fill its queue behind it.
        writer.send(Bytes::from_static(b"a"), None).await;
        while writer.0.capacity() > 0 {
            writer.send(Bytes::from_static(b"b"), None).await;
        }
        writer.send_detached(Bytes::from_static(b"!"));
        drop(writer);
        gate.add_permits(Semaphore::MAX_PERMITS);
        tasks.close();
        tasks.wait().await;
        let written = written.lock().unwrap();
        assert_eq!(
            written.last(),
            Some(&b'!'),
            "the detached frame was dropped"
        );
    }
}
