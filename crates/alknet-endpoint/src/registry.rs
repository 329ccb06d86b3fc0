//! ALPN → handler routing.

use std::collections::HashMap;
use std::sync::Arc;

use alknet_core::{Alpn, Carrier, ProtocolHandler};
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
    /// Two handlers claim the connections without ALPN on one carrier.
    #[error("two handlers take connections without ALPN on {0}; at most one may")]
    DuplicateWithoutAlpn(&'static str),
    /// A handler offers an ALPN on no carrier at all.
    #[error("ALPN {0:?} is offered on no carrier")]
    NoCarrier(String),
}

struct Route {
    alpn: Alpn,
    handler: Arc<dyn ProtocolHandler>,
}

/// Which handler serves which ALPN, and on which carrier each ALPN is offered. A carrier only
/// advertises the ALPNs it can serve, so an unknown ALPN never reaches a handler.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    routes: Arc<Vec<Route>>,
    by_alpn: HashMap<Vec<u8>, usize>,
    /// Per carrier, the handler taking clients that offered no ALPN.
    without_alpn: Vec<(Carrier, Arc<dyn ProtocolHandler>)>,
}

fn shown(protocol: &[u8]) -> String {
    String::from_utf8_lossy(protocol).into_owned()
}

impl HandlerRegistry {
    /// A registry from handlers; a duplicate or empty ALPN is an error.
    pub fn new(
        handlers: impl IntoIterator<Item = Arc<dyn ProtocolHandler>>,
    ) -> Result<Self, RegistryError> {
        let mut routes = Vec::new();
        let mut by_alpn = HashMap::new();
        let mut without_alpn: Vec<(Carrier, Arc<dyn ProtocolHandler>)> = Vec::new();
        for handler in handlers {
            for &carrier in handler.without_alpn() {
                if without_alpn.iter().any(|(c, _)| *c == carrier) {
                    return Err(RegistryError::DuplicateWithoutAlpn(carrier.as_str()));
                }
                without_alpn.push((carrier, handler.clone()));
            }
            for alpn in handler.alpns() {
                if alpn.protocol.is_empty() {
                    return Err(RegistryError::EmptyAlpn);
                }
                if alpn.carriers.is_empty() {
                    return Err(RegistryError::NoCarrier(shown(&alpn.protocol)));
                }
                if by_alpn.contains_key(&alpn.protocol) {
                    return Err(RegistryError::DuplicateAlpn(shown(&alpn.protocol)));
                }
                by_alpn.insert(alpn.protocol.clone(), routes.len());
                routes.push(Route {
                    alpn,
                    handler: handler.clone(),
                });
            }
        }
        Ok(Self {
            routes: Arc::new(routes),
            by_alpn,
            without_alpn,
        })
    }

    /// The handler for `alpn` on `carrier` (`None` if it is not offered there). An empty `alpn`
    /// (the client offered none) goes to the handler that takes those on `carrier`, if any.
    pub fn get(&self, alpn: &[u8], carrier: Carrier) -> Option<&Arc<dyn ProtocolHandler>> {
        if alpn.is_empty() {
            return self
                .without_alpn
                .iter()
                .find(|(c, _)| *c == carrier)
                .map(|(_, h)| h);
        }
        let route = &self.routes[*self.by_alpn.get(alpn)?];
        route.alpn.offered_on(carrier).then_some(&route.handler)
    }

    /// The ALPNs offered on `carrier`, in registration order (the server's preference).
    pub fn alpns(&self, carrier: Carrier) -> Vec<Vec<u8>> {
        self.routes
            .iter()
            .filter(|r| r.alpn.offered_on(carrier))
            .map(|r| r.alpn.protocol.clone())
            .collect()
    }

    /// Whether no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_core::{AuthContext, Connection, HandlerError};
    use async_trait::async_trait;

    /// Serves the given ALPNs and does nothing.
    struct Serves(Vec<Alpn>);

