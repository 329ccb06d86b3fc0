//! One outgoing request and its answers ([`Exchange`]), and the options a caller sets on it.
//!
//! On a multi-stream carrier each request opens its own stream, half-closes it right after
//! `call.requested` (protocol v1.1: a FIN is not an abort) and reads its answers there; it cancels
//! by stopping its receive side (STOP_SENDING, code [`STOP_CANCELLED`]). On a single-stream
//! carrier every request shares the one stream: answers are routed by id, and a cancel is a
//! `call.aborted` envelope.

use std::sync::Arc;
use std::time::Duration;

use alknet_core::BoxedStream;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::Link;
use crate::carrier::byte_stream::FrameReader;
use crate::carrier::writer::Writer;
use crate::carrier::{ReceiveError, STOP_CANCELLED};
use crate::envelope::{
    decode_owned_reply_raw, decode_reply_value, frame_of, try_encode_frame_of, EventType,
    ProtocolViolation, RawOutput, Reply, RequestRef, FRAME_CAPACITY,
};
use crate::error::{CallError, ErrorCode};

/// Extra time a caller waits past the deadline it asked for, so the callee's `TIMEOUT` wins.
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Per-request options for outgoing calls.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// A bearer token (peer token or `alk_…` API key) for this request only.
    pub auth_token: Option<String>,
    /// The deadline to ask for; the call also fails locally with `TIMEOUT` after it.
    pub timeout: Option<Duration>,
    /// Cancelling this token aborts the request.
    pub cancel: Option<CancellationToken>,
}

enum Route {
    /// A stream of our own; `None` once finished or abandoned.
    Own(Option<FrameReader<BoxedStream>>),
    /// The shared stream of a single-stream carrier.
    Shared {
        replies: mpsc::Receiver<Reply>,
        /// A reply received by [`Exchange::readable`], not yet taken.
        routed: Option<Reply>,
        writer: Writer,
    },
}

/// One outgoing request and its answers. Dropping it before a terminal answer cancels the request.
pub(crate) struct Exchange {
    id: String,
    link: Arc<Link>,
    route: Route,
    finished: bool,
    cancel: Option<CancellationToken>,
    deadline: Option<Instant>,
}

pub(crate) fn unavailable(why: &str) -> CallError {
    CallError::new(
        ErrorCode::Unavailable,
        format!("connection unavailable: {why}"),
    )
}

/// The error that ends a request whose stream failed.
fn received(e: ReceiveError) -> CallError {
    match e {
        ReceiveError::Violation(e) => unavailable(&format!("peer sent an invalid frame: {e}")),
        ReceiveError::Broken(e) => unavailable(&e),
    }
}

impl Exchange {
    /// Sends `call.requested`. `local_deadline` applies when the options ask for no deadline.
    pub(crate) async fn open(
        link: &Arc<Link>,
        operation: &str,
        input: Value,
        options: RequestOptions,
        local_deadline: Option<Duration>,
    ) -> Result<Self, CallError> {
        if link.closed.is_cancelled() {
            return Err(unavailable("closed"));
        }
        let id = link.next_id();
        let request = RequestRef {
            operation: operation.trim_start_matches('/'),
            input: &input,
            auth_token: options.auth_token.as_deref(),
            timeout_ms: options.timeout.map(|t| t.as_millis().max(1) as u64),
        };
        let mut frame = BytesMut::with_capacity(FRAME_CAPACITY);
        try_encode_frame_of(&EventType::Requested, &id, &request, &mut frame).map_err(|e| {
            CallError::new(
                ErrorCode::InvalidInput,
                format!("request cannot be sent: {e}"),
            )
        })?;
        let route = if link.conn.is_single_stream() {
            Self::send_shared(link, &id, frame.freeze()).await?
        } else {
            let mut stream = link
                .conn
                .open_bi()
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            stream
                .write_all(&frame)
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            // One request per stream: our sending side is done (a FIN, not an abort).
            stream
                .shutdown()
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            Route::Own(Some(FrameReader::new(stream, link.options.max_frame)))
        };
        let deadline = options
            .timeout
            .map(|t| t + DEADLINE_GRACE)
            .or(local_deadline)
            .map(|t| Instant::now() + t);
        Ok(Self {
            id,
            link: link.clone(),
            route,
            finished: false,
            cancel: options.cancel,
            deadline,
        })
    }

    async fn send_shared(link: &Arc<Link>, id: &str, frame: Bytes) -> Result<Route, CallError> {
        let writer = link
            .shared_writer()
            .await
            .ok_or_else(|| unavailable("closed"))?;
        let (tx, replies) = mpsc::channel(link.options.subscription_queue);
        link.expect(id, tx);
        // Withdraws the registration unless the request went out, also when this future is
        // dropped while it waits for room in the writer's queue.
        let registered = Registered { link, id: Some(id) };
        if !writer.send(frame, None).await {
            return Err(unavailable("stream closed"));
        }
        registered.keep();
        Ok(Route::Shared {
            replies,
            routed: None,
            writer,
        })
    }

