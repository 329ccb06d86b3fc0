//! TLS configurations for servers and clients, following one rule set:
//!
//! - server identity: an RFC 7250 raw Ed25519 key (default), a self-signed certificate of that key
//!   (development), or X.509 certificate and key files (browsers, domain-facing nodes);
//! - client verification: a given fingerprint is pinned exactly; no fingerprint means CA
//!   verification of an X.509 server; a raw-key server without a fingerprint fails closed.
//!
//! TLS 1.3 only (QUIC requires it, and one version means one code path to audit).

use std::path::PathBuf;
use std::sync::Arc;

use alknet_core::fingerprint::{fingerprint_of, Fingerprint, PresentedKey};
use alknet_core::SecretKey;
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

use crate::verifier::{AnyClientKeyVerifier, PinnedServerVerifier};

/// How the server proves who it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServerIdentity {
    /// The node's Ed25519 key as an RFC 7250 raw public key; clients pin `ed25519:<hex>`.
    #[default]
    RawKey,
    /// A certificate of the node's key, signed by itself, for the given DNS names; clients pin its
    /// `SHA256:` fingerprint.
    SelfSigned {
        /// Subject alternative names (`localhost` if empty).
        names: Vec<String>,
    },
    /// A PEM certificate chain and private key from files.
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

/// The crypto provider every config uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config and the fingerprint clients should pin for it.
pub struct ServerTls {
    /// The rustls config (ALPNs set).
    pub config: ServerConfig,
    /// `ed25519:…` for raw keys, `SHA256:…` for certificates.
    pub fingerprint: String,
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

fn load_x509(
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
    let pem = read_pem_file(key)?;
    let private = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(key, &e.to_string()))?
        .ok_or_else(|| bad(key, "no PEM private key block found"))?;
    Ok((chain, private))
}

/// The server config for `identity`, advertising `alpns`.
pub fn server_config(
    key: &SecretKey,
    identity: &ServerIdentity,
    alpns: &[Vec<u8>],
) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let raw = matches!(identity, ServerIdentity::RawKey);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyClientKeyVerifier::new(raw, provider.clone())));
    let (mut config, fingerprint) = match identity {
        ServerIdentity::RawKey => (
            builder.with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
                raw_certified_key(key)?,
            ))),
            key.public().fingerprint(),
        ),
        ServerIdentity::SelfSigned { names } => {
            let (cert, private) = self_signed(key, names)?;
            let fp = fingerprint_of(PresentedKey::X509(cert.as_ref()))?.to_string();
            (builder.with_single_cert(vec![cert], private)?, fp)
        }
        ServerIdentity::X509 { cert, key } => {
            let (chain, private) = load_x509(cert, key)?;
            let fp = fingerprint_of(PresentedKey::X509(chain[0].as_ref()))?.to_string();
            (builder.with_single_cert(chain, private)?, fp)
        }
    };
    config.alpn_protocols = alpns.to_vec();
    config.max_early_data_size = 0;
    Ok(ServerTls {
        config,
        fingerprint,
    })
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

/// The client config for dialing with `key` as the client identity.
pub fn client_config(
    key: &SecretKey,
    check: &ServerCheck,
    alpns: &[Vec<u8>],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match check {
        ServerCheck::Pin(fp) => {
            let expected: Fingerprint = fp.parse()?;
            let builder = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
                    expected,
                    provider.clone(),
                )));
            match expected {
                Fingerprint::Ed25519(_) => builder.with_client_cert_resolver(Arc::new(
                    AlwaysResolvesClientRawPublicKeys::new(raw_certified_key(key)?),
                )),
                Fingerprint::Sha256(_) => {
                    let (cert, private) = self_signed(key, &[])?;
                    builder.with_client_auth_cert(vec![cert], private)?
                }
            }
        }
        ServerCheck::Ca(_) | ServerCheck::Default => {
            let roots = match check {
                ServerCheck::Ca(Some(roots)) => roots.clone(),
                _ => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            let (cert, private) = self_signed(key, &[])?;
            builder
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert], private)?
        }
    };
    config.alpn_protocols = alpns.to_vec();
    Ok(config)
}
