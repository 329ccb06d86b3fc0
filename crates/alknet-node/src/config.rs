//! [`NodeConfig`]: everything a node is made of, in one serde shape. It is the shape of
//! `alknet.toml` (snake_case keys) and, after the TypeScript layer maps camelCase to snake_case in
//! one place, of the Node.js `serve()` options.
//!
//! A config has a **static** part (needs a restart: listen address, key, TLS, carriers, limits,
//! services) and a **dynamic** part ([`DynamicConfig`]: peers, API keys, pub/sub rules; reloaded
//! with [`Node::reload`](crate::Node::reload)). Unknown keys are refused everywhere, so a misspelt
//! option is an error, not a silent default.
//!
//! ```
//! let config: alknet_node::NodeConfig = toml::from_str(r#"
//!     listen = "127.0.0.1:4433"
//!     [tls]
//!     mode = "self-signed"
//!     names = ["node.example"]
//!     [limits]
//!     connections_per_ip = 16
//!     [[auth.peers]]
//!     id = "alice"
//!     fingerprints = ["ed25519:3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"]
//!     scopes = ["todo:write"]
//! "#).unwrap();
//! assert_eq!(config.limits.connections_per_ip, Some(16));
//! assert_eq!(config.dynamic().auth.peers[0].id, "alice");
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alknet_call::pubsub::{PubSubPolicy, TopicRule};
use alknet_call::CallOptions;
use alknet_core::config::{AuthConfig, ConfigError, ConfigSection, Snapshot};
use alknet_endpoint::{relay_roots_from_pem, IrohConfig, IrohRelays, Limits, ServerIdentity};
use alknet_http::HttpConfig;
use alknet_nats::NatsConfig;
use alknet_ssh::ForwardingPolicy;
use serde::{Deserialize, Serialize};

use crate::NodeError;

/// A whole node: static settings and the initial dynamic configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `host:port` for QUIC (UDP) and TCP+TLS on the same port number; port 0 picks a free one.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// PEM file of the node's Ed25519 key (mode 0600). Not needed when the key is handed to the
    /// builder directly (the Node.js API does that).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How the node proves its identity in TLS (default: the raw key).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Also accept TCP+TLS on the same port number (default true).
    #[serde(default = "yes")]
    pub tcp: bool,
    /// Also accept over iroh (off unless present).
    #[serde(default)]
    pub iroh: Option<IrohSettings>,
    /// Limits; each unset one keeps its default.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long shutdown lets in-flight connections finish (default 10 000 ms).
    #[serde(default)]
    pub drain_timeout_ms: Option<u64>,
    /// How long a handshake may take, QUIC or TCP+TLS (default 10 000 ms); a client trickling
    /// its handshake (slowloris) is cut off at it.
    #[serde(default)]
    pub handshake_timeout_ms: Option<u64>,
    /// Which services (ALPNs) are on.
    #[serde(default)]
    pub services: ServicesConfig,
    /// What the HTTP service serves: the decoy, and opt-in WebSocket, gateway and OpenAPI.
    #[serde(default)]
    pub http: HttpConfig,
    /// Dynamic: peers and API keys.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Who may publish and subscribe where (dynamic), and the backplane (static).
    #[serde(default)]
    pub pubsub: PubSubConfig,
    /// Plain SSH for OpenSSH clients (`[ssh]`, static).
    #[serde(default)]
    pub ssh: SshSettings,
    /// Dynamic: where SSH and tunnel clients may forward to.
    #[serde(default)]
    pub forwarding: ForwardingPolicy,
}

/// `[pubsub]`: topic rules (dynamic: reloaded with the rest of the dynamic part) and the
/// backplane that carries topics between nodes (static: a change needs a restart).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PubSubConfig {
    /// Rules, first match wins (see [`PubSubPolicy`]).
    #[serde(default)]
    pub rules: Vec<TopicRule>,
    /// Topics across a fleet of nodes (`[pubsub.backplane.nats]`).
    #[serde(default)]
    pub backplane: Option<BackplaneConfig>,
}

/// `[pubsub.backplane]`: what carries topics between nodes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackplaneConfig {
    /// NATS servers (see `alknet_nats`).
    pub nats: NatsConfig,
}

