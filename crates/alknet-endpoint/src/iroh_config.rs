//! iroh settings (feature `iroh`) and how an iroh endpoint is built from them.
//!
//! iroh runs beside quinn on its own UDP socket. It uses the node's own Ed25519 key, so the iroh
//! node id *is* the node's public key and a peer has one fingerprint (`ed25519:<hex>`) on every
//! path. By default nothing leaves the machine that was not asked for: no relay, no DNS/pkarr
//! publishing, no port mapping, no captive-portal probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::iroh::endpoint::{presets, PortmapperConfig, QuicTransportConfig, VarInt};
use ::iroh::tls::CaTlsConfig;
use ::iroh::{NetReportConfig, RelayMap, RelayMode, RelayUrl};
use alknet_core::SecretKey;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

/// Which relay servers an iroh endpoint uses.
///
/// A relay forwards encrypted packets between nodes that cannot reach each other directly and
/// helps them punch holes; it never sees plaintext. A node registers with one relay (its home
/// relay) and is reachable there by node id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IrohRelays {
    /// No relay (default). A listening node is reachable only at its direct addresses; a dialing
    /// client still goes through a relay named in the target it dials, and through no other.
    #[default]
    None,
    /// Your own relays, e.g. `https://relay.example.com` run with the `iroh-relay` binary.
    Custom(Vec<RelayUrl>),
    /// number 0's public relays. Opt-in: it contacts third-party servers.
    N0,
}

/// iroh settings for an [`Endpoint`](crate::Endpoint) (listening) or a
/// [`Client`](crate::Client) (dialing).
#[derive(Clone, Debug)]
pub struct IrohConfig {
    /// Relay servers (default none).
    pub relays: IrohRelays,
    /// Local UDP address for direct paths. `None` (default): a listening node binds the IP of
    /// its `listen` address on a free port (both IPv4 and IPv6 if that IP is unspecified); a
    /// client binds all interfaces on a free port.
    pub bind: Option<SocketAddr>,
    /// Use direct UDP paths (default true). `false` makes the node relay-only: it opens no UDP
    /// socket of its own and never reveals its IP addresses to peers.
    pub direct: bool,
    /// CA certificates trusted for relay servers, in addition to the Mozilla roots: for a
    /// self-hosted relay with a private CA or a self-signed certificate.
    pub relay_roots: Vec<CertificateDer<'static>>,
    /// Publish this node's address to number 0's DNS (pkarr) and look up peers there, so a bare
    /// node id is enough to dial (default false: it contacts third-party servers).
    pub n0_discovery: bool,
    /// How long [`Client::dial_iroh`](crate::Client::dial_iroh) may take before it fails
    /// (default 10 s). A node that is offline or not where the target says is otherwise only
    /// noticed by this timeout.
    pub dial_timeout: Duration,
}

impl Default for IrohConfig {
    fn default() -> Self {
        Self {
            relays: IrohRelays::None,
            bind: None,
            direct: true,
            relay_roots: Vec::new(),
            n0_discovery: false,
            dial_timeout: Duration::from_secs(10),
        }
    }
}

impl IrohConfig {
    /// Defaults with one self-hosted relay.
    pub fn with_relay(relay: RelayUrl) -> Self {
        Self {
            relays: IrohRelays::Custom(vec![relay]),
            ..Self::default()
        }
    }
}

/// The iroh endpoint could not be set up.
#[derive(Debug, Error)]
pub enum IrohError {
    /// A relay-only node without relays could never be reached or reach anyone.
    #[error("iroh: `direct` is off and no relay is configured, so nothing could connect; configure a relay or enable direct paths")]
    Unreachable,
    /// A custom relay list is empty.
    #[error(
        "iroh: the custom relay list is empty; give at least one relay URL or choose no relay"
    )]
    NoRelays,
    /// The UDP address is not usable.
    #[error("iroh: cannot bind {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// iroh refused to start.
    #[error("iroh endpoint: {0}")]
    Start(String),
    /// A relay setting that is neither `none`, `n0` nor an `https://` URL.
    #[error("iroh relay {0:?} is not valid; use \"none\", \"n0\" (number 0's public relays) or the https:// URL of your relay")]
    Relay(String),
    /// Relay CA certificates that are not PEM certificates.
    #[error("iroh relay CA: {0}; give one or more PEM certificates (-----BEGIN CERTIFICATE-----)")]
    RelayCa(String),
}

impl std::str::FromStr for IrohRelays {
    type Err = IrohError;

    /// `none`, `n0`, or one relay URL (what a command line or a config file says).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "none" => Ok(Self::None),
            "n0" | "default" => Ok(Self::N0),
            url => url
                .parse::<RelayUrl>()
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .map(|u| Self::Custom(vec![u]))
                .ok_or_else(|| IrohError::Relay(url.to_string())),
        }
    }
}

