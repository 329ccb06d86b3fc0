//! Certificate verifiers. Every one of them verifies the handshake signature: knowing a public
//! key without its secret never authenticates anyone.

use std::sync::Arc;

use alknet_core::fingerprint::{ed25519_from_spki, fingerprint_of, Fingerprint, PresentedKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The identity fingerprint of what a peer presented: a raw Ed25519 key, or an X.509 certificate.
/// An X.509 certificate that wraps an Ed25519 key identifies as that key (`ed25519:…`), so a peer
/// keeps one fingerprint whether it spoke raw-key or X.509 TLS; other certificates are `SHA256:…`.
pub fn identity_fingerprint(presented: &[u8]) -> Option<Fingerprint> {
    if ed25519_from_spki(presented).is_some() {
        return fingerprint_of(PresentedKey::RawPublicKey(presented)).ok();
    }
    let der = CertificateDer::from(presented);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let spki = cert.subject_public_key_info();
    match ed25519_from_spki(spki.as_ref()) {
        Some(key) => Some(Fingerprint::Ed25519(key)),
        None => fingerprint_of(PresentedKey::X509(presented)).ok(),
    }
}

/// Every fingerprint a peer entry may name `presented` by, in the order they are looked up: the
/// [`identity_fingerprint`], and for an X.509 certificate that wraps an Ed25519 key also the
/// certificate's own `SHA256:` fingerprint (what a node in a certificate mode reports as its
/// fingerprint, and presents when it dials as a client).
pub fn candidate_fingerprints(presented: &[u8]) -> Vec<Fingerprint> {
    let mut candidates: Vec<Fingerprint> = identity_fingerprint(presented).into_iter().collect();
    if ed25519_from_spki(presented).is_none() {
        if let Ok(sha) = fingerprint_of(PresentedKey::X509(presented)) {
            if !candidates.contains(&sha) {
                candidates.push(sha);
            }
        }
    }
    candidates
}

fn verify_any(
    provider: &CryptoProvider,
    raw: bool,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    let algs = &provider.signature_verification_algorithms;
    if raw {
        let spki = SubjectPublicKeyInfoDer::from(cert.as_ref());
        verify_tls13_signature_with_raw_key(message, &spki, dss, algs)
    } else {
        verify_tls13_signature(message, cert, dss, algs)
    }
}

/// Every config is TLS 1.3 only, so a TLS 1.2 signature is never expected.
fn tls12_refused() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Client side: accepts exactly the pinned server key or certificate, and verifies its signature.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedServerVerifier {
    /// Pins `expected` (`ed25519:` negotiates raw keys, `SHA256:` an X.509 certificate).
    pub fn new(expected: Fingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self { expected, provider }
    }

    fn raw(&self) -> bool {
        matches!(self.expected, Fingerprint::Ed25519(_))
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let presented = if self.raw() {
            PresentedKey::RawPublicKey(end_entity.as_ref())
        } else {
            PresentedKey::X509(end_entity.as_ref())
        };
        match fingerprint_of(presented) {
            Ok(fp) if fp == self.expected => Ok(ServerCertVerified::assertion()),
            Ok(fp) => Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.expected.to_string(),
                    presented: fp.to_string(),
                })),
            ))),
            Err(_) => Err(Error::InvalidCertificate(CertificateError::BadEncoding)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_any(&self.provider, self.raw(), message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.raw()
    }
}

/// The server presented a different key than the one pinned.
pub struct PinMismatch {
    /// The pinned fingerprint.
    pub expected: String,
    /// What the server presented.
    pub presented: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server key does not match the pinned fingerprint: expected {}, server presented {}",
            self.expected, self.presented
        )
    }
}

// rustls and quinn show the error with `{:?}`; make that the readable message too.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

/// Server side: asks every client for a key but does not require one; accepts any key (the peer
/// list, not a CA, decides who is who) and always verifies the handshake signature.
#[derive(Debug)]
pub struct AnyClientKeyVerifier {
    raw: bool,
    provider: Arc<CryptoProvider>,
}

impl AnyClientKeyVerifier {
    /// `raw`: clients present RFC 7250 raw keys (raw-key servers); otherwise X.509 certificates.
    pub fn new(raw: bool, provider: Arc<CryptoProvider>) -> Self {
        Self { raw, provider }
    }
}

impl ClientCertVerifier for AnyClientKeyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let parses = if self.raw {
            ed25519_from_spki(end_entity.as_ref()).is_some()
        } else {
            webpki::EndEntityCert::try_from(end_entity).is_ok()
        };
        if parses {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::BadEncoding))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_any(&self.provider, self.raw, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.raw
    }
}
