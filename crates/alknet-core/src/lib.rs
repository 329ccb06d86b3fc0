//! Core types of alknet: one Ed25519 key as a node's identity, the fingerprints peers pin,
//! the identities a connection resolves to, the hot-reloadable configuration they come from,
//! and the abstractions a protocol handler sees (`Connection`, `BiStream`, `AuthContext`).
//!
//! This crate knows no transport. Handlers written against it run over QUIC, TCP+TLS, iroh or an
//! in-memory duplex alike.
//!
//! ```
//! use alknet_core::{SecretKey, config::{AuthConfig, ConfigStore, PeerEntry}, identity::{ConfigIdentityProvider, IdentityProvider}};
//!
//! let alice = SecretKey::generate();
//! let mut config = AuthConfig::default();
//! config.peers.push(PeerEntry::new("alice", [alice.public().fingerprint()]).with_scopes(["todo:write"]));
//! let store = ConfigStore::new(config).unwrap();
//! let provider = ConfigIdentityProvider::new(store);
//! let identity = provider.resolve_from_fingerprint(&alice.public().fingerprint()).unwrap();
//! assert_eq!(identity.id, "alice");
//! ```

pub mod address;
pub mod chunks;
pub mod config;
pub mod connection;
pub mod fingerprint;
pub mod handler;
pub mod identity;
pub mod key;
pub mod log_text;

pub use chunks::{pipe, Chunks};
pub use config::{AuthConfig, ConfigError, ConfigSection, ConfigStore, LiveConfig, Snapshot};
pub use connection::{
    BiStream, BoxedStream, Connection, ConnectionError, StoppedFuture, Transport,
};
pub use fingerprint::{fingerprint_of, Fingerprint, FingerprintError, PresentedKey};
pub use handler::{Alpn, Carrier, HandlerError, ProtocolHandler};
pub use identity::{AuthContext, ConfigIdentityProvider, Credential, Identity, IdentityProvider};
pub use key::{KeyError, PublicKey, SecretKey};
