//! An iroh relay server (feature `relay`): the real `iroh-relay` server run as a library, so a
//! node operator self-hosts the relay with the same tool (`alknet relay`) and tests run one on
//! loopback.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use alknet_endpoint::relay_server::{RelayServer, RelayServerConfig, RelayTls};
//!
//! let relay = RelayServer::spawn(RelayServerConfig {
//!     https: "127.0.0.1:0".parse()?,
//!     http: "127.0.0.1:0".parse()?,
//!     tls: RelayTls::SelfSigned { names: vec!["localhost".into(), "127.0.0.1".into()] },
//! }).await?;
//! println!("relay at {}; trust {}", relay.url(), relay.self_signed_pem().unwrap_or("its certificate"));
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use iroh_relay::server::{CertConfig, RelayConfig, Server, ServerConfig, TlsConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::tls::{load_x509, provider, TlsError};
use crate::RelayUrl;

/// Where the relay listens and how it proves its name.
#[derive(Clone, Debug)]
pub struct RelayServerConfig {
    /// HTTPS: the relay itself (normally port 443; port 0 picks a free one).
    pub https: SocketAddr,
    /// Plain HTTP: the captive-portal probe iroh clients use (normally port 80). It must be
    /// another port than `https`.
    pub http: SocketAddr,
    /// The relay's certificate.
    pub tls: RelayTls,
}

impl RelayServerConfig {
    /// On 127.0.0.1, free ports, a self-signed certificate for `localhost` and `127.0.0.1`: a
    /// relay for tests and local development.
    pub fn loopback() -> Self {
        let localhost = std::net::Ipv4Addr::LOCALHOST;
        Self {
            https: (localhost, 0).into(),
            http: (localhost, 0).into(),
            tls: RelayTls::SelfSigned {
                names: vec!["localhost".to_string(), "127.0.0.1".to_string()],
            },
        }
    }
}

/// The relay's TLS certificate.
#[derive(Clone, Debug)]
pub enum RelayTls {
    /// A PEM certificate chain and private key from files (a real domain name).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
    /// A certificate signed by itself, made at start for `names` (development, loopback tests):
    /// nodes trust it through `iroh.relay_ca` (see [`RelayServer::self_signed_pem`]).
    SelfSigned {
        /// DNS names or IP addresses the certificate is valid for.
        names: Vec<String>,
    },
}

/// The relay could not start.
#[derive(Debug, Error)]
pub enum RelayServerError {
    /// The certificate could not be loaded or made.
    #[error("relay certificate: {0}")]
    Tls(#[from] TlsError),
    /// The server could not start (an address in use, typically).
    #[error("relay server: {0} (is another program using the port?)")]
    Spawn(String),
}

/// A running relay. Stops when [`shutdown`](Self::shutdown) or dropped.
pub struct RelayServer {
    server: Server,
    url: RelayUrl,
    https: SocketAddr,
    http: Option<SocketAddr>,
    self_signed_pem: Option<String>,
}

fn self_signed(
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>, String), TlsError> {
    let names = if names.is_empty() {
        vec!["localhost".to_string()]
    } else {
        names.to_vec()
    };
    let cert = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    Ok((cert.cert.der().clone(), key, cert.cert.pem()))
}

impl RelayServer {
    /// Loads or makes the certificate, binds both ports and starts serving.
    pub async fn spawn(config: RelayServerConfig) -> Result<Self, RelayServerError> {
        let (chain, key, self_signed_pem) = match &config.tls {
            RelayTls::Files { cert, key } => {
                let (chain, key) = load_x509(cert, key)?;
                (chain, key, None)
            }
            RelayTls::SelfSigned { names } => {
                let (cert, key, pem) = self_signed(names)?;
                (vec![cert], key, Some(pem))
            }
        };
        let server_config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::from)?;
        let mut relay = RelayConfig::new(config.http);
        relay.tls = Some(TlsConfig::new(
            config.https,
            CertConfig::Manual { server_config },
        ));
        relay.key_cache_capacity = Some(1024);
        let mut server_config = ServerConfig::default();
        server_config.relay = Some(relay);
        let server = Server::spawn(server_config)
            .await
            .map_err(|e| RelayServerError::Spawn(e.to_string()))?;
        let https = server
            .https_addr()
            .ok_or_else(|| RelayServerError::Spawn("no HTTPS address".into()))?;
        let url = format!("https://{https}")
            .parse()
            .map_err(|e| RelayServerError::Spawn(format!("relay URL: {e}")))?;
        Ok(Self {
            http: server.http_addr(),
            server,
            url,
            https,
            self_signed_pem,
        })
    }

    /// `https://<bound address>`: what nodes put in `iroh.relay` (behind a domain name, use
    /// `https://<name>` instead).
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }

    /// The bound plain-HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The self-signed certificate as PEM (`None` with certificate files): what nodes put in
    /// `iroh.relay_ca` to trust this relay.
    pub fn self_signed_pem(&self) -> Option<&str> {
        self.self_signed_pem.as_deref()
    }

    /// Stops the relay and waits for its tasks.
    pub async fn shutdown(self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(target: "alknet::relay", "relay shutdown: {e}");
        }
    }

    /// Resolves if the server stops by itself (a task failed).
    pub async fn stopped(&mut self) -> String {
        match self.server.join().await {
            Ok(Ok(())) => "the relay server stopped".into(),
            Ok(Err(e)) => format!("the relay server failed: {e}"),
            Err(e) => format!("the relay server task failed: {e}"),
        }
    }
}
