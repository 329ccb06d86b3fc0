//! [`Node`] and its builder: the one place where keys, TLS, carriers, the identity provider, the
//! live configuration and the services are wired together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alknet_call::pubsub::PubSubPolicy;
use alknet_call::{CallError, CallHandler, CallOptions, CallService, OperationRegistry, Peer};
use alknet_core::config::{AuthConfig, ConfigError, LiveConfig};
use alknet_core::{ConfigIdentityProvider, ProtocolHandler, SecretKey};
use alknet_endpoint::{
    Endpoint, EndpointConfig, EndpointError, HandlerRegistry, IrohTarget, RegistryError,
    ShutdownReport,
};
use alknet_nats::NatsBackplane;
use alknet_ssh::{ForwardingPolicy, SshListener, SshServer, TunnelServer};
use serde_json::Value;
use thiserror::Error;

use crate::config::{DynamicConfig, NodeConfig};

/// A node could not be assembled or started.
#[derive(Debug, Error)]
pub enum NodeError {
    /// A static setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The dynamic part is invalid.
    #[error("invalid configuration: {0}")]
    Dynamic(#[from] ConfigError),
    /// The key file could not be loaded.
    #[error("key file: {0}")]
    Key(String),
    /// The operations or handlers could not be registered.
    #[error("{0}")]
    Registry(String),
    /// The endpoint could not start (port in use, TLS files, iroh).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

impl NodeError {
    /// A stable code for programs: `ADDRESS_IN_USE`, `KEY_FILE`, `TLS_FAILED` (certificate
    /// files), `INVALID_OPTION` (anything else about the configuration), `UNAVAILABLE` (iroh
    /// could not reach its relay).
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::Key(_) => "KEY_FILE",
            NodeError::Endpoint(EndpointError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                "ADDRESS_IN_USE"
            }
            NodeError::Endpoint(EndpointError::Tls(_)) => "TLS_FAILED",
            NodeError::Endpoint(EndpointError::IrohOffline(_)) => "UNAVAILABLE",
            _ => "INVALID_OPTION",
        }
    }
}

impl From<RegistryError> for NodeError {
    fn from(e: RegistryError) -> Self {
        NodeError::Registry(e.to_string())
    }
}

type SessionHook = Arc<dyn Fn(Peer) + Send + Sync>;

/// Assembles a [`Node`]: see [`Node::builder`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct NodeBuilder {
    config: NodeConfig,
    key: Option<SecretKey>,
    operations: OperationRegistry,
    handlers: Vec<Arc<dyn ProtocolHandler>>,
    on_call_session: Option<SessionHook>,
    iroh_online: Option<Duration>,
    call_options: Option<CallOptions>,
}

/// A running node: one key, one port, the enabled services.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use alknet_node::{Node, NodeConfig};
/// use alknet_call::OperationRegistry;
/// use serde_json::json;
///
/// let mut ops = OperationRegistry::new();
/// ops.query("math/add", json!({}), json!({}), |_ctx, input| async move {
///     Ok(json!(input["a"].as_f64().unwrap_or(0.0) + input["b"].as_f64().unwrap_or(0.0)))
/// })?;
/// let node = Node::builder(NodeConfig::new("127.0.0.1:0".parse()?))
///     .key(alknet_core::SecretKey::generate())
///     .operations(ops)
///     .start()
///     .await?;
/// println!("{} at {}", node.fingerprint(), node.local_addr());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Node {
    endpoint: Endpoint,
    service: Option<Arc<CallService>>,
    backplane: Option<Arc<NatsBackplane>>,
    live: LiveConfig,
    iroh: Option<IrohTarget>,
    ssh_listener: Option<SshListener>,
}

/// Where a node can be reached.
#[derive(Clone, Debug)]
pub struct NodeAddresses {
    /// QUIC over UDP.
    pub quic: SocketAddr,
    /// TCP+TLS on the same port number (`None` when TCP is off).
    pub tcp: Option<SocketAddr>,
    /// The iroh ticket (`None` without iroh).
    pub iroh: Option<IrohTarget>,
}

