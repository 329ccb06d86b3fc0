//! An iroh relay server on loopback, in-process, with a self-signed certificate that the nodes
//! trust through `IrohConfig::relay_roots` (no verification is skipped).

use std::net::Ipv4Addr;
use std::sync::Arc;

use alknet_endpoint::{IrohConfig, IrohRelays, RelayUrl};
use iroh_relay::server::{CertConfig, RelayConfig, Server, ServerConfig, TlsConfig};
use rustls::pki_types::CertificateDer;

/// A certificate for `localhost` and `127.0.0.1`, signed by itself, and a server config using it.
fn self_signed() -> anyhow::Result<(Vec<CertificateDer<'static>>, String, rustls::ServerConfig)> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)?;
    Ok((vec![der], cert.cert.pem(), config))
}

/// A running relay; stops when dropped.
pub struct TestRelay {
    /// Held only to keep the server running.
    _server: Server,
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
        let (roots, ca_pem, server_config) = self_signed()?;
        let mut relay = RelayConfig::new((Ipv4Addr::LOCALHOST, 0));
        relay.tls = Some(TlsConfig::new(
            (Ipv4Addr::LOCALHOST, 0),
            CertConfig::Manual { server_config },
        ));
        relay.key_cache_capacity = Some(1024);
        let mut config = ServerConfig::default();
        config.relay = Some(relay);
        let server = Server::spawn(config).await?;
        let https = server
            .https_addr()
            .ok_or_else(|| anyhow::anyhow!("relay has no HTTPS address"))?;
        let url = format!("https://{https}").parse()?;
        Ok(Self {
            _server: server,
            url,
            roots,
            ca_pem,
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
