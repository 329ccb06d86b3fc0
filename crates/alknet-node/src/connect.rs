//! [`ConnectConfig`]: how to reach a node (an address with a pinned fingerprint, or an iroh
//! ticket), in the same serde shape the Node.js `connect()` options and the CLI take, and
//! [`connect`], which dials it and starts the call protocol.
//!
//! A direct dial with no carrier forced races the carriers in the spirit of RFC 8305 ("happy
//! eyeballs"): QUIC first, TCP+TLS to the same port after a short head start (or at once when
//! QUIC fails), whichever completes first wins, and what worked is remembered per address for a
//! while so the next dial starts with it. Many networks drop UDP; a peer behind one still
//! connects, a head start later, with no configuration. Every failure is a [`ConnectError`] with
//! a stable [`code`](ConnectError::code).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alknet_call::{CallService, Peer, ALPN};
use alknet_core::SecretKey;
use alknet_endpoint::{
    Client, DialError, DialOptions, IrohConfig, IrohRelays, IrohTarget, TransportKind,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::IrohSettings;
use crate::NodeError;

/// Which carrier to dial directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QUIC over UDP.
    Quic,
    /// TLS over TCP, for networks that drop UDP.
    Tcp,
}

impl From<Transport> for TransportKind {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Quic => TransportKind::Quic,
            Transport::Tcp => TransportKind::Tcp,
        }
    }
}

/// How long a connect may take unless `connect_timeout_ms` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long QUIC runs alone before TCP+TLS joins the race.
pub const HEAD_START: Duration = Duration::from_millis(250);
/// How long the carrier that worked for an address is tried first.
const REMEMBER: Duration = Duration::from_secs(600);

/// Connecting failed. [`code`](Self::code) is stable: programs switch on it, never on the message.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConnectError {
    /// The node presented another key than the one pinned.
    #[error("the node presented {presented}, not the pinned {expected}: it is another node, or its key changed (check the fingerprint you pinned)")]
    PinMismatch {
        /// The pinned fingerprint.
        expected: String,
        /// What the node presented.
        presented: String,
    },
    /// Nothing answers at the address (connection refused, ICMP unreachable).
    #[error(
        "cannot reach {address}: {reason} (is the node running, and is this its address and port?)"
    )]
    Unreachable {
        /// The address dialed.
        address: String,
        /// What the network said.
        reason: String,
    },
    /// No carrier completed within the connect timeout.
    #[error("no connection to {address} within {timeout_ms} ms (the node is down, or a firewall drops the packets; raise connectTimeoutMs if the path is slow)")]
    ConnectTimeout {
        /// The address dialed.
        address: String,
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// The TLS handshake failed for another reason than the pin (no common ALPN, raw key vs
    /// certificate mismatch, the node closed the handshake).
    #[error("TLS handshake with {address} failed: {reason}")]
    TlsFailed {
        /// The address dialed.
        address: String,
        /// What went wrong, with a hint where one helps.
        reason: String,
    },
    /// The node refused the connection (it is shutting down, or its per-IP connection limit).
    #[error("the node at {address} refused the connection: {reason} (it may be shutting down or at its per-IP connection limit; retry later or elsewhere)")]
    Refused {
        /// The address dialed.
        address: String,
        /// The node's reason.
        reason: String,
    },
    /// An option is invalid.
    #[error("{option}: {reason}")]
    InvalidOption {
        /// Which option.
        option: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl ConnectError {
    /// The stable code: `PIN_MISMATCH`, `UNREACHABLE`, `CONNECT_TIMEOUT`, `TLS_FAILED`,
    /// `REFUSED`, `INVALID_OPTION`.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::PinMismatch { .. } => "PIN_MISMATCH",
            ConnectError::Unreachable { .. } => "UNREACHABLE",
            ConnectError::ConnectTimeout { .. } => "CONNECT_TIMEOUT",
            ConnectError::TlsFailed { .. } => "TLS_FAILED",
            ConnectError::Refused { .. } => "REFUSED",
            ConnectError::InvalidOption { .. } => "INVALID_OPTION",
        }
    }

    /// How informative a failure is, when two carriers failed differently (higher wins).
    fn weight(&self) -> u8 {
        match self {
            ConnectError::PinMismatch { .. } => 5,
            ConnectError::InvalidOption { .. } => 4,
            ConnectError::Refused { .. } => 3,
            ConnectError::TlsFailed { .. } => 2,
            ConnectError::Unreachable { .. } => 1,
            ConnectError::ConnectTimeout { .. } => 0,
        }
    }

    /// Classifies a dial failure.
    pub fn from_dial(error: DialError) -> Self {
        match error {
            DialError::Tls(e) => ConnectError::InvalidOption {
                option: "fingerprint".into(),
                reason: e.to_string(),
            },
            DialError::ServerName(name) => ConnectError::InvalidOption {
                option: "server name".into(),
                reason: format!("{name:?} is not a DNS name or IP address"),
            },
            e @ DialError::ServerNameRequired => ConnectError::InvalidOption {
                option: "server name".into(),
                reason: e.to_string(),
            },
            DialError::Io { addr, reason } => ConnectError::Unreachable {
                address: addr.to_string(),
                reason,
            },
            DialError::Handshake { addr, reason } => classify_handshake(addr.to_string(), reason),
            DialError::IrohTimeout { node, timeout } => ConnectError::ConnectTimeout {
                address: node,
                timeout_ms: timeout.as_millis() as u64,
            },
            DialError::Iroh { node, reason } => classify_handshake(node, reason),
        }
    }
}

