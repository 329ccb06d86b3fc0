//! What the load, soak and fault tests share.
#![allow(dead_code)]

use alknet_call::OperationRegistry;
use alknet_core::SecretKey;
use alknet_node::{Node, NodeConfig};
use serde_json::json;

/// The resident set size of this process, in KiB (Linux `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A node on a loopback port serving `operation`, which answers with its input.
pub async fn echo_node(operation: &str) -> Node {
    let mut ops = OperationRegistry::new();
    ops.query(operation, json!({}), json!({}), |_, input| async move {
        Ok(input)
    })
    .unwrap();
    node(NodeConfig::new("127.0.0.1:0".parse().unwrap()), ops).await
}

/// A node with a fresh key, `config` and `ops`, started.
pub async fn node(config: NodeConfig, ops: OperationRegistry) -> Node {
    Node::builder(config)
        .key(SecretKey::generate())
        .operations(ops)
        .start()
        .await
        .unwrap()
}
