//! Nodes sharing a NATS backplane and clients subscribed to them: shared by the NATS tests and
//! the fan-out benchmark (`examples/nats_fanout.rs`).

use std::time::Duration;

use alknet_call::pubsub::TopicRule;
use alknet_call::{CallService, OperationRegistry, Subscription};
use alknet_core::SecretKey;
use alknet_node::{
    connect, BackplaneConfig, Connected, DialTarget, NatsConfig, Node, NodeConfig, Transport,
};
use serde_json::json;

/// The subject prefix of these nodes' topics in NATS.
pub const PREFIX: &str = "test.fleet";

/// A node on loopback where anyone may publish and subscribe to `pattern`, on the NATS server
/// at `nats` (none: a node alone).
pub async fn node(nats: Option<&str>, pattern: &str) -> Node {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.pubsub.rules.push(TopicRule {
        pattern: pattern.into(),
        publish: None,
        subscribe: None,
        anonymous: true,
    });
    config.pubsub.backplane = nats.map(|url| BackplaneConfig {
        nats: NatsConfig {
            servers: vec![url.into()],
            credentials: None,
            subject_prefix: Some(PREFIX.into()),
        },
    });
    Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap()
}

/// A client of `node` over QUIC, with a key of its own.
pub async fn client(node: &Node) -> Connected {
    connect(
        SecretKey::generate(),
        DialTarget::Direct {
            address: node.local_addr(),
            fingerprint: node.fingerprint().into(),
            over: Some(Transport::Quic),
            timeout: Duration::from_secs(10),
        },
        CallService::anonymous(OperationRegistry::new()).unwrap(),
    )
    .await
    .unwrap()
}

/// Subscribes `c` to `pattern` on `node`; returns once the node's broker has the subscription.
pub async fn subscribe(c: &Connected, node: &Node, pattern: &str) -> Subscription {
    let before = node.call_service().unwrap().broker().len();
    let sub = c
        .peer
        .subscribe("pubsub/subscribe", json!({ "topic": pattern }))
        .await
        .unwrap();
    // The node has it once it answers a call made after it on the same connection.
    while node.call_service().unwrap().broker().len() == before {
        c.peer.call("services/list", json!({})).await.unwrap();
    }
    sub
}
