//! Soak: many calls and pub/sub messages through one node over real QUIC and TCP+TLS
//! connections; the process's RSS after them must stay within a margin of the RSS after a
//! warm-up (what grows with the count is a leak; allocator noise and pools do not grow with it).
//!
//! Short form (in `cargo test`): 20 000 calls and 20 000 messages. Long form, the numbers
//! (1 000 000 of each): `ALKNET_SOAK=long cargo test --release -p alknet-node --test soak -- --nocapture`.
//! The margin: 16 MiB plus 10 % of the warm RSS, printed with the measurements.

mod suite;

use alknet_call::{CallService, OperationRegistry, Peer};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::Node;
use futures::StreamExt;
use serde_json::json;
use suite::{echo_node, rss_kib};

/// Calls and messages, over `peers` in turn.
async fn round(node: &Node, peers: &[Peer], subscriber: &mut alknet_call::Subscription, n: usize) {
    // Calls, 64 in flight at a time.
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let peer = peers[i % peers.len()].clone();
            async move {
                (
                    i,
                    peer.call("soak/echo", json!({"i": i, "pad": "x".repeat(200)}))
                        .await,
                )
            }
        })
        .buffer_unordered(64);
    while let Some((i, answer)) = calls.next().await {
        assert_eq!(answer.unwrap()["i"], json!(i));
    }
    // Messages, each read by the subscriber before the next batch (the queue stays bounded).
    for batch in 0..n / 64 {
        for j in 0..64 {
            let delivered = node
                .publish("soak/m", &json!({"n": batch * 64 + j}))
                .unwrap();
            assert_eq!(delivered, 1);
        }
        for j in 0..64 {
            let item = subscriber.next().await.unwrap().unwrap();
            assert_eq!(item["data"]["n"], json!(batch * 64 + j));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_after_many_calls_and_messages_stays_within_the_margin() {
    let long = std::env::var("ALKNET_SOAK").is_ok_and(|v| v == "long");
    let n = if long { 1_000_000 } else { 20_000 };
    let node = echo_node("soak/echo").await;
    // A known peer may subscribe without topic rules.
    let key = SecretKey::generate();
    let mut dynamic = node.dynamic();
    dynamic.auth.peers.push(alknet_core::config::PeerEntry::new(
        "soak",
        [key.public().fingerprint()],
    ));
    node.reload(dynamic).unwrap();

    let client = Client::new(key).unwrap();
    let service = CallService::anonymous(OperationRegistry::new()).unwrap();
    let mut peers = Vec::new();
    for over in [TransportKind::Quic, TransportKind::Tcp] {
        let options =
            DialOptions::pinned(alknet_call::ALPN, node.fingerprint().to_string()).over(over);
        let conn = client.dial(node.local_addr(), &options).await.unwrap();
        peers.push(Peer::connect(conn, service.clone(), None));
    }
    let mut subscriber = peers[0].topic("soak/>").await.unwrap();
    while node.publish("soak/ready", &json!(null)).unwrap() == 0 {
        tokio::task::yield_now().await;
    }
    // Drain to a marker, so what is read next is what is published next.
    assert_eq!(node.publish("soak/go", &json!("go")).unwrap(), 1);
    while subscriber.next().await.unwrap().unwrap()["data"] != json!("go") {}

    round(&node, &peers, &mut subscriber, 2_048).await;
    let warm = rss_kib();
    round(&node, &peers, &mut subscriber, n).await;
    let after = rss_kib();
    let margin = 16 * 1024 + warm / 10;
    println!(
        "soak: {n} calls + {n} messages: RSS warm {warm} KiB, after {after} KiB ({:+} KiB; margin {margin} KiB)",
        after as i64 - warm as i64
    );
    assert!(
        after <= warm + margin,
        "RSS grew from {warm} KiB to {after} KiB over {n} calls and messages (margin {margin} KiB)"
    );
}
