//! The call protocol through the real endpoint: QUIC and TCP+TLS on loopback, raw-key TLS,
//! identities from the client's key.

#[path = "../../alknet-call/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use alknet_call::Peer;
use alknet_core::config::PeerEntry;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::NodeConfig;
use futures::StreamExt;
use serde_json::json;
use support::*;
use tokio::io::AsyncWriteExt;

struct Node {
    endpoint: alknet_node::Node,
    sessions: Arc<Mutex<Vec<Peer>>>,
    probe: Probe,
    dropped: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
}

async fn node(alice: &SecretKey) -> Node {
    let (probe, dropped) = probe();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth = support::config();
    config
        .auth
        .peers
        .push(PeerEntry::new("alice", [alice.public().fingerprint()]).with_scopes(["admin"]));
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let seen = sessions.clone();
    let endpoint = alknet_node::Node::builder(config)
        .key(SecretKey::generate())
        .operations(registry(&probe))
        .on_call_session(move |peer| seen.lock().unwrap().push(peer))
        .start()
        .await
        .unwrap();
    Node {
        endpoint,
        sessions,
        probe,
        dropped,
    }
}

async fn connect(node: &Node, key: SecretKey, kind: TransportKind) -> Peer {
    let client = Client::new(key).unwrap();
    let fp = node.endpoint.fingerprint().to_string();
    let conn = client
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, fp.clone()).over(kind),
        )
        .await
        .unwrap();
    Peer::connect(conn, client_service(), Some(fp))
}

#[tokio::test]
async fn calls_subscriptions_and_callbacks_work_over_quic_and_tcp() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    for kind in [TransportKind::Quic, TransportKind::Tcp] {
        let peer = connect(&node, alice.clone(), kind).await;
        assert_eq!(
            peer.call("math/add", json!({"a": 1, "b": 2}))
                .await
                .unwrap(),
            json!(3.0),
            "{kind:?}"
        );
        // The connection identity comes from the client's key.
        assert_eq!(
            peer.call("test/admin", json!({})).await.unwrap(),
            json!("alice"),
            "{kind:?}"
        );
        let ticks: Vec<_> = peer
            .subscribe("test/ticks", json!({"n": 4}))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(ticks.len(), 4);
        assert_eq!(
            peer.call("test/callback", json!(kind as u8)).await.unwrap(),
            json!({"hello": kind as u8})
        );
        peer.close();
    }
    assert_eq!(node.sessions.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_key_has_no_identity() {
    let node = node(&SecretKey::generate()).await;
    let peer = connect(&node, SecretKey::generate(), TransportKind::Quic).await;
    assert_eq!(
        peer.call("test/admin", json!({})).await.unwrap_err().code,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn garbage_on_one_connection_leaves_the_node_serving_others() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    let healthy = connect(&node, alice.clone(), TransportKind::Quic).await;
    for kind in [TransportKind::Quic, TransportKind::Tcp] {
        let client = Client::new(SecretKey::generate()).unwrap();
        let conn = client
            .dial(
                node.endpoint.local_addr(),
                &DialOptions::pinned(alknet_call::ALPN, node.endpoint.fingerprint()).over(kind),
            )
            .await
            .unwrap();
        let mut stream = if conn.is_single_stream() {
            conn.accept_bi().await
        } else {
            conn.open_bi().await
        }
        .unwrap();
        stream
            .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .unwrap();
        assert!(
            recv_raw(&mut stream).await.is_none(),
            "{kind:?}: the bad stream ends"
        );
        assert_eq!(
            healthy.call("test/echo", json!(kind as u8)).await.unwrap(),
            json!(kind as u8)
        );
    }
}

#[tokio::test]
async fn node_publish_reaches_remote_topic_subscribers() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    let peer = connect(&node, alice, TransportKind::Quic).await;
    let mut topic = peer.topic("chat/*").await.unwrap();
    // Publish from the peer until its own subscription is registered.
    let mut delivered = 0;
    for i in 0..1000 {
        delivered = peer.publish("chat/room1", json!({"n": i})).await.unwrap();
        if delivered == 1 {
            break;
        }
    }
    assert_eq!(delivered, 1);
    let item = topic.next().await.unwrap().unwrap();
    assert_eq!(item["topic"], "chat/room1");
}

#[tokio::test]
async fn a_reset_stream_cancels_the_requests_that_were_on_it() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let client = Client::new(alice).unwrap();
    let conn = client
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    let mut stream = conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("h", "/test/hold", json!({}))).await;
    assert_eq!(node.probe.wait_started().await, "hold");
    stream.reset(7);
    assert_eq!(node.dropped.recv().await, Some("hold"));
}
