//! The dynamic (hot-reloadable) configuration: peers, API keys and pub/sub topic rules.
//!
//! It lives behind an [`ArcSwap`]: readers never block, and a reload is validated first, so an
//! invalid one is refused with a reason and the old configuration stays in force.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fingerprint::Fingerprint;

/// Everything that may change without a restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Who may connect and what they may do.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Who may publish and subscribe to which topics.
    #[serde(default)]
    pub pubsub: PubSubPolicy,
}

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

/// Who may publish and subscribe. By default an identity is required for both and any identified
/// caller may use any topic; the first rule whose pattern matches a concrete topic decides instead.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PubSubPolicy {
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<TopicRule>,
}

/// A rule for the topics matching `pattern` (`*` one segment, `>` one or more trailing segments).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// Topic pattern.
    pub pattern: String,
    /// Who may publish: `None` = any identity, `Some([])` = nobody, else any of these scopes.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
    /// Who may receive: same meaning as `publish`.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Callers without an identity are allowed too (where the scope lists are `None`).
    #[serde(default)]
    pub anonymous: bool,
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

/// Checks a topic or topic pattern: `/`-separated non-empty segments; `>` only last.
pub fn validate_topic_pattern(pattern: &str) -> Result<(), String> {
    let segments: Vec<&str> = pattern.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(format!("topic {pattern:?} has an empty segment"));
        }
        if *segment == ">" && i + 1 != segments.len() {
            return Err(format!(
                "topic {pattern:?}: `>` may only be the last segment"
            ));
        }
        if segment.len() > 1 && (segment.contains('*') || segment.contains('>')) {
            return Err(format!(
                "topic {pattern:?}: `*` and `>` must be whole segments"
            ));
        }
    }
    Ok(())
}

impl DynamicConfig {
    /// Checks the whole configuration; the first problem is returned, naming the entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut fingerprints = HashSet::new();
        for peer in &self.auth.peers {
            let entry = format!("peer {:?}", peer.id);
            if peer.id.is_empty() {
                return Err(ConfigError::Invalid {
                    entry,
                    reason: "id must not be empty".into(),
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
            }
        }
        let mut prefixes = HashSet::new();
        for key in &self.auth.api_keys {
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
        for (i, rule) in self.pubsub.rules.iter().enumerate() {
            validate_topic_pattern(&rule.pattern).map_err(|reason| ConfigError::Invalid {
                entry: format!("topic rule {i}"),
                reason,
            })?;
        }
        Ok(())
    }
}

/// The live configuration: cheap to read from any thread, replaced atomically by [`reload`](Self::reload).
#[derive(Clone, Debug)]
pub struct ConfigStore(Arc<ArcSwap<DynamicConfig>>);

impl ConfigStore {
    /// A store holding a validated `config`.
    pub fn new(config: DynamicConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self(Arc::new(ArcSwap::from_pointee(config))))
    }

    /// The current configuration.
    pub fn load(&self) -> Arc<DynamicConfig> {
        self.0.load_full()
    }

    /// Validates `config` and swaps it in; on error the old configuration stays.
    pub fn reload(&self, config: DynamicConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.0.store(Arc::new(config));
        tracing::info!(target: "alknet::config", "configuration reloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn peer(id: &str) -> PeerEntry {
        PeerEntry::new(id, [SecretKey::generate().public().fingerprint()])
    }

    #[test]
    fn duplicate_peer_ids_are_refused_naming_the_id() {
        let mut config = DynamicConfig::default();
        config.auth.peers = vec![peer("alice"), peer("alice")];
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
        let mut config = DynamicConfig::default();
        config.auth.peers = vec![PeerEntry::new("bob", ["ed25519:xyz".to_string()])];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("peer \"bob\""), "{err}");
    }

    #[test]
    fn malformed_token_hash_is_refused() {
        let mut config = DynamicConfig::default();
        let mut p = peer("carol");
        p.token_hash = Some("md5:abc".into());
        config.auth.peers = vec![p];
        assert!(config.validate().is_err());
    }

    #[test]
    fn invalid_topic_rule_is_refused() {
        let mut config = DynamicConfig::default();
        config.pubsub.rules.push(TopicRule {
            pattern: "a/>/b".into(),
            publish: None,
            subscribe: None,
            anonymous: false,
        });
        assert!(config.validate().is_err());
    }

    #[test]
    fn invalid_reload_keeps_the_old_config() {
        let store = ConfigStore::new(DynamicConfig::default()).unwrap();
        let mut bad = DynamicConfig::default();
        bad.auth.peers = vec![peer("x"), peer("x")];
        assert!(store.reload(bad).is_err());
        assert!(store.load().auth.peers.is_empty());
    }

    #[test]
    fn config_parses_from_json_with_defaults() {
        let config: DynamicConfig = serde_json::from_str(
            r#"{"auth":{"peers":[{"id":"a","fingerprints":[],"scopes":["x"]}]}}"#,
        )
        .unwrap();
        assert!(config.auth.peers[0].enabled);
    }
}