impl Node {
    /// A builder for a node made from `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            key: None,
            operations: OperationRegistry::new(),
            handlers: Vec::new(),
            on_call_session: None,
            iroh_online: None,
            call_options: None,
        }
    }

    /// What callers pin: `ed25519:<hex>` (raw key) or `SHA256:<hex>` (certificate modes).
    pub fn fingerprint(&self) -> &str {
        self.endpoint.fingerprint()
    }

    /// The bound address (UDP and TCP share its port).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Every address the node is reachable at.
    pub fn addresses(&self) -> NodeAddresses {
        NodeAddresses {
            quic: self.endpoint.local_addr(),
            tcp: self
                .endpoint
                .tcp_enabled()
                .then(|| self.endpoint.local_addr()),
            iroh: self.iroh.clone(),
        }
    }

    /// Where plain SSH is accepted (`None` unless `[ssh] listen` is set).
    pub fn ssh_addr(&self) -> Option<SocketAddr> {
        self.ssh_listener.as_ref().map(SshListener::local_addr)
    }

    /// The iroh ticket (`None` without iroh).
    pub fn iroh_target(&self) -> Option<&IrohTarget> {
        self.iroh.as_ref()
    }

    /// The call service (`None` when `services.call` is off): for calls into the node itself.
    pub fn call_service(&self) -> Option<&Arc<CallService>> {
        self.service.as_ref()
    }

    /// The dynamic configuration in force.
    pub fn dynamic(&self) -> DynamicConfig {
        DynamicConfig::from_snapshot(&self.live.load())
    }

    /// Validates every section of `config`, then swaps them in as one snapshot: a reload
    /// applies entirely or not at all, and on error the old configuration stays in force. Each
    /// request (each delivery of a published message, each forward) reads every section it needs
    /// from one snapshot, so none sees one reload's `auth` with another's `pubsub` or
    /// `forwarding`. New resolutions and requests see the new configuration at once; open
    /// connections and requests re-resolve their identity, and a request whose identity was
    /// revoked (or lost the scopes it needs) ends with `UNAUTHENTICATED` (or `FORBIDDEN`).
    pub fn reload(&self, config: DynamicConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.live.store_validated(config.into_snapshot());
        if let Some(service) = &self.service {
            service.identities_changed();
        }
        tracing::info!(target: "alknet::config", "configuration reloaded");
        Ok(())
    }

    /// Publishes `data` to `topic` as the node itself (no topic rules apply to the node);
    /// returns how many subscriptions it was queued for.
    pub fn publish(&self, topic: &str, data: &Value) -> Result<usize, CallError> {
        self.serving_calls()?.publish(topic, data)
    }

    /// [`publish`](Self::publish) with `data` already encoded as JSON (passed on as it is).
    pub fn publish_raw(
        &self,
        topic: &str,
        data: &serde_json::value::RawValue,
    ) -> Result<usize, CallError> {
        self.serving_calls()?.publish_raw(topic, data)
    }

    /// Publishes items decoded by [`Published::decode_many`](alknet_call::pubsub::Published::decode_many)
    /// as the node itself, in order; returns how many subscriptions each was queued for.
    pub fn publish_items(
        &self,
        items: &[alknet_call::pubsub::Published],
    ) -> Result<Vec<usize>, CallError> {
        Ok(self.serving_calls()?.publish_items(items))
    }

    fn serving_calls(&self) -> Result<&Arc<CallService>, CallError> {
        self.service.as_ref().ok_or_else(|| {
            CallError::new(
                alknet_call::ErrorCode::Unavailable,
                "the call service is off on this node (services.call = false)",
            )
        })
    }

    /// The pub/sub backplane (`None` without `pubsub.backplane`): its connection state and
    /// counters.
    pub fn backplane(&self) -> Option<&Arc<NatsBackplane>> {
        self.backplane.as_ref()
    }

    /// Stops accepting, lets in-flight connections finish until the drain timeout (handlers
    /// are told through [`Connection::draining`](alknet_core::Connection::draining)), then
    /// closes what remains, and leaves the backplane.
    pub async fn shutdown(self) -> ShutdownReport {
        drop(self.ssh_listener);
        let report = self.endpoint.shutdown().await;
        if let Some(backplane) = &self.backplane {
            backplane.close().await;
        }
        report
    }
}

impl NodeBuilder {
    /// The node's key (otherwise `key_file` of the config is loaded).
    pub fn key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The operations the call service serves (besides the built-ins).
    pub fn operations(mut self, operations: OperationRegistry) -> Self {
        self.operations = operations;
        self
    }

    /// The call service's options in full (Rust only: e.g. `validate_output`); replaces what
    /// the config's `limits` say about calls.
    pub fn call_options(mut self, options: CallOptions) -> Self {
        self.call_options = Some(options);
        self
    }