/// The pin mismatch message of `alknet_endpoint::verifier::PinMismatch` carries both
/// fingerprints; QUIC hands it over only as text.
fn classify_handshake(address: String, reason: String) -> ConnectError {
    const MARK: &str = "server key does not match the pinned fingerprint: expected ";
    if let Some(rest) = reason.split(MARK).nth(1) {
        let mut words = rest
            .split([' ', ',', ')', '"', '\\'])
            .filter(|w| !w.is_empty());
        let expected = words.next().unwrap_or_default().to_string();
        let presented = words
            .skip_while(|w| *w != "presented")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        return ConnectError::PinMismatch {
            expected,
            presented,
        };
    }
    // The node's per-IP limit names itself; a draining node refuses QUIC handshakes with
    // CONNECTION_REFUSED, which quinn shows as this phrase.
    if reason.contains("too many connections") || reason.contains("refused to accept") {
        return ConnectError::Refused { address, reason };
    }
    if reason.contains("timed out") {
        return ConnectError::ConnectTimeout {
            address,
            timeout_ms: 0,
        };
    }
    ConnectError::TlsFailed { address, reason }
}

fn remembered() -> &'static Mutex<HashMap<SocketAddr, (Transport, Instant)>> {
    static WORKED: OnceLock<Mutex<HashMap<SocketAddr, (Transport, Instant)>>> = OnceLock::new();
    WORKED.get_or_init(Mutex::default)
}

/// The carrier to try first for `address`: what worked recently, else QUIC.
fn first_choice(address: SocketAddr) -> Transport {
    let worked = remembered()
        .lock()
        .ok()
        .and_then(|m| m.get(&address).copied());
    match worked {
        Some((transport, at)) if at.elapsed() < REMEMBER => transport,
        _ => Transport::Quic,
    }
}

fn remember(address: SocketAddr, transport: Transport) {
    if let Ok(mut worked) = remembered().lock() {
        worked.insert(address, (transport, Instant::now()));
    }
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
    /// Force one carrier for direct dials; unset (default): QUIC and TCP+TLS race, QUIC with a
    /// head start.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// How long connecting may take (default 10 000 ms).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
}

/// A [`ConnectConfig`] checked and parsed: what to dial.
#[derive(Clone, Debug)]
pub enum DialTarget {
    /// An address, pinning a fingerprint.
    Direct {
        /// The node's address.
        address: SocketAddr,
        /// The pinned fingerprint.
        fingerprint: String,
        /// A forced carrier, or `None` to race them.
        over: Option<Transport>,
        /// How long connecting may take.
        timeout: Duration,
    },
    /// A node id over iroh.
    Iroh {
        /// The node and where to find it.
        target: IrohTarget,
        /// The dialer's iroh settings.
        config: Box<IrohConfig>,
    },
}

fn invalid(option: &str, reason: impl Into<String>) -> ConnectError {
    ConnectError::InvalidOption {
        option: option.into(),
        reason: reason.into(),
    }
}

impl ConnectConfig {
    /// Parses the JSON form (what the Node.js binding hands over), naming the offending key.
    pub fn from_json(json: &str) -> Result<Self, NodeError> {
        crate::config::from_json(json)
    }

