//! The protocol handler trait: a service is an ALPN (or a few: HTTP is `h2` and `http/1.1`).

use async_trait::async_trait;
use thiserror::Error;

use crate::connection::{Connection, ConnectionError};
use crate::identity::AuthContext;

/// Why a handler ended its connection with an error. Logged by the endpoint; closes only that
/// connection.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// The transport failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// A way connections reach a node. Each carrier advertises only the ALPNs that can be served
/// over it (HTTP's `h2` is a TCP protocol, so it is never offered over QUIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// QUIC over UDP on the node's port (quinn): many streams per connection.
    Quic,
    /// TLS over TCP on the same port number: one stream per connection.
    Tcp,
    /// QUIC over iroh's paths (direct UDP or a relay), dialed by node id.
    Iroh,
}

impl Carrier {
    /// Every carrier.
    pub const ALL: &'static [Carrier] = &[Carrier::Quic, Carrier::Tcp, Carrier::Iroh];

    /// Short name for logs (`quic`, `tcp`, `iroh`).
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Quic => "quic",
            Carrier::Tcp => "tcp",
            Carrier::Iroh => "iroh",
        }
    }
}

/// One ALPN a handler serves and the carriers it is offered on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alpn {
    /// The protocol id negotiated in TLS, e.g. `b"alknet/call"`.
    pub protocol: Vec<u8>,
    /// Where it is advertised.
    pub carriers: &'static [Carrier],
}

impl Alpn {
    /// `protocol` on every carrier (QUIC, TCP+TLS, iroh).
    pub fn everywhere(protocol: &[u8]) -> Self {
        Self::over(protocol, Carrier::ALL)
    }

    /// `protocol` on the given carriers only.
    pub fn over(protocol: &[u8], carriers: &'static [Carrier]) -> Self {
        Self {
            protocol: protocol.to_vec(),
            carriers,
        }
    }

    /// Whether it is offered on `carrier`.
    pub fn offered_on(&self, carrier: Carrier) -> bool {
        self.carriers.contains(&carrier)
    }
}

/// Serves one or more ALPNs. The endpoint calls `handle` once per accepted connection whose
/// negotiated ALPN is one of [`alpns`](Self::alpns), in its own task.
///
/// A handler should stop taking new work once [`Connection::draining`] fires and return when
/// what it has in flight is done: that is how a node drains connections on every carrier,
/// including single-stream ones (TCP+TLS, WebSocket) where no new stream ever signals it.
#[async_trait]
pub trait ProtocolHandler: Send + Sync + 'static {
    /// The ALPNs this handler serves and where each is offered.
    fn alpns(&self) -> Vec<Alpn>;

    /// The carriers on which this handler also takes connections whose client offered no ALPN
    /// at all (HTTP: a TLS client without ALPN speaks HTTP/1.1). At most one handler per carrier
    /// may claim them; by default none does, and such a connection is closed.
    fn without_alpn(&self) -> &'static [Carrier] {
        &[]
    }

    /// Serves one connection until it ends.
    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError>;
}
