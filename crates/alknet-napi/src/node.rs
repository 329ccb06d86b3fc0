//! `serve`: a node whose operations JavaScript answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::{
    CallHandler, CallOptions, CallService, OperationRegistry, OperationSpec, OperationType,
};
use alknet_core::{ConfigIdentityProvider, ConfigStore, DynamicConfig, ProtocolHandler};
use alknet_endpoint::{Endpoint, EndpointConfig, HandlerRegistry};
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::Value;

use crate::bridge::{Bridge, Dispatch};
use crate::errors::{call_error, parse_json, plain};
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
}

struct Prepared {
    listen: SocketAddr,
    store: ConfigStore,
    service: Arc<CallService>,
    bridge: Arc<Bridge>,
    drain_timeout: Option<Duration>,
}

fn prepare(options: ServeOptions, dispatch: Dispatch) -> napi::Result<Prepared> {
    let listen: SocketAddr = options
        .listen
        .parse()
        .map_err(|e| plain(format!("listen {:?} is not host:port: {e}", options.listen)))?;
    let config: DynamicConfig = match options.config.as_deref() {
        Some(json) => parse_json(json, "config")?,
        None => DynamicConfig::default(),
    };
    let store = ConfigStore::new(config).map_err(plain)?;
    let specs: Vec<OperationSpec> = parse_json(&options.operations, "operations")?;
    let bridge = Bridge::new(dispatch);
    let mut registry = OperationRegistry::new();
    for spec in specs {
        let handler = match spec.kind {
            OperationType::Subscription => bridge.stream(),
            OperationType::Query | OperationType::Mutation => bridge.unary(),
        };
        registry.register(spec, handler).map_err(plain)?;
    }
    let provider = Arc::new(ConfigIdentityProvider::new(store.clone()));
    let service = CallService::new(
        registry,
        provider,
        Some(store.clone()),
        CallOptions::default(),
    )
    .map_err(plain)?;
    Ok(Prepared {
        listen,
        store,
        service,
        bridge,
        drain_timeout: options
            .drain_timeout_ms
            .map(|ms| Duration::from_millis(ms.into())),
    })
}

/// Starts a node: binds `options.listen` (UDP + TCP), serves `options.operations` through
/// `handler` (see [`crate::bridge`] for its events) and resolves once it is listening.
#[napi(
    ts_args_type = "options: ServeOptions, key: Keypair, handler: (event: string, requestId: number, operation: string, inputJson: string, identityJson: string) => void",
    ts_return_type = "Promise<Node>"
)]
pub fn serve<'env>(
    env: &'env Env,
    options: ServeOptions,
    key: &Keypair,
    handler: Dispatch,
) -> napi::Result<PromiseRaw<'env, Node>> {
    let prepared = prepare(options, handler)?;
    let key = key.key.clone();
    env.spawn_future(async move {
        let Prepared {
            listen,
            store,
            service,
            bridge,
            drain_timeout,
        } = prepared;
        let mut config = EndpointConfig::new(listen, key);
        if let Some(t) = drain_timeout {
            config.drain_timeout = t;
        }
        let call: Arc<dyn ProtocolHandler> = Arc::new(CallHandler::new(service.clone()));
        let handlers = HandlerRegistry::new([call]).map_err(plain)?;
        let identity = Arc::new(ConfigIdentityProvider::new(store.clone()));
        let endpoint = Endpoint::bind(config, handlers, identity)
            .await
            .map_err(plain)?;
        Ok(Node {
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
    /// The node's fingerprint, `ed25519:<hex>`: what callers pin.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// Where it listens, `host:port` (the real port when 0 was asked for).
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Replaces the dynamic configuration (JSON `{ auth, pubsub }`) after validating it; throws
    /// with the reason and keeps the old one if it is invalid. New connections see it at once.
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

    /// Answers a `call` event.
    #[napi]
    pub fn resolve(&self, request_id: i64, output_json: String) -> napi::Result<()> {
        self.bridge.resolve(request_id, &output_json)
    }

    /// Fails a `call` or subscription with `{ code, message, details? }` (JSON).
    #[napi]
    pub fn reject(&self, request_id: i64, error_json: String) -> napi::Result<()> {
        self.bridge.reject(request_id, &error_json)
    }

    /// Answers a `subscribe` or `next` event with one item.
    #[napi]
    pub fn push(&self, request_id: i64, item_json: String) -> napi::Result<()> {
        self.bridge.push(request_id, &item_json)
    }

    /// Ends a subscription (answering `subscribe` or `next`).
    #[napi]
    pub fn end(&self, request_id: i64) -> napi::Result<()> {
        self.bridge.end(request_id)
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
