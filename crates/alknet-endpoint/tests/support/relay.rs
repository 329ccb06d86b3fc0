//! An iroh relay server on loopback, in-process, with a self-signed certificate that the nodes
//! trust through `IrohConfig::relay_roots` (no verification is skipped).

use alknet_endpoint::relay_server::{RelayServer, RelayServerConfig};
use alknet_endpoint::{relay_roots_from_pem, IrohConfig, IrohRelays, RelayUrl};
use rustls::pki_types::CertificateDer;

/// A running relay; stops when dropped.
pub struct TestRelay {
    /// Held only to keep the server running.
    _server: RelayServer,
    /// `https://127.0.0.1:<port>`.
    pub url: RelayUrl,
    /// Its self-signed certificate, to trust.
    pub roots: Vec<CertificateDer<'static>>,
    /// The same certificate as PEM.
    #[allow(dead_code)]
    pub ca_pem: String,
}

impl TestRelay {
    /// Starts a relay on 127.0.0.1 (HTTPS relay and HTTP on free ports; no QUIC address discovery).
    pub async fn start() -> anyhow::Result<Self> {
        let server = RelayServer::spawn(RelayServerConfig::loopback()).await?;
        let ca_pem = server
            .self_signed_pem()
            .ok_or_else(|| anyhow::anyhow!("a self-signed relay has its certificate"))?
            .to_string();
        Ok(Self {
            url: server.url().clone(),
            roots: relay_roots_from_pem(&ca_pem)?,
            ca_pem,
            _server: server,
        })
    }

    /// An iroh config that registers with this relay and trusts its certificate.
    pub fn config(&self) -> IrohConfig {
        IrohConfig {
            relays: IrohRelays::Custom(vec![self.url.clone()]),
            relay_roots: self.roots.clone(),
            ..IrohConfig::default()
        }
    }

    /// An iroh config with no relay of its own that still trusts this relay's certificate (a
    /// dialer that reaches the relay only because a target names it).
    pub fn trusting(&self) -> IrohConfig {
        IrohConfig {
            relay_roots: self.roots.clone(),
            ..IrohConfig::default()
        }
    }
}