/// Plain SSH (`[ssh]`): OpenSSH clients (`ssh -D`, `-L`, `-R`) on a TCP port of its own, with the
/// node's key as host key and the same peers and forwarding policy as `alknet/ssh`. Off unless
/// `listen` is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// `host:port` to accept plain SSH on (port 0 picks a free one).
    #[serde(default, deserialize_with = "optional_listen_address")]
    pub listen: Option<SocketAddr>,
    /// OpenSSH public key lines (`ssh-ed25519 AAAA… ca`) of CAs whose user certificates are
    /// taken on `alknet/ssh` and the plain port: principal = SSH user name = an enabled peer id.
    #[serde(default)]
    pub user_ca: Vec<String>,
}

fn optional_listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen_address(d).map(Some)
}

fn yes() -> bool {
    true
}

/// The smallest `limits.max_frame_bytes` a node accepts.
pub const MIN_FRAME_LIMIT: usize = 1024;

fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "listen {text:?} is not ip:port (e.g. 0.0.0.0:4433 or [::]:4433): {e}"
        ))
    })
}

/// Parses JSON into `T`, naming the path of the offending key in the error (`limits.max_frame_bytes: …`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, NodeError> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        NodeError::Config(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// The part of the configuration that can change while the node runs. Each section belongs to
/// the crate that reads it (`auth` to `alknet-core`, `pubsub` to `alknet-call`) and is validated
/// by that crate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// Peers and API keys.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Pub/sub topic rules.
    #[serde(default)]
    pub pubsub: PubSubPolicy,
    /// SSH and tunnel forwarding rules.
    #[serde(default)]
    pub forwarding: ForwardingPolicy,
}

impl DynamicConfig {
    /// Parses the JSON form (what the Node.js binding hands over), naming the offending key.
    pub fn from_json(json: &str) -> Result<Self, NodeError> {
        from_json(json)
    }

    /// Checks every section; the first problem names its section and entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        section("auth", &self.auth)?;
        section("pubsub", &self.pubsub)?;
        section("forwarding", &self.forwarding)
    }

    /// Every section in one snapshot, as a reload swaps it in.
    pub(crate) fn into_snapshot(self) -> Snapshot {
        Snapshot::default()
            .with(self.auth)
            .with(self.pubsub)
            .with(self.forwarding)
    }

    /// The sections a snapshot holds.
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            auth: AuthConfig::clone(&snapshot.get()),
            pubsub: PubSubPolicy::clone(&snapshot.get()),
            forwarding: ForwardingPolicy::clone(&snapshot.get()),
        }
    }
}

fn section(name: &str, section: &impl ConfigSection) -> Result<(), ConfigError> {
    section.validate().map_err(|e| match e {
        ConfigError::Invalid { entry, reason } => ConfigError::Invalid {
            entry: format!("{name}: {entry}"),
            reason,
        },
        other => other,
    })
}

/// How the node proves who it is (`[tls]`, key `mode`).
///
/// Whatever the mode, a client that asks for a raw public key (every alknet peer pinning
/// `ed25519:…`), over TCP+TLS or QUIC, gets the node's raw key, so call peers and browsers share
/// one port; `mode` chooses what everyone else gets and which fingerprint the node reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TlsConfig {
    /// The node's Ed25519 key as an RFC 7250 raw public key (default); callers pin `ed25519:<hex>`.
    #[default]
    Raw,
    /// A certificate of the node's key, signed by itself (development); callers pin `SHA256:<hex>`.
    SelfSigned {
        /// DNS names (default `localhost`).
        #[serde(default)]
        names: Vec<String>,
    },
    /// A PEM certificate chain and private key from files (browsers, domain-facing nodes).
    X509 {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
}

impl From<&TlsConfig> for ServerIdentity {
    fn from(tls: &TlsConfig) -> Self {
        match tls {
            TlsConfig::Raw => ServerIdentity::RawKey,
            TlsConfig::SelfSigned { names } => ServerIdentity::SelfSigned {
                names: names.clone(),
            },
            TlsConfig::X509 { cert, key } => ServerIdentity::X509 {
                cert: cert.clone(),
                key: key.clone(),
            },
        }
    }
}

