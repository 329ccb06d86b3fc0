//! `alknet/ssh` and `alknet/tunnel`: SSH on the node's port, over whatever carried the connection (QUIC, TCP+TLS,
//! iroh, or a plain TCP port for OpenSSH clients), for port forwarding only: `-L`, `-D` (SOCKS)
//! and `-R`, checked against a hot-reloadable [`ForwardingPolicy`](policy::ForwardingPolicy).
//!
//! The protocol is [russh](https://docs.rs/russh); this crate adds the node's identities (one
//! peer list for call and SSH: a client key's `ed25519:<hex>` fingerprint), the policy, the
//! limits and the log lines. [`tunnel`] is the native alternative: one QUIC stream per forwarded
//! connection, no SSH framing.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use alknet_core::{config::{AuthConfig, ConfigStore, PeerEntry}, ConfigIdentityProvider, SecretKey};
//! use alknet_ssh::{policy::ForwardingPolicy, SshServer};
//!
//! let node_key = SecretKey::generate();
//! let alice = SecretKey::generate();
//! let mut auth = AuthConfig::default();
//! auth.peers.push(PeerEntry::new("alice", [alice.public().fingerprint()]));
//! let identity = Arc::new(ConfigIdentityProvider::new(ConfigStore::new(auth)?));
//! let server = SshServer::new(&node_key, identity, ConfigStore::new(ForwardingPolicy::default())?);
//! // OpenSSH: ssh -N -D 1080 -p 2222 alice@127.0.0.1
//! let listener = server.listen("127.0.0.1:2222".parse()?).await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod keys;
pub mod outbound;
pub mod policy;
pub mod server;
pub mod tunnel;

pub use policy::ForwardingPolicy;
pub use server::{PeerInfo, SshError, SshListener, SshServer};
pub use tunnel::{TunnelClient, TunnelServer, TUNNEL_ALPN};

/// The ALPN of SSH on a node's port.
pub const ALPN: &[u8] = b"alknet/ssh";
