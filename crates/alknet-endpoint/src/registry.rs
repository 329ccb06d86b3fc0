//! ALPN → handler routing.

use std::collections::HashMap;
use std::sync::Arc;

use alknet_core::ProtocolHandler;
use thiserror::Error;

/// A registry that could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two handlers claim one ALPN.
    #[error("two handlers are registered for ALPN {0:?}; each ALPN needs exactly one handler")]
    DuplicateAlpn(String),
    /// A handler has an empty ALPN.
    #[error("a handler has an empty ALPN")]
    EmptyAlpn,
}

/// Which handler serves which ALPN. Only registered ALPNs are advertised in the handshake, so an
/// unknown ALPN never reaches a handler.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<Vec<u8>, Arc<dyn ProtocolHandler>>,
    order: Vec<Vec<u8>>,
}

impl HandlerRegistry {
    /// A registry from handlers; a duplicate or empty ALPN is an error.
    pub fn new(
        handlers: impl IntoIterator<Item = Arc<dyn ProtocolHandler>>,
    ) -> Result<Self, RegistryError> {
        let mut registry = Self::default();
        for handler in handlers {
            let alpn = handler.alpn().to_vec();
            if alpn.is_empty() {
                return Err(RegistryError::EmptyAlpn);
            }
            if registry.handlers.contains_key(&alpn) {
                return Err(RegistryError::DuplicateAlpn(
                    String::from_utf8_lossy(&alpn).into_owned(),
                ));
            }
            registry.order.push(alpn.clone());
            registry.handlers.insert(alpn, handler);
        }
        Ok(registry)
    }

    /// The handler for `alpn`.
    pub fn get(&self, alpn: &[u8]) -> Option<&Arc<dyn ProtocolHandler>> {
        self.handlers.get(alpn)
    }

    /// The ALPNs, in registration order (the server's preference).
    pub fn alpns(&self) -> Vec<Vec<u8>> {
        self.order.clone()
    }
}
