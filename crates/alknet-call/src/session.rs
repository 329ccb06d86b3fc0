//! One connection speaking `alknet/call`, from either end: it serves the local operations to
//! the remote side and lets local code call the remote side's operations ([`Peer`]).
//!
//! Per QUIC stream, a reader task decodes frames and a writer task batches writes; every request
//! runs in its own task, so requests on one stream are served concurrently. Outgoing calls open a
//! stream each (isolation, no head-of-line blocking) and read their answers on it directly; on a
//! single-stream carrier (TCP+TLS) everything shares the one stream and answers are routed by id.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use alknet_core::{AuthContext, BoxedStream, Connection};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::context::CallContext;
use crate::envelope::{
    decode_envelope, encode_frame_of, encode_responded_frame, error_from_payload,
    try_encode_frame_of, CallRequest, Envelope, EventType,
};
use crate::error::{CallError, ErrorCode};
use crate::framing::FrameDecoder;
use crate::registry::{Handler, OperationType};
use crate::service::{vet_error, vet_output, CallService};

/// QUIC stream reset code for a protocol violation.
pub const RESET_PROTOCOL_VIOLATION: u32 = 0x10;
/// Frames a stream's writer queues before senders wait.
const WRITER_QUEUE: usize = 256;
/// Bytes of ready subscription items encoded into one write.
const STREAM_BATCH: usize = 32 * 1024;
/// Initial size of an encoded frame: most answers fit without regrowing.
const FRAME_CAPACITY: usize = 256;
/// Extra time a caller waits past the deadline it asked for, so the callee's `TIMEOUT` wins.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// A frame to write, dropped unwritten if its request was aborted meanwhile.
enum Outgoing {
    Frame(Bytes, Option<CancellationToken>),
    /// Protocol violation: reset the stream (the reader hands over its half).
    Reset(ReadHalf<BoxedStream>),
}

#[derive(Clone)]
struct Writer(mpsc::Sender<Outgoing>);

impl Writer {
    fn spawn(mut half: WriteHalf<BoxedStream>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(WRITER_QUEUE);
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                // Batch whatever is queued into one write.
                while let Some(item) = next.take() {
                    match item {
                        Outgoing::Frame(frame, token) => {
                            if !token.is_some_and(|t| t.is_cancelled()) {
                                buf.extend_from_slice(&frame);
                            }
                        }
                        Outgoing::Reset(read) => {
                            let mut stream = read.unsplit(half);
                            stream.reset(RESET_PROTOCOL_VIOLATION);
                            return;
                        }
                    }
                    if buf.len() < 256 * 1024 {
                        next = rx.try_recv().ok();
                    }
                }
                if !buf.is_empty() {
                    if half.write_all(&buf).await.is_err() {
                        return;
                    }
                    buf.clear();
                }
                if half.flush().await.is_err() {
                    return;
                }
            }
            let _ = half.shutdown().await;
        });
        Writer(tx)
    }

    async fn send(&self, frame: Bytes, token: Option<&CancellationToken>) -> bool {
        self.0
            .send(Outgoing::Frame(frame, token.cloned()))
            .await
            .is_ok()
    }

    fn try_send(&self, frame: Bytes) {
        let _ = self.0.try_send(Outgoing::Frame(frame, None));
    }
}

/// A reply to one of our requests.
enum Reply {
    Output(Value),
    Completed,
    Error(CallError),
    Aborted,
}

struct Incoming {
    generation: u64,
    stream: u64,
    token: CancellationToken,
}

struct Inner {
    conn: Connection,
    service: Arc<CallService>,
    auth: AuthContext,
    incoming: Mutex<HashMap<String, Incoming>>,
    pending: Mutex<HashMap<String, mpsc::Sender<Reply>>>,
    shared_writer: watch::Receiver<Option<Writer>>,
    shared_writer_tx: watch::Sender<Option<Writer>>,
    permits: Arc<Semaphore>,
    closed: CancellationToken,
    tasks: TaskTracker,
    next_id: AtomicU64,
    generation: AtomicU64,
    next_stream: AtomicU64,
}

/// Starts sessions.
pub struct Session;

