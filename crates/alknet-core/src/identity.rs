//! Identities and how connections resolve them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ApiKeyEntry, AuthConfig, ConfigStore, PeerEntry, Snapshot};
use crate::fingerprint::{constant_time_eq, token_hash, Fingerprint};

/// Who a caller is and what it may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The peer id (or `apikey:<prefix>`).
    pub id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Resource type → allowed actions.
    pub resources: HashMap<String, Vec<String>>,
}

impl Identity {
    /// Whether the identity holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What the endpoint knows about a connection before its handler runs. Handlers may resolve more
/// (per-request tokens) but never change it.
#[derive(Clone, Debug)]
pub struct AuthContext {
    /// The identity the client's key resolved to, if any.
    pub identity: Option<Identity>,
    /// The negotiated ALPN.
    pub alpn: Vec<u8>,
    /// The remote socket address.
    pub remote_addr: SocketAddr,
    /// The fingerprint of the key or certificate the client presented.
    pub tls_fingerprint: Option<String>,
    /// The bearer token the connection as a whole was authenticated with, if any (a
    /// WebSocket's), kept as its hash: `identity` came from it rather than from the TLS key.
    pub bearer: Option<Credential>,
}

impl AuthContext {
    /// The identity the connection has in the configuration `at`: resolved again from its
    /// credential when `at` holds an `auth` section, otherwise as the endpoint resolved it.
    pub fn identity_at(&self, at: &Snapshot) -> Option<Identity> {
        match (self.credential(), at.try_get::<AuthConfig>()) {
            (Some(credential), Some(auth)) => auth.resolve(&credential),
            _ => self.identity.clone(),
        }
    }

    /// What `identity` was resolved from, to resolve it again after a reload: the bearer token,
    /// else the TLS key; `None` when there is no identity (it stays so).
    pub fn credential(&self) -> Option<Credential> {
        self.identity.as_ref()?;
        self.bearer
            .clone()
            .or_else(|| self.tls_fingerprint.clone().map(Credential::Key))
    }
}

/// Resolves identities from key fingerprints and bearer tokens.
pub trait IdentityProvider: Send + Sync + 'static {
    /// The identity of a TLS client key, if it is a known, enabled peer.
    fn resolve_from_fingerprint(&self, fingerprint: &str) -> Option<Identity>;
    /// The identity of a bearer token (a peer token or an `alk_…` API key).
    fn resolve_from_token(&self, token: &[u8]) -> Option<Identity>;
    /// The identity of the enabled peer named `id`, for credentials that name a peer rather than
    /// carry its key (an OpenSSH certificate's principal). By default nobody.
    fn resolve_from_id(&self, _id: &str) -> Option<Identity> {
        None
    }
    /// When the identity of `token` stops resolving by itself (an API key's `expires_at`, Unix
    /// seconds); `None` when it does not expire or does not resolve. Requests running as the
    /// token end then.
    fn token_expires_at(&self, _token: &[u8]) -> Option<u64> {
        None
    }
    /// The identity `credential` resolves to in the configuration `at`, when `at` holds an
    /// `auth` section (so it comes from the same reload as the rest of `at`); otherwise as this
    /// provider resolves it now (a token's credential, which keeps only its hash, then resolves
    /// to nobody).
    fn resolve_at(&self, at: &Snapshot, credential: &Credential) -> Option<Identity> {
        match (at.try_get::<AuthConfig>(), credential) {
            (Some(auth), _) => auth.resolve(credential),
            (None, Credential::Key(fingerprint)) => self.resolve_from_fingerprint(fingerprint),
            (None, Credential::Peer(id)) => self.resolve_from_id(id),
            (None, Credential::Token(_)) => None,
        }
    }
}

/// What an identity was resolved from, kept so it can be resolved again against a later
/// configuration (after a reload): a key's fingerprint, a bearer token's hash (never the token
/// itself), or a peer id (an SSH certificate's principal).
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A TLS or SSH key, by fingerprint (`ed25519:…` / `SHA256:…`).
    Key(String),
    /// A bearer token: a peer token or an `alk_…` API key.
    Token(TokenKey),
    /// An enabled peer named by id.
    Peer(String),
}

/// A bearer token as kept after it was presented: its hash, and the API key prefix it claims
/// (public; `alk_<prefix>_…`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    hash: String,
    prefix: Option<Vec<u8>>,
}