    #[async_trait]
    impl ProtocolHandler for Serves {
        fn alpns(&self) -> Vec<Alpn> {
            self.0.clone()
        }
        async fn handle(&self, _conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    fn handler(alpns: Vec<Alpn>) -> Arc<dyn ProtocolHandler> {
        Arc::new(Serves(alpns))
    }

    #[test]
    fn one_alpn_claimed_by_two_handlers_is_refused() {
        let err = HandlerRegistry::new([
            handler(vec![Alpn::everywhere(b"same")]),
            handler(vec![Alpn::over(b"same", &[Carrier::Tcp])]),
        ])
        .err();
        assert_eq!(err, Some(RegistryError::DuplicateAlpn("same".into())));
    }

    #[test]
    fn an_alpn_offered_on_no_carrier_is_refused() {
        let err = HandlerRegistry::new([handler(vec![Alpn::over(b"nowhere", &[])])]).err();
        assert_eq!(err, Some(RegistryError::NoCarrier("nowhere".into())));
    }

    #[test]
    fn an_empty_alpn_is_refused() {
        let err = HandlerRegistry::new([handler(vec![Alpn::everywhere(b"")])]).err();
        assert_eq!(err, Some(RegistryError::EmptyAlpn));
    }

    #[test]
    fn one_handler_with_two_alpns_receives_both() {
        let http = handler(vec![
            Alpn::over(b"h2", &[Carrier::Tcp]),
            Alpn::over(b"http/1.1", &[Carrier::Tcp]),
        ]);
        let registry = HandlerRegistry::new([http.clone()]).unwrap();
        for alpn in [&b"h2"[..], b"http/1.1"] {
            let routed = registry.get(alpn, Carrier::Tcp).unwrap();
            assert!(Arc::ptr_eq(routed, &http), "{alpn:?}");
        }
    }

    #[test]
    fn each_carrier_lists_only_the_alpns_offered_on_it() {
        let registry = HandlerRegistry::new([
            handler(vec![Alpn::over(b"h2", &[Carrier::Tcp])]),
            handler(vec![Alpn::everywhere(b"alknet/call")]),
        ])
        .unwrap();
        assert_eq!(
            registry.alpns(Carrier::Tcp),
            vec![b"h2".to_vec(), b"alknet/call".to_vec()]
        );
        assert_eq!(registry.alpns(Carrier::Quic), vec![b"alknet/call".to_vec()]);
        assert!(registry.get(b"h2", Carrier::Quic).is_none());
    }

    /// Serves `h2` and takes clients without ALPN on TCP.
    struct TakesNoAlpn;

    #[async_trait]
    impl ProtocolHandler for TakesNoAlpn {
        fn alpns(&self) -> Vec<Alpn> {
            vec![Alpn::over(b"h2", &[Carrier::Tcp])]
        }
        fn without_alpn(&self) -> &'static [Carrier] {
            &[Carrier::Tcp]
        }
        async fn handle(&self, _conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    #[test]
    fn a_client_without_alpn_goes_to_the_handler_that_takes_it_on_that_carrier_only() {
        let call = handler(vec![Alpn::everywhere(b"alknet/call")]);
        let registry = HandlerRegistry::new([call.clone()]).unwrap();
        assert!(
            registry.get(b"", Carrier::Tcp).is_none(),
            "nobody claims it: closed"
        );

        let http: Arc<dyn ProtocolHandler> = Arc::new(TakesNoAlpn);
        let registry = HandlerRegistry::new([call, http.clone()]).unwrap();
        assert!(Arc::ptr_eq(registry.get(b"", Carrier::Tcp).unwrap(), &http));
        assert!(registry.get(b"", Carrier::Quic).is_none());

        let err = HandlerRegistry::new([
            http.clone(),
            Arc::new(TakesNoAlpn) as Arc<dyn ProtocolHandler>,
        ])
        .err();
        assert_eq!(err, Some(RegistryError::DuplicateWithoutAlpn("tcp")));
    }
}
