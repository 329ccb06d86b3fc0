//! The dynamic (hot-reloadable) configuration, one section per owner: this crate owns [`AuthConfig`]
//! (peers and API keys); each handler crate brings its own section type (pub/sub rules live in
//! `alknet-call`, forwarding policy in the SSH crate) implementing [`ConfigSection`].
//!
//! Each section lives in a [`ConfigStore`] behind an [`ArcSwap`]: readers never block, and a reload
//! is validated first, so an invalid one is refused with a reason and the old configuration stays
//! in force.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fingerprint::Fingerprint;

/// Peers and API keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Known peers, found by key fingerprint or token.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// `alk_…` bearer tokens.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
}

/// A known peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Unique name of the peer; becomes `Identity::id`.
    pub id: String,
    /// Fingerprints (`ed25519:…` or `SHA256:…`) that identify this peer.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// `sha256:<hex>` of a bearer token that also identifies this peer.
    #[serde(default)]
    pub token_hash: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Resource rights: resource type → allowed actions.
    #[serde(default)]
    pub resources: HashMap<String, Vec<String>>,
    /// A disabled peer resolves to no identity.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl PeerEntry {
    /// An enabled peer with the given fingerprints and no scopes.
    pub fn new(id: impl Into<String>, fingerprints: impl IntoIterator<Item = String>) -> Self {
        Self {
            id: id.into(),
            fingerprints: fingerprints.into_iter().collect(),
            token_hash: None,
            scopes: Vec::new(),
            resources: HashMap::new(),
            enabled: true,
        }
    }

    /// The same peer with these scopes.
    pub fn with_scopes<S: Into<String>>(mut self, scopes: impl IntoIterator<Item = S>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// An `alk_<prefix>_<secret>` API key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The public part after `alk_`, unique; becomes `Identity::id` as `apikey:<prefix>`.
    pub prefix: String,
    /// `sha256:<hex>` of the whole token.
    pub hash: String,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Resource rights.
    #[serde(default)]
    pub resources: HashMap<String, Vec<String>>,
    /// Unix seconds after which the key no longer resolves.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// A configuration that was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Two entries share a unique key.
    #[error("duplicate {kind} {value:?}: each must be unique")]
    Duplicate {
        /// What kind of entry.
        kind: &'static str,
        /// The repeated value.
        value: String,
    },
    /// An entry has an invalid field.
    #[error("{entry}: {reason}")]
    Invalid {
        /// Which entry (`peer "alice"`, `api key "abc"`, `topic rule 2`).
        entry: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

fn is_sha256_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A section of the dynamic configuration: a part one crate owns, validates and reads.
pub trait ConfigSection: Clone + Default + Send + Sync + 'static {
    /// Checks the section; the first problem is returned, naming the entry.
    fn validate(&self) -> Result<(), ConfigError>;
}

impl ConfigSection for AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut fingerprints = HashSet::new();
        let mut token_hashes = HashSet::new();
        for peer in &self.peers {
            let entry = format!("peer {:?}", peer.id);
            if peer.id.is_empty() {
                return Err(ConfigError::Invalid {
                    entry,
                    reason: "id must not be empty".into(),
                });
            }
            if peer.id.starts_with("apikey:") {
                return Err(ConfigError::Invalid {
                    entry,
                    reason: "ids starting with `apikey:` name API keys; choose another id".into(),
                });
            }
            if !ids.insert(peer.id.as_str()) {
                return Err(ConfigError::Duplicate {
                    kind: "peer id",
                    value: peer.id.clone(),
                });
            }
            for fp in &peer.fingerprints {
                let parsed: Fingerprint =
                    fp.parse()
                        .map_err(|e: crate::FingerprintError| ConfigError::Invalid {
                            entry: entry.clone(),
                            reason: e.to_string(),
                        })?;
                if !fingerprints.insert(parsed) {
                    return Err(ConfigError::Duplicate {
                        kind: "fingerprint",
                        value: fp.clone(),
                    });
                }
            }
            if let Some(hash) = &peer.token_hash {
                if !is_sha256_hash(hash) {
                    return Err(ConfigError::Invalid {
                        entry,
                        reason: "token_hash must be `sha256:<64 lowercase hex>`".into(),
                    });
                }
                // Two peers with one token: the token would name whichever comes first.
                if !token_hashes.insert(hash.as_str()) {
                    return Err(ConfigError::Duplicate {
                        kind: "token_hash",
                        value: hash.clone(),
                    });
                }
            }
        }
        let mut prefixes = HashSet::new();
        for key in &self.api_keys {
            let entry = format!("api key {:?}", key.prefix);
            if key.prefix.is_empty() || !key.prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConfigError::Invalid {
                    entry,
                    reason: "prefix must be non-empty ASCII letters and digits".into(),
                });
            }
            if !prefixes.insert(key.prefix.as_str()) {
                return Err(ConfigError::Duplicate {
                    kind: "api key prefix",
                    value: key.prefix.clone(),
                });
            }
            if !is_sha256_hash(&key.hash) {
                return Err(ConfigError::Invalid {
                    entry,
                    reason: "hash must be `sha256:<64 lowercase hex>`".into(),
                });
            }
        }
        Ok(())
    }
}