impl Session {
    /// Starts serving `conn` with `service`; returns the handle to call the other side.
    pub fn start(conn: Connection, service: Arc<CallService>, auth: AuthContext) -> Peer {
        let (shared_writer_tx, shared_writer) = watch::channel(None);
        let permits = Arc::new(Semaphore::new(service.options().max_concurrent));
        let inner = Arc::new(Inner {
            conn,
            service,
            auth,
            incoming: Mutex::default(),
            pending: Mutex::default(),
            shared_writer,
            shared_writer_tx,
            permits,
            closed: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            next_stream: AtomicU64::new(0),
        });
        tokio::spawn(run(inner.clone()));
        Peer { inner }
    }
}

async fn run(inner: Arc<Inner>) {
    let single = inner.conn.is_single_stream();
    while let Ok(stream) = inner.conn.accept_bi().await {
        inner.tasks.spawn(drive(inner.clone(), stream, single));
    }
    // No more streams: the connection closed, or the node is draining. Let what runs finish
    // unless the connection goes away first.
    inner.tasks.close();
    tokio::select! {
        _ = inner.conn.closed() => {}
        _ = inner.tasks.wait() => inner.conn.close(0, "done"),
    }
    inner.closed.cancel();
    if let Ok(mut pending) = inner.pending.lock() {
        pending.clear();
    }
    inner.shared_writer_tx.send_replace(None);
}

/// Reads one stream's frames until it ends.
async fn drive(inner: Arc<Inner>, stream: BoxedStream, shared: bool) {
    let (mut read, write) = tokio::io::split(stream);
    let writer = Writer::spawn(write);
    if shared {
        inner.shared_writer_tx.send_replace(Some(writer.clone()));
    }
    let mut decoder = FrameDecoder::new(inner.service.options().max_frame);
    let stream_id = inner.next_stream.fetch_add(1, Ordering::Relaxed);
    let violation = loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => match decode_envelope(&frame) {
                Ok(envelope) => {
                    if let Err(reason) = on_envelope(&inner, envelope, &writer, stream_id).await {
                        break Some(reason);
                    }
                    continue;
                }
                Err(v) => break Some(v.to_string()),
            },
            Ok(None) => {}
            Err(e) => break Some(e.to_string()),
        }
        decoder.buffer_mut().reserve(16 * 1024);
        tokio::select! {
            r = read.read_buf(decoder.buffer_mut()) => match r {
                Ok(0) => break None,
                Ok(_) => {}
                // Reset by the peer: fail the requests that were on this stream.
                Err(_) => {
                    cancel_stream_requests(&inner, stream_id);
                    break None;
                }
            },
            _ = inner.closed.cancelled() => break None,
        }
    };
    if shared {
        // Let the writer end with the requests still running, so the stream closes behind them.
        inner.shared_writer_tx.send_replace(None);
    }
    if let Some(reason) = violation {
        warn!(target: "alknet::call", remote = %inner.conn.remote_addr(), %reason, "protocol violation; resetting the stream");
        cancel_stream_requests(&inner, stream_id);
        if shared {
            inner
                .conn
                .close(RESET_PROTOCOL_VIOLATION, "protocol violation");
        } else {
            let _ = writer.0.send(Outgoing::Reset(read)).await;
        }
    }
}

/// Cancels the requests that arrived on a stream that was reset or broke the protocol.
fn cancel_stream_requests(inner: &Inner, stream: u64) {
    if let Ok(incoming) = inner.incoming.lock() {
        incoming
            .values()
            .filter(|r| r.stream == stream)
            .for_each(|r| r.token.cancel());
    }
}

/// Handles one decoded envelope; `Err` is a protocol violation.
async fn on_envelope(
    inner: &Arc<Inner>,
    envelope: Envelope,
    writer: &Writer,
    stream: u64,
) -> Result<(), String> {
    let Envelope { kind, id, payload } = envelope;
    match kind {
        EventType::Requested => {
            let token = inner.closed.child_token();
            let generation = inner.generation.fetch_add(1, Ordering::Relaxed);
            {
                let mut incoming = inner.incoming.lock().map_err(|_| "poisoned")?;
                if incoming.contains_key(&id) {
                    return Err(format!(
                        "request id {id:?} is already open on this connection"
                    ));
                }
                let Ok(permit) = inner.permits.clone().try_acquire_owned() else {
                    let err = CallError::new(
                        ErrorCode::Overloaded,
                        "too many concurrent requests on this connection; retry later",
                    );
                    writer.try_send(frame_of(&EventType::Error, &id, &err));
                    return Ok(());
                };
                incoming.insert(
                    id.clone(),
                    Incoming {
                        generation,
                        stream,
                        token: token.clone(),
                    },
                );
                inner.tasks.spawn(serve_request(
                    inner.clone(),
                    id,
                    payload,
                    writer.clone(),
                    token,
                    generation,
                    permit,
                ));
            }
            Ok(())
        }
        EventType::Aborted => {
            let removed = inner.incoming.lock().ok().and_then(|mut m| m.remove(&id));
            match removed {
                Some(req) => req.token.cancel(),
                None => route(inner, &id, Reply::Aborted).await,
            }
            Ok(())
        }
        EventType::Responded => {
            let output = match payload {
                Value::Object(mut map) => map.remove("output").unwrap_or(Value::Null),
                _ => Value::Null,
            };
            route(inner, &id, Reply::Output(output)).await;
            Ok(())
        }
        EventType::Completed => {
            route(inner, &id, Reply::Completed).await;
            Ok(())
        }
        EventType::Error => {
            route(inner, &id, Reply::Error(error_from_payload(&payload))).await;
            Ok(())
        }
        EventType::Unknown(kind) => {
            debug!(target: "alknet::call", %kind, "ignoring envelope of unknown type");
            Ok(())
        }
    }
}

