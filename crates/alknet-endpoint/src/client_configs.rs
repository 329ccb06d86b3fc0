//! A client's TLS configs, built once and reused across dials: one per (how the server is
//! checked, ALPN, carrier), each with its own verifier and its own store of TLS session tickets.
//!
//! A rustls `ClientConfig` fixes its verifier, so the pinned fingerprint is part of the key a
//! config is cached by, and a dial always runs the verifier of its own pin. The same key keeps
//! session resumption safe: a resumed TLS 1.3 session is not verified again (the server proves it
//! holds the ticket's secret, which only the node verified when the ticket was issued has), and
//! every pinned dial uses the server name `alknet`, so one store shared by all pins would offer
//! node A's ticket to a dial pinning B, and A, accepting it, would pass without B's pin being
//! checked. With one store per pin, a dial can only resume a session its own pin verified.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alknet_core::fingerprint::Fingerprint;
use alknet_core::SecretKey;
use rustls::client::Resumption;

use crate::client::{TransportKind, KEEP_ALIVE};
use crate::quic_transport;
use crate::tls::{ClientCredentials, ServerCheck, TlsError};

/// Configs kept per client; when full, one is dropped for the newcomer (a client dialing more
/// distinct nodes than this rebuilds some configs and loses their tickets, nothing else).
const MAX_CONFIGS: usize = 64;

/// Tickets (TLS 1.3 sessions) a config keeps, per server name.
const SESSIONS_PER_CONFIG: usize = 32;

/// A ready config for one carrier.
#[derive(Clone)]
pub(crate) enum CarrierConfig {
    Quic(quinn::ClientConfig),
    Tcp(tokio_rustls::TlsConnector),
}

impl CarrierConfig {
    /// Wraps `config` for `transport`; fails when quinn refuses it (e.g. no TLS 1.3 suite).
    pub(crate) fn new(
        transport: TransportKind,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        Ok(match transport {
            TransportKind::Quic => {
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
                    .map_err(|e| e.to_string())?;
                let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
                // Keep-alives stop a live but idle connection reaching the idle timeout.
                quic.transport_config(Arc::new(quic_transport::transport(
                    Some(KEEP_ALIVE),
                    quic_transport::IDLE_TIMEOUT,
                )));
                CarrierConfig::Quic(quic)
            }
            TransportKind::Tcp => CarrierConfig::Tcp(tokio_rustls::TlsConnector::from(config)),
        })
    }
}

/// How the server is checked, as configs are cached by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Check {
    Pin(Fingerprint),
    /// The Mozilla roots ([`ServerCheck::Default`] or `Ca(None)`).
    WebRoots,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    check: Check,
    alpn: Vec<u8>,
    transport: TransportKind,
}

/// A config could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// quinn refused the rustls config.
    #[error("{0}")]
    Carrier(String),
}

/// One client's configs.
pub(crate) struct ClientConfigs {
    credentials: ClientCredentials,
    resumption: bool,
    cache: Mutex<HashMap<Key, CarrierConfig>>,
}

impl ClientConfigs {
    pub(crate) fn new(key: &SecretKey) -> Result<Self, TlsError> {
        Ok(Self {
            credentials: ClientCredentials::new(key)?,
            resumption: true,
            cache: Mutex::default(),
        })
    }

    /// The same credentials with no configs yet, resuming sessions or not.
    pub(crate) fn with_resumption(&self, resumption: bool) -> Self {
        Self {
            credentials: self.credentials.clone(),
            resumption,
            cache: Mutex::default(),
        }
    }

    /// The config for dialing over `transport` with `alpn`, checking the server by `check`:
    /// cached, except for CA roots given by the caller (a root store has no cheap identity to
    /// key by).
    pub(crate) fn get(
        &self,
        check: &ServerCheck,
        alpn: &[u8],
        transport: TransportKind,
    ) -> Result<CarrierConfig, ConfigError> {
        let cached_as = match check {
            ServerCheck::Pin(fp) => Check::Pin(fp.parse().map_err(TlsError::from)?),
            ServerCheck::Ca(None) | ServerCheck::Default => Check::WebRoots,
            ServerCheck::Ca(Some(_)) => return self.build(check, alpn, transport),
        };
        let key = Key {
            check: cached_as,
            alpn: alpn.to_vec(),
            transport,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = cache.get(&key) {
            return Ok(config.clone());
        }
        let config = self.build(check, alpn, transport)?;
        if cache.len() >= MAX_CONFIGS {
            if let Some(old) = cache.keys().next().cloned() {
                cache.remove(&old);
            }
        }
        cache.insert(key, config.clone());
        Ok(config)
    }

    fn build(
        &self,
        check: &ServerCheck,
        alpn: &[u8],
        transport: TransportKind,
    ) -> Result<CarrierConfig, ConfigError> {
        let mut config = self
            .credentials
            .config(check, std::slice::from_ref(&alpn.to_vec()))?;
        config.resumption = if self.resumption {
            Resumption::in_memory_sessions(SESSIONS_PER_CONFIG)
        } else {
            Resumption::disabled()
        };
        CarrierConfig::new(transport, Arc::new(config)).map_err(ConfigError::Carrier)
    }
}