/// One live section: cheap to read from any thread, replaced atomically by [`reload`](Self::reload).
/// Clones share the section.
#[derive(Debug)]
pub struct ConfigStore<T>(Arc<ArcSwap<T>>);

impl<T> Clone for ConfigStore<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: ConfigSection> Default for ConfigStore<T> {
    /// A store holding the section's default (which is valid by definition).
    fn default() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(T::default())))
    }
}

impl<T: ConfigSection> ConfigStore<T> {
    /// A store holding a validated `config`.
    pub fn new(config: T) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self(Arc::new(ArcSwap::from_pointee(config))))
    }

    /// The current section.
    pub fn load(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Validates `config` and swaps it in; on error the old section stays.
    pub fn reload(&self, config: T) -> Result<(), ConfigError> {
        config.validate()?;
        self.store_validated(config);
        Ok(())
    }

    /// Swaps in a section the caller has already validated (a node validates every section of a
    /// reload first, then swaps them all, so a reload applies entirely or not at all).
    pub fn store_validated(&self, config: T) {
        self.0.store(Arc::new(config));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn peers(peers: Vec<PeerEntry>) -> AuthConfig {
        AuthConfig {
            peers,
            ..Default::default()
        }
    }

    fn peer(id: &str) -> PeerEntry {
        PeerEntry::new(id, [SecretKey::generate().public().fingerprint()])
    }

    #[test]
    fn duplicate_peer_ids_are_refused_naming_the_id() {
        let config = peers(vec![peer("alice"), peer("alice")]);
        let err = config.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::Duplicate {
                kind: "peer id",
                value: "alice".into()
            }
        );
    }

    #[test]
    fn malformed_fingerprint_names_the_peer() {
        let config = peers(vec![PeerEntry::new("bob", ["ed25519:xyz".to_string()])]);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("peer \"bob\""), "{err}");
    }

    #[test]
    fn a_token_hash_shared_by_two_peers_and_apikey_ids_are_refused() {
        let (mut a, mut b) = (peer("a"), peer("b"));
        a.token_hash = Some(format!("sha256:{}", "0".repeat(64)));
        b.token_hash = a.token_hash.clone();
        let err = peers(vec![a, b]).validate().unwrap_err().to_string();
        assert!(err.contains("token_hash"), "{err}");
        let err = peers(vec![peer("apikey:x")])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("apikey:"), "{err}");
    }

    #[test]
    fn malformed_token_hash_is_refused() {
        let mut p = peer("carol");
        p.token_hash = Some("md5:abc".into());
        let config = peers(vec![p]);
        assert!(config.validate().is_err());
    }

    #[test]
    fn invalid_reload_keeps_the_old_config() {
        let store = ConfigStore::new(AuthConfig::default()).unwrap();
        let bad = peers(vec![peer("x"), peer("x")]);
        assert!(store.reload(bad).is_err());
        assert!(store.load().peers.is_empty());
    }

    #[test]
    fn config_parses_from_json_with_defaults() {
        let config: AuthConfig =
            serde_json::from_str(r#"{"peers":[{"id":"a","fingerprints":[],"scopes":["x"]}]}"#)
                .unwrap();
        assert!(config.peers[0].enabled);
    }
}