    /// Another service on the node's port, serving the ALPNs it declares.
    pub fn handler(mut self, handler: Arc<dyn ProtocolHandler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Calls `hook` with each new call connection's peer handle (to call connected clients back).
    pub fn on_call_session(mut self, hook: impl Fn(Peer) + Send + Sync + 'static) -> Self {
        self.on_call_session = Some(Arc::new(hook));
        self
    }

    /// With an iroh relay configured, wait until the node is registered there (at most
    /// `timeout`) before `start` returns, so that its ticket names the relay.
    pub fn wait_for_relay(mut self, timeout: Duration) -> Self {
        self.iroh_online = Some(timeout);
        self
    }

    /// Validates the configuration, binds the port and starts serving.
    pub async fn start(self) -> Result<Node, NodeError> {
        let config = self.config;
        config.validate()?;
        let key = match (self.key, &config.key_file) {
            (Some(key), _) => key,
            (None, Some(path)) => {
                SecretKey::load(path).map_err(|e| NodeError::Key(e.to_string()))?
            }
            (None, None) => {
                return Err(NodeError::Config(
                    "no key: set key_file, or give the builder a key".into(),
                ))
            }
        };
        // `config.validate()` checked the dynamic sections too.
        let live = LiveConfig::default();
        live.store_validated(config.dynamic().into_snapshot());
        let identity = Arc::new(ConfigIdentityProvider::new(live.section::<AuthConfig>()));

        let mut handlers = Vec::new();
        let service = if config.services.call {
            let service = CallService::new(
                self.operations,
                live.clone(),
                self.call_options.unwrap_or_else(|| config.call_options()),
            )
            .map_err(|e| NodeError::Registry(e.to_string()))?;
            let mut handler = CallHandler::new(service.clone());
            if let Some(hook) = self.on_call_session {
                handler = handler.on_session(move |peer| hook(peer));
            }
            handlers.push(Arc::new(handler) as Arc<dyn ProtocolHandler>);
            Some(service)
        } else {
            None
        };
        if config.services.http {
            let http = alknet_http::HttpHandler::new(config.http.clone(), service.clone())
                .map_err(NodeError::Config)?;
            handlers.push(Arc::new(http) as Arc<dyn ProtocolHandler>);
        }
        let user_ca =
            alknet_ssh::keys::parse_user_ca(&config.ssh.user_ca).map_err(NodeError::Config)?;
        let ssh = (config.services.ssh || config.ssh.listen.is_some()).then(|| {
            SshServer::new(&key, identity.clone(), live.section::<ForwardingPolicy>())
                .with_user_ca(&user_ca)
        });
        if let (Some(ssh), true) = (&ssh, config.services.ssh) {
            handlers.push(Arc::new(ssh.clone()) as Arc<dyn ProtocolHandler>);
        }
        if config.services.tunnel {
            handlers.push(Arc::new(TunnelServer::new(
                live.section::<ForwardingPolicy>(),
            )));
        }
        handlers.extend(self.handlers);
        let registry = HandlerRegistry::new(handlers)?;

        let mut endpoint_config = EndpointConfig::new(config.listen, key);
        endpoint_config.tls = (&config.tls).into();
        endpoint_config.tcp = config.tcp;
        endpoint_config.limits = config.endpoint_limits();
        if let Some(t) = config.drain_timeout() {
            endpoint_config.drain_timeout = t;
        }
        if let Some(t) = config.handshake_timeout() {
            endpoint_config.handshake_timeout = t;
        }
        if let Some(t) = config.quic_idle_timeout() {
            endpoint_config.quic_idle_timeout = t;
        }
        let with_relay = match &config.iroh {
            Some(settings) => {
                let iroh = settings.to_endpoint()?;
                let relay = iroh.relays != alknet_endpoint::IrohRelays::None;
                endpoint_config.iroh = Some(iroh);
                relay
            }
            None => false,
        };
        let endpoint = Endpoint::bind(endpoint_config, registry, identity).await?;
        let iroh = match self.iroh_online {
            Some(timeout) if with_relay => match endpoint.iroh_online(timeout).await {
                Ok(target) => Some(target),
                Err(e) => {
                    endpoint.shutdown().await;
                    return Err(e.into());
                }
            },
            _ => endpoint.iroh_target(),
        };
        let ssh_listener = match (ssh, config.ssh.listen) {
            (Some(ssh), Some(addr)) => match ssh.listen(addr).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    endpoint.shutdown().await;
                    return Err(NodeError::Config(format!("ssh.listen: {e}")));
                }
            },
            _ => None,
        };
        let backplane = match (&service, &config.pubsub.backplane) {
            (Some(service), Some(backplane)) => {
                let broker = service.broker().clone();
                match NatsBackplane::start(&backplane.nats, broker, live.section::<PubSubPolicy>())
                    .await
                {
                    Ok(backplane) => Some(backplane),
                    Err(e) => {
                        drop(ssh_listener);
                        endpoint.shutdown().await;
                        return Err(NodeError::Config(e.to_string()));
                    }
                }
            }
            _ => None,
        };
        Ok(Node {
            endpoint,
            service,
            backplane,
            live,
            iroh,
            ssh_listener,
        })
    }
}
