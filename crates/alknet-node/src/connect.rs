//! [`ConnectConfig`]: how to reach a node (an address with a pinned fingerprint, or an iroh
//! ticket), in the same serde shape the Node.js `connect()` options and the CLI take, and
//! [`connect`], which dials it and starts the call protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_call::{CallService, Peer, ALPN};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, IrohConfig, IrohRelays, IrohTarget, TransportKind};
use serde::{Deserialize, Serialize};

use crate::config::IrohSettings;
use crate::NodeError;

/// Which carrier to dial directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC over UDP (default).
    #[default]
    Quic,
    /// TLS over TCP, for networks that drop UDP.
    Tcp,
}

/// Where and how to dial a node.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// `ip:port` of the node (with `fingerprint`).
    #[serde(default)]
    pub address: Option<String>,
    /// The node's fingerprint (`ed25519:…` or `SHA256:…`), pinned exactly. With `iroh`, the node
    /// id is the pin; a fingerprint given too must be that node's.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Dial over iroh: a ticket (`iroh:<node id>?relay=…&addr=…`) or a bare node id.
    #[serde(default)]
    pub iroh: Option<String>,
    /// With `iroh`: the URL of the relay the node uses, if the ticket does not name it.
    #[serde(default)]
    pub relay: Option<String>,
    /// With `iroh`: PEM certificate(s) to trust for that relay.
    #[serde(default)]
    pub relay_ca: Option<String>,
    /// With `iroh`: direct UDP addresses (`ip:port`) to try, added to the ticket's.
    #[serde(default)]
    pub iroh_addrs: Vec<String>,
    /// QUIC (default) or TCP+TLS, for direct dials.
    #[serde(default)]
    pub transport: Transport,
}

/// A [`ConnectConfig`] checked and parsed: what to dial.
#[derive(Clone, Debug)]
pub enum DialTarget {
    /// An address, pinning a fingerprint, over one carrier.
    Direct {
        /// The node's address.
        address: SocketAddr,
        /// The pinned fingerprint.
        fingerprint: String,
        /// QUIC or TCP+TLS.
        over: TransportKind,
    },
    /// A node id over iroh.
    Iroh {
        /// The node and where to find it.
        target: IrohTarget,
        /// The dialer's iroh settings.
        config: Box<IrohConfig>,
    },
}

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::Config(message.into())
}

impl ConnectConfig {
    /// Parses the JSON form (what the Node.js binding hands over), naming the offending key.
    pub fn from_json(json: &str) -> Result<Self, NodeError> {
        crate::config::from_json(json)
    }

    /// Checks the options and says what to dial.
    pub fn target(&self) -> Result<DialTarget, NodeError> {
        if let Some(ticket) = self.iroh.as_deref() {
            return self.iroh_target(ticket);
        }
        let (Some(address), Some(fingerprint)) = (&self.address, &self.fingerprint) else {
            return Err(invalid(
                "connect needs address and fingerprint (or iroh: a ticket or node id)",
            ));
        };
        let address = address
            .parse()
            .map_err(|e| invalid(format!("address {address:?} is not ip:port: {e}")))?;
        Ok(DialTarget::Direct {
            address,
            fingerprint: fingerprint.clone(),
            over: match self.transport {
                Transport::Quic => TransportKind::Quic,
                Transport::Tcp => TransportKind::Tcp,
            },
        })
    }

    fn iroh_target(&self, ticket: &str) -> Result<DialTarget, NodeError> {
        let mut target: IrohTarget = ticket.parse().map_err(|e| invalid(format!("iroh: {e}")))?;
        let config = IrohSettings {
            relay_ca: self.relay_ca.clone(),
            ..Default::default()
        }
        .to_endpoint()?;
        if let Some(relay) = self.relay.as_deref() {
            match relay
                .parse::<IrohRelays>()
                .map_err(|e| invalid(format!("relay: {e}")))?
            {
                IrohRelays::Custom(urls) => target.relay_url = urls.into_iter().next(),
                _ => return Err(invalid("relay is the URL of the relay the node uses")),
            }
        }
        for addr in &self.iroh_addrs {
            let addr = addr
                .parse()
                .map_err(|e| invalid(format!("iroh address {addr:?} is not ip:port: {e}")))?;
            target.direct_addrs.push(addr);
        }
        if let Some(pinned) = self.fingerprint.as_deref() {
            if pinned != target.fingerprint() {
                return Err(invalid(format!(
                    "fingerprint {pinned} is not the iroh node id's {}; pin the node you dial",
                    target.fingerprint()
                )));
            }
        }
        Ok(DialTarget::Iroh {
            target,
            config: Box::new(config),
        })
    }
}

/// A call connection made by [`connect`]: the peer, and the dialer that owns its socket.
pub struct Connected {
    /// Call the node's operations, subscribe, publish.
    pub peer: Peer,
    /// The dialer; keep it while the peer is used (its UDP socket carries the connection) and
    /// [`close`](Client::close) it afterwards.
    pub client: Client,
}

/// Dials `target` with `key` and starts `alknet/call` on the connection; `service` holds the
/// operations this side offers the node (use [`CallService::anonymous`] with an empty registry
/// for none).
pub async fn connect(
    key: SecretKey,
    target: DialTarget,
    service: Arc<CallService>,
) -> Result<Connected, NodeError> {
    let dial_failed = |e: alknet_endpoint::DialError| NodeError::Dial(e.to_string());
    let (client, conn, fingerprint) = match target {
        DialTarget::Direct {
            address,
            fingerprint,
            over,
        } => {
            let client = Client::new(key).map_err(dial_failed)?;
            let options = DialOptions::pinned(ALPN, fingerprint.clone()).over(over);
            let conn = client.dial(address, &options).await.map_err(dial_failed)?;
            (client, conn, fingerprint)
        }
        DialTarget::Iroh { target, config } => {
            let client = Client::with_iroh(key, *config).map_err(dial_failed)?;
            let conn = match client.dial_iroh(&target, ALPN).await {
                Ok(conn) => conn,
                Err(e) => {
                    client.close();
                    return Err(dial_failed(e));
                }
            };
            (client, conn, target.fingerprint())
        }
    };
    let peer = Peer::connect(conn, service, Some(fingerprint));
    Ok(Connected { peer, client })
}