impl Credential {
    /// The credential of a bearer token (its hash is kept, not the token).
    pub fn token(token: &[u8]) -> Self {
        let prefix = token
            .strip_prefix(b"alk_")
            .and_then(|rest| rest.split(|b| *b == b'_').next())
            .map(<[u8]>::to_vec);
        Credential::Token(TokenKey {
            hash: token_hash(token),
            prefix,
        })
    }
}

impl std::fmt::Debug for Credential {
    /// Names the kind only: a credential is never worth a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Key(_) => "Credential::Key",
            Credential::Token(_) => "Credential::Token",
            Credential::Peer(_) => "Credential::Peer",
        })
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

impl AuthConfig {
    /// The identity `credential` resolves to in this configuration, if any: an enabled peer
    /// holding the key, token or id, or an unexpired API key.
    pub fn resolve(&self, credential: &Credential) -> Option<Identity> {
        match credential {
            Credential::Key(fingerprint) => {
                let wanted: Fingerprint = fingerprint.parse().ok()?;
                self.peers
                    .iter()
                    .filter(|p| p.enabled)
                    .find(|p| {
                        p.fingerprints
                            .iter()
                            .any(|f| f.parse::<Fingerprint>().is_ok_and(|f| f == wanted))
                    })
                    .map(identity_of)
            }
            Credential::Peer(id) => self
                .peers
                .iter()
                .find(|p| p.enabled && p.id == *id)
                .map(identity_of),
            Credential::Token(token) => {
                if let Some(k) = self.claimed_key(token) {
                    let now = now_unix();
                    return Some(k)
                        .filter(|k| constant_time_eq(k.hash.as_bytes(), token.hash.as_bytes()))
                        .filter(|k| k.expires_at.is_none_or(|t| now < t))
                        .map(|k| Identity {
                            id: format!("apikey:{}", k.prefix),
                            scopes: k.scopes.clone(),
                            resources: k.resources.clone(),
                        });
                }
                self.peers
                    .iter()
                    .filter(|p| p.enabled)
                    .find(|p| {
                        p.token_hash
                            .as_deref()
                            .is_some_and(|h| constant_time_eq(h.as_bytes(), token.hash.as_bytes()))
                    })
                    .map(identity_of)
            }
        }
    }

    /// When what `credential` resolves to stops resolving by itself (an API key's
    /// `expires_at`, Unix seconds); `None` when it does not expire or does not resolve.
    pub fn expires_at(&self, credential: &Credential) -> Option<u64> {
        let Credential::Token(token) = credential else {
            return None;
        };
        self.claimed_key(token)
            .filter(|k| constant_time_eq(k.hash.as_bytes(), token.hash.as_bytes()))
            .and_then(|k| k.expires_at)
    }

    /// An `alk_<prefix>_…` token whose prefix an API key claims is that key's or nobody's; any
    /// other token (one that merely begins with `alk_` included) may be a peer's.
    fn claimed_key(&self, token: &TokenKey) -> Option<&ApiKeyEntry> {
        let prefix = token.prefix.as_deref()?;
        self.api_keys.iter().find(|k| k.prefix.as_bytes() == prefix)
    }
}

/// The default provider: reads the [`AuthConfig`] section on every call, so a reload applies to
/// the next resolution at once.
#[derive(Clone, Debug)]
pub struct ConfigIdentityProvider {
    store: ConfigStore<AuthConfig>,
}

impl ConfigIdentityProvider {
    /// A provider over `store`.
    pub fn new(store: ConfigStore<AuthConfig>) -> Self {
        Self { store }
    }

    /// The store it reads.
    pub fn store(&self) -> &ConfigStore<AuthConfig> {
        &self.store
    }
}

fn identity_of(peer: &PeerEntry) -> Identity {
    Identity {
        id: peer.id.clone(),
        scopes: peer.scopes.clone(),
        resources: peer.resources.clone(),
    }
}

impl IdentityProvider for ConfigIdentityProvider {
    fn resolve_from_id(&self, id: &str) -> Option<Identity> {
        self.store.load().resolve(&Credential::Peer(id.to_owned()))
    }

    fn resolve_from_fingerprint(&self, fingerprint: &str) -> Option<Identity> {
        self.store
            .load()
            .resolve(&Credential::Key(fingerprint.to_owned()))
    }

    fn token_expires_at(&self, token: &[u8]) -> Option<u64> {
        self.store.load().expires_at(&Credential::token(token))
    }

