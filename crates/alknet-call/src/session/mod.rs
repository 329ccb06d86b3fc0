//! One connection speaking `alknet/call`, from either end: it serves the local operations to
//! the remote side (`dispatch`) and lets local code call the remote side's operations
//! ([`Peer`]).
//!
//! Per stream, a reader decodes envelopes and a writer task (`carrier::writer`) batches
//! writes; every request runs in its own task (`request`), so requests on one stream are served
//! concurrently. On a single-stream carrier (TCP+TLS) everything shares the one stream, answers to
//! our own requests are routed by id, and a node that begins to shut down drains the connection
//! itself: new requests are answered `UNAVAILABLE`, those in flight finish, then it closes.

use std::sync::Arc;

use alknet_core::{AuthContext, Connection};

use crate::carrier::{EnvelopeSource, FrameSink};

mod dispatch;
mod request;

pub use crate::peer::{CallClient, Peer, RequestOptions, Subscription};

use crate::peer::link::Link;
use crate::service::CallService;
use dispatch::Dispatcher;

/// QUIC stream reset code for a protocol violation.
pub const RESET_PROTOCOL_VIOLATION: u32 = 0x10;

/// Starts sessions.
pub struct Session;

impl Session {
    /// Starts serving `conn` with `service`; returns the handle to call the other side.
    pub fn start(conn: Connection, service: Arc<CallService>, auth: AuthContext) -> Peer {
        let link = Arc::new(Link::new(conn, auth, service.options().clone()));
        let dispatcher = Arc::new(Dispatcher::new(link.clone(), service));
        tokio::spawn(dispatcher.run());
        Peer { link }
    }

    /// Starts serving a message carrier (WebSocket): its one stream is `source` and `sink`, not
    /// a stream of `conn`. `conn` stands for the connection as a whole (its address, close,
    /// drain); it must be single-stream, and its `accept_bi` should wait until it closes.
    /// Everything else is as for [`start`](Self::start): the same dispatcher, limits and
    /// identity rules, and the returned [`Peer`] calls the other side over the same stream.
    pub fn start_with_carrier(
        conn: Connection,
        source: impl EnvelopeSource,
        sink: impl FrameSink,
        service: Arc<CallService>,
        auth: AuthContext,
    ) -> Peer {
        debug_assert!(conn.is_single_stream());
        let link = Arc::new(Link::new(conn, auth, service.options().clone()));
        let dispatcher = Arc::new(Dispatcher::new(link.clone(), service));
        dispatcher.serve_carrier(source, sink);
        tokio::spawn(dispatcher.run());
        Peer { link }
    }
}

// Made here rather than in `peer`, so that the caller side does not depend on the dispatcher.
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
            bearer: None,
        };
        Session::start(conn, service, auth)
    }
}

impl CallService {
    /// Serves one connection until it closes. `auth` is what the endpoint resolved.
    pub async fn serve(self: &Arc<Self>, conn: Connection, auth: AuthContext) {
        Session::start(conn, self.clone(), auth).closed().await;
    }
}