/// Limits (`[limits]`). Every field is optional; the defaults suit a small public node.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections allowed from one IP address, an IPv6 /64 counting as one (default 64).
    #[serde(default)]
    pub connections_per_ip: Option<u32>,
    /// Open connections allowed in total, every carrier together (default 4096).
    #[serde(default)]
    pub connections: Option<u32>,
    /// Handshakes in flight from one IP address (IPv6: /64) (default 32).
    #[serde(default)]
    pub handshakes_per_ip: Option<u32>,
    /// Handshakes in flight in total (default 256).
    #[serde(default)]
    pub handshakes: Option<u32>,
    /// Open connections arriving through the iroh relay, together (default 256).
    #[serde(default)]
    pub relay_connections: Option<u32>,
    /// Concurrent QUIC streams a peer may open on one connection (default 1024).
    #[serde(default)]
    pub streams_per_connection: Option<u32>,
    /// Concurrent requests per connection, subscriptions included (default 1024).
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    /// Queue depth of each pub/sub subscription (default 1024).
    #[serde(default)]
    pub subscription_queue: Option<u32>,
    /// Bytes of published messages one subscription may hold until they are written (default
    /// 8 MiB; one message of any size is always taken).
    #[serde(default)]
    pub subscription_queue_bytes: Option<u64>,
    /// The same, summed over one connection's subscriptions (default 64 MiB).
    #[serde(default)]
    pub connection_queue_bytes: Option<u64>,
    /// Deadline of queries and mutations that ask for none (default 30 000 ms).
    #[serde(default)]
    pub default_timeout_ms: Option<u64>,
    /// Cap on any deadline a caller asks for (default 600 000 ms).
    #[serde(default)]
    pub max_timeout_ms: Option<u64>,
    /// Largest frame (one message) accepted, in bytes (default 16 MiB, at most 64 MiB).
    #[serde(default)]
    pub max_frame_bytes: Option<u32>,
    /// Largest frame accepted on a connection whose TLS key is not a known peer (default 1 MiB;
    /// requests authenticated by `auth_token` alone are bounded by it too).
    #[serde(default)]
    pub anonymous_max_frame_bytes: Option<u32>,
    /// Bytes of partly received frames one identified connection may buffer (default 64 MiB).
    #[serde(default)]
    pub connection_input_bytes: Option<u64>,
    /// The same, shared by every connection without an identity (default 64 MiB).
    #[serde(default)]
    pub anonymous_input_bytes: Option<u64>,
    /// How long a frame may take to arrive once begun (default 60 000 ms).
    #[serde(default)]
    pub frame_deadline_ms: Option<u64>,
    /// How long a QUIC connection may stay silent before the node counts it lost and cancels its
    /// requests (default 30 000 ms). A caller that vanished without closing (killed, unplugged)
    /// is noticed then; live clients send a keep-alive every 10 s. QUIC applies the smaller of
    /// both ends' timeouts.
    #[serde(default)]
    pub quic_idle_timeout_ms: Option<u64>,
}

/// iroh (`[iroh]`): reachable by key alone, through a relay when no direct path exists.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IrohSettings {
    /// `none` (default: direct addresses only), `n0` (number 0's public relays) or the URL of
    /// your own relay(s), comma separated.
    #[serde(default)]
    pub relay: Option<String>,
    /// PEM certificate(s) to trust for the relay (a relay with its own CA).
    #[serde(default)]
    pub relay_ca: Option<String>,
    /// Use direct UDP paths (default true); false: relay only, the node's IP stays hidden.
    #[serde(default)]
    pub direct: Option<bool>,
}

impl IrohSettings {
    /// The endpoint's iroh settings.
    pub fn to_endpoint(&self) -> Result<IrohConfig, NodeError> {
        let mut config = IrohConfig::default();
        if let Some(relay) = &self.relay {
            config.relays = relay
                .parse::<IrohRelays>()
                .map_err(|e| NodeError::Config(format!("iroh.relay: {e}")))?;
        }
        if let Some(pem) = &self.relay_ca {
            config.relay_roots = relay_roots_from_pem(pem)
                .map_err(|e| NodeError::Config(format!("iroh.relay_ca: {e}")))?;
        }
        if let Some(direct) = self.direct {
            config.direct = direct;
        }
        Ok(config)
    }
}

