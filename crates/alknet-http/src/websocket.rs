//! The WebSocket carrier of `alknet/call` at `/alknet/call`: one binary message is one envelope
//! (JSON, no length prefix). It plugs the socket into the call crate's one dispatcher as a
//! [`EnvelopeSource`] and a [`FrameSink`] ([`Session::start_with_carrier`]), so requests over a
//! WebSocket get the same access checks, limits and cancellation as over QUIC or TCP+TLS.
//!
//! Close codes: a text message closes with 1003, a message above `max_frame_bytes` with 1009,
//! anything else that breaks the protocol (bytes that are not an envelope) with 1002; a node that
//! drains closes with 1001 once what is in flight is answered.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use alknet_call::carrier::{EnvelopeSource, FrameSink, ReceiveError};
use alknet_call::framing::FrameDecoder;
use alknet_call::session::RESET_PROTOCOL_VIOLATION;
use alknet_call::{CallService, Session, ALPN};
use alknet_core::{
    AuthContext, BoxedStream, Connection, ConnectionError, Credential, Identity, Transport,
};
use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::server::ConnInfo;

/// Where the carrier listens.
pub const PATH: &str = "/alknet/call";
/// The subprotocol a client offers and the server selects.
pub const SUBPROTOCOL: &str = "alknet.call";
/// The prefix of the subprotocol that carries a bearer token (`alknet.bearer.<token>`). The
/// server reads it and never echoes it.
pub const BEARER_PREFIX: &str = "alknet.bearer.";

/// Close codes (RFC 6455).
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const UNSUPPORTED_DATA: u16 = 1003;
const INTERNAL_ERROR: u16 = 1011;
const MESSAGE_TOO_BIG: u16 = 1009;

/// The bearer token a client offered as a subprotocol, if any.
pub(crate) fn offered_token(upgrade: &WebSocketUpgrade) -> Option<String> {
    upgrade.requested_protocols().find_map(|p| {
        p.to_str()
            .ok()
            .and_then(|p| p.strip_prefix(BEARER_PREFIX))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    })
}

/// Whether the client offered [`SUBPROTOCOL`].
pub(crate) fn offers_call(upgrade: &WebSocketUpgrade) -> bool {
    upgrade
        .requested_protocols()
        .any(|p| p.as_bytes() == SUBPROTOCOL.as_bytes())
}

/// Accepts the upgrade: selects [`SUBPROTOCOL`] and serves the socket with `service` as
/// `identity` (what the offered token resolved to, or the TLS client key's). `bearer` is the
/// offered token's credential when the identity came from it: the socket's requests resolve it
/// again after each reload, so revoking the token ends them (`UNAUTHENTICATED`).
pub(crate) fn accept(
    mut upgrade: WebSocketUpgrade,
    service: Arc<CallService>,
    identity: Option<Identity>,
    bearer: Option<Credential>,
    info: ConnInfo,
) -> Response {
    let max = service.max_frame_for(identity.as_ref());
    upgrade.set_selected_protocol(HeaderValue::from_static(SUBPROTOCOL));
    let hold = info.tasks.token();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            serve_socket(socket, service, identity, bearer, info).await;
            drop(hold);
        })
}

/// What the transport, the reader and the closer share.
struct State {
    /// Cancelled once the socket is to close (either side).
    closed: CancellationToken,
    /// The close code to send, set by whoever decided first.
    code: Mutex<Option<u16>>,
    /// Cancelled when the node drains.
    drain: CancellationToken,
}

impl State {
    fn close_with(&self, code: u16) {
        let mut slot = self.code.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(code);
        drop(slot);
        self.closed.cancel();
    }

    fn code(&self) -> u16 {
        self.code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(NORMAL)
    }
}

/// The socket as a [`Connection`]: single-stream, whose stream is the message carrier itself.
struct WsTransport(Arc<State>);