/// Delivers a reply to a request of ours made on the shared stream. A full queue waits: on a
/// single-stream carrier the one stream is the unit of flow control, so a slow local consumer
/// slows the connection (as TCP would) instead of losing answers.
async fn route(inner: &Inner, id: &str, reply: Reply) {
    let terminal = !matches!(reply, Reply::Output(_));
    let tx = match inner.pending.lock() {
        Ok(mut pending) if terminal => pending.remove(id),
        Ok(pending) => pending.get(id).cloned(),
        Err(_) => None,
    };
    // Late frames after an abort or for unknown ids are discarded.
    if let Some(tx) = tx {
        if tx.send(reply).await.is_err() {
            if let Ok(mut pending) = inner.pending.lock() {
                pending.remove(id);
            }
        }
    }
}

fn frame_of(kind: &EventType, id: &str, payload: &impl serde::Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_CAPACITY);
    encode_frame_of(kind, id, payload, &mut buf);
    buf.freeze()
}

#[allow(clippy::too_many_arguments)]
async fn serve_request(
    inner: Arc<Inner>,
    id: String,
    payload: Value,
    writer: Writer,
    token: CancellationToken,
    generation: u64,
    _permit: OwnedSemaphorePermit,
) {
    let outcome = AssertUnwindSafe(run_request(&inner, &id, payload, &writer, &token))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        warn!(target: "alknet::call", %id, "handler panicked; answering INTERNAL");
        writer
            .send(
                frame_of(&EventType::Error, &id, &CallError::internal()),
                Some(&token),
            )
            .await;
    }
    if let Ok(mut incoming) = inner.incoming.lock() {
        if incoming
            .get(&id)
            .is_some_and(|r| r.generation == generation)
        {
            incoming.remove(&id);
        }
    }
}

