//! `serve`: a node whose operations JavaScript answers. The options arrive as the JSON of
//! [`alknet_node::NodeConfig`] (the TypeScript layer maps its camelCase options to that shape);
//! assembling the node is `alknet-node`'s job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::pubsub::Published;
use alknet_call::{CallError, ErrorCode};
use alknet_node::{DynamicConfig, NodeConfig};
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::value::RawValue;

use crate::bridge::Bridge;
use crate::errors::{call_error, node_error, plain};
use crate::host::Host;
use crate::keypair::Keypair;

/// A running node.
#[napi]
pub struct Node {
    node: Mutex<Option<alknet_node::Node>>,
    bridge: Arc<Bridge>,
    fingerprint: String,
    address: String,
    iroh_ticket: Option<String>,
}

/// How long `serve` waits for the iroh endpoint to register with its relay.
const IROH_ONLINE_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts a node from `configJson` (a `NodeConfig`: `listen`, `tls`, `tcp`, `iroh`, `limits`,
/// `drain_timeout_ms`, `auth`, `pubsub`), serving `operationsJson` (a JSON array of operation
/// specs) through `host`; resolves once it is listening.
#[napi(ts_return_type = "Promise<Node>")]
pub fn serve<'env>(
    env: &'env Env,
    config_json: String,
    operations_json: String,
    key: &Keypair,
    host: &Host,
) -> napi::Result<PromiseRaw<'env, Node>> {
    let config = NodeConfig::from_json(&config_json).map_err(node_error)?;
    let operations = host.registry(&operations_json)?;
    let builder = alknet_node::Node::builder(config)
        .key(key.key.clone())
        .operations(operations)
        .wait_for_relay(IROH_ONLINE_TIMEOUT);
    let bridge = host.bridge.clone();
    env.spawn_future(async move {
        let node = builder.start().await.map_err(node_error)?;
        Ok(Node {
            iroh_ticket: node.iroh_target().map(|t| t.to_string()),
            fingerprint: node.fingerprint().to_string(),
            address: node.local_addr().to_string(),
            node: Mutex::new(Some(node)),
            bridge,
        })
    })
}

impl Node {
    fn with<T>(&self, f: impl FnOnce(&alknet_node::Node) -> napi::Result<T>) -> napi::Result<T> {
        let node = self.node.lock().map_err(|_| plain("node state poisoned"))?;
        match node.as_ref() {
            Some(node) => f(node),
            None => Err(plain("the node is closed")),
        }
    }
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
        let config = DynamicConfig::from_json(&config_json).map_err(plain)?;
        self.with(|node| node.reload(config).map_err(plain))
    }

    /// Publishes `dataJson` to `topic` as the node itself; returns how many subscriptions it reached.
    #[napi]
    pub fn publish(&self, topic: String, data_json: String) -> napi::Result<u32> {
        // Checked in place: the string becomes the `RawValue` without a copy.
        let data = RawValue::from_string(data_json)
            .map_err(|e| plain(format!("data is not valid: {e}")))?;
        let delivered = self.with(|node| node.publish_raw(&topic, &data).map_err(call_error))?;
        Ok(u32::try_from(delivered).unwrap_or(u32::MAX))
    }

    /// Publishes `messagesJson` (a JSON array of `{ topic, data }`) as the node itself, in order;
    /// returns how many subscriptions each reached. If one is invalid, none is published.
    #[napi]
    pub fn publish_many(&self, messages_json: String) -> napi::Result<Vec<u32>> {
        let items = Published::decode_many(messages_json.into_bytes())
            .map_err(|e| call_error(CallError::new(ErrorCode::InvalidInput, e)))?;
        let delivered = self.with(|node| node.publish_items(&items).map_err(call_error))?;
        Ok(delivered
            .into_iter()
            .map(|d| u32::try_from(d).unwrap_or(u32::MAX))
            .collect())
    }

    /// The pub/sub backplane's state as JSON `{ connected, sent, received, lost, rejected }`
    /// (`null` without a backplane).
    #[napi]
    pub fn backplane_status(&self) -> napi::Result<Option<String>> {
        self.with(|node| {
            Ok(node.backplane().map(|b| {
                let s = b.stats();
                serde_json::json!({
                    "connected": b.is_connected(),
                    "sent": s.sent,
                    "received": s.received,
                    "lost": s.lost,
                    "rejected": s.rejected,
                })
                .to_string()
            }))
        })
    }

    /// Resolves once the backplane is connected and has the NATS subscriptions of every current
    /// subscriber (at once without a backplane).
    #[napi]
    pub async fn backplane_ready(&self) -> napi::Result<()> {
        let backplane = self.with(|node| Ok(node.backplane().cloned()))?;
        if let Some(backplane) = backplane {
            backplane.ready().await;
        }
        Ok(())
    }

    /// Stops accepting, lets in-flight connections finish (up to the drain timeout), closes the
    /// rest. Calling it again does nothing.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let node = self.node.lock().ok().and_then(|mut n| n.take());
        if let Some(node) = node {
            let report = node.shutdown().await;
            tracing::debug!(target: "alknet::napi", in_flight = report.in_flight, cut_off = report.cut_off, "node closed");
        }
        self.bridge.close();
        Ok(())
    }
}
