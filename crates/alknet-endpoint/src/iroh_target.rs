//! Where an iroh node is: its node id, and optionally a relay and direct addresses, as a struct and
//! as a one-line ticket to paste.
//!
//! Ticket format (a URI; the node id is the node's Ed25519 public key in lowercase hex, the same
//! 64 digits as its `ed25519:` fingerprint):
//!
//! ```text
//! iroh:<node id>[?relay=<relay URL>][&addr=<ip:port>]...
//! iroh:4c1f…e9a0?relay=https://relay.example.com/&addr=192.0.2.7:4433&addr=[2001:db8::7]:4433
//! ```
//!
//! Values are percent-encoded where needed (`%`, `&`, `#`, `+`, spaces and other bytes outside
//! `A-Za-z0-9-._~:/?@[]!$'()*,;=`). A bare node id (no `iroh:`) also parses, as a target with no
//! relay and no addresses.
//!
//! ```
//! # #[cfg(feature = "iroh")] {
//! use alknet_endpoint::IrohTarget;
//! let key = alknet_core::SecretKey::generate().public();
//! let target = IrohTarget::new(key).with_direct_addr("192.0.2.7:4433".parse().unwrap());
//! let ticket = target.to_string();
//! assert_eq!(ticket.parse::<IrohTarget>().unwrap(), target);
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use ::iroh::{EndpointAddr, RelayUrl, TransportAddr};
use alknet_core::PublicKey;
use thiserror::Error;

/// The scheme of a ticket.
pub const TICKET_SCHEME: &str = "iroh:";

/// An iroh node to dial: who it is (its node id, i.e. its public key) and where to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrohTarget {
    /// The node's public key; the dial fails unless the node proves it holds the secret.
    pub node_id: PublicKey,
    /// A relay the node is registered with.
    pub relay_url: Option<RelayUrl>,
    /// UDP addresses where the node may be reached directly.
    pub direct_addrs: Vec<SocketAddr>,
}

/// A ticket or node id that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid iroh ticket: {reason}; expected `iroh:<64 hex node id>[?relay=<url>][&addr=<ip:port>]...` or a bare node id")]
pub struct IrohTargetError {
    /// What is wrong with it.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> IrohTargetError {
    IrohTargetError {
        reason: reason.into(),
    }
}

impl IrohTarget {
    /// A target known only by node id (dialable with discovery, or after adding a way to reach it).
    pub fn new(node_id: PublicKey) -> Self {
        Self {
            node_id,
            relay_url: None,
            direct_addrs: Vec::new(),
        }
    }

    /// The same target, reachable through `relay`.
    pub fn with_relay(mut self, relay: RelayUrl) -> Self {
        self.relay_url = Some(relay);
        self
    }

    /// The same target, also reachable directly at `addr`.
    pub fn with_direct_addr(mut self, addr: SocketAddr) -> Self {
        self.direct_addrs.push(addr);
        self
    }

    /// The node's `ed25519:<hex>` fingerprint, the string a `PeerEntry` lists.
    pub fn fingerprint(&self) -> String {
        self.node_id.fingerprint()
    }

    /// iroh's address for the target.
    pub(crate) fn to_endpoint_addr(&self) -> Result<EndpointAddr, IrohTargetError> {
        let id = ::iroh::EndpointId::from_bytes(&self.node_id.to_bytes())
            .map_err(|_| bad("node id is not a valid Ed25519 public key"))?;
        let relay = self.relay_url.iter().cloned().map(TransportAddr::Relay);
        let direct = self.direct_addrs.iter().copied().map(TransportAddr::Ip);
        Ok(EndpointAddr::from_parts(id, relay.chain(direct)))
    }

    /// The target for iroh's own address (the first relay only).
    pub(crate) fn from_endpoint_addr(addr: &EndpointAddr) -> Option<Self> {
        Some(Self {
            node_id: PublicKey::from_bytes(addr.id.as_bytes()).ok()?,
            relay_url: addr.relay_urls().next().cloned(),
            direct_addrs: addr.ip_addrs().copied().collect(),
        })
    }
}

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?@[]!$'()*,;=".contains(&b)
}