async fn run_request(
    inner: &Arc<Inner>,
    id: &str,
    payload: Value,
    writer: &Writer,
    token: &CancellationToken,
) {
    let service = &inner.service;
    let send_error = |e: CallError| async move {
        writer
            .send(frame_of(&EventType::Error, id, &e), Some(token))
            .await;
    };
    let request = match CallRequest::from_payload(&payload) {
        Ok(r) => r,
        Err(e) => return send_error(e).await,
    };
    let (op, identity) = match service.admit(&request, inner.auth.identity.as_ref()) {
        Ok(admitted) => admitted,
        Err(e) => return send_error(e).await,
    };
    let options = service.options();
    let timeout = match (op.spec.kind, request.timeout_ms) {
        (_, Some(ms)) => Some(Duration::from_millis(ms).min(options.max_timeout)),
        (OperationType::Subscription, None) => None,
        (_, None) => Some(options.default_timeout),
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let timed_out = || {
        CallError::new(
            ErrorCode::Timeout,
            "the deadline passed before the operation finished",
        )
    };
    // `token` is cancelled by the caller's abort (and then no frame is written for this id); the
    // handler's own token also ends when the request does, so whatever it started ends with it.
    let handler_token = token.child_token();
    let _ends_with_request = handler_token.clone().drop_guard();
    let ctx = CallContext::new(
        identity,
        op.spec.name.as_str().into(),
        handler_token,
        service.clone(),
        Some(Peer {
            inner: inner.clone(),
        }),
    );
    match &op.handler {
        Handler::Unary(f) => {
            let result = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = &mut deadline => Err(timed_out()),
                r = f(ctx, request.input) => r.map_err(|e| vet_error(&op, e)),
            };
            let frame = match result.and_then(|out| vet_output(service, &op, &out).map(|()| out)) {
                Ok(output) => {
                    let mut buf = BytesMut::with_capacity(FRAME_CAPACITY);
                    encode_responded_frame(id, &output, &mut buf);
                    buf.freeze()
                }
                Err(e) => frame_of(&EventType::Error, id, &e),
            };
            writer.send(frame, Some(token)).await;
        }
        Handler::Stream(f) => {
            let mut items = f(ctx, request.input);
            let mut batch = BytesMut::with_capacity(FRAME_CAPACITY);
            loop {
                let first = tokio::select! {
                    biased;
                    _ = token.cancelled() => return,
                    _ = &mut deadline => return send_error(timed_out()).await,
                    item = items.next() => item,
                };
                // Encode this item and whatever else is ready now into one write.
                let mut next = Some(first);
                let mut ended = false;
                while let Some(item) = next.take() {
                    match item {
                        Some(Ok(output)) => match vet_output(service, &op, &output) {
                            Ok(()) => encode_responded_frame(id, &output, &mut batch),
                            Err(e) => {
                                encode_frame_of(&EventType::Error, id, &e, &mut batch);
                                ended = true;
                            }
                        },
                        Some(Err(e)) => {
                            encode_frame_of(&EventType::Error, id, &vet_error(&op, e), &mut batch);
                            ended = true;
                        }
                        None => {
                            encode_frame_of(&EventType::Completed, id, &Map::new(), &mut batch);
                            ended = true;
                        }
                    }
                    if !ended && batch.len() < STREAM_BATCH {
                        next = items.next().now_or_never();
                    }
                }
                let frames = batch.split().freeze();
                tokio::select! {
                    biased;
                    _ = token.cancelled() => return,
                    sent = writer.send(frames, Some(token)) => if !sent { return },
                }
                if ended {
                    return;
                }
            }
        }
    }
}

/// Parses an answer to our request `id` without building the envelope as a `Value` (the hot
/// path of a subscription); `Ok(None)` is a valid envelope of another id or type.
fn decode_reply(frame: &[u8], id: &str) -> Result<Option<Reply>, String> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        payload: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Responded {
        #[serde(default)]
        output: Value,
    }
    let wire: Wire<'_> = serde_json::from_slice(frame).map_err(|e| e.to_string())?;
    if wire.id != id {
        return Ok(None);
    }
    let payload = wire.payload.get();
    Ok(Some(match EventType::parse(&wire.kind) {
        EventType::Responded => {
            let responded: Responded = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            Reply::Output(responded.output)
        }
        EventType::Completed => Reply::Completed,
        EventType::Aborted => Reply::Aborted,
        EventType::Error => {
            let payload: Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            Reply::Error(error_from_payload(&payload))
        }
        EventType::Requested | EventType::Unknown(_) => return Ok(None),
    }))
}

/// Per-request options for outgoing calls.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// A bearer token (peer token or `alk_…` API key) for this request only.
    pub auth_token: Option<String>,
    /// The deadline to ask for; the call also fails locally with `TIMEOUT` after it.
    pub timeout: Option<Duration>,
    /// Cancelling this token aborts the request (`call.aborted` is sent).
    pub cancel: Option<CancellationToken>,
}

enum Route {
    Own {
        stream: Option<BoxedStream>,
        decoder: FrameDecoder,
    },
    Shared {
        replies: mpsc::Receiver<Reply>,
        writer: Writer,
    },
}

/// One outgoing request and its answers.
struct Exchange {
    id: String,
    inner: Arc<Inner>,
    route: Route,
    finished: bool,
    cancel: Option<CancellationToken>,
    deadline: Option<Instant>,
}

fn unavailable(why: &str) -> CallError {
    CallError::new(
        ErrorCode::Unavailable,
        format!("connection unavailable: {why}"),
    )
}

