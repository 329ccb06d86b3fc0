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

use alknet_call::pubsub::PubSubPolicy;
use alknet_call::CallOptions;
use alknet_core::config::{AuthConfig, ConfigError, ConfigSection};
use alknet_endpoint::{relay_roots_from_pem, IrohConfig, IrohRelays, Limits, ServerIdentity};
use alknet_http::HttpConfig;
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
    /// How long a TCP+TLS handshake may take (default 10 000 ms).
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
    /// Dynamic: who may publish and subscribe where.
    #[serde(default)]
    pub pubsub: PubSubPolicy,
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
}

impl DynamicConfig {
    /// Parses the JSON form (what the Node.js binding hands over), naming the offending key.
    pub fn from_json(json: &str) -> Result<Self, NodeError> {
        from_json(json)
    }

    /// Checks every section; the first problem names its section and entry.
    pub fn validate(&self) -> Result<(), ConfigError> {
        section("auth", &self.auth)?;
        section("pubsub", &self.pubsub)
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
    /// Open connections allowed from one IP address (default 64).
    #[serde(default)]
    pub connections_per_ip: Option<u32>,
    /// Concurrent QUIC streams a peer may open on one connection (default 1024).
    #[serde(default)]
    pub streams_per_connection: Option<u32>,
    /// Concurrent requests per connection, subscriptions included (default 1024).
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    /// Queue depth of each pub/sub subscription (default 1024).
    #[serde(default)]
    pub subscription_queue: Option<u32>,
    /// Deadline of queries and mutations that ask for none (default 30 000 ms).
    #[serde(default)]
    pub default_timeout_ms: Option<u64>,
    /// Cap on any deadline a caller asks for (default 600 000 ms).
    #[serde(default)]
    pub max_timeout_ms: Option<u64>,
    /// Largest frame (one message) accepted, in bytes (default 16 MiB, at most 64 MiB).
    #[serde(default)]
    pub max_frame_bytes: Option<u32>,
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
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            call: true,
            http: true,
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
            pubsub: PubSubPolicy::default(),
        }
    }

    /// The dynamic part, as [`Node::reload`](crate::Node::reload) takes it.
    pub fn dynamic(&self) -> DynamicConfig {
        DynamicConfig {
            auth: self.auth.clone(),
            pubsub: self.pubsub.clone(),
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
        if let Some(t) = millis(limits.default_timeout_ms) {
            call.default_timeout = t;
        }
        if let Some(t) = millis(limits.max_timeout_ms) {
            call.max_timeout = t;
        }
        if let Some(n) = limits.max_frame_bytes {
            call.max_frame = n as usize;
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
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(NodeError::Config(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("limits.default_timeout_ms", limits.default_timeout_ms),
            ("limits.max_timeout_ms", limits.max_timeout_ms),
        ] {
            if value == Some(0) {
                return Err(NodeError::Config(format!("{name} must be at least 1")));
            }
        }
        if let Some(n) = limits.max_frame_bytes {
            let max = alknet_call::framing::MAX_FRAME_LIMIT;
            if !(MIN_FRAME_LIMIT..=max).contains(&(n as usize)) {
                return Err(NodeError::Config(format!(
                    "limits.max_frame_bytes must be from {MIN_FRAME_LIMIT} to {max}, not {n}"
                )));
            }
        }
        if self.services.http {
            self.http.validate().map_err(NodeError::Config)?;
        }
        self.dynamic().validate().map_err(NodeError::Dynamic)
    }

    /// The endpoint's drain timeout (default 10 s).
    pub fn drain_timeout(&self) -> Option<Duration> {
        millis(self.drain_timeout_ms)
    }

    /// The endpoint's TCP+TLS handshake timeout (default 10 s).
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
        let config = parse("listen = \"127.0.0.1:0\"\n[limits]\nconnections_per_ip = 3\nmax_frame_bytes = 2048\ndefault_timeout_ms = 1500").unwrap();
        assert_eq!(config.endpoint_limits().connections_per_ip, 3);
        let call = config.call_options();
        assert_eq!(call.max_frame, 2048);
        assert_eq!(call.default_timeout, Duration::from_millis(1500));
    }
}