/// The certificates of a PEM text, to trust for relays (`IrohConfig::relay_roots`).
pub fn relay_roots_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, IrohError> {
    let roots = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IrohError::RelayCa(e.to_string()))?;
    if roots.is_empty() {
        return Err(IrohError::RelayCa("no certificate found".into()));
    }
    Ok(roots)
}

/// Which side the iroh endpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A listening node: accepts the given ALPNs.
    Listen,
    /// A dialer: accepts nothing.
    Dial,
}

/// The iroh secret key with the same 32 bytes as the node key.
pub(crate) fn iroh_secret(key: &SecretKey) -> ::iroh::SecretKey {
    ::iroh::SecretKey::from_bytes(&key.to_bytes())
}

/// Binds an iroh endpoint for `key` with `config`, accepting `alpns`.
///
/// `listen` is a listening node's bound address: its IP is the default bind IP.
pub(crate) async fn bind_iroh(
    key: &SecretKey,
    config: &IrohConfig,
    role: Role,
    alpns: Vec<Vec<u8>>,
    streams_per_connection: u32,
    listen: Option<SocketAddr>,
) -> Result<::iroh::Endpoint, IrohError> {
    let relay_mode = match (&config.relays, role) {
        (IrohRelays::None, Role::Listen) => RelayMode::Disabled,
        // A dialer with no relays of its own still reaches a target through the relay the
        // target names: an empty map keeps the relay transport without any home relay, so
        // nothing is contacted until such a dial.
        (IrohRelays::None, Role::Dial) => RelayMode::Custom(RelayMap::empty()),
        (IrohRelays::Custom(urls), _) if urls.is_empty() => return Err(IrohError::NoRelays),
        (IrohRelays::Custom(urls), _) => RelayMode::custom(urls.iter().cloned()),
        (IrohRelays::N0, _) => RelayMode::Default,
    };
    if !config.direct && relay_mode == RelayMode::Disabled {
        return Err(IrohError::Unreachable);
    }
    let transport = QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(match role {
            // The credit starts small and grows with use (see `StreamCredit`).
            Role::Listen => crate::transport::INITIAL_STREAM_CREDIT
                .min(streams_per_connection)
                .into(),
            Role::Dial => VarInt::from_u32(0),
        })
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .build();
    let ca = CaTlsConfig::embedded().with_extra_roots(config.relay_roots.iter().cloned());
    // Relay latency over HTTPS picks the home relay where QUIC is blocked; the captive-portal
    // check would fetch a page from the relay over plain HTTP, which we skip.
    let mut net_report = NetReportConfig::default();
    net_report.captive_portal_check = false;
    let mut builder = ::iroh::Endpoint::builder(presets::Minimal)
        .secret_key(iroh_secret(key))
        .alpns(alpns)
        .relay_mode(relay_mode)
        .transport_config(transport)
        .ca_tls_config(ca)
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(net_report);
    if config.n0_discovery {
        builder = builder
            .address_lookup(::iroh::address_lookup::PkarrPublisher::n0_dns())
            .address_lookup(::iroh::address_lookup::PkarrResolver::n0_dns())
            .address_lookup(::iroh::address_lookup::DnsAddressLookup::n0_dns());
    }
    let bind = match (config.bind, role, listen) {
        (Some(addr), _, _) => Some(addr),
        (None, Role::Listen, Some(listen)) if !listen.ip().is_unspecified() => {
            Some(SocketAddr::new(listen.ip(), 0))
        }
        // Unspecified: iroh's default sockets (all IPv4 and, where available, all IPv6).
        _ => None,
    };
    if !config.direct {
        builder = builder.clear_ip_transports();
    } else if let Some(addr) = bind {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| IrohError::Bind {
                addr,
                reason: e.to_string(),
            })?;
    }
    builder.bind().await.map_err(|e| {
        let reason = error_chain(&e);
        match bind {
            Some(addr) => IrohError::Start(format!("{reason} (binding {addr})")),
            None => IrohError::Start(reason),
        }
    })
}

/// An error and its sources on one line (iroh's errors keep the cause in the source chain).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_shown = cause.to_string();
        if !shown.contains(&cause_shown) {
            shown.push_str(": ");
            shown.push_str(&cause_shown);
        }
        source = cause.source();
    }
    shown
}

/// How long shutdown waits for iroh's close (which waits for peers to acknowledge) before leaving
/// it to finish in the background.
pub(crate) const IROH_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One lazily bound iroh endpoint, shared by the clones of a client.
pub(crate) type SharedIroh = Arc<tokio::sync::OnceCell<::iroh::Endpoint>>;