#[async_trait]
impl Transport for WsTransport {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        self.0.closed.cancelled().await;
        Err(ConnectionError::Closed("socket closed".into()))
    }
    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        Err(ConnectionError::SingleStream)
    }
    fn close(&self, code: u32, _reason: &str) {
        let code = match code {
            RESET_PROTOCOL_VIOLATION => PROTOCOL_ERROR,
            0 if self.0.drain.is_cancelled() => GOING_AWAY,
            0 => NORMAL,
            _ => INTERNAL_ERROR,
        };
        self.0.close_with(code);
    }
    async fn closed(&self) {
        self.0.closed.cancelled().await
    }
    fn is_single_stream(&self) -> bool {
        true
    }
}

/// Envelopes in: one binary message each.
struct Source {
    stream: SplitStream<WebSocket>,
    state: Arc<State>,
}

fn too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl EnvelopeSource for Source {
    async fn next_envelope(&mut self) -> Result<Option<Bytes>, ReceiveError> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Binary(data))) if data.is_empty() => {
                    self.state.close_with(PROTOCOL_ERROR);
                    return Err(ReceiveError::Violation("empty message".into()));
                }
                Some(Ok(Message::Binary(data))) => return Ok(Some(data)),
                Some(Ok(Message::Text(_))) => {
                    self.state.close_with(UNSUPPORTED_DATA);
                    return Err(ReceiveError::Violation(
                        "text message (envelopes travel as binary messages)".into(),
                    ));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    self.state.closed.cancel();
                    return Ok(None);
                }
                Some(Err(e)) if too_big(&e) => {
                    self.state.close_with(MESSAGE_TOO_BIG);
                    return Err(ReceiveError::Violation(
                        "message above max_frame_bytes".into(),
                    ));
                }
                Some(Err(e)) => {
                    self.state.closed.cancel();
                    return Err(ReceiveError::Broken(e.to_string()));
                }
            }
        }
    }

    fn abandon(&mut self, _code: u32) {
        self.state.close_with(PROTOCOL_ERROR);
    }
}

type Writer = Arc<tokio::sync::Mutex<SplitSink<WebSocket, Message>>>;

/// Envelopes out: the dispatcher hands over length-prefixed frames; each becomes one message.
struct Sink {
    sink: Writer,
    max: usize,
}

impl FrameSink for Sink {
    async fn send(&mut self, frames: &[u8]) -> io::Result<()> {
        let mut decoder = FrameDecoder::new(self.max.max(frames.len()));
        decoder.buffer_mut().extend_from_slice(frames);
        let mut sink = self.sink.lock().await;
        while let Some(envelope) = decoder
            .next_frame()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            sink.feed(Message::Binary(envelope))
                .await
                .map_err(io::Error::other)?;
        }
        sink.flush().await.map_err(io::Error::other)
    }

    async fn finish(&mut self) {}
}

async fn serve_socket(
    socket: WebSocket,
    service: Arc<CallService>,
    identity: Option<Identity>,
    bearer: Option<Credential>,
    info: ConnInfo,
) {
    let (sink, stream) = socket.split();
    let sink: Writer = Arc::new(tokio::sync::Mutex::new(sink));
    let state = Arc::new(State {
        closed: CancellationToken::new(),
        code: Mutex::new(None),
        drain: info.drain.clone(),
    });
    let conn = Connection::new(WsTransport(state.clone()), ALPN, info.remote)
        .with_drain(info.drain.clone());
    let auth = AuthContext {
        identity,
        alpn: ALPN.to_vec(),
        remote_addr: info.remote,
        tls_fingerprint: info.auth.tls_fingerprint.clone(),
        bearer,
    };
    let max = service.max_frame_for(auth.identity.as_ref());
    let source = Source {
        stream,
        state: state.clone(),
    };
    let peer = Session::start_with_carrier(
        conn,
        source,
        Sink {
            sink: sink.clone(),
            max,
        },
        service,
        auth,
    );
    tokio::select! {
        _ = peer.closed() => {}
        _ = info.cut.cancelled() => state.close_with(GOING_AWAY),
    }
    let code = state.code();
    let mut sink = sink.lock().await;
    let frame = CloseFrame {
        code,
        reason: match code {
            UNSUPPORTED_DATA => "binary messages only",
            MESSAGE_TOO_BIG => "message too big",
            PROTOCOL_ERROR => "protocol violation",
            GOING_AWAY => "going away",
            _ => "",
        }
        .into(),
    };
    // The peer may have closed first; then there is nothing left to tell it.
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