/// Which services are on (`[services]`). Each is an ALPN on the node's port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    /// `alknet/call` (default true).
    #[serde(default = "yes")]
    pub call: bool,
    /// HTTP (`h2`, `http/1.1`) on TCP+TLS, see `[http]` (default true: the decoy web site).
    #[serde(default = "yes")]
    pub http: bool,
    /// `alknet/ssh`: SSH port forwarding for known peers (default false).
    #[serde(default)]
    pub ssh: bool,
    /// `alknet/tunnel`: the native tunnel (QUIC, iroh or TCP+TLS) for known peers (default false).
    #[serde(default)]
    pub tunnel: bool,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            call: true,
            http: true,
            ssh: false,
            tunnel: false,
        }
    }
}

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

impl NodeConfig {
    /// Parses the JSON form (what the Node.js binding hands over), naming the offending key.
    pub fn from_json(json: &str) -> Result<Self, NodeError> {
        from_json(json)
    }

    /// Defaults for a node listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            key_file: None,
            tls: TlsConfig::Raw,
            tcp: true,
            iroh: None,
            limits: LimitsConfig::default(),
            drain_timeout_ms: None,
            handshake_timeout_ms: None,
            services: ServicesConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            pubsub: PubSubConfig::default(),
            ssh: SshSettings::default(),
            forwarding: ForwardingPolicy::default(),
        }
    }

    /// The dynamic part, as [`Node::reload`](crate::Node::reload) takes it.
    pub fn dynamic(&self) -> DynamicConfig {
        DynamicConfig {
            auth: self.auth.clone(),
            pubsub: PubSubPolicy {
                rules: self.pubsub.rules.clone(),
            },
            forwarding: self.forwarding.clone(),
        }
    }

    /// The endpoint's limits.
    pub fn endpoint_limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(n) = self.limits.connections_per_ip {
            limits.connections_per_ip = n as usize;
        }
        if let Some(n) = self.limits.streams_per_connection {
            limits.streams_per_connection = n;
        }
        let set =
            |field: &mut usize, value: Option<u32>| *field = value.map_or(*field, |n| n as usize);
        set(&mut limits.connections, self.limits.connections);
        set(&mut limits.handshakes_per_ip, self.limits.handshakes_per_ip);
        set(&mut limits.handshakes, self.limits.handshakes);
        set(&mut limits.relay_connections, self.limits.relay_connections);
        limits
    }

    /// The call service's limits and defaults.
    pub fn call_options(&self) -> CallOptions {
        let limits = &self.limits;
        let mut call = CallOptions::default();
        if let Some(n) = limits.max_concurrent_requests {
            call.max_concurrent = n as usize;
        }
        if let Some(n) = limits.subscription_queue {
            call.subscription_queue = n as usize;
        }
        if let Some(n) = limits.subscription_queue_bytes {
            call.subscription_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = limits.connection_queue_bytes {
            call.connection_subscription_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(t) = millis(limits.default_timeout_ms) {
            call.default_timeout = t;
        }
        if let Some(t) = millis(limits.max_timeout_ms) {
            call.max_timeout = t;
        }
        if let Some(n) = limits.max_frame_bytes {
            call.max_frame = n as usize;
        }
        if let Some(n) = limits.anonymous_max_frame_bytes {
            call.anonymous_max_frame = n as usize;
        }
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = limits.connection_input_bytes {
            call.connection_input_bytes = bytes(n);
        }
        if let Some(n) = limits.anonymous_input_bytes {
            call.anonymous_input_bytes = bytes(n);
        }
        if let Some(t) = millis(limits.frame_deadline_ms) {
            call.frame_deadline = t;
        }
        call
    }

    /// Checks what serde cannot: ranges, and the dynamic part.
    pub fn validate(&self) -> Result<(), NodeError> {
        let limits = &self.limits;
        let positive = [
            ("limits.connections_per_ip", limits.connections_per_ip),
            (
                "limits.streams_per_connection",
                limits.streams_per_connection,
            ),
            (
                "limits.max_concurrent_requests",
                limits.max_concurrent_requests,
            ),
            ("limits.subscription_queue", limits.subscription_queue),
            ("limits.connections", limits.connections),
            ("limits.handshakes_per_ip", limits.handshakes_per_ip),
            ("limits.handshakes", limits.handshakes),
            ("limits.relay_connections", limits.relay_connections),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(NodeError::Config(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("limits.default_timeout_ms", limits.default_timeout_ms),
            ("limits.max_timeout_ms", limits.max_timeout_ms),
            (
                "limits.subscription_queue_bytes",
                limits.subscription_queue_bytes,
            ),
            (
                "limits.connection_queue_bytes",
                limits.connection_queue_bytes,
            ),
            ("limits.frame_deadline_ms", limits.frame_deadline_ms),
            ("limits.quic_idle_timeout_ms", limits.quic_idle_timeout_ms),
        ] {
            if value == Some(0) {
                return Err(NodeError::Config(format!("{name} must be at least 1")));
            }
        }
        let max = alknet_call::framing::MAX_FRAME_LIMIT;
        for (name, value) in [
            ("limits.max_frame_bytes", limits.max_frame_bytes),
            (
                "limits.anonymous_max_frame_bytes",
                limits.anonymous_max_frame_bytes,
            ),
        ] {
            if let Some(n) = value {
                if !(MIN_FRAME_LIMIT..=max).contains(&(n as usize)) {
                    return Err(NodeError::Config(format!(
                        "{name} must be from {MIN_FRAME_LIMIT} to {max}, not {n}"
                    )));
                }
            }
        }
        for (name, value) in [
            (
                "limits.connection_input_bytes",
                limits.connection_input_bytes,
            ),
            ("limits.anonymous_input_bytes", limits.anonymous_input_bytes),
        ] {
            if value.is_some_and(|n| n < MIN_FRAME_LIMIT as u64) {
                return Err(NodeError::Config(format!(
                    "{name} must be at least {MIN_FRAME_LIMIT}"
                )));
            }
        }
        if let Some(backplane) = &self.pubsub.backplane {
            backplane
                .nats
                .validate()
                .map_err(|e| NodeError::Config(format!("pubsub.backplane.nats.{e}")))?;
        }
        if self.services.http {
            self.http.validate().map_err(NodeError::Config)?;
        }
        alknet_ssh::keys::parse_user_ca(&self.ssh.user_ca).map_err(NodeError::Config)?;
        self.dynamic().validate().map_err(NodeError::Dynamic)
    }

    /// The endpoint's drain timeout (default 10 s).
    pub fn drain_timeout(&self) -> Option<Duration> {
        millis(self.drain_timeout_ms)
    }

    /// The endpoint's QUIC idle timeout (default 30 s).
    pub fn quic_idle_timeout(&self) -> Option<Duration> {
        millis(self.limits.quic_idle_timeout_ms)
    }

    /// The endpoint's handshake timeout, QUIC and TCP+TLS (default 10 s).
    pub fn handshake_timeout(&self) -> Option<Duration> {
        millis(self.handshake_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<NodeConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_takes_every_default() {
        let config = parse(r#"listen = "127.0.0.1:0""#).unwrap();
        assert_eq!(config, NodeConfig::new("127.0.0.1:0".parse().unwrap()));
        assert!(config.services.call && config.tcp);
        // HTTP is on, as the decoy only.
        assert!(config.services.http);
        assert_eq!(config.http, HttpConfig::default());
    }

    #[test]
    fn the_http_section_parses_from_toml() {
        let config = parse(
            "listen = \"127.0.0.1:0\"\n[http]\ndecoy = { proxy = \"https://example.org\" }\nwebsocket = true\ngateway = { require_identity = true }",
        )
        .unwrap();
        assert_eq!(
            config.http.decoy,
            alknet_http::Decoy::Proxy("https://example.org".into())
        );
        assert!(config.http.websocket.enabled && !config.http.openapi.enabled);
        assert!(config.http.gateway.require_identity);
        let err = parse("listen = \"127.0.0.1:0\"\n[http]\ndecoy = \"static\"").unwrap_err();
        assert!(err.contains("static"), "{err}");
        let config =
            parse("listen = \"127.0.0.1:0\"\n[http]\ndecoy = { dir = \"/nonexistent/site\" }")
                .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("http.decoy.dir"), "{err}");
    }

    #[test]
    fn forwarding_rules_name_known_transports_only() {
        let ok = parse(
            "listen = \"127.0.0.1:0\"\n[[forwarding.rules]]\ntransports = [\"quic\", \"tcp-tls\", \"iroh\", \"ssh\"]\naction = \"allow\"",
        )
        .unwrap();
        assert_eq!(ok.forwarding.rules[0].transports.len(), 4);
        let err = parse(
            "listen = \"127.0.0.1:0\"\n[[forwarding.rules]]\ntransports = [\"tcp\"]\naction = \"allow\"",
        )
        .unwrap_err();
        assert!(
            err.contains("unknown variant `tcp`") && err.contains("tcp-tls"),
            "{err}"
        );
    }

    #[test]
    fn misspelt_key_is_refused_naming_it() {
        let err = parse("listen = \"127.0.0.1:0\"\n[limts]\nconnections_per_ip = 1").unwrap_err();
        assert!(err.contains("limts"), "{err}");
        let err = parse("listen = \"127.0.0.1:0\"\n[limits]\nconections_per_ip = 1").unwrap_err();
        assert!(err.contains("conections_per_ip"), "{err}");
    }

    #[test]
    fn json_errors_name_the_path_of_the_key() {
        let err =
            NodeConfig::from_json(r#"{"listen":"127.0.0.1:0","limits":{"max_frame_bytes":"big"}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
        let err = NodeConfig::from_json(r#"{"listen":"nowhere"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen \"nowhere\" is not ip:port"), "{err}");
    }

    #[test]
    fn tls_modes_parse_from_their_tag() {
        let x509 = parse(
            "listen = \"127.0.0.1:0\"\n[tls]\nmode = \"x509\"\ncert = \"c.pem\"\nkey = \"k.pem\"",
        )
        .unwrap();
        assert_eq!(
            x509.tls,
            TlsConfig::X509 {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let err = parse("listen = \"127.0.0.1:0\"\n[tls]\nmode = \"acme\"").unwrap_err();
        assert!(err.contains("acme") && err.contains("self-signed"), "{err}");
        let err = parse("listen = \"127.0.0.1:0\"\n[tls]\nmode = \"x509\"\ncert = \"c.pem\"")
            .unwrap_err();
        assert!(err.contains("key"), "{err}");
    }

    #[test]
    fn invalid_dynamic_part_names_section_and_entry() {
        let config =
            parse("listen = \"127.0.0.1:0\"\n[[pubsub.rules]]\npattern = \"a/>/b\"").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("pubsub: topic rule 0"), "{err}");
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        let config = parse("listen = \"127.0.0.1:0\"\n[limits]\nmax_frame_bytes = 10").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
        let config = parse("listen = \"127.0.0.1:0\"\n[limits]\nconnections_per_ip = 0").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn limits_reach_the_endpoint_and_the_call_service() {
        let config = parse("listen = \"127.0.0.1:0\"\n[limits]\nconnections_per_ip = 3\nmax_frame_bytes = 2048\ndefault_timeout_ms = 1500\nconnections = 9\nhandshakes_per_ip = 4\nhandshakes = 5\nrelay_connections = 6").unwrap();
        let endpoint = config.endpoint_limits();
        assert_eq!(endpoint.connections_per_ip, 3);
        assert_eq!(
            (
                endpoint.connections,
                endpoint.handshakes_per_ip,
                endpoint.handshakes,
                endpoint.relay_connections
            ),
            (9, 4, 5, 6)
        );
        let call = config.call_options();
        assert_eq!(call.max_frame, 2048);
        assert_eq!(call.default_timeout, Duration::from_millis(1500));
    }
}
