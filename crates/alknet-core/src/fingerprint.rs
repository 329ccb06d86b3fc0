//! Fingerprints: the strings peers pin, computed by one function on both sides of a handshake.
//!
//! - `ed25519:<64 lowercase hex>` for a raw Ed25519 public key (RFC 7250), the same string over
//!   QUIC, TCP+TLS and iroh;
//! - `SHA256:<64 lowercase hex>` of an X.509 certificate's DER.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A parsed fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fingerprint {
    /// A raw Ed25519 public key.
    Ed25519([u8; 32]),
    /// The SHA-256 digest of an X.509 certificate's DER.
    Sha256([u8; 32]),
}

/// A fingerprint string that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed fingerprint {0:?}: expected `ed25519:<64 lowercase hex>` or `SHA256:<64 hex>`")]
pub struct FingerprintError(pub String);

/// What the peer presented in the TLS handshake.
#[derive(Clone, Copy, Debug)]
pub enum PresentedKey<'a> {
    /// An RFC 7250 raw public key: a DER SubjectPublicKeyInfo.
    RawPublicKey(&'a [u8]),
    /// An X.509 end-entity certificate (DER).
    X509(&'a [u8]),
}

/// The one fingerprint function, used by servers and clients alike.
///
/// A raw key must be Ed25519; anything else is refused, because only Ed25519 keys are identities.
pub fn fingerprint_of(presented: PresentedKey<'_>) -> Result<Fingerprint, FingerprintError> {
    match presented {
        PresentedKey::RawPublicKey(spki) => ed25519_from_spki(spki)
            .map(Fingerprint::Ed25519)
            .ok_or_else(|| FingerprintError("raw public key is not Ed25519".into())),
        PresentedKey::X509(der) => Ok(Fingerprint::Sha256(Sha256::digest(der).into())),
    }
}

/// The Ed25519 key inside a DER SubjectPublicKeyInfo, if that is what it is.
pub fn ed25519_from_spki(spki: &[u8]) -> Option<[u8; 32]> {
    let key = spki.strip_prefix(&crate::key::SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// `sha256:<hex>` of a token, the form token hashes are configured in.
pub fn token_hash(token: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token)))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fingerprint::Ed25519(key) => write!(f, "ed25519:{}", hex::encode(key)),
            Fingerprint::Sha256(digest) => write!(f, "SHA256:{}", hex::encode(digest)),
        }
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError(s.to_string());
        let (kind, digits) = s.split_once(':').ok_or_else(bad)?;
        // Lowercase only for raw keys so that one key has exactly one string.
        let lower_only = kind == "ed25519";
        if digits.len() != 64
            || !digits.bytes().all(|b| {
                b.is_ascii_digit()
                    || (b'a'..=b'f').contains(&b)
                    || (!lower_only && (b'A'..=b'F').contains(&b))
            })
        {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| bad())?;
        match kind {
            "ed25519" => Ok(Fingerprint::Ed25519(bytes)),
            "SHA256" => Ok(Fingerprint::Sha256(bytes)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    #[test]
    fn raw_key_fingerprint_matches_public_key_fingerprint() {
        let key = SecretKey::generate().public();
        let spki = key.to_spki_der();
        let fp = fingerprint_of(PresentedKey::RawPublicKey(&spki)).unwrap();
        assert_eq!(fp.to_string(), key.fingerprint());
        assert_eq!(fp, key.fingerprint().parse().unwrap());
    }

    #[test]
    fn certificate_fingerprint_is_sha256_of_der() {
        let fp = fingerprint_of(PresentedKey::X509(b"abc"))
            .unwrap()
            .to_string();
        assert_eq!(
            fp,
            "SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(fp.parse::<Fingerprint>().is_ok());
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            "rsa:00",
            &format!("ed25519:{}", "A".repeat(64)),
            &format!("ed25519:{}", "a".repeat(63)),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn non_ed25519_raw_key_is_refused() {
        assert!(fingerprint_of(PresentedKey::RawPublicKey(&[0x30, 0x00])).is_err());
    }
}