    /// Waits until [`buffered`](Self::buffered) may have a new reply: bytes arrived on our own
    /// stream, or a reply was routed to us on a shared one. `Err` is the end of the request
    /// without an answer (cancelled, past its deadline, the stream or the connection gone, a
    /// broken frame), after which the exchange is finished.
    pub(crate) async fn readable(&mut self) -> Result<(), CallError> {
        let deadline = self.deadline;
        let cancel = self.cancel.clone();
        let readable = tokio::select! {
            biased;
            _ = async { match &cancel { Some(c) => c.cancelled().await, None => std::future::pending().await } } => {
                self.abort();
                Err(CallError::new(ErrorCode::Cancelled, "the request was cancelled"))
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                self.abort();
                Err(CallError::new(ErrorCode::Timeout, "no answer before the deadline"))
            }
            readable = self.receive() => readable,
        };
        if readable.is_err() {
            self.finish();
        }
        readable
    }

    /// Receives more of the answers: bytes on our own stream, a routed reply on a shared one.
    async fn receive(&mut self) -> Result<(), CallError> {
        match &mut self.route {
            Route::Shared {
                replies, routed, ..
            } => match replies.recv().await {
                Some(reply) => {
                    *routed = Some(reply);
                    Ok(())
                }
                None => Err(unavailable("closed")),
            },
            Route::Own(None) => Err(unavailable("stream closed")),
            Route::Own(Some(reader)) => match reader.read_more().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(unavailable("the stream ended before an answer")),
                Err(e) => Err(received(e)),
            },
        }
    }

    /// The next reply, its output read as `O`; terminal replies finish the exchange.
    pub(crate) async fn next_as<O: Output>(&mut self) -> Reply<O> {
        loop {
            if let Some(reply) = self.buffered() {
                return reply;
            }
            if let Err(e) = self.readable().await {
                return Reply::Error(e);
            }
        }
    }

    /// The next reply if it has arrived already: a whole frame of it buffered on our own stream
    /// (a subscription's items mostly arrive many to a read), or routed to us on a shared one.
    /// No waiting, no I/O. `None` when the next reply needs [`readable`](Self::readable) first:
    /// nothing buffered, or the request is cancelled or past its deadline (which `readable`
    /// then answers).
    pub(crate) fn buffered<O: Output>(&mut self) -> Option<Reply<O>> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return None;
        }
        let reply = match &mut self.route {
            Route::Shared { routed, .. } => routed.take()?.map_output(O::from_value),
            Route::Own(None) => return None,
            Route::Own(Some(reader)) => loop {
                match reader.buffered_frame() {
                    Ok(Some(frame)) => match O::decode(frame, &self.id) {
                        Ok(Some(reply)) => break reply,
                        Ok(None) => continue,
                        Err(v) => {
                            break Reply::Error(received(ReceiveError::Violation(v.to_string())))
                        }
                    },
                    Ok(None) => return None,
                    Err(e) => break Reply::Error(received(e)),
                }
            },
        };
        if reply.is_terminal() {
            self.finish();
        }
        Some(reply)
    }

    /// Ends the exchange after its last answer.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        if let Route::Own(reader) = &mut self.route {
            // Our sending side is already finished; dropping releases the stream.
            reader.take();
        }
        self.link.forget(&self.id);
    }

    /// Cancels the request (once) and stops listening: STOP_SENDING on our own stream,
    /// `call.aborted` on a shared one.
    fn abort(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        match &mut self.route {
            Route::Own(reader) => {
                if let Some(mut reader) = reader.take() {
                    reader.get_mut().stop(STOP_CANCELLED);
                }
            }
            Route::Shared { writer, .. } => {
                writer.send_detached(frame_of(&EventType::Aborted, &self.id, &Map::new()));
                self.link.forget(&self.id);
            }
        }
    }
}

/// How an exchange reads outputs: built as a `Value`, or kept as the JSON text ([`RawOutput`]).
pub(crate) trait Output: Sized {
    /// Decodes a frame of our own stream (see [`decode_reply`](crate::envelope::decode_reply)).
    fn decode(frame: Bytes, id: &str) -> Result<Option<Reply<Self>>, ProtocolViolation>;
    /// An output the dispatcher of a shared stream already decoded.
    fn from_value(value: Value) -> Self;
}

impl Output for Value {
    fn decode(frame: Bytes, id: &str) -> Result<Option<Reply>, ProtocolViolation> {
        decode_reply_value(&frame, id)
    }
    fn from_value(value: Value) -> Self {
        value
    }
}

impl Output for RawOutput {
    fn decode(frame: Bytes, id: &str) -> Result<Option<Reply<Self>>, ProtocolViolation> {
        decode_owned_reply_raw(frame, id)
    }
    fn from_value(value: Value) -> Self {
        RawOutput::from(value)
    }
}

/// A request registered for answers on the shared stream, withdrawn when dropped unless kept.
struct Registered<'a> {
    link: &'a Link,
    id: Option<&'a str>,
}

impl Registered<'_> {
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.link.forget(id);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.abort();
    }
}
