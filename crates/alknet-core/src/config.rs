//! The dynamic (hot-reloadable) configuration, one section per owner: this crate owns [`AuthConfig`]
//! (peers and API keys); each handler crate brings its own section type (pub/sub rules live in
//! `alknet-call`, forwarding policy in the SSH crate) implementing [`ConfigSection`].
//!
//! All sections live together in one [`Snapshot`] behind one [`ArcSwap`] ([`LiveConfig`]); each
//! crate reads its own through a typed [`ConfigStore`] handle. Readers never block; a reload is
//! validated first, so an invalid one is refused with a reason and the old configuration stays in
//! force, and a valid one is swapped in whole, so no reader sees half of it.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
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

/// Every section of the dynamic configuration as it was at one moment: what a reload swaps in as
/// a whole, and what one request (or one delivery, one forward) reads all its sections from, so
/// nothing ever sees one reload's `auth` with another's `pubsub` rules.
///
/// Sections are found by type (each crate asks for its own, e.g. `snapshot.get::<AuthConfig>()`),
/// so this crate needs to know none of the other crates' section types. A section the snapshot
/// does not hold reads as its default.
///
/// ```
/// use alknet_core::config::{AuthConfig, LiveConfig, PeerEntry, Snapshot};
///
/// let live = LiveConfig::default();
/// let before = live.load();
/// let auth = AuthConfig { peers: vec![PeerEntry::new("alice", [])], ..Default::default() };
/// live.replace(Snapshot::default().with(auth)).unwrap();
/// let now = live.load();
/// assert_eq!(now.get::<AuthConfig>().peers[0].id, "alice");
/// assert!(before.get::<AuthConfig>().peers.is_empty()); // what was taken before stays as it was
/// assert!(now.version() > before.version());
/// ```
#[derive(Clone, Default)]
pub struct Snapshot {
    version: u64,
    sections: HashMap<TypeId, Section>,
}

#[derive(Clone)]
struct Section {
    value: Arc<dyn Any + Send + Sync>,
    validate: fn(&(dyn Any + Send + Sync)) -> Result<(), ConfigError>,
}

fn validate_as<T: ConfigSection>(value: &(dyn Any + Send + Sync)) -> Result<(), ConfigError> {
    value.downcast_ref::<T>().map_or(Ok(()), T::validate)
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("sections", &self.sections.len())
            .finish()
    }
}

impl Snapshot {
    /// The same snapshot holding `section` (replacing a section of its type).
    pub fn with<T: ConfigSection>(mut self, section: T) -> Self {
        self.sections.insert(
            TypeId::of::<T>(),
            Section {
                value: Arc::new(section),
                validate: validate_as::<T>,
            },
        );
        self
    }

    /// The section of type `T` (its default when the snapshot holds none).
    pub fn get<T: ConfigSection>(&self) -> Arc<T> {
        self.try_get().unwrap_or_default()
    }

    /// The section of type `T`, if the snapshot holds one.
    pub fn try_get<T: ConfigSection>(&self) -> Option<Arc<T>> {
        self.sections
            .get(&TypeId::of::<T>())
            .and_then(|s| s.value.clone().downcast::<T>().ok())
    }

    /// Counts the reloads: a later snapshot of the same [`LiveConfig`] has a higher version, so
    /// what was resolved from one snapshot can be cached and checked against the next.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sections
            .values()
            .try_for_each(|s| (s.validate)(s.value.as_ref()))
    }
}

/// The live dynamic configuration: one [`Snapshot`] behind one [`ArcSwap`], replaced whole by a
/// reload. Readers never block and always get every section from the same reload. Clones share
/// it; [`section`](Self::section) hands a crate a typed handle on its own section.
#[derive(Clone, Debug, Default)]
pub struct LiveConfig(Arc<LiveInner>);

#[derive(Debug, Default)]
struct LiveInner {
    current: ArcSwap<Snapshot>,
    /// Serializes writers, so versions only grow.
    write: std::sync::Mutex<()>,
    /// The version in force, for those who act on a reload (see [`LiveConfig::changes`]).
    version: tokio::sync::watch::Sender<u64>,
}

impl LiveConfig {
    /// A live configuration holding the validated `snapshot`.
    pub fn new(snapshot: Snapshot) -> Result<Self, ConfigError> {
        let live = Self::default();
        live.replace(snapshot)?;
        Ok(live)
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.current.load_full()
    }

    /// Validates every section of `snapshot`, then swaps it in whole (as the next version); on
    /// error the old one stays.
    pub fn replace(&self, snapshot: Snapshot) -> Result<(), ConfigError> {
        snapshot.validate()?;
        self.store_validated(snapshot);
        Ok(())
    }

