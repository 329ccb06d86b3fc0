//! Shutting a node down with call clients on TCP+TLS, where the connection has one stream that
//! cannot be hidden: the call session drains it itself. The drain deadline is an hour, so a test
//! that waited for it would hang instead of pass.

#[path = "../../alknet-call/tests/support/mod.rs"]
mod support;

use alknet_call::Peer;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::NodeConfig;
use serde_json::json;
use support::*;

const AN_HOUR_MS: u64 = 3_600_000;

async fn node(probe: &Probe) -> alknet_node::Node {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.drain_timeout_ms = Some(AN_HOUR_MS);
    alknet_node::Node::builder(config)
        .key(SecretKey::generate())
        .operations(registry(probe))
        .start()
        .await
        .unwrap()
}

async fn tcp_client(node: &alknet_node::Node) -> Peer {
    let client = Client::new(SecretKey::generate()).unwrap();
    let fp = node.fingerprint().to_string();
    let conn = client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, fp.clone()).over(TransportKind::Tcp),
        )
        .await
        .unwrap();
    Peer::connect(conn, client_service(), Some(fp))
}

#[tokio::test]
async fn an_idle_tcp_call_client_does_not_hold_shutdown_up() {
    let (probe, _) = probe();
    let node = node(&probe).await;
    let peer = tcp_client(&node).await;
    assert_eq!(peer.call("test/echo", json!(1)).await.unwrap(), json!(1));
    let report = node.shutdown().await;
    assert_eq!(report.cut_off, 0);
    // The node closed the connection once it had nothing in flight.
    peer.closed().await;
}

#[tokio::test]
async fn a_tcp_call_in_flight_at_shutdown_completes_and_new_calls_are_unavailable() {
    let (probe, _) = probe();
    let node = node(&probe).await;
    let peer = tcp_client(&node).await;
    let in_flight = {
        let peer = peer.clone();
        tokio::spawn(async move { peer.call("test/gate", json!("done")).await })
    };
    assert_eq!(probe.wait_started().await, "gate");
    let shutdown = tokio::spawn(node.shutdown());
    // Until the session sees the drain, new calls are served; from then on they are refused.
    let refused = loop {
        match peer.call("test/echo", json!(2)).await {
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.code, "UNAVAILABLE");
    assert!(
        refused.message.contains("shutting down"),
        "{}",
        refused.message
    );
    probe.release.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), json!("done"));
    let report = shutdown.await.unwrap();
    assert_eq!(report.cut_off, 0);
    assert_eq!(report.in_flight, 1);
}

async fn quic_client(node: &alknet_node::Node) -> (Peer, Client) {
    let client = Client::new(SecretKey::generate()).unwrap();
    let fp = node.fingerprint().to_string();
    let conn = client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, fp.clone()),
        )
        .await
        .unwrap();
    (Peer::connect(conn, client_service(), Some(fp)), client)
}

#[tokio::test]
async fn a_quic_call_in_flight_at_shutdown_completes() {
    let (probe, _) = probe();
    let node = node(&probe).await;
    let (peer, _client) = quic_client(&node).await;
    let in_flight = {
        let peer = peer.clone();
        tokio::spawn(async move { peer.call("test/gate", json!("done")).await })
    };
    assert_eq!(probe.wait_started().await, "gate");
    let shutdown = tokio::spawn(node.shutdown());
    probe.release.notify_one();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer, Ok(json!("done")));
    let report = shutdown.await.unwrap();
    assert_eq!(report.cut_off, 0);
}