    fn resolve_from_token(&self, token: &[u8]) -> Option<Identity> {
        self.store.load().resolve(&Credential::token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyEntry;
    use crate::SecretKey;

    fn provider(config: AuthConfig) -> ConfigIdentityProvider {
        ConfigIdentityProvider::new(ConfigStore::new(config).unwrap())
    }

    #[test]
    fn disabled_peer_resolves_to_nobody() {
        let key = SecretKey::generate().public().fingerprint();
        let mut peer = PeerEntry::new("a", [key.clone()]);
        peer.enabled = false;
        let mut config = AuthConfig::default();
        config.peers.push(peer);
        assert!(provider(config).resolve_from_fingerprint(&key).is_none());
    }

    #[test]
    fn peer_token_resolves_by_hash() {
        let mut peer = PeerEntry::new("svc", []);
        peer.token_hash = Some(token_hash(b"s3cret"));
        let mut config = AuthConfig::default();
        config.peers.push(peer);
        let p = provider(config);
        assert_eq!(p.resolve_from_token(b"s3cret").unwrap().id, "svc");
        assert!(p.resolve_from_token(b"wrong").is_none());
    }

    #[test]
    fn api_keys_resolve_until_they_expire() {
        let mut config = AuthConfig::default();
        config.api_keys.push(ApiKeyEntry {
            prefix: "live".into(),
            hash: token_hash(b"alk_live_abc"),
            scopes: vec!["read".into()],
            resources: HashMap::new(),
            expires_at: None,
        });
        config.api_keys.push(ApiKeyEntry {
            prefix: "old".into(),
            hash: token_hash(b"alk_old_abc"),
            scopes: vec![],
            resources: HashMap::new(),
            expires_at: Some(1),
        });
        let p = provider(config);
        assert_eq!(
            p.resolve_from_token(b"alk_live_abc").unwrap().id,
            "apikey:live"
        );
        assert!(p.resolve_from_token(b"alk_live_abd").is_none());
        assert!(p.resolve_from_token(b"alk_old_abc").is_none());
    }

    #[test]
    fn a_peer_token_that_begins_with_alk_resolves_unless_an_api_key_claims_its_prefix() {
        let mut peer = PeerEntry::new("svc", []);
        peer.token_hash = Some(token_hash(b"alk_svc_secret"));
        let mut config = AuthConfig::default();
        config.peers.push(peer);
        assert_eq!(
            provider(config.clone())
                .resolve_from_token(b"alk_svc_secret")
                .unwrap()
                .id,
            "svc"
        );
        config.api_keys.push(ApiKeyEntry {
            prefix: "svc".into(),
            hash: token_hash(b"alk_svc_other"),
            scopes: vec![],
            resources: HashMap::new(),
            expires_at: None,
        });
        assert!(provider(config)
            .resolve_from_token(b"alk_svc_secret")
            .is_none());
    }

    #[test]
    fn a_token_credential_keeps_only_the_hash_and_resolves_like_the_token() {
        let mut peer = PeerEntry::new("svc", []);
        peer.token_hash = Some(token_hash(b"s3cret"));
        let config = AuthConfig {
            peers: vec![peer],
            ..Default::default()
        };
        let credential = Credential::token(b"s3cret");
        assert_eq!(config.resolve(&credential).unwrap().id, "svc");
        assert!(!format!("{credential:?}").contains("s3cret"));
        assert!(AuthConfig::default().resolve(&credential).is_none());
    }

    #[test]
    fn a_connection_is_resolved_again_from_its_bearer_token_before_its_key() {
        let key = SecretKey::generate().public().fingerprint();
        let mut svc = PeerEntry::new("svc", []);
        svc.token_hash = Some(token_hash(b"s3cret"));
        let config = AuthConfig {
            peers: vec![PeerEntry::new("keyed", [key.clone()]), svc],
            ..Default::default()
        };
        let at = Snapshot::default().with(config);
        let mut auth = AuthContext {
            identity: Some(Identity::default()),
            alpn: Vec::new(),
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            tls_fingerprint: Some(key),
            bearer: Some(Credential::token(b"s3cret")),
        };
        assert_eq!(auth.identity_at(&at).unwrap().id, "svc");
        auth.bearer = None;
        assert_eq!(auth.identity_at(&at).unwrap().id, "keyed");
        // Without an identity it stays without one.
        auth.identity = None;
        assert!(auth.identity_at(&at).is_none());
    }
}
