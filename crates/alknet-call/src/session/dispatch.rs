//! The dispatcher: consumes whole envelopes from a carrier, starts a task per request, routes the
//! answers to our own requests, and produces whole envelopes through each stream's writer.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alknet_core::log_text::escaped;
use alknet_core::{BoxedStream, StoppedFuture};
use bytes::Bytes;
use futures::future::{Fuse, FusedFuture, FutureExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::request;
use super::RESET_PROTOCOL_VIOLATION;
use crate::carrier::byte_stream::{FrameReader, FrameWriter, SharedStream};
use crate::carrier::writer::Writer;
use crate::carrier::{EnvelopeSource, FrameSink, ReceiveError};
use crate::envelope::{decode_received, frame_of, EventType, PayloadFields, Received, Reply};
use crate::error::{CallError, ErrorCode};
use crate::peer::link::Link;
use crate::service::CallService;

/// A request we are serving.
struct Incoming {
    /// Tells this entry from a later request that reuses the id.
    generation: u64,
    /// Cancels the request (its handler is dropped, nothing more is written for it).
    token: CancellationToken,
}

/// What a new request's token is made a child of.
#[derive(Clone, Copy)]
enum Parent<'a> {
    /// The token of the stream it arrived on.
    Stream(&'a CancellationToken),
    /// The connection's token: the request runs inline in the task reading the stream `.0`,
    /// which cancels it with the stream.
    Connection(&'a CancellationToken),
}

/// Serves one connection.
pub(super) struct Dispatcher {
    pub(super) link: Arc<Link>,
    pub(super) service: Arc<CallService>,
    incoming: Mutex<HashMap<String, Incoming>>,
    permits: Arc<Semaphore>,
    /// The tasks reading streams.
    streams: TaskTracker,
    /// The requests being served.
    requests: TaskTracker,
    /// Each stream's writer: waited for before the session closes the connection, so the last
    /// answers are delivered, not discarded.
    writers: TaskTracker,
    generation: AtomicU64,
}

impl Dispatcher {
    pub(super) fn new(link: Arc<Link>, service: Arc<CallService>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(service.options().max_concurrent)),
            link,
            service,
            incoming: Mutex::default(),
            streams: TaskTracker::new(),
            requests: TaskTracker::new(),
            writers: TaskTracker::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// Accepts streams until the connection closes (or the node drains), then lets what runs
    /// finish unless the connection goes away first.
    pub(super) async fn run(self: Arc<Self>) {
        let conn = &self.link.conn;
        let single = conn.is_single_stream();
        let accept = async {
            while let Ok(stream) = conn.accept_bi().await {
                self.streams.spawn(self.clone().drive(stream, single));
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = self.drain_single_stream(), if single => {}
        }
        self.streams.close();
        tokio::select! {
            _ = conn.closed() => {}
            _ = async {
                self.streams.wait().await;
                self.requests.close();
                self.requests.wait().await;
                self.writers.close();
                self.writers.wait().await;
            } => conn.close(0, "done"),
        }
        self.link.shut();
    }

    /// A multi-stream carrier drains by hiding new streams (the endpoint does that). The one
    /// stream of a single-stream carrier stays, so once the node drains, new requests are refused
    /// (see [`on_requested`](Self::on_requested)); when those in flight are done the connection
    /// closes, so an idle client does not hold the node's shutdown up.
    async fn drain_single_stream(&self) {
        self.link.conn.draining().await;
        self.requests.close();
        self.requests.wait().await;
        // The last answers are queued; let them reach the socket before it closes.
        if let Some(writer) = self.link.current_shared_writer() {
            writer.flushed().await;
        }
        self.link.conn.close(0, "node shutting down");
    }

    /// Serves one stream of a byte-stream carrier (a QUIC stream, or the one stream of TCP+TLS).
    async fn drive(self: Arc<Self>, stream: BoxedStream, shared: bool) {
        let stopped = stream.stopped();
        let stream = SharedStream::new(stream);
        let (max_frame, guard) = self
            .service
            .input_guard(self.link.auth.identity.as_ref(), &self.link.input);
        let source = FrameReader::new(stream.clone(), max_frame).with_guard(guard);
        self.serve_stream(source, FrameWriter(stream), stopped, shared)
            .await;
    }

    /// Serves the one stream of a message carrier (no STOP_SENDING: a closed socket ends it).
    pub(super) fn serve_carrier(
        self: &Arc<Self>,
        source: impl EnvelopeSource,
        sink: impl FrameSink,
    ) {
        let stopped: StoppedFuture = Box::pin(std::future::pending());
        self.streams
            .spawn(self.clone().serve_stream(source, sink, stopped, true));
    }

    /// Serves one stream of any carrier until it ends: envelopes in from `source`, answers out
    /// through `sink`. `shared` says the stream is the connection's only one (our own requests
    /// go out on it too). A message carrier (WebSocket) plugs in here with its own adapter.
    async fn serve_stream(
        self: Arc<Self>,
        mut source: impl EnvelopeSource,
        sink: impl FrameSink,
        stopped: StoppedFuture,
        shared: bool,
    ) {
        // Every request answered on this stream is a child: a reset, a violation or the peer
        // stopping the stream cancels them all.
        let token = self.link.closed.child_token();
        if !shared {
            // A stream of its own (usually one request): its writer runs in this task.
            let (writer, writing) = Writer::new(sink, stopped, token.clone(), true);
            let reading = async {
                let violation = self
                    .read_envelopes(&mut source, &writer, &token, true)
                    .await;
                // The writer ends once the requests still running let go of it too.
                drop(writer);
                if let Some(reason) = violation {
                    self.violated(&reason);
                    token.cancel();
                    source.abandon(RESET_PROTOCOL_VIOLATION);
                }
            };
            tokio::join!(reading, writing);
            return;
        }
        let writer = Writer::spawn(sink, stopped, token.clone(), &self.writers, false);
        self.link.set_shared_writer(Some(writer.clone()));
        let violation = self
            .read_envelopes(&mut source, &writer, &token, false)
            .await;
        // Let the writer end with the requests still running, so the stream closes behind them.
        self.link.set_shared_writer(None);
        if let Some(reason) = violation {
            self.violated(&reason);
            token.cancel();
            self.link
                .conn
                .close(RESET_PROTOCOL_VIOLATION, "protocol violation");
        }
    }

    fn violated(&self, reason: &str) {
        warn!(target: "alknet::call", remote = %self.link.conn.remote_addr(), reason = %escaped(reason), "protocol violation; resetting the stream");
    }

    /// Handles one stream's envelopes until it ends; `Some(reason)` on a protocol violation.
    ///
    /// With `inline` (a stream of its own) the stream's first request runs in this task, next to
    /// the reading, and the call returns once it is done: a per-request stream then costs no task
    /// of its own. Requests that arrive while one runs inline get tasks, so that the requests of
    /// one stream are still served concurrently (and in parallel).
    async fn read_envelopes(
        self: &Arc<Self>,
        source: &mut impl EnvelopeSource,
        writer: &Writer,
        stream: &CancellationToken,
        inline: bool,
    ) -> Option<String> {
        let mut running = pin!(Fuse::terminated());
        // The token of the request running inline. It is a child of the connection's token, not
        // of the stream's (a first child costs its parent a list): this loop cancels it with
        // the stream.
        let mut inline_token: Option<CancellationToken> = None;
        let violation = loop {
            let next = tokio::select! {
                next = source.next_envelope() => next,
                () = &mut running, if !running.is_terminated() => {
                    inline_token = None;
                    continue;
                }
                _ = stream.cancelled(), if inline_token.is_some() => {
                    inline_token.take().inspect(CancellationToken::cancel);
                    continue;
                }
                _ = self.link.closed.cancelled() => break None,
            };
            let envelope = match next {
                Ok(Some(frame)) => match decode_received(&frame) {
                    Ok(envelope) => envelope,
                    Err(v) => break Some(v.to_string()),
                },
                // The peer finished sending (a FIN is not an abort): answers still go out.
                Ok(None) => break None,
                // Reset by the peer: fail the requests that were on this stream.
                Err(ReceiveError::Broken(_)) => {
                    stream.cancel();
                    break None;
                }
                Err(ReceiveError::Violation(reason)) => break Some(reason),
            };
            let parent = match inline && running.is_terminated() {
                true => Parent::Connection(stream),
                false => Parent::Stream(stream),
            };
            match self.on_envelope(envelope, writer, parent).await {
                Ok(Some(served)) if inline && running.is_terminated() => {
                    inline_token = Some(served.token.clone());
                    // Boxed: the stream task's own future stays small (tokio moves it whole).
                    running.set(Box::pin(request::serve(self.clone(), served)).fuse());
                }
                Ok(Some(served)) => {
                    self.requests.spawn(request::serve(self.clone(), served));
                }
                Ok(None) => {}
                Err(reason) => break Some(reason),
            }
        };
        if violation.is_some() {
            stream.cancel();
        }
        // Cancelled (a violation, a reset, the peer stopping the stream, the connection closing)
        // it ends at once.
        if !running.is_terminated() {
            tokio::select! {
                () = &mut running => return violation,
                _ = stream.cancelled() => {}
            }
            inline_token.take().inspect(CancellationToken::cancel);
            running.await;
        }
        violation
    }

    /// Handles one decoded envelope; a request to serve is returned, to be started by the caller.
    /// `Err` is a protocol violation.
    async fn on_envelope(
        self: &Arc<Self>,
        envelope: Received,
        writer: &Writer,
        parent: Parent<'_>,
    ) -> Result<Option<request::Served>, String> {
        let Received { kind, id, payload } = envelope;
        match kind {
            EventType::Requested => match self.on_requested(id, payload, writer, parent)? {
                Ok(served) => return Ok(Some(served)),
                Err(answer) => {
                    writer.send(answer, None).await;
                }
            },
            EventType::Aborted => {
                let removed = self.incoming.lock().ok().and_then(|mut m| m.remove(&id));
                match removed {
                    Some(request) => request.token.cancel(),
                    None => self.link.route(&id, Reply::Aborted).await,
                }
            }
            EventType::Unknown(kind) => {
                debug!(target: "alknet::call", kind = %escaped(&kind), "ignoring envelope of unknown type");
            }
            kind => {
                if let Some(reply) = Reply::from_envelope(&kind, payload.into_value()) {
                    self.link.route(&id, reply).await;
                }
            }
        }
        Ok(None)
    }

    /// Admits a request (to be served), or returns the answer that refuses it at once.
    fn on_requested(
        self: &Arc<Self>,
        id: String,
        payload: PayloadFields,
        writer: &Writer,
        parent: Parent<'_>,
    ) -> Result<Result<request::Served, Bytes>, String> {
        let mut incoming = self.incoming.lock().map_err(|_| "poisoned")?;
        if incoming.contains_key(&id) {
            return Err(format!(
                "request id {id:?} is already open on this connection"
            ));
        }
        let conn = &self.link.conn;
        if conn.is_single_stream() && conn.is_draining() {
            let err = CallError::new(
                ErrorCode::Unavailable,
                "node shutting down; reconnect elsewhere or retry",
            );
            return Ok(Err(frame_of(&EventType::Error, &id, &err)));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let err = CallError::new(
                ErrorCode::Overloaded,
                "too many concurrent requests on this connection; retry later",
            );
            return Ok(Err(frame_of(&EventType::Error, &id, &err)));
        };
        let token = match parent {
            Parent::Stream(stream) => stream.child_token(),
            Parent::Connection(stream) => {
                let token = self.link.closed.child_token();
                if stream.is_cancelled() {
                    token.cancel();
                }
                token
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        incoming.insert(
            id.clone(),
            Incoming {
                generation,
                token: token.clone(),
            },
        );
        Ok(Ok(request::Served {
            id,
            payload,
            writer: writer.clone(),
            token,
            generation,
            _permit: permit,
        }))
    }

    /// Forgets a request that finished, unless its id was reused meanwhile.
    pub(super) fn done(&self, id: &str, generation: u64) {
        if let Ok(mut incoming) = self.incoming.lock() {
            if incoming.get(id).is_some_and(|r| r.generation == generation) {
                incoming.remove(id);
            }
        }
    }
}