    /// Swaps in a snapshot whose sections the caller has already validated (a node checks them
    /// with its own error messages first).
    pub fn store_validated(&self, snapshot: Snapshot) {
        self.update(|_| snapshot.sections);
    }

    fn update(&self, sections: impl FnOnce(&Snapshot) -> HashMap<TypeId, Section>) {
        let _writing = self.0.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.0.current.load();
        let version = old.version + 1;
        let sections = sections(&old);
        self.0
            .current
            .store(Arc::new(Snapshot { version, sections }));
        self.0.version.send_replace(version);
    }

    /// Wakes on every reload (its value is the new snapshot's version): for what holds something
    /// open under an identity and must check it again when the configuration changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.version.subscribe()
    }

    /// A handle on the section of type `T` of this configuration.
    pub fn section<T: ConfigSection>(&self) -> ConfigStore<T> {
        ConfigStore {
            live: self.clone(),
            section: PhantomData,
        }
    }
}

/// One section of a [`LiveConfig`], typed: cheap to read from any thread. Clones share the
/// configuration; a store made by [`new`](Self::new) or [`default`](Default::default) is a
/// configuration of its own holding just this section.
#[derive(Debug)]
pub struct ConfigStore<T> {
    live: LiveConfig,
    section: PhantomData<fn() -> T>,
}

impl<T> Clone for ConfigStore<T> {
    fn clone(&self) -> Self {
        Self {
            live: self.live.clone(),
            section: PhantomData,
        }
    }
}

impl<T: ConfigSection> Default for ConfigStore<T> {
    /// A store holding the section's default (which is valid by definition).
    fn default() -> Self {
        LiveConfig::default().section()
    }
}

impl<T: ConfigSection> ConfigStore<T> {
    /// A store holding a validated `config`.
    pub fn new(config: T) -> Result<Self, ConfigError> {
        Ok(LiveConfig::new(Snapshot::default().with(config))?.section())
    }

    /// The current section.
    pub fn load(&self) -> Arc<T> {
        self.live.load().get()
    }

    /// The whole configuration in force now: what reads more than this section should read
    /// them all from, so that they come from the same reload.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load()
    }

    /// The configuration this section belongs to.
    pub fn live(&self) -> &LiveConfig {
        &self.live
    }

    /// Validates `config` and swaps it in (the other sections stay); on error the old section
    /// stays.
    pub fn reload(&self, config: T) -> Result<(), ConfigError> {
        config.validate()?;
        self.store_validated(config);
        Ok(())
    }

    /// Swaps in a section the caller has already validated (the other sections stay).
    pub fn store_validated(&self, config: T) {
        self.live.update(|old| old.clone().with(config).sections);
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
    fn a_replace_swaps_every_section_at_once_or_none() {
        #[derive(Clone, Copy, Default, Debug, PartialEq)]
        struct Other(u32);
        impl ConfigSection for Other {
            fn validate(&self) -> Result<(), ConfigError> {
                match self.0 {
                    13 => Err(ConfigError::Invalid {
                        entry: "other".into(),
                        reason: "unlucky".into(),
                    }),
                    _ => Ok(()),
                }
            }
        }
        let live = LiveConfig::new(Snapshot::default().with(Other(1))).unwrap();
        let (auth, other) = (live.section::<AuthConfig>(), live.section::<Other>());
        let before = live.load();
        live.replace(
            Snapshot::default()
                .with(peers(vec![peer("a")]))
                .with(Other(2)),
        )
        .unwrap();
        let now = auth.snapshot();
        assert_eq!(
            (now.get::<AuthConfig>().peers.len(), *now.get::<Other>()),
            (1, Other(2))
        );
        assert!(now.version() > before.version());
        // A snapshot taken before stays whole.
        assert_eq!(*before.get::<Other>(), Other(1));
        assert!(before.get::<AuthConfig>().peers.is_empty());
        // An invalid section refuses the whole replacement.
        let bad = Snapshot::default()
            .with(AuthConfig::default())
            .with(Other(13));
        assert!(live.replace(bad).is_err());
        assert_eq!((auth.load().peers.len(), *other.load()), (1, Other(2)));
        // A section reloaded through its store keeps the others.
        other.reload(Other(3)).unwrap();
        assert_eq!((auth.load().peers.len(), *other.load()), (1, Other(3)));
    }

    #[test]
    fn config_parses_from_json_with_defaults() {
        let config: AuthConfig =
            serde_json::from_str(r#"{"peers":[{"id":"a","fingerprints":[],"scopes":["x"]}]}"#)
                .unwrap();
        assert!(config.peers[0].enabled);
    }
}