impl Exchange {
    async fn open(
        inner: &Arc<Inner>,
        operation: &str,
        input: Value,
        options: RequestOptions,
        local_deadline: Option<Duration>,
    ) -> Result<Self, CallError> {
        if inner.closed.is_cancelled() {
            return Err(unavailable("closed"));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let request = CallRequest {
            operation: operation.trim_start_matches('/').to_string(),
            input,
            auth_token: options.auth_token,
            timeout_ms: options.timeout.map(|t| t.as_millis().max(1) as u64),
        };
        let mut frame = BytesMut::new();
        try_encode_frame_of(&EventType::Requested, &id, &request, &mut frame).map_err(|e| {
            CallError::new(
                ErrorCode::InvalidInput,
                format!("request cannot be sent: {e}"),
            )
        })?;
        let route = if inner.conn.is_single_stream() {
            let mut watch = inner.shared_writer.clone();
            let writer = tokio::select! {
                w = watch.wait_for(Option::is_some) => w.ok().and_then(|w| w.clone()),
                _ = inner.closed.cancelled() => None,
            }
            .ok_or_else(|| unavailable("closed"))?;
            let (tx, replies) = mpsc::channel(inner.service.options().subscription_queue);
            if let Ok(mut pending) = inner.pending.lock() {
                pending.insert(id.clone(), tx);
            }
            if !writer.send(frame.freeze(), None).await {
                if let Ok(mut pending) = inner.pending.lock() {
                    pending.remove(&id);
                }
                return Err(unavailable("stream closed"));
            }
            Route::Shared { replies, writer }
        } else {
            let mut stream = inner
                .conn
                .open_bi()
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            stream
                .write_all(&frame)
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            Route::Own {
                stream: Some(stream),
                decoder: FrameDecoder::new(inner.service.options().max_frame),
            }
        };
        let deadline = options
            .timeout
            .map(|t| t + DEADLINE_GRACE)
            .or(local_deadline)
            .map(|t| Instant::now() + t);
        Ok(Self {
            id,
            inner: inner.clone(),
            route,
            finished: false,
            cancel: options.cancel,
            deadline,
        })
    }

    async fn read_reply(&mut self) -> Reply {
        match &mut self.route {
            Route::Shared { replies, .. } => match replies.recv().await {
                Some(reply) => reply,
                None => Reply::Error(unavailable("closed")),
            },
            Route::Own { stream, decoder } => {
                let Some(stream) = stream.as_mut() else {
                    return Reply::Error(unavailable("stream closed"));
                };
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => match decode_reply(&frame, &self.id) {
                            Ok(Some(reply)) => return reply,
                            Ok(None) => continue,
                            Err(v) => {
                                return Reply::Error(unavailable(&format!(
                                    "peer sent an invalid frame: {v}"
                                )))
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            return Reply::Error(unavailable(&format!(
                                "peer sent an invalid frame: {e}"
                            )))
                        }
                    }
                    decoder.buffer_mut().reserve(16 * 1024);
                    match stream.read_buf(decoder.buffer_mut()).await {
                        Ok(0) => {
                            return Reply::Error(unavailable("the stream ended before an answer"))
                        }
                        Ok(_) => {}
                        Err(e) => return Reply::Error(unavailable(&e.to_string())),
                    }
                }
            }
        }
    }

    /// The next reply; terminal replies finish the exchange.
    async fn next(&mut self) -> Reply {
        let deadline = self.deadline;
        let cancel = self.cancel.clone();
        let reply = tokio::select! {
            biased;
            _ = async { match &cancel { Some(c) => c.cancelled().await, None => std::future::pending().await } } => {
                self.abort();
                Reply::Error(CallError::new(ErrorCode::Cancelled, "the request was cancelled"))
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                self.abort();
                Reply::Error(CallError::new(ErrorCode::Timeout, "no answer before the deadline"))
            }
            reply = self.read_reply() => reply,
        };
        if !matches!(reply, Reply::Output(_)) {
            self.finish();
        }
        reply
    }

    fn finish(&mut self) {
        self.finished = true;
        if let Route::Own { stream, .. } = &mut self.route {
            // Dropping finishes the sending side (QUIC) or ends it (in-memory): no task needed.
            stream.take();
        }
        if let Ok(mut pending) = self.inner.pending.lock() {
            pending.remove(&self.id);
        }
    }