    /// Checks the options and says what to dial.
    pub fn target(&self) -> Result<DialTarget, ConnectError> {
        let timeout = match self.connect_timeout_ms {
            Some(0) => return Err(invalid("connect_timeout_ms", "must be at least 1")),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        if let Some(ticket) = self.iroh.as_deref() {
            return self.iroh_target(ticket, timeout);
        }
        let (Some(address), Some(fingerprint)) = (&self.address, &self.fingerprint) else {
            return Err(invalid(
                "address",
                "connect needs address and fingerprint (or iroh: a ticket or node id)",
            ));
        };
        let address = address
            .parse()
            .map_err(|e| invalid("address", format!("{address:?} is not ip:port: {e}")))?;
        if let Err(e) = fingerprint.parse::<alknet_core::Fingerprint>() {
            return Err(invalid("fingerprint", e.to_string()));
        }
        Ok(DialTarget::Direct {
            address,
            fingerprint: fingerprint.clone(),
            over: self.transport,
            timeout,
        })
    }

    fn iroh_target(&self, ticket: &str, timeout: Duration) -> Result<DialTarget, ConnectError> {
        let mut target: IrohTarget = ticket
            .parse()
            .map_err(|e| invalid("iroh", format!("{e}")))?;
        let mut config = IrohSettings {
            relay_ca: self.relay_ca.clone(),
            ..Default::default()
        }
        .to_endpoint()
        .map_err(|e| invalid("relay_ca", e.to_string()))?;
        config.dial_timeout = timeout;
        if let Some(relay) = self.relay.as_deref() {
            match relay
                .parse::<IrohRelays>()
                .map_err(|e| invalid("relay", e.to_string()))?
            {
                IrohRelays::Custom(urls) => target.relay_url = urls.into_iter().next(),
                _ => return Err(invalid("relay", "the URL of the relay the node uses")),
            }
        }
        for addr in &self.iroh_addrs {
            let addr = addr
                .parse()
                .map_err(|e| invalid("iroh_addrs", format!("{addr:?} is not ip:port: {e}")))?;
            target.direct_addrs.push(addr);
        }
        if let Some(pinned) = self.fingerprint.as_deref() {
            if pinned != target.fingerprint() {
                return Err(invalid(
                    "fingerprint",
                    format!(
                        "{pinned} is not the iroh node id's {}; pin the node you dial",
                        target.fingerprint()
                    ),
                ));
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
) -> Result<Connected, ConnectError> {
    let (client, conn, fingerprint) = dial(key, target, ALPN).await?;
    let peer = Peer::connect(conn, service, Some(fingerprint));
    Ok(Connected { peer, client })
}

/// Dials `target` with `key` for any service (`alpn`: `alknet/call`, `alknet/ssh`, …): the
/// dialer (keep it while the connection is used), the connection, and the pinned fingerprint.
pub async fn dial(
    key: SecretKey,
    target: DialTarget,
    alpn: &[u8],
) -> Result<(Client, alknet_core::Connection, String), ConnectError> {
    let client = dialer(key, &target)?;
    match dial_with(&client, target, alpn).await {
        Ok((conn, fingerprint)) => Ok((client, conn, fingerprint)),
        Err(e) => {
            client.close();
            Err(e)
        }
    }
}

/// A dialer for `target` with `key` as its identity (with iroh when `target` is a node id);
/// dials through one dialer reuse its TLS configs and resume its TLS sessions. Must be called
/// inside a tokio runtime.
pub fn dialer(key: SecretKey, target: &DialTarget) -> Result<Client, ConnectError> {
    match target {
        DialTarget::Direct { .. } => Client::new(key),
        DialTarget::Iroh { config, .. } => Client::with_iroh(key, (**config).clone()),
    }
    .map_err(ConnectError::from_dial)
}

/// Dials `target` through `client` (made by [`dialer`] for a target of the same kind) for the
/// service `alpn`: the connection and the pinned fingerprint.
pub async fn dial_with(
    client: &Client,
    target: DialTarget,
    alpn: &[u8],
) -> Result<(alknet_core::Connection, String), ConnectError> {
    match target {
        DialTarget::Direct {
            address,
            fingerprint,
            over,
            timeout,
        } => {
            let conn = dial_direct(client, address, &fingerprint, alpn, over, timeout).await?;
            Ok((conn, fingerprint))
        }
        DialTarget::Iroh { target, .. } => match client.dial_iroh(&target, alpn).await {
            Ok(conn) => Ok((conn, target.fingerprint())),
            Err(e) => Err(ConnectError::from_dial(e)),
        },
    }
}

/// One carrier's dial, failing early with `UNREACHABLE` when QUIC's packets bounce (ICMP port
/// unreachable), which QUIC itself would only notice at its timeout.
async fn dial_one(
    client: &Client,
    address: SocketAddr,
    fingerprint: &str,
    alpn: &[u8],
    over: Transport,
) -> Result<alknet_core::Connection, ConnectError> {
    let options = DialOptions::pinned(alpn, fingerprint).over(over.into());
    let dial = async {
        client
            .dial(address, &options)
            .await
            .map_err(ConnectError::from_dial)
    };
    match over {
        Transport::Tcp => dial.await,
        Transport::Quic => tokio::select! {
            dialed = dial => dialed,
            Some(reason) = udp_bounces(address) => Err(ConnectError::Unreachable {
                address: address.to_string(),
                reason,
            }),
        },
    }
}

/// Sends one empty-payload datagram from a connected UDP socket: if the host answers ICMP port
/// unreachable, the socket reports it (a QUIC endpoint's shared, unconnected socket cannot).
/// A QUIC server drops the datagram as too short to be a packet. Resolves to `None` (never, in
/// effect) when nothing bounces.
async fn udp_bounces(address: SocketAddr) -> Option<String> {
    let local: SocketAddr = if address.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = async {
        let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
        socket.connect(address).await.ok()?;
        socket.send(&[0]).await.ok()?;
        let mut buf = [0u8; 64];
        loop {
            match socket.recv(&mut buf).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Some("nothing listens on that UDP port (ICMP port unreachable)".into())
                }
                Err(_) => return None,
                Ok(_) => continue,
            }
        }
    };
    match probe.await {
        Some(reason) => Some(reason),
        None => std::future::pending().await,
    }
}

/// A direct dial: one forced carrier, or both raced with a head start for the preferred one.
async fn dial_direct(
    client: &Client,
    address: SocketAddr,
    fingerprint: &str,
    alpn: &[u8],
    over: Option<Transport>,
    timeout: Duration,
) -> Result<alknet_core::Connection, ConnectError> {
    let timed_out = || ConnectError::ConnectTimeout {
        address: address.to_string(),
        timeout_ms: timeout.as_millis() as u64,
    };
    let attempt = async {
        if let Some(forced) = over {
            return dial_one(client, address, fingerprint, alpn, forced).await;
        }
        let first = first_choice(address);
        let second = match first {
            Transport::Quic => Transport::Tcp,
            Transport::Tcp => Transport::Quic,
        };
        let (conn, used) = race(
            dial_one(client, address, fingerprint, alpn, first),
            dial_one(client, address, fingerprint, alpn, second),
        )
        .await?;
        remember(address, if used { second } else { first });
        Ok(conn)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Err(ConnectError::ConnectTimeout { .. })) | Err(_) => Err(timed_out()),
        Ok(result) => result,
    }
}

/// Runs `first`; starts `second` after [`HEAD_START`] or as soon as `first` fails; the first
/// success wins (`true`: it was `second`). Both failing gives the more informative error.
async fn race<T>(
    first: impl std::future::Future<Output = Result<T, ConnectError>>,
    second: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<(T, bool), ConnectError> {
    tokio::pin!(first);
    let head_start = tokio::time::sleep(HEAD_START);
    tokio::pin!(head_start);
    let first_error = tokio::select! {
        r = &mut first => match r {
            Ok(v) => return Ok((v, false)),
            Err(e) => Some(e),
        },
        _ = &mut head_start => None,
    };
    tokio::pin!(second);
    match first_error {
        Some(e1) => second
            .await
            .map(|v| (v, true))
            .map_err(|e2| most_informative(e1, e2)),
        None => tokio::select! {
            r = &mut first => match r {
                Ok(v) => Ok((v, false)),
                Err(e1) => second.await.map(|v| (v, true)).map_err(|e2| most_informative(e1, e2)),
            },
            r = &mut second => match r {
                Ok(v) => Ok((v, true)),
                Err(e2) => first.await.map(|v| (v, false)).map_err(|e1| most_informative(e1, e2)),
            },
        },
    }
}

fn most_informative(a: ConnectError, b: ConnectError) -> ConnectError {
    if b.weight() > a.weight() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_mismatch_reads_both_fingerprints_from_the_handshake_error() {
        let reason = "aborted by peer: invalid peer certificate: Other(OtherError(server key does not match the pinned fingerprint: expected ed25519:aa, server presented ed25519:bb))";
        assert_eq!(
            classify_handshake("x".into(), reason.into()),
            ConnectError::PinMismatch {
                expected: "ed25519:aa".into(),
                presented: "ed25519:bb".into()
            }
        );
    }

    #[test]
    fn options_name_what_is_wrong() {
        let config = ConnectConfig {
            address: Some("127.0.0.1:1".into()),
            fingerprint: Some("ed25519:xyz".into()),
            ..Default::default()
        };
        let err = config.target().unwrap_err();
        assert_eq!(err.code(), "INVALID_OPTION");
        assert!(err.to_string().starts_with("fingerprint:"), "{err}");
    }

    #[test]
    fn errors_serialize_with_their_code() {
        let err = ConnectError::ConnectTimeout {
            address: "a".into(),
            timeout_ms: 5,
        };
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["code"], "CONNECT_TIMEOUT");
        assert_eq!(json["timeout_ms"], 5);
    }
}
