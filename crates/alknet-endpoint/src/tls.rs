//! TLS configurations for servers and clients, following one rule set:
//!
//! - server identity: the node's RFC 7250 raw Ed25519 key (default), optionally with a
//!   self-signed certificate of that key (development) or X.509 certificate and key files
//!   (browsers, domain-facing nodes);
//! - per ClientHello: a client that offers raw public keys for the server (every alknet peer
//!   pinning `ed25519:…`) gets the raw key; any other client gets the certificate, or fails when
//!   the node has none. rustls fixes this per config, so each carrier holds two configs
//!   ([`ServerConfigs`]) and the endpoint picks one from the ClientHello: on TCP+TLS with
//!   `tokio_rustls::LazyConfigAcceptor`, on QUIC with a crypto config that reads the ClientHello
//!   with rustls's `Acceptor` before it commits to a session. So one port serves call peers and
//!   browsers on both carriers (iroh is raw-key only);
//! - client verification: a given fingerprint is pinned exactly; no fingerprint means CA
//!   verification of an X.509 server; a raw-key server without a fingerprint fails closed.
//!
//! Every verifier checks the handshake signature. TLS 1.3 only (QUIC requires it, and one version
//! means one code path to audit).

use std::path::PathBuf;
use std::sync::Arc;

use alknet_core::fingerprint::{fingerprint_of, Fingerprint, PresentedKey};
use alknet_core::SecretKey;
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{
    AlwaysResolvesServerRawPublicKeys, CertificateType, ClientHello, ResolvesServerCert,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

use crate::verifier::{AnyClientKeyVerifier, PinnedServerVerifier};

/// How the server proves who it is to clients that do not ask for a raw key. Clients that do (they
/// pin `ed25519:…`) always get the node's raw key, on TCP+TLS and QUIC alike; the identity also
/// decides what [`ServerTls::fingerprint`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServerIdentity {
    /// The node's Ed25519 key as an RFC 7250 raw public key; clients pin `ed25519:<hex>`.
    #[default]
    RawKey,
    /// A certificate of the node's key, signed by itself, for the given DNS names; other clients pin
    /// its `SHA256:` fingerprint.
    SelfSigned {
        /// Subject alternative names (`localhost` if empty).
        names: Vec<String>,
    },
    /// A PEM certificate chain and private key from files, verified by clients against their CA
    /// roots (or pinned by its `SHA256:` fingerprint).
    X509 {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
}

/// A TLS setting that could not be built.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong and what is expected.
        reason: String,
    },
    /// A fingerprint to pin does not parse.
    #[error(transparent)]
    Fingerprint(#[from] alknet_core::FingerprintError),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    Certificate(String),
}

/// The crypto provider every config uses (ring), preferring `TLS13_AES_128_GCM_SHA256`: its key
/// schedule hashes with SHA-256, which current CPUs do in hardware (SHA-384, of ring's first
/// choice `TLS13_AES_256_GCM_SHA384`, runs in software), and AES-128 seals faster. It is TLS
/// 1.3's mandatory suite and QUIC's Initial packets use it anyway; the others stay offered.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn signing_key(
    provider: &CryptoProvider,
    key: &SecretKey,
) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der()));
    Ok(provider.key_provider.load_private_key(der)?)
}

/// The node's key as a raw-public-key "certificate" ready for TLS.
pub fn raw_certified_key(key: &SecretKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let provider = provider();
    let spki = CertificateDer::from(key.public().to_spki_der());
    Ok(Arc::new(CertifiedKey::new(
        vec![spki],
        signing_key(&provider, key)?,
    )))
}

/// A certificate of `key`, signed by itself, for `names`.
pub fn self_signed(
    key: &SecretKey,
    names: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let names = if names.is_empty() {
        vec!["localhost".to_string()]
    } else {
        names.to_vec()
    };
    let params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Certificate(e.to_string()))?;
    let cert = params
        .self_signed(&pair)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

fn read_pem_file(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn load_x509(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let bad = |path: &PathBuf, reason: &str| TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let pem = read_pem_file(cert)?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no PEM CERTIFICATE block found"));
    }
    // The same check as the node's own key file: opened once, refused if others can read it.
    let pem = alknet_core::key::read_tls_key_file(key).map_err(|e| bad(key, &e.to_string()))?;
    let private = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(key, &e.to_string()))?
        .ok_or_else(|| bad(key, "no PEM private key block found"))?;
    Ok((chain, private))
}

