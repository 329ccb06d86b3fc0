//! Identities and how connections resolve them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ApiKeyEntry, AuthConfig, ConfigStore, PeerEntry};
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
}

/// The default provider: reads the [`AuthConfig`] section on every call, so a reload applies to the next
/// resolution at once.
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

/// An `alk_<prefix>_…` token whose prefix an API key claims is that key's or nobody's; any other
/// token (one that merely begins with `alk_` included) may be a peer's.
fn claimed_key<'a>(config: &'a AuthConfig, token: &[u8]) -> Option<&'a ApiKeyEntry> {
    let prefix = token.strip_prefix(b"alk_")?.split(|b| *b == b'_').next()?;
    config
        .api_keys
        .iter()
        .find(|k| k.prefix.as_bytes() == prefix)
}

impl IdentityProvider for ConfigIdentityProvider {
    fn resolve_from_id(&self, id: &str) -> Option<Identity> {
        let config = self.store.load();
        config
            .peers
            .iter()
            .find(|p| p.enabled && p.id == id)
            .map(identity_of)
    }

    fn resolve_from_fingerprint(&self, fingerprint: &str) -> Option<Identity> {
        let wanted: Fingerprint = fingerprint.parse().ok()?;
        let config = self.store.load();
        config
            .peers
            .iter()
            .filter(|p| p.enabled)
            .find(|p| {
                p.fingerprints
                    .iter()
                    .any(|f| f.parse::<Fingerprint>().is_ok_and(|f| f == wanted))
            })
            .map(identity_of)
    }

    fn token_expires_at(&self, token: &[u8]) -> Option<u64> {
        let config = self.store.load();
        claimed_key(&config, token)
            .filter(|k| constant_time_eq(k.hash.as_bytes(), token_hash(token).as_bytes()))
            .and_then(|k| k.expires_at)
    }

    fn resolve_from_token(&self, token: &[u8]) -> Option<Identity> {
        let hash = token_hash(token);
        let config = self.store.load();
        if let Some(k) = claimed_key(&config, token) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(u64::MAX);
            return Some(k)
                .filter(|k| constant_time_eq(k.hash.as_bytes(), hash.as_bytes()))
                .filter(|k| k.expires_at.is_none_or(|t| now < t))
                .map(|k| Identity {
                    id: format!("apikey:{}", k.prefix),
                    scopes: k.scopes.clone(),
                    resources: k.resources.clone(),
                });
        }
        config
            .peers
            .iter()
            .filter(|p| p.enabled)
            .find(|p| {
                p.token_hash
                    .as_deref()
                    .is_some_and(|h| constant_time_eq(h.as_bytes(), hash.as_bytes()))
            })
            .map(identity_of)
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
}
