//! `serve`: a node whose operations JavaScript answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::{CallHandler, CallOptions, CallService};
use alknet_core::{ConfigIdentityProvider, ConfigStore, DynamicConfig, ProtocolHandler};
use alknet_endpoint::{
    relay_roots_from_pem, Endpoint, EndpointConfig, HandlerRegistry, IrohConfig, IrohRelays,
    ServerIdentity,
};
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::Value;

use crate::bridge::Bridge;
use crate::errors::{call_error, parse_json, plain};
use crate::host::Host;
use crate::keypair::Keypair;

/// Static settings of a node.
#[napi(object)]
pub struct ServeOptions {
    /// `host:port` for QUIC (UDP) and TCP+TLS; port 0 picks a free one.
    pub listen: String,
    /// The dynamic configuration as JSON: `{ auth: { peers, api_keys }, pubsub: { rules } }`.
    pub config: Option<String>,
    /// The operations as a JSON array of specs
    /// (`name`, `type`, `input_schema`, `output_schema`, `access`, `errors`, `description`, `visibility`).
    pub operations: String,
    /// How long `close()` lets in-flight connections finish (default 10 000 ms).
    pub drain_timeout_ms: Option<u32>,
    /// `raw` (default: the key as an RFC 7250 raw public key), `self-signed` or `x509`.
    pub tls: Option<String>,
    /// DNS names of the `self-signed` certificate (default `localhost`).
    pub tls_names: Option<Vec<String>>,
    /// PEM certificate chain file (`x509`).
    pub tls_cert: Option<String>,
    /// PEM private key file (`x509`).
    pub tls_key: Option<String>,
    /// Also accept TCP+TLS on the same port number (default true).
    pub tcp: Option<bool>,
    /// Open connections allowed from one IP address (default 64).
    pub connections_per_ip: Option<u32>,
    /// Concurrent QUIC streams a peer may open on one connection (default 1024).
    pub streams_per_connection: Option<u32>,
    /// Concurrent requests per connection, subscriptions included (default 1024).
    pub max_concurrent_requests: Option<u32>,
    /// Deadline of calls that ask for none (default 30 000 ms).
    pub default_timeout_ms: Option<u32>,
    /// Cap on any deadline a caller asks for (default 600 000 ms).
    pub max_timeout_ms: Option<u32>,
    /// Largest frame accepted, in bytes (default 16 MiB, at most 64 MiB).
    pub max_frame_bytes: Option<u32>,
    /// Also accept over iroh (default false).
    pub iroh: Option<bool>,
    /// iroh relay: `none` (default), `n0` (number 0's public relays) or your relay's URL.
    pub iroh_relay: Option<String>,
    /// PEM certificates to trust for the relay (a self-hosted relay with its own CA).
    pub iroh_relay_ca: Option<String>,
    /// Use direct UDP paths over iroh (default true); false: relay only, the IP stays hidden.
    pub iroh_direct: Option<bool>,
}

/// iroh settings from the serve or connect options; `None` when iroh is off.
pub(crate) fn iroh_config(
    relay: Option<&str>,
    relay_ca: Option<&str>,
    direct: Option<bool>,
) -> napi::Result<IrohConfig> {
    let mut config = IrohConfig::default();
    if let Some(relay) = relay {
        config.relays = relay.parse::<IrohRelays>().map_err(plain)?;
    }
    if let Some(pem) = relay_ca {
        config.relay_roots = relay_roots_from_pem(pem).map_err(plain)?;
    }
    if let Some(direct) = direct {
        config.direct = direct;
    }
    Ok(config)
}

/// A running node.
#[napi]
pub struct Node {
    endpoint: Mutex<Option<Endpoint>>,
    service: Arc<CallService>,
    store: ConfigStore,
    bridge: Arc<Bridge>,
    fingerprint: String,
    address: String,
    iroh_ticket: Option<String>,
}

/// How long `serve` waits for the iroh endpoint to register with its relay.
const IROH_ONLINE_TIMEOUT: Duration = Duration::from_secs(15);

fn millis(ms: Option<u32>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(ms.into()))
}

fn server_identity(options: &ServeOptions) -> napi::Result<ServerIdentity> {
    let file = |path: &Option<String>, what: &str| {
        path.as_ref()
            .map(PathBuf::from)
            .ok_or_else(|| plain(format!("tls \"x509\" needs {what}: the path of a PEM file")))
    };
    Ok(match options.tls.as_deref() {
        None | Some("raw") => ServerIdentity::RawKey,
        Some("self-signed") => ServerIdentity::SelfSigned {
            names: options.tls_names.clone().unwrap_or_default(),
        },
        Some("x509") => ServerIdentity::X509 {
            cert: file(&options.tls_cert, "cert")?,
            key: file(&options.tls_key, "key")?,
        },
        Some(other) => {
            return Err(plain(format!(
                "tls {other:?} is unknown; use \"raw\", \"self-signed\" or {{ cert, key }}"
            )))
        }
    })
}