/// The node's server credentials: its raw key, and the certificate (self-signed or from files)
/// it presents to clients that do not ask for a raw key, when one is configured.
pub struct ServerTls {
    provider: Arc<CryptoProvider>,
    raw: Arc<CertifiedKey>,
    certificate: Option<Arc<CertifiedKey>>,
    fingerprint: String,
    key_fingerprint: String,
}

impl ServerTls {
    /// Loads (or makes) the credentials for `identity`. Certificate files are read once here.
    pub fn new(key: &SecretKey, identity: &ServerIdentity) -> Result<Self, TlsError> {
        let provider = provider();
        let certificate = match identity {
            ServerIdentity::RawKey => None,
            ServerIdentity::SelfSigned { names } => {
                let (cert, private) = self_signed(key, names)?;
                Some(CertifiedKey::from_der(vec![cert], private, &provider)?)
            }
            ServerIdentity::X509 { cert, key } => {
                let (chain, private) = load_x509(cert, key)?;
                Some(CertifiedKey::from_der(chain, private, &provider)?)
            }
        };
        let key_fingerprint = key.public().fingerprint();
        let fingerprint = match &certificate {
            Some(certified) => {
                fingerprint_of(PresentedKey::X509(certified.end_entity_cert()?))?.to_string()
            }
            None => key_fingerprint.clone(),
        };
        Ok(Self {
            raw: raw_certified_key(key)?,
            certificate: certificate.map(Arc::new),
            provider,
            fingerprint,
            key_fingerprint,
        })
    }

    /// The fingerprint of the configured identity: `ed25519:…` for a raw key, `SHA256:…` for a
    /// certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The node key's `ed25519:…` fingerprint, which raw-key clients pin whatever the identity.
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    /// The configs of one carrier, advertising `alpns`.
    pub fn configs(&self, alpns: &[Vec<u8>]) -> Result<ServerConfigs, TlsError> {
        let raw = self.config(
            true,
            Arc::new(AlwaysResolvesServerRawPublicKeys::new(self.raw.clone())),
            alpns,
        )?;
        let certificate = match &self.certificate {
            Some(certified) => Some(self.config(
                false,
                Arc::new(SingleCertAndKey::from(certified.clone())),
                alpns,
            )?),
            None => None,
        };
        Ok(ServerConfigs { raw, certificate })
    }

    fn config(
        &self,
        raw: bool,
        resolver: Arc<dyn ResolvesServerCert>,
        alpns: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyClientKeyVerifier::new(
                raw,
                self.provider.clone(),
            )))
            .with_cert_resolver(resolver);
        config.alpn_protocols = alpns.to_vec();
        // No 0-RTT: early data could be replayed, and would arrive before the client's key.
        config.max_early_data_size = 0;
        // Resumption tickets are sealed with a key of this config's own (rotated every 6 hours,
        // lost at restart) instead of kept in a table of 256 sessions: any number of peers can
        // resume, and a ticket works only on the carrier and certificate mode that issued it. A
        // resumed session carries the client key its full handshake verified (rustls restores
        // it as the peer's certificate), so identity is still resolved from a proven key.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Arc::new(config))
    }
}

/// One carrier's server configs. rustls fixes raw keys vs certificates per config, so the config
/// is chosen per ClientHello: a client that offers raw public keys for the server
/// (`server_certificate_type` contains `RawPublicKey`, as every alknet peer pinning `ed25519:…`
/// does) gets the raw-key config, with raw client keys; any other client gets the certificate
/// config, with optional X.509 client certificates, or the raw-key config (and fails) when the node
/// has no certificate. Both verify every signature.
#[derive(Clone, Debug)]
pub struct ServerConfigs {
    raw: Arc<ServerConfig>,
    certificate: Option<Arc<ServerConfig>>,
}

impl ServerConfigs {
    /// The config for a client that offered `server_cert_types` (`None`: the extension was absent,
    /// which means X.509 only).
    pub fn for_server_cert_types(
        &self,
        server_cert_types: Option<&[CertificateType]>,
    ) -> &Arc<ServerConfig> {
        match &self.certificate {
            Some(certificate) if !wants_raw_key(server_cert_types) => certificate,
            _ => &self.raw,
        }
    }

