//! Dialing: one client endpoint, many connections, every one verified by the rule in [`crate::tls`].

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_core::connection::SingleStreamTransport;
use alknet_core::{Connection, SecretKey};
use rustls::pki_types::ServerName;
use thiserror::Error;

use crate::client_configs::{CarrierConfig, ClientConfigs, ConfigError};
#[cfg(feature = "iroh")]
use crate::iroh_config::{bind_iroh, error_chain, IrohConfig, Role, SharedIroh};
#[cfg(feature = "iroh")]
use crate::iroh_target::IrohTarget;
use crate::quic_transport;
use crate::tls::{ServerCheck, TlsError};
use crate::transport::QuicTransport;

/// How often an idle QUIC connection sends a keep-alive (the idle timeout is 30 s).
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Which carrier to dial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// QUIC over UDP (default).
    #[default]
    Quic,
    /// TLS over TCP, one stream.
    Tcp,
}

/// Dialing failed.
#[derive(Debug, Error)]
pub enum DialError {
    /// The TLS settings are invalid (e.g. a malformed fingerprint).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The socket could not be set up or reached.
    #[error("cannot reach {addr}: {reason}")]
    Io {
        /// The address dialed.
        addr: SocketAddr,
        /// What the OS said.
        reason: String,
    },
    /// The TLS handshake failed: wrong key, unsupported ALPN, or the server refused.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake {
        /// The address dialed.
        addr: SocketAddr,
        /// What went wrong, with a hint where one helps.
        reason: String,
    },
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// CA verification was asked for without a server name: any certificate the CA issued for
    /// the placeholder name would pass.
    #[error("verifying the server against CA roots needs its DNS name: set server_name (or pin its fingerprint)")]
    ServerNameRequired,
    /// An iroh dial did not complete within the dial timeout (`IrohConfig::dial_timeout`).
    #[error("iroh: no connection to node {node} within {timeout:?}: it is offline, not registered with the given relay, or not at the given addresses (through a relay, a wrong node id looks the same)")]
    IrohTimeout {
        /// The node dialed, as its `ed25519:` fingerprint.
        node: String,
        /// The timeout that passed.
        timeout: std::time::Duration,
    },
    /// An iroh dial failed: wrong key, unsupported ALPN, refused, or no way to reach the node.
    #[error("iroh: dial to node {node} failed: {reason}")]
    Iroh {
        /// The node dialed, as its `ed25519:` fingerprint.
        node: String,
        /// What went wrong, with a hint where one helps.
        reason: String,
    },
}

/// What to dial.
#[derive(Clone, Debug)]
pub struct DialOptions {
    /// The ALPN to ask for.
    pub alpn: Vec<u8>,
    /// How to check the server.
    pub check: ServerCheck,
    /// QUIC or TCP+TLS.
    pub transport: TransportKind,
    /// The TLS server name (SNI): required for CA verification (the certificate must be for this
    /// name); `alknet` when pinning, where it is not checked.
    pub server_name: Option<String>,
}

impl DialOptions {
    /// QUIC, pinning `fingerprint`.
    pub fn pinned(alpn: &[u8], fingerprint: impl Into<String>) -> Self {
        Self {
            alpn: alpn.to_vec(),
            check: ServerCheck::Pin(fingerprint.into()),
            transport: TransportKind::Quic,
            server_name: None,
        }
    }

    /// The same options over another transport.
    pub fn over(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }
}

/// A dialer holding the client's key and one UDP socket for all its QUIC connections (and, with
/// feature `iroh`, one iroh endpoint, bound on the first iroh dial).
///
/// Its TLS configs are built once per (pinned fingerprint or CA check, ALPN, carrier) and reused
/// by later dials, each with the verifier of its own pin and its own store of session tickets, so
/// a later dial to a node this client already verified under the same pin resumes the TLS session
/// (no signatures; the node proves it holds the session's secret instead) unless resumption is
/// turned off ([`set_resumption`](Self::set_resumption)). Clones share the configs.
#[derive(Clone)]
pub struct Client {
    key: SecretKey,
    tls: Arc<ClientConfigs>,
    quic: quinn::Endpoint,
    #[cfg(feature = "iroh")]
    iroh: Arc<IrohDialer>,
}

