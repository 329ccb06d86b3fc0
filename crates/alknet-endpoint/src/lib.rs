//! The alknet endpoint: one port, QUIC over UDP and TCP+TLS on the same port number, Ed25519
//! raw-key TLS, and the ALPN negotiated in the handshake choosing the [`ProtocolHandler`].
//!
//! - TLS identity per ClientHello: peers that ask for a raw key get the node's key, everyone else
//!   the configured certificate (self-signed or X.509 files), so call peers and browsers share
//!   one port (see [`tls`]). [`Endpoint::fingerprint`] reports the configured identity,
//!   [`Endpoint::key_fingerprint`] the `ed25519:` key peers pin.
//! - Each carrier (QUIC, TCP+TLS, iroh) advertises only the ALPNs registered for it
//!   ([`alknet_core::Alpn`]); a client asking for another fails the handshake.
//! - Shutdown stops accepting, signals [`alknet_core::Connection::draining`] to every handler and
//!   refuses new QUIC streams, waits for handlers up to the drain timeout, then closes the rest.
//!
//! ```no_run
//! # async fn run(handler: std::sync::Arc<dyn alknet_core::ProtocolHandler>) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use alknet_core::{SecretKey, ConfigStore, ConfigIdentityProvider, AuthConfig};
//! use alknet_endpoint::{Endpoint, EndpointConfig, HandlerRegistry, Client, DialOptions};
//!
//! let key = SecretKey::generate();
//! let registry = HandlerRegistry::new([handler])?;
//! let identity = Arc::new(ConfigIdentityProvider::new(ConfigStore::new(AuthConfig::default())?));
//! let node = Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse()?, key), registry, identity).await?;
//!
//! let client = Client::new(SecretKey::generate())?;
//! let conn = client.dial(node.local_addr(), &DialOptions::pinned(b"echo", node.fingerprint())).await?;
//! let stream = conn.open_bi().await?;
//! # Ok(()) }
//! ```
//!
//! [`ProtocolHandler`]: alknet_core::ProtocolHandler

mod client;
mod client_configs;
mod connection_ids;
#[cfg(feature = "iroh")]
mod iroh_config;
#[cfg(feature = "iroh")]
mod iroh_target;
mod limits;
mod quic_tls;
pub mod quic_transport;
mod registry;
#[cfg(feature = "relay")]
pub mod relay_server;
mod server;
pub mod tcp;
pub mod tls;
mod transport;
pub mod verifier;

/// iroh's relay URL type (feature `iroh`), used in [`IrohRelays`] and [`IrohTarget`].
#[cfg(feature = "iroh")]
pub use ::iroh::RelayUrl;
pub use client::{Client, DialError, DialOptions, TransportKind};
#[cfg(feature = "iroh")]
pub use iroh_config::{relay_roots_from_pem, IrohConfig, IrohError, IrohRelays};
#[cfg(feature = "iroh")]
pub use iroh_target::{IrohTarget, IrohTargetError, TICKET_SCHEME};
pub use limits::Limits;
pub use registry::{HandlerRegistry, RegistryError};
pub use server::{
    Endpoint, EndpointConfig, EndpointError, EndpointLoad, ShutdownReport, CLOSE_HANDLER_ERROR,
    CLOSE_LIMIT, CLOSE_SHUTDOWN,
};
pub use tls::{ServerCheck, ServerIdentity};
#[cfg(feature = "iroh")]
pub use transport::{IrohStream, IrohTransport};
pub use transport::{QuicStream, QuicTransport};
