//! The endpoint-facing handler of the `alknet/call` ALPN: one [`Session`] per connection.

use std::sync::Arc;

use alknet_core::{Alpn, AuthContext, Connection, HandlerError, ProtocolHandler};
use async_trait::async_trait;

use crate::peer::Peer;
use crate::service::{CallService, ALPN};
use crate::session::Session;

/// The endpoint-facing handler for the `alknet/call` ALPN.
#[derive(Clone)]
pub struct CallHandler {
    service: Arc<CallService>,
    on_session: Option<Arc<dyn Fn(Peer) + Send + Sync>>,
}

impl CallHandler {
    /// Serves `service`.
    pub fn new(service: Arc<CallService>) -> Self {
        Self {
            service,
            on_session: None,
        }
    }

    /// Calls `hook` with each new connection's peer handle (to call connected clients back).
    pub fn on_session(mut self, hook: impl Fn(Peer) + Send + Sync + 'static) -> Self {
        self.on_session = Some(Arc::new(hook));
        self
    }
}

#[async_trait]
impl ProtocolHandler for CallHandler {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(ALPN)]
    }

    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let peer = Session::start(conn, self.service.clone(), auth);
        if let Some(hook) = &self.on_session {
            hook(peer.clone());
        }
        peer.closed().await;
        Ok(())
    }
}
