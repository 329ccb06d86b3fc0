//! Serving one request: steps 1–5 of the contract, the deadline, and the handler's answers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alknet_core::config::Snapshot;
use alknet_core::log_text::escaped;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::dispatch::Dispatcher;
use crate::carrier::writer::SharedFrame;
use crate::carrier::writer::{Ending, Writer};
use crate::context::{CallContext, LiveIdentity};
use crate::envelope::{
    encode_frame_of, encode_responded_frame, frame_of, EventType, PayloadFields, RespondedHead,
    FRAME_CAPACITY,
};
use crate::error::{CallError, ErrorCode};
use crate::peer::Peer;
use crate::pubsub::Queued;
use crate::registry::{Handler, Operation, OperationType};

/// Bytes of ready subscription items encoded into one write.
const STREAM_BATCH: usize = 32 * 1024;
/// Pub/sub items from this size on are written from the buffer all subscribers share, not copied.
const SHARE_ABOVE: usize = 16 * 1024;

/// A request being served.
pub(super) struct Served {
    pub(super) id: String,
    pub(super) payload: PayloadFields,
    /// The writer of the stream the request arrived on: its answers go there.
    pub(super) writer: Writer,
    /// Cancelled by `call.aborted`, by the peer stopping the stream, a reset, or the connection
    /// closing (from then on nothing is written for this id), and once the request ended.
    pub(super) token: CancellationToken,
    pub(super) generation: u64,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// Serves one request; a panicking handler is answered `INTERNAL`.
///
/// The request has one cancellation token: the caller's abort, the stream and the connection
/// cancel it, and so does the request's end, once its last frame is in the writer's buffer
/// ([`Ending`]), so the handler's `ctx.cancelled()` sees every one of them and whatever the
/// handler started ends with the request.
pub(super) async fn serve(dispatcher: Arc<Dispatcher>, served: Served) {
    let Served {
        id,
        payload,
        writer,
        token,
        generation,
        _permit,
    } = served;
    let outcome = AssertUnwindSafe(run(&dispatcher, &id, payload, &writer, &token))
        .catch_unwind()
        .await;
    let ending = Ending::new(token);
    match outcome {
        Ok(Some(last)) => {
            writer.send_last(last, ending).await;
        }
        Ok(None) => writer.end(ending).await,
        Err(_) => {
            warn!(target: "alknet::call", id = %escaped(&id), "handler panicked; answering INTERNAL");
            let last = frame_of(&EventType::Error, &id, &CallError::internal());
            writer.send_last(last, ending).await;
        }
    }
    dispatcher.done(&id, generation);
}

/// Serves the request up to its last frame, which it returns (`None`: cancelled, or a
/// subscription, which sends its own frames).
async fn run(
    dispatcher: &Arc<Dispatcher>,
    id: &str,
    payload: PayloadFields,
    writer: &Writer,
    token: &CancellationToken,
) -> Option<Bytes> {
    let service = &dispatcher.service;
    let error = |e: CallError| Some(frame_of(&EventType::Error, id, &e));
    let request = match payload.into_request() {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    // Watched from before the snapshot is taken, so a reload that lands meanwhile is not missed.
    let changes = service.identity_changes();
    // The one snapshot of the configuration this request reads everything from.
    let config = service.config().load();
    let (op, live) = match service.admit(&request, &dispatcher.link, &config) {
        Ok(admitted) => admitted,
        Err(e) => return error(e),
    };
    let revoked = revoked(dispatcher, changes, &config, &op, &live);
    let options = service.options();
    let validate = options.validate_output;
    let timeout = match (op.spec.kind, request.timeout_ms) {
        (_, Some(ms)) => Some(Duration::from_millis(ms).min(options.max_timeout)),
        (OperationType::Subscription, None) => None,
        (_, None) => Some(options.default_timeout),
    };
    // The request ends early at its deadline (`TIMEOUT`) or when its identity is revoked.
    let deadline = async {
        tokio::select! {
            _ = async {
                match timeout {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
            } => CallError::new(
                ErrorCode::Timeout,
                "the deadline passed before the operation finished",
            ),
            e = revoked => e,
        }
    };
    tokio::pin!(deadline);
    let ctx = CallContext::new(
        config.clone(),
        live.clone(),
        op.name.clone(),
        token.clone(),
        service.clone(),
        Some(Peer {
            link: dispatcher.link.clone(),
        }),
    );
    match &op.handler {
        Handler::Unary(f) => {
            let result = tokio::select! {
                biased;
                _ = token.cancelled() => return None,
                e = &mut deadline => Err(e),
                r = f(ctx, request.input) => r.map_err(|e| op.vet_error(e)),
            };
            Some(
                match result.and_then(|out| op.vet_output(&out, validate).map(|()| out)) {
                    Ok(output) => {
                        let mut buf = BytesMut::with_capacity(FRAME_CAPACITY);
                        encode_responded_frame(id, &output, &mut buf);
                        buf.freeze()
                    }
                    Err(e) => frame_of(&EventType::Error, id, &e),
                },
            )
        }
        Handler::Stream(f) => {
            let items = f(ctx, request.input).map(|r| r.map(Item::Value)).boxed();
            stream(&op, id, items, validate, writer, token, deadline).await;
            None
        }
        Handler::Feed(f) => {
            let items = f(ctx, request.input).map(|r| r.map(Item::Shared)).boxed();
            stream(&op, id, items, validate, writer, token, deadline).await;
            None
        }
    }
}

/// A subscription item: a value to encode, or a pub/sub item encoded once for every subscriber.
enum Item {
    Value(Value),
    Shared(Queued),
}

/// Sends a subscription's items until it ends, fails, is cancelled or `deadline` ends it (with
/// the error it yields).
async fn stream<D: std::future::Future<Output = CallError>>(
    op: &Operation,
    id: &str,
    mut items: BoxStream<'static, Result<Item, CallError>>,
    validate: bool,
    writer: &Writer,
    token: &CancellationToken,
    mut deadline: std::pin::Pin<&mut D>,
) {
    let mut batch = Vec::with_capacity(FRAME_CAPACITY);
    let mut held = Vec::new();
    let head = RespondedHead::new(id);
    loop {
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            e = &mut deadline => {
                writer.send(frame_of(&EventType::Error, id, &e), Some(token)).await;
                return;
            }
            item = items.next() => item,
        };
        // Encode this item and whatever else is ready now into one write; a large shared item
        // goes to the writer as it is, after what was batched before it.
        let mut next = Some(first);
        let mut ended = false;
        while let Some(item) = next.take() {
            let mut large = None;
            match item {
                Some(Ok(Item::Value(output))) => match op.vet_output(&output, validate) {
                    // An output too large for a frame was answered with `INTERNAL`: the end.
                    Ok(()) => ended = !head.encode(id, &output, &mut batch),
                    Err(e) => {
                        append_frame_of(&EventType::Error, id, &e, &mut batch);
                        ended = true;
                    }
                },
                Some(Ok(Item::Shared(queued))) if queued.json.len() >= SHARE_ABOVE => {
                    match head.framed(queued.json.len()) {
                        Some(head) => {
                            large = Some(SharedFrame {
                                head,
                                body: queued.json,
                                held: queued.charge,
                            })
                        }
                        None => {
                            too_large(id, &mut batch);
                            ended = true;
                        }
                    }
                }
                Some(Ok(Item::Shared(queued))) => {
                    if head.encode_around(&queued.json, &mut batch) {
                        held.push(queued.charge);
                    } else {
                        too_large(id, &mut batch);
                        ended = true;
                    }
                }
                Some(Err(e)) => {
                    append_frame_of(&EventType::Error, id, &op.vet_error(e), &mut batch);
                    ended = true;
                }
                None => {
                    append_frame_of(&EventType::Completed, id, &Map::new(), &mut batch);
                    ended = true;
                }
            }
            if large.is_some() && !batch.is_empty() {
                let frames = take_batch(&mut batch);
                if !send(writer, token, frames, std::mem::take(&mut held)).await {
                    return;
                }
            }
            if let Some(frame) = large {
                let sent = tokio::select! {
                    biased;
                    _ = token.cancelled() => false,
                    sent = writer.send_shared(frame, Some(token)) => sent,
                };
                if !sent {
                    return;
                }
            } else if !ended && batch.len() < STREAM_BATCH {
                next = items.next().now_or_never();
            }
        }
        if !batch.is_empty() {
            let frames = take_batch(&mut batch);
            if !send(writer, token, frames, std::mem::take(&mut held)).await {
                return;
            }
        }
        if ended {
            return;
        }
    }
}

/// Appends the `call.error` that ends a subscription whose item is too large for a frame.
fn too_large(id: &str, batch: &mut Vec<u8>) {
    let e = CallError::new(
        ErrorCode::Internal,
        "the response exceeds the maximum frame size",
    );
    append_frame_of(&EventType::Error, id, &e, batch);
}

/// Appends a subscription's last frame (see [`encode_frame_of`]).
fn append_frame_of(
    kind: &EventType,
    id: &str,
    payload: &impl serde::Serialize,
    batch: &mut Vec<u8>,
) {
    let mut frame = BytesMut::with_capacity(FRAME_CAPACITY);
    encode_frame_of(kind, id, payload, &mut frame);
    batch.extend_from_slice(&frame);
}

/// The batch's frames as one `Bytes` (its buffer handed over, not copied); the batch starts
/// anew with room for as much again.
fn take_batch(batch: &mut Vec<u8>) -> Bytes {
    let room = batch.len() + batch.len() / 8 + FRAME_CAPACITY;
    Bytes::from(std::mem::replace(batch, Vec::with_capacity(room)))
}

/// Queues frames unless the request is cancelled first; `false` when nothing more can be sent.
async fn send(
    writer: &Writer,
    token: &CancellationToken,
    frames: Bytes,
    held: Vec<crate::pubsub::Charge>,
) -> bool {
    tokio::select! {
        biased;
        _ = token.cancelled() => false,
        sent = writer.send_holding(frames, Some(token), held) => sent,
    }
}

/// Resolves with the error that ends a request once its identity is revoked: after each change
/// of the identities (and at the token's expiry) it is resolved again as it was the first time,
/// from the request's `auth_token` or the connection's key, in the configuration now in force;
/// `UNAUTHENTICATED` when it no longer resolves, the access error when it no longer may call
/// `op`. Never resolves for a request without an identity.
async fn revoked(
    dispatcher: &Dispatcher,
    mut changes: watch::Receiver<u64>,
    started: &Snapshot,
    op: &Operation,
    live: &LiveIdentity,
) -> CallError {
    if live.with_at(started, |identity| identity.is_none()) {
        return std::future::pending().await;
    }
    let service = &dispatcher.service;
    let mut expires_at = live.expires_at(started);
    loop {
        let until_expiry = expires_at.map(|t| {
            (UNIX_EPOCH + Duration::from_secs(t))
                .duration_since(SystemTime::now())
                .unwrap_or_default()
        });
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = tokio::time::sleep(until_expiry.unwrap_or_default()), if until_expiry.is_some() => {}
        }
        let config = service.config().load();
        // An identity is cached per configuration, but an API key also expires by the clock.
        expires_at = live.expires_at(&config);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(u64::MAX, |d| d.as_secs());
        let expired = expires_at.is_some_and(|t| unix_now >= t);
        let Some(now) = live.at(&config).filter(|_| !expired) else {
            return CallError::new(
                ErrorCode::Unauthenticated,
                "the identity of this request was revoked (peer disabled or removed, API key revoked or expired)",
            );
        };
        if let Err(e) = op.spec.access.check(Some(&now)) {
            return e;
        }
    }
}