    /// Sends `call.aborted` (once) and stops listening.
    fn abort(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let frame = frame_of(&EventType::Aborted, &self.id, &Map::new());
        match &mut self.route {
            Route::Own { stream, .. } => {
                if let Some(mut stream) = stream.take() {
                    // The abort usually fits the send buffer at once; only wait in a task if not.
                    let written = match stream.write(&frame).now_or_never() {
                        Some(Ok(n)) => n,
                        Some(Err(_)) => frame.len(),
                        None => 0,
                    };
                    if written < frame.len() {
                        if let Ok(rt) = tokio::runtime::Handle::try_current() {
                            rt.spawn(async move {
                                let _ = stream.write_all(&frame[written..]).await;
                            });
                        }
                    }
                }
            }
            Route::Shared { writer, .. } => {
                writer.try_send(frame);
                if let Ok(mut pending) = self.inner.pending.lock() {
                    pending.remove(&self.id);
                }
            }
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A handle to the other end of a call connection: call its operations, subscribe, publish.
/// Cheap to clone; the connection stays open until [`close`](Peer::close) or the peer leaves.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

/// The client side of `alknet/call`: a [`Peer`] made from a dialed connection.
pub type CallClient = Peer;

impl Peer {
    /// Starts the protocol on a dialed connection. `service` holds the operations this side
    /// serves to the remote (use [`CallService::anonymous`] with an empty registry for none).
    pub fn connect(
        conn: Connection,
        service: Arc<CallService>,
        server_fingerprint: Option<String>,
    ) -> Peer {
        let auth = AuthContext {
            identity: None,
            alpn: conn.alpn().to_vec(),
            remote_addr: conn.remote_addr(),
            tls_fingerprint: server_fingerprint,
        };
        Session::start(conn, service, auth)
    }

    /// Calls a query or mutation.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        self.call_with(operation, input, RequestOptions::default())
            .await
    }

    /// Calls a query or mutation with per-request options.
    pub async fn call_with(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<Value, CallError> {
        let local = self.inner.service.options().default_timeout + DEADLINE_GRACE;
        let mut exchange =
            Exchange::open(&self.inner, operation, input, options, Some(local)).await?;
        match exchange.next().await {
            Reply::Output(v) => {
                exchange.finish();
                Ok(v)
            }
            Reply::Error(e) => Err(e),
            Reply::Completed => Err(CallError::new(
                ErrorCode::InvalidOperationType,
                format!("{operation} is a subscription; use subscribe"),
            )),
            Reply::Aborted => Err(CallError::new(
                ErrorCode::Cancelled,
                "the callee gave up on the request",
            )),
        }
    }

    /// Subscribes; the stream yields outputs and ends on completion. Dropping it aborts.
    pub async fn subscribe(
        &self,
        operation: &str,
        input: Value,
    ) -> Result<Subscription, CallError> {
        self.subscribe_with(operation, input, RequestOptions::default())
            .await
    }

    /// Subscribes with per-request options.
    pub async fn subscribe_with(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<Subscription, CallError> {
        let exchange = Exchange::open(&self.inner, operation, input, options, None).await?;
        let items = futures::stream::unfold(Some(exchange), |state| async move {
            let mut exchange = state?;
            match exchange.next().await {
                Reply::Output(v) => Some((Ok(v), Some(exchange))),
                Reply::Completed => None,
                Reply::Error(e) => Some((Err(e), None)),
                Reply::Aborted => Some((
                    Err(CallError::new(
                        ErrorCode::Cancelled,
                        "the callee ended the subscription",
                    )),
                    None,
                )),
            }
        })
        .boxed();
        Ok(Subscription { items })
    }

    /// Publishes to a topic on the remote node; returns how many subscriptions it reached.
    pub async fn publish(&self, topic: &str, data: Value) -> Result<u64, CallError> {
        let out = self
            .call(
                "pubsub/publish",
                serde_json::json!({ "topic": topic, "data": data }),
            )
            .await?;
        Ok(out["delivered"].as_u64().unwrap_or(0))
    }

    /// Subscribes to a topic pattern on the remote node; items are `{ topic, data }`.
    pub async fn topic(&self, pattern: &str) -> Result<Subscription, CallError> {
        self.subscribe("pubsub/subscribe", serde_json::json!({ "topic": pattern }))
            .await
    }

    /// What the endpoint knew about this connection (remote address, fingerprint, identity).
    pub fn auth(&self) -> &AuthContext {
        &self.inner.auth
    }

    /// Closes the connection; pending requests on both sides fail with `UNAVAILABLE`.
    pub fn close(&self) {
        self.inner.conn.close(0, "closed");
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }
}

/// The items of a subscription. Dropping it sends `call.aborted`.
pub struct Subscription {
    items: BoxStream<'static, Result<Value, CallError>>,
}

impl Stream for Subscription {
    type Item = Result<Value, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}