    /// The config for `hello`.
    pub fn for_client_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        self.for_server_cert_types(hello.server_cert_types())
            .clone()
    }

    /// The raw-key config.
    pub fn raw(&self) -> &Arc<ServerConfig> {
        &self.raw
    }

    /// The certificate config, when the node has a certificate.
    pub fn certificate(&self) -> Option<&Arc<ServerConfig>> {
        self.certificate.as_ref()
    }
}

/// Whether a client that offered `server_cert_types` in its ClientHello asks for the server's raw
/// public key (`None`, the extension absent, means X.509 only).
pub fn wants_raw_key(server_cert_types: Option<&[CertificateType]>) -> bool {
    server_cert_types.is_some_and(|types| types.contains(&CertificateType::RawPublicKey))
}

/// How a client checks the server.
#[derive(Clone, Debug, Default)]
pub enum ServerCheck {
    /// Pin this fingerprint exactly (`ed25519:…` or `SHA256:…`).
    Pin(String),
    /// Verify an X.509 chain against these roots (the Mozilla roots when `None`).
    Ca(Option<RootCertStore>),
    /// Nothing given: a raw-key server fails closed, an X.509 server is verified against the
    /// Mozilla roots.
    #[default]
    Default,
}

/// A client's credentials, made once per client and shared by all its configs: the raw key
/// (parsed from PKCS#8 once, not per dial) and, on first need, a self-signed certificate of the
/// key for servers that verify X.509.
#[derive(Clone)]
pub(crate) struct ClientCredentials {
    key: SecretKey,
    provider: Arc<CryptoProvider>,
    raw: Arc<CertifiedKey>,
    certificate: Arc<std::sync::OnceLock<Arc<CertifiedKey>>>,
}

impl ClientCredentials {
    pub(crate) fn new(key: &SecretKey) -> Result<Self, TlsError> {
        Ok(Self {
            key: key.clone(),
            provider: provider(),
            raw: raw_certified_key(key)?,
            certificate: Arc::default(),
        })
    }

    fn certificate(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        if let Some(certified) = self.certificate.get() {
            return Ok(certified.clone());
        }
        let (cert, private) = self_signed(&self.key, &[])?;
        let certified = Arc::new(CertifiedKey::from_der(vec![cert], private, &self.provider)?);
        // Two dials racing here make two equivalent certificates; either one is kept.
        Ok(self.certificate.get_or_init(|| certified).clone())
    }

    /// A new client config checking the server by `check`, offering `alpns`. Every call makes a
    /// config of its own, with its own verifier and session store.
    pub(crate) fn config(
        &self,
        check: &ServerCheck,
        alpns: &[Vec<u8>],
    ) -> Result<ClientConfig, TlsError> {
        let provider = self.provider.clone();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let mut config = match check {
            ServerCheck::Pin(fp) => {
                let expected: Fingerprint = fp.parse()?;
                let builder = builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
                        expected, provider,
                    )));
                match expected {
                    Fingerprint::Ed25519(_) => builder.with_client_cert_resolver(Arc::new(
                        AlwaysResolvesClientRawPublicKeys::new(self.raw.clone()),
                    )),
                    Fingerprint::Sha256(_) => builder.with_client_cert_resolver(Arc::new(
                        SingleCertAndKey::from(self.certificate()?),
                    )),
                }
            }
            ServerCheck::Ca(_) | ServerCheck::Default => {
                let roots = match check {
                    ServerCheck::Ca(Some(roots)) => roots.clone(),
                    _ => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                };
                builder
                    .with_root_certificates(roots)
                    .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                        self.certificate()?,
                    )))
            }
        };
        config.alpn_protocols = alpns.to_vec();
        Ok(config)
    }
}

/// The client config for dialing with `key` as the client identity. ([`crate::Client`] builds its
/// configs once and reuses them; this builds a fresh one.)
pub fn client_config(
    key: &SecretKey,
    check: &ServerCheck,
    alpns: &[Vec<u8>],
) -> Result<ClientConfig, TlsError> {
    ClientCredentials::new(key)?.config(check, alpns)
}
