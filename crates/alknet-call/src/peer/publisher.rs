//! Publishes that travel together: while one publish (or batch) of a connection is in flight,
//! the publishes made meanwhile wait and then go as one `pubsub/publish_batch` request; each
//! caller still gets its own `delivered` count or its own error. A lone publish goes at once as
//! `pubsub/publish`. A remote without `pubsub/publish_batch` (`NOT_FOUND`) is remembered per
//! connection; from then on every publish is its own `pubsub/publish` again.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::builtins::MAX_BATCH;
use crate::error::{CallError, ErrorCode};
use crate::peer::{Peer, RequestOptions};

/// Encoded bytes of messages one batch carries at most (well under every receiver's frame limit,
/// also the lower one for connections without an identity); a larger message goes alone.
const MAX_BATCH_BYTES: usize = 256 << 10;

/// One publish waiting for its batch.
struct Waiting {
    token: Option<String>,
    message: Value,
    bytes: usize,
    answer: oneshot::Sender<Result<u64, CallError>>,
}

/// The publishes of one connection that wait for the one in flight.
#[derive(Default)]
pub(crate) struct Publisher {
    queue: Mutex<(VecDeque<Waiting>, bool)>,
    /// The remote answered `pubsub/publish_batch` with `NOT_FOUND`.
    unsupported: AtomicBool,
}

/// Counts what is written (the encoded size of a message, without keeping it).
struct Count(usize);

impl io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn options(token: Option<String>) -> RequestOptions {
    RequestOptions {
        auth_token: token,
        ..Default::default()
    }
}

impl Publisher {
    /// Publishes `{ topic, data }` on `peer` as `token` (`None`: the connection's identity),
    /// together with the other publishes made while one is in flight.
    pub(crate) async fn publish(
        &self,
        peer: &Peer,
        token: Option<String>,
        topic: &str,
        data: Value,
    ) -> Result<u64, CallError> {
        let message = json!({ "topic": topic, "data": data });
        if self.unsupported.load(Ordering::Relaxed) {
            return publish_alone(peer, token, message).await;
        }
        let mut bytes = Count(0);
        // Encoding a `Value` into a counter cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &message);
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            token,
            message,
            bytes: bytes.0,
            answer,
        };
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.0.push_back(waiting);
            // The first publish while none is in flight starts the sender; the others join it.
            !std::mem::replace(&mut queue.1, true)
        };
        if start {
            // Its own task: the caller that started it may stop waiting, the others may not.
            let peer = peer.clone();
            tokio::spawn(async move { peer.link.publisher.send_all(&peer).await });
        }
        answered.await.unwrap_or_else(|_| {
            Err(CallError::new(
                ErrorCode::Unavailable,
                "connection unavailable: the publish was dropped",
            ))
        })
    }

    /// Sends what waits, batch after batch, until nothing does.
    async fn send_all(&self, peer: &Peer) {
        let mut sending = Sending {
            publisher: self,
            done: false,
        };
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.0.is_empty() {
                    queue.1 = false;
                    sending.done = true;
                    return;
                }
                take_batch(&mut queue.0)
            };
            self.send(peer, batch).await;
        }
    }

    async fn send(&self, peer: &Peer, mut batch: Vec<Waiting>) {
        if batch.len() == 1 || self.unsupported.load(Ordering::Relaxed) {
            return publish_each(peer, batch).await;
        }
        let token = batch[0].token.clone();
        let messages: Vec<Value> = batch.iter_mut().map(|w| w.message.take()).collect();
        let out = peer
            .call_with(
                "pubsub/publish_batch",
                json!({ "messages": messages }),
                options(token),
            )
            .await;
        let results = match out {
            // Any other shape (a remote that is not alknet's, or a broken one) fails the batch.
            Ok(mut out) => match out.get_mut("results").map(Value::take) {
                Some(Value::Array(results)) if results.len() == batch.len() => results,
                _ => {
                    let e = CallError::new(
                        ErrorCode::Internal,
                        "pubsub/publish_batch answered without one result per message",
                    );
                    return batch.into_iter().for_each(|w| {
                        let _ = w.answer.send(Err(e.clone()));
                    });
                }
            },
            Err(e) if e.code == ErrorCode::NotFound.as_str() => {
                self.unsupported.store(true, Ordering::Relaxed);
                for (w, m) in batch.iter_mut().zip(messages) {
                    w.message = m;
                }
                return publish_each(peer, batch).await;
            }
            Err(e) => {
                return batch.into_iter().for_each(|w| {
                    let _ = w.answer.send(Err(e.clone()));
                })
            }
        };
        for (w, mut result) in batch.into_iter().zip(results) {
            let unreadable =
                || CallError::new(ErrorCode::Internal, "an unreadable result for this message");
            let answer = match result.as_object_mut().map(|r| (r.remove("error"), r)) {
                Some((None | Some(Value::Null), r)) => {
                    Ok(r.get("delivered").and_then(Value::as_u64).unwrap_or(0))
                }
                Some((Some(error), _)) => {
                    Err(serde_json::from_value(error).unwrap_or_else(|_| unreadable()))
                }
                None => Err(unreadable()),
            };
            let _ = w.answer.send(answer);
        }
    }
}

/// The connection's sender while it runs. Should it stop other than by finding the queue empty
/// (its task dropped as the runtime shuts down, or a panic), the publishes still waiting are
/// dropped, so that their callers learn it, and the next publish starts a new sender.
struct Sending<'a> {
    publisher: &'a Publisher,
    done: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut queue = self
                .publisher
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            queue.0.clear();
            queue.1 = false;
        }
    }
}

/// The longest run at the front of `queue` that one batch can carry: the same token, at most
/// [`MAX_BATCH`] messages and [`MAX_BATCH_BYTES`] (the first message is always taken).
fn take_batch(queue: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut batch: Vec<Waiting> = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queue.front() {
        let fits = batch.is_empty()
            || (batch.len() < MAX_BATCH
                && bytes + next.bytes <= MAX_BATCH_BYTES
                && next.token == batch[0].token);
        if !fits {
            break;
        }
        bytes += next.bytes;
        batch.extend(queue.pop_front());
    }
    batch
}

/// Each message as its own `pubsub/publish`, all in flight together (as before batching).
async fn publish_each(peer: &Peer, batch: Vec<Waiting>) {
    futures::future::join_all(batch.into_iter().map(|w| async move {
        let _ = w.answer.send(publish_alone(peer, w.token, w.message).await);
    }))
    .await;
}

async fn publish_alone(
    peer: &Peer,
    token: Option<String>,
    message: Value,
) -> Result<u64, CallError> {
    let out = peer
        .call_with("pubsub/publish", message, options(token))
        .await?;
    Ok(out["delivered"].as_u64().unwrap_or(0))
}