fn call_options(options: &ServeOptions) -> CallOptions {
    let mut call = CallOptions::default();
    if let Some(n) = options.max_concurrent_requests {
        call.max_concurrent = n as usize;
    }
    if let Some(t) = millis(options.default_timeout_ms) {
        call.default_timeout = t;
    }
    if let Some(t) = millis(options.max_timeout_ms) {
        call.max_timeout = t;
    }
    if let Some(n) = options.max_frame_bytes {
        call.max_frame = n as usize;
    }
    call
}

/// Starts a node: binds `options.listen` (UDP + TCP), serves `options.operations` through
/// `host` and resolves once it is listening.
#[napi(ts_return_type = "Promise<Node>")]
pub fn serve<'env>(
    env: &'env Env,
    options: ServeOptions,
    key: &Keypair,
    host: &Host,
) -> napi::Result<PromiseRaw<'env, Node>> {
    let listen: SocketAddr = options
        .listen
        .parse()
        .map_err(|e| plain(format!("listen {:?} is not host:port: {e}", options.listen)))?;
    let config: DynamicConfig = match options.config.as_deref() {
        Some(json) => parse_json(json, "config")?,
        None => DynamicConfig::default(),
    };
    let store = ConfigStore::new(config).map_err(plain)?;
    let registry = host.registry(&options.operations)?;
    let identity = Arc::new(ConfigIdentityProvider::new(store.clone()));
    let service = CallService::new(
        registry,
        identity.clone(),
        Some(store.clone()),
        call_options(&options),
    )
    .map_err(plain)?;
    let mut config = EndpointConfig::new(listen, key.key.clone());
    config.tls = server_identity(&options)?;
    config.tcp = options.tcp.unwrap_or(true);
    if let Some(t) = millis(options.drain_timeout_ms) {
        config.drain_timeout = t;
    }
    if let Some(n) = options.connections_per_ip {
        config.limits.connections_per_ip = n as usize;
    }
    if let Some(n) = options.streams_per_connection {
        config.limits.streams_per_connection = n;
    }
    let with_relay;
    if options.iroh.unwrap_or(false) {
        let iroh = iroh_config(
            options.iroh_relay.as_deref(),
            options.iroh_relay_ca.as_deref(),
            options.iroh_direct,
        )?;
        with_relay = iroh.relays != IrohRelays::None;
        config.iroh = Some(iroh);
    } else {
        with_relay = false;
    }
    let bridge = host.bridge.clone();
    env.spawn_future(async move {
        let call: Arc<dyn ProtocolHandler> = Arc::new(CallHandler::new(service.clone()));
        let handlers = HandlerRegistry::new([call]).map_err(plain)?;
        let endpoint = Endpoint::bind(config, handlers, identity)
            .await
            .map_err(plain)?;
        // With a relay, resolve once registered there, so the ticket names the relay.
        let target = if with_relay {
            match endpoint.iroh_online(IROH_ONLINE_TIMEOUT).await {
                Ok(target) => Some(target),
                Err(e) => {
                    endpoint.shutdown().await;
                    return Err(plain(e));
                }
            }
        } else {
            endpoint.iroh_target()
        };
        Ok(Node {
            iroh_ticket: target.map(|t| t.to_string()),
            fingerprint: endpoint.fingerprint().to_string(),
            address: endpoint.local_addr().to_string(),
            endpoint: Mutex::new(Some(endpoint)),
            service,
            store,
            bridge,
        })
    })
}

#[napi]
impl Node {
    /// The node's fingerprint (`ed25519:<hex>`, or `SHA256:<hex>` with a certificate): what
    /// callers pin.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Where it listens, `host:port` (the real port when 0 was asked for).
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Where to dial this node over iroh: `iroh:<node id>?relay=…&addr=…` (`null` without
    /// iroh). The node id is the 64 hex digits of its `ed25519:` fingerprint.
    #[napi(getter)]
    pub fn iroh_ticket(&self) -> Option<String> {
        self.iroh_ticket.clone()
    }

    /// Replaces the dynamic configuration (JSON `{ auth, pubsub }`) after validating it; throws
    /// with the reason and keeps the old one if it is invalid. New connections and requests see
    /// it at once.
    #[napi]
    pub fn reload(&self, config_json: String) -> napi::Result<()> {
        let config: DynamicConfig = parse_json(&config_json, "config")?;
        self.store.reload(config).map_err(plain)
    }

    /// Publishes `dataJson` to `topic` as the node itself; returns how many subscriptions it reached.
    #[napi]
    pub fn publish(&self, topic: String, data_json: String) -> napi::Result<u32> {
        let data: Value = parse_json(&data_json, "data")?;
        let delivered = self.service.publish(&topic, &data).map_err(call_error)?;
        Ok(u32::try_from(delivered).unwrap_or(u32::MAX))
    }

    /// Stops accepting, lets in-flight connections finish (up to the drain timeout), closes the
    /// rest. Calling it again does nothing.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let endpoint = self.endpoint.lock().ok().and_then(|mut e| e.take());
        if let Some(endpoint) = endpoint {
            let report = endpoint.shutdown().await;
            tracing::debug!(target: "alknet::napi", in_flight = report.in_flight, cut_off = report.cut_off, "node closed");
        }
        self.bridge.close();
        Ok(())
    }
}
