//! The protocol handler trait: a service is an ALPN.

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

/// Serves one ALPN. The endpoint calls `handle` once per accepted connection, in its own task.
#[async_trait]
pub trait ProtocolHandler: Send + Sync + 'static {
    /// The ALPN this handler serves, e.g. `b"alknet/call"`.
    fn alpn(&self) -> &[u8];

    /// Serves one connection until it ends.
    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError>;
}