fn encode(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for IrohTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{TICKET_SCHEME}{}", hex(&self.node_id.to_bytes()));
        let mut sep = '?';
        if let Some(relay) = &self.relay_url {
            out.push(sep);
            out.push_str("relay=");
            encode(relay.as_str(), &mut out);
            sep = '&';
        }
        for addr in &self.direct_addrs {
            out.push(sep);
            out.push_str("addr=");
            encode(&addr.to_string(), &mut out);
            sep = '&';
        }
        f.write_str(&out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_node_id(text: &str) -> Result<PublicKey, IrohTargetError> {
    let id = ::iroh::EndpointId::from_str(text).map_err(|_| {
        bad(format!(
            "node id {text:?} is not 64 hex digits of an Ed25519 key"
        ))
    })?;
    PublicKey::from_bytes(id.as_bytes()).map_err(|_| bad("node id is not a valid Ed25519 key"))
}

impl FromStr for IrohTarget {
    type Err = IrohTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix(TICKET_SCHEME) else {
            return Ok(Self::new(parse_node_id(s)?));
        };
        let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut target = Self::new(parse_node_id(id)?);
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "relay" => {
                    if target.relay_url.is_some() {
                        return Err(bad("more than one relay"));
                    }
                    let url = value
                        .parse::<RelayUrl>()
                        .map_err(|_| bad(format!("relay {value:?} is not a URL")))?;
                    target.relay_url = Some(url);
                }
                "addr" => target.direct_addrs.push(
                    value
                        .parse()
                        .map_err(|_| bad(format!("addr {value:?} is not an ip:port")))?,
                ),
                other => return Err(bad(format!("unknown field {other:?}"))),
            }
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alknet_core::SecretKey;

    fn key() -> PublicKey {
        SecretKey::generate().public()
    }

    #[test]
    fn ticket_round_trips_with_relay_and_addresses() {
        let target = IrohTarget::new(key())
            .with_relay("https://relay.example.com/a?b=c&d=e+f".parse().unwrap())
            .with_direct_addr("192.0.2.7:4433".parse().unwrap())
            .with_direct_addr("[2001:db8::7]:4433".parse().unwrap());
        let ticket = target.to_string();
        assert!(ticket.starts_with("iroh:"), "{ticket}");
        assert!(
            ticket.contains("&addr=192.0.2.7:4433&addr=[2001:db8::7]:4433"),
            "{ticket}"
        );
        assert_eq!(ticket.parse::<IrohTarget>().unwrap(), target);
    }

    #[test]
    fn node_id_in_ticket_is_the_fingerprint_hex() {
        let id = key();
        let ticket = IrohTarget::new(id).to_string();
        assert_eq!(
            ticket.strip_prefix("iroh:").unwrap(),
            id.fingerprint().strip_prefix("ed25519:").unwrap()
        );
    }

    #[test]
    fn bare_node_id_parses() {
        let id = key();
        let hex = id.fingerprint().replace("ed25519:", "");
        assert_eq!(hex.parse::<IrohTarget>().unwrap(), IrohTarget::new(id));
    }

    #[test]
    fn malformed_tickets_are_refused_with_a_reason() {
        let id = key().fingerprint().replace("ed25519:", "");
        for (input, reason) in [
            ("iroh:abc".to_string(), "not 64 hex digits"),
            (format!("iroh:{id}?addr=nope"), "not an ip:port"),
            (format!("iroh:{id}?relay=not a url"), "not a URL"),
            (format!("iroh:{id}?port=1"), "unknown field"),
            (
                format!("iroh:{id}?relay=https://a.example&relay=https://b.example"),
                "more than one relay",
            ),
        ] {
            let err = input.parse::<IrohTarget>().unwrap_err();
            assert!(err.reason.contains(reason), "{input}: {err}");
        }
    }
}
