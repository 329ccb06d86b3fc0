//! The alknet node: one Ed25519 key, one port (QUIC, TCP+TLS on the same port number, optionally
//! iroh), and the services on it, chosen by the ALPN of each connection.
//!
//! This crate is where a node is assembled; nothing else wires endpoint, identity, configuration
//! and services together. [`NodeConfig`] is the serde shape of `alknet.toml` and of the Node.js
//! `serve()` options; [`Node::builder`] turns it (plus a key and the operations to serve) into a
//! running [`Node`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use alknet_node::{Node, NodeConfig};
//!
//! let config: NodeConfig = serde_json::from_str(r#"{ "listen": "127.0.0.1:0", "auth": { "peers": [] } }"#)?;
//! let node = Node::builder(config).key(alknet_core::SecretKey::generate()).start().await?;
//! let mut dynamic = node.dynamic();
//! dynamic.auth.peers.push(alknet_core::config::PeerEntry::new("alice", []));
//! node.reload(dynamic)?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod config;
mod connect;
mod node;
pub mod wire;

pub use alknet_http::{Decoy, Feature, HttpConfig};
pub use config::{
    DynamicConfig, IrohSettings, LimitsConfig, NodeConfig, ServicesConfig, TlsConfig,
};
pub use connect::{
    connect, ConnectConfig, ConnectError, Connected, DialTarget, Transport,
    DEFAULT_CONNECT_TIMEOUT, HEAD_START,
};
pub use node::{Node, NodeAddresses, NodeBuilder, NodeError};
