//! The task that writes one stream's frames, so that many requests answer on one stream without
//! waiting for each other, and what is ready is written in one go.

use alknet_core::StoppedFuture;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::FrameSink;

/// Frames a stream's writer queues before senders wait.
const WRITER_QUEUE: usize = 256;
/// Bytes gathered into one write at most.
const WRITE_BATCH: usize = 256 * 1024;

/// Frames to write, dropped unwritten if their request was cancelled meanwhile.
struct Frames(Bytes, Option<CancellationToken>);

/// A handle to one stream's writer task. Cheap to clone; the task finishes the stream once every
/// handle is gone.
#[derive(Clone)]
pub(crate) struct Writer(mpsc::Sender<Frames>);

impl Writer {
    /// Spawns the writer of one stream.
    ///
    /// `stream` is the stream's token: the requests answered on it are its children. The writer
    /// stops at once when it is cancelled, and cancels it itself when the peer stops reading the
    /// stream (`stopped`, QUIC STOP_SENDING): the contract treats that as `call.aborted` for every
    /// request answered there, and nothing more is written.
    pub(crate) fn spawn(
        mut sink: impl FrameSink,
        mut stopped: StoppedFuture,
        stream: CancellationToken,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Frames>(WRITER_QUEUE);
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
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
                            None => stopped = Box::pin(std::future::pending()),
                        }
                        continue;
                    }
                    first = rx.recv() => first,
                };
                let Some(first) = first else { break };
                // Batch whatever is queued into one write.
                let mut next = Some(first);
                while let Some(Frames(frames, token)) = next.take() {
                    if !token.is_some_and(|t| t.is_cancelled()) {
                        buf.extend_from_slice(&frames);
                    }
                    if buf.len() < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !buf.is_empty() {
                    if sink.send(&buf).await.is_err() {
                        return;
                    }
                    buf.clear();
                }
            }
            sink.finish().await;
        });
        Writer(tx)
    }

    /// Queues frames, dropped unwritten if `token` is cancelled before their turn; `false` once
    /// the stream can take no more.
    pub(crate) async fn send(&self, frames: Bytes, token: Option<&CancellationToken>) -> bool {
        self.0.send(Frames(frames, token.cloned())).await.is_ok()
    }

    /// Queues frames unless the queue is full (for answers that must not wait, such as
    /// `OVERLOADED` or an abort).
    pub(crate) fn try_send(&self, frames: Bytes) {
        let _ = self.0.try_send(Frames(frames, None));
    }
}