#[cfg(feature = "iroh")]
struct IrohDialer {
    config: IrohConfig,
    endpoint: SharedIroh,
}

fn hint(reason: String, alpn: &[u8]) -> String {
    let alpn = String::from_utf8_lossy(alpn);
    if reason.contains("NoApplicationProtocol")
        || reason.contains("no_application_protocol")
        || reason.contains("error 120")
    {
        format!("{reason} (the server does not serve ALPN {alpn:?})")
    } else if reason.contains("UnknownIssuer") {
        format!("{reason} (the node reached presented a different key than the node id dialed)")
    } else if reason.contains("IncorrectCertificateTypeExtension") {
        format!("{reason} (the server and client disagree on raw keys vs certificates: pin an `ed25519:` fingerprint for a raw-key server, a `SHA256:` one for a certificate)")
    } else {
        reason
    }
}

impl Client {
    /// A client with `key` as its identity. Must be called inside a tokio runtime.
    pub fn new(key: SecretKey) -> Result<Self, DialError> {
        let addr: SocketAddr = ([0, 0, 0, 0], 0).into();
        let io = |e: std::io::Error| DialError::Io {
            addr,
            reason: e.to_string(),
        };
        let socket = std::net::UdpSocket::bind(addr).map_err(io)?;
        quic_transport::size_socket_buffers(&socket);
        let mut config = quinn::EndpointConfig::default();
        quic_transport::accept_mtu_ceiling(&mut config);
        let quic = quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))
            .map_err(io)?;
        Ok(Self {
            tls: Arc::new(ClientConfigs::new(&key)?),
            key,
            quic,
            #[cfg(feature = "iroh")]
            iroh: Arc::new(IrohDialer {
                config: IrohConfig::default(),
                endpoint: SharedIroh::default(),
            }),
        })
    }

    /// A client whose iroh dials use `iroh` (relays, bind address, dial timeout). [`new`](Self::new)
    /// uses [`IrohConfig::default`]: no relay of its own, 10 s dial timeout.
    #[cfg(feature = "iroh")]
    pub fn with_iroh(key: SecretKey, iroh: IrohConfig) -> Result<Self, DialError> {
        let mut client = Self::new(key)?;
        client.iroh = Arc::new(IrohDialer {
            config: iroh,
            endpoint: SharedIroh::default(),
        });
        Ok(client)
    }

    /// Dials an iroh node by node id, through its relay and/or at its direct addresses, asking for
    /// `alpn`. The node must prove it holds the key of `target.node_id` (the same pin as an
    /// `ed25519:` fingerprint over QUIC); the dial fails after `IrohConfig::dial_timeout`.
    #[cfg(feature = "iroh")]
    pub async fn dial_iroh(
        &self,
        target: &IrohTarget,
        alpn: &[u8],
    ) -> Result<Connection, DialError> {
        let node = target.fingerprint();
        let failed = |reason: String| DialError::Iroh {
            node: node.clone(),
            reason: hint(reason, alpn),
        };
        let addr = target.to_endpoint_addr().map_err(|e| failed(e.reason))?;
        let timeout = self.iroh.config.dial_timeout;
        let attempt = async {
            let endpoint = self
                .iroh
                .endpoint
                .get_or_try_init(|| {
                    bind_iroh(
                        &self.key,
                        &self.iroh.config,
                        Role::Dial,
                        Vec::new(),
                        0,
                        None,
                    )
                })
                .await
                .map_err(|e| failed(e.to_string()))?;
            endpoint
                .connect(addr, alpn)
                .await
                .map_err(|e| failed(error_chain(&e)))
        };
        let conn = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            DialError::IrohTimeout {
                node: node.clone(),
                timeout,
            }
        })??;
        // iroh's verifier already refuses any other key; checked again so that this function's
        // promise does not rest on a dependency's internals.
        if conn.remote_id().as_bytes() != &target.node_id.to_bytes() {
            conn.close(0u32.into(), b"wrong node");
            return Err(failed(format!(
                "the node presented key {}",
                conn.remote_id()
            )));
        }
        let remote = target
            .direct_addrs
            .first()
            .copied()
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        Ok(Connection::new(
            crate::transport::IrohTransport::new(conn),
            alpn,
            remote,
        ))
    }

    /// The client's key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Whether later dials may resume a TLS session with a node this client verified before under
    /// the same pin (default on; 0-RTT data is never sent). Off, every dial is a full handshake
    /// that checks the node's signature afresh. Affects this handle only (its clones made from
    /// now on follow it); configs and tickets gathered so far are dropped.
    pub fn set_resumption(&mut self, on: bool) {
        self.tls = Arc::new(self.tls.with_resumption(on));
    }

    /// Dials `addr`.
    pub async fn dial(
        &self,
        addr: SocketAddr,
        options: &DialOptions,
    ) -> Result<Connection, DialError> {
        let pinned = matches!(options.check, ServerCheck::Pin(_));
        let name = match (&options.server_name, pinned) {
            (Some(name), _) => name.as_str(),
            (None, true) => "alknet",
            (None, false) => return Err(DialError::ServerNameRequired),
        };
        let config = self
            .tls
            .get(&options.check, &options.alpn, options.transport)
            .map_err(|e| match e {
                ConfigError::Tls(e) => DialError::Tls(e),
                ConfigError::Carrier(reason) => DialError::Handshake {
                    addr,
                    reason: hint(reason, &options.alpn),
                },
            })?;
        self.connect(addr, config, name, &options.alpn).await
    }

    /// Dials with a ready-made rustls config (tests and special cases; the config decides how the
    /// server is verified).
    pub async fn dial_with_config(
        &self,
        addr: SocketAddr,
        transport: TransportKind,
        config: rustls::ClientConfig,
        server_name: &str,
    ) -> Result<Connection, DialError> {
        let alpn = config.alpn_protocols.first().cloned().unwrap_or_default();
        let config =
            CarrierConfig::new(transport, Arc::new(config)).map_err(|e| DialError::Handshake {
                addr,
                reason: hint(e, &alpn),
            })?;
        self.connect(addr, config, server_name, &alpn).await
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        config: CarrierConfig,
        server_name: &str,
        alpn: &[u8],
    ) -> Result<Connection, DialError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| DialError::ServerName(server_name.to_string()))?;
        let handshake = |reason: String| DialError::Handshake {
            addr,
            reason: hint(reason, alpn),
        };
        match config {
            CarrierConfig::Quic(config) => {
                let connecting = self
                    .quic
                    .connect_with(config, addr, server_name)
                    .map_err(|e| handshake(e.to_string()))?;
                let conn = connecting.await.map_err(|e| handshake(e.to_string()))?;
                Ok(Connection::new(QuicTransport::new(conn), alpn, addr))
            }
            CarrierConfig::Tcp(connector) => {
                let tcp =
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| DialError::Io {
                            addr,
                            reason: e.to_string(),
                        })?;
                crate::tcp::configure(&tcp);
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| handshake(e.to_string()))?;
                Ok(Connection::new(SingleStreamTransport::new(tls), alpn, addr))
            }
        }
    }

    /// Closes the client's QUIC socket and every connection on it (and its iroh endpoint, in the
    /// background).
    pub fn close(&self) {
        self.quic.close(0u32.into(), b"client closed");
        #[cfg(feature = "iroh")]
        if let (Some(endpoint), Ok(runtime)) = (
            self.iroh.endpoint.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) {
            runtime.spawn(async move { endpoint.close().await });
        }
    }

    /// Closes like [`close`](Self::close), then waits until the peers were told (QUIC's
    /// CONNECTION_CLOSE sent, at most `limit`): for a process about to exit, so the node learns
    /// at once rather than at its idle timeout.
    pub async fn close_and_wait(&self, limit: std::time::Duration) {
        self.close();
        let _ = tokio::time::timeout(limit, self.quic.wait_idle()).await;
        #[cfg(feature = "iroh")]
        if let Some(endpoint) = self.iroh.endpoint.get().cloned() {
            let _ = tokio::time::timeout(limit, endpoint.close()).await;
        }
    }
}
