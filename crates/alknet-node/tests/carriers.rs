//! The call protocol through the real endpoint: QUIC and TCP+TLS on loopback, raw-key TLS,
//! identities from the client's key.

#[path = "../../alknet-call/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use alknet_call::Peer;
use alknet_core::config::PeerEntry;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{LimitsConfig, NodeConfig};
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
    node_with(alice, LimitsConfig::default()).await
}

async fn node_with(alice: &SecretKey, limits: LimitsConfig) -> Node {
    let (probe, dropped) = probe();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits = limits;
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
async fn raw_subscription_items_arrive_intact_over_quic_and_tcp() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let items =
        json!(["é 🦀", "\" \\ \n \u{0}", {"k": [1.5, null, true]}, 18446744073709551615u64]);
    for kind in [TransportKind::Quic, TransportKind::Tcp] {
        let peer = connect(&node, alice.clone(), kind).await;
        let mut sub = peer
            .subscribe("test/items", json!({ "items": items }))
            .await
            .unwrap();
        for want in items.as_array().unwrap() {
            let got = sub.next_raw().await.unwrap().unwrap();
            assert_eq!(
                &got.deserialize::<serde_json::Value>().unwrap(),
                want,
                "{kind:?}"
            );
        }
        assert!(sub.next_raw().await.is_none(), "{kind:?}");
        // Cancelling mid-stream still reaches the handler.
        let mut held = peer
            .subscribe("test/items", json!({ "items": [1], "hold": true }))
            .await
            .unwrap();
        assert_eq!(held.next_raw().await.unwrap().unwrap().json(), "1");
        drop(held);
        assert_eq!(node.dropped.recv().await, Some("items"), "{kind:?}");
        peer.close();
    }
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
    send_raw(&mut stream, &held_request("h")).await;
    assert_eq!(node.probe.wait_started().await, "hold");
    stream.reset(7);
    assert_eq!(node.dropped.recv().await, Some("hold"));
}

/// A raw QUIC connection to the node, to speak the protocol by hand.
async fn raw_quic(node: &Node, key: SecretKey) -> alknet_core::Connection {
    Client::new(key)
        .unwrap()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, node.endpoint.fingerprint()),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn over_quic_a_caller_that_half_closes_its_stream_still_gets_its_answer() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    let conn = raw_quic(&node, alice).await;
    let mut stream = conn.open_bi().await.unwrap();
    half_closed_request_gets_its_answer(&mut stream).await;
}

#[tokio::test]
async fn over_quic_stop_sending_cancels_the_request_and_drops_its_handler() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let conn = raw_quic(&node, alice).await;
    let mut stream = conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    stream.shutdown().await.unwrap();
    assert_eq!(node.probe.wait_started().await, "hold");
    stream.stop(alknet_call::carrier::STOP_CANCELLED);
    assert_eq!(node.dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn over_quic_after_stop_sending_the_callee_writes_nothing_more() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let conn = raw_quic(&node, alice).await;
    let mut stream = conn.open_bi().await.unwrap();
    // Without `n` the subscription never ends by itself.
    send_raw(&mut stream, &request("t", "/test/ticks", json!({}))).await;
    stream.shutdown().await.unwrap();
    assert_eq!(recv_raw(&mut stream).await.unwrap()["payload"]["output"], 0);
    stream.stop(alknet_call::carrier::STOP_CANCELLED);
    assert_eq!(node.dropped.recv().await, Some("ticks"));
    // The connection carries on.
    let mut other = conn.open_bi().await.unwrap();
    send_raw(&mut other, &request("e", "/test/echo", json!(5))).await;
    other.shutdown().await.unwrap();
    assert_eq!(recv_raw(&mut other).await.unwrap()["payload"]["output"], 5);
}

#[tokio::test]
async fn over_quic_an_old_style_call_aborted_still_cancels() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let conn = raw_quic(&node, alice).await;
    let mut stream = conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    assert_eq!(node.probe.wait_started().await, "hold");
    send_raw(
        &mut stream,
        &json!({"type": "call.aborted", "id": "h", "payload": {}}).to_string(),
    )
    .await;
    assert_eq!(node.dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn over_quic_a_peer_cancel_drops_the_remote_handler() {
    let alice = SecretKey::generate();
    let mut node = node(&alice).await;
    let peer = connect(&node, alice, TransportKind::Quic).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    // An hour's deadline: only the cancel can end the handler within the test.
    let options = alknet_call::RequestOptions {
        cancel: Some(cancel.clone()),
        timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    let call = tokio::spawn(async move { peer.call_with("test/hold", json!({}), options).await });
    assert_eq!(node.probe.wait_started().await, "hold");
    cancel.cancel();
    assert_eq!(call.await.unwrap().unwrap_err().code, "CANCELLED");
    assert_eq!(node.dropped.recv().await, Some("hold"));
}

/// A frame header announcing `len` bytes, and `sent` bytes of its body.
fn partial_frame(len: usize, sent: usize) -> Vec<u8> {
    let mut bytes = (len as u32).to_be_bytes().to_vec();
    bytes.resize(4 + sent, b' ');
    bytes
}

#[tokio::test]
async fn a_connection_without_an_identity_has_a_lower_frame_ceiling() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    let big = json!("x".repeat(1_200_000));
    // An identified peer may send a 1.2 MB request.
    let conn = raw_quic(&node, alice).await;
    let mut stream = conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("1", "/test/echo", big.clone())).await;
    assert_eq!(
        recv_raw(&mut stream).await.unwrap()["payload"]["output"],
        big
    );
    // A stranger announcing more than 1 MiB is cut off at the header.
    let stranger = raw_quic(&node, SecretKey::generate()).await;
    let mut stream = stranger.open_bi().await.unwrap();
    stream
        .write_all(&partial_frame(1_200_000, 0))
        .await
        .unwrap();
    assert!(recv_raw(&mut stream).await.is_none(), "the stream is reset");
}

#[tokio::test]
async fn unidentified_partial_frames_share_one_budget_and_expire() {
    let alice = SecretKey::generate();
    let node = node_with(
        &alice,
        LimitsConfig {
            anonymous_max_frame_bytes: Some(64 * 1024),
            anonymous_input_bytes: Some(128 * 1024),
            frame_deadline_ms: Some(500),
            ..Default::default()
        },
    )
    .await;
    // A stranger parks partial frames on many streams: the shared budget holds two of them;
    // the others wait (their bytes stay in the transport, under flow control).
    let stranger = raw_quic(&node, SecretKey::generate()).await;
    let mut parked = Vec::new();
    for _ in 0..6 {
        let mut stream = stranger.open_bi().await.unwrap();
        stream
            .write_all(&partial_frame(60 * 1024, 30 * 1024))
            .await
            .unwrap();
        parked.push(stream);
    }
    // An identified peer is served meanwhile: it has a budget of its own.
    let healthy = connect(&node, alice, TransportKind::Quic).await;
    assert_eq!(healthy.call("test/echo", json!(1)).await.unwrap(), json!(1));
    // Unfinished frames end at their deadline: every parked stream is reset.
    for stream in &mut parked {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), recv_raw(stream));
        assert!(ended.await.expect("reset at the frame deadline").is_none());
    }
    // The budget is free again for an honest stranger.
    let honest = raw_quic(&node, SecretKey::generate()).await;
    let mut stream = honest.open_bi().await.unwrap();
    send_raw(&mut stream, &request("e", "/test/echo", json!(2))).await;
    assert_eq!(recv_raw(&mut stream).await.unwrap()["payload"]["output"], 2);
}

/// A subscription of `peer` to `pattern`, registered on the node: publishes `probe` until one
/// reaches it, and reads that one off.
async fn registered_topic(peer: &Peer, pattern: &str, probe: &str) -> alknet_call::Subscription {
    let mut topic = peer.topic(pattern).await.unwrap();
    while peer.publish(probe, json!("probe")).await.unwrap() == 0 {}
    assert_eq!(topic.next().await.unwrap().unwrap()["topic"], probe);
    topic
}

/// Only `root` may publish to `secret/>` (alice, an admin, may not).
fn secret_for_root(node: &Node) {
    let mut dynamic = node.endpoint.dynamic();
    dynamic.pubsub.rules.push(alknet_call::TopicRule {
        pattern: "secret/>".into(),
        publish: Some(vec!["root".into()]),
        subscribe: None,
        anonymous: false,
    });
    node.endpoint.reload(dynamic).unwrap();
}

#[tokio::test]
async fn batched_publishes_arrive_once_in_order_each_with_its_own_answer_over_quic_and_tcp() {
    let alice = SecretKey::generate();
    let node = node(&alice).await;
    secret_for_root(&node);
    for kind in [TransportKind::Quic, TransportKind::Tcp] {
        let peer = connect(&node, alice.clone(), kind).await;
        let mut topic = registered_topic(&peer, "b/>", "b/probe").await;
        // 600 publishes at once, sent as batches (one after the other); one forbidden topic and
        // one wildcard topic among them.
        let published = futures::future::join_all((0..600).map(|n| {
            let topic = match n {
                100 => "secret/x".to_string(),
                200 => "b/*".to_string(),
                _ => format!("b/{}", n % 7),
            };
            let peer = peer.clone();
            async move { peer.publish(&topic, json!({ "n": n })).await }
        }))
        .await;
        for (n, result) in published.iter().enumerate() {
            match n {
                100 => assert_eq!(result.as_ref().unwrap_err().code, "FORBIDDEN", "{kind:?}"),
                200 => assert_eq!(
                    result.as_ref().unwrap_err().code,
                    "INVALID_INPUT",
                    "{kind:?}"
                ),
                _ => assert_eq!(result.as_ref().unwrap(), &1, "{kind:?} message {n}"),
            }
        }
        // Each published message once, in the order it was published, then nothing else.
        for n in (0..600).filter(|n| *n != 100 && *n != 200) {
            let item = topic.next().await.unwrap().unwrap();
            assert_eq!(item["data"]["n"], n, "{kind:?}");
            assert_eq!(item["topic"], format!("b/{}", n % 7), "{kind:?}");
        }
        assert_eq!(peer.publish("b/end", json!("end")).await.unwrap(), 1);
        assert_eq!(topic.next().await.unwrap().unwrap()["topic"], "b/end");
        publish_batch_answers_each_message_and_refuses_an_oversized_batch(&peer, &mut topic).await;
        peer.close();
    }
}

/// `pubsub/publish_batch` called directly: one result per message, a refused message does not
/// stop the others; more than 1 024 messages, or one that is not a message, is refused whole.
async fn publish_batch_answers_each_message_and_refuses_an_oversized_batch(
    peer: &Peer,
    topic: &mut alknet_call::Subscription,
) {
    let out = peer
        .call(
            "pubsub/publish_batch",
            json!({ "messages": [
                { "topic": "b/1", "data": 1 },
                { "topic": "secret/x", "data": 2 },
                { "topic": "b/>", "data": 3 },
                { "topic": "b/4" },
            ] }),
        )
        .await
        .unwrap();
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0], json!({ "delivered": 1 }));
    assert_eq!(results[1]["error"]["code"], "FORBIDDEN");
    assert_eq!(results[2]["error"]["code"], "INVALID_INPUT");
    assert_eq!(results[3], json!({ "delivered": 1 }));
    assert_eq!(topic.next().await.unwrap().unwrap()["data"], 1);
    assert_eq!(
        topic.next().await.unwrap().unwrap(),
        json!({ "topic": "b/4", "data": null })
    );
    // More than 1 024 messages, or one that is not a message: nothing is published.
    let many: Vec<_> = (0..1025)
        .map(|n| json!({ "topic": "b/x", "data": n }))
        .collect();
    for messages in [json!(many), json!([{ "topic": "b/y" }, { "data": 1 }])] {
        let refused = peer
            .call("pubsub/publish_batch", json!({ "messages": messages }))
            .await
            .unwrap_err();
        assert_eq!(refused.code, "INVALID_INPUT");
    }
    // The connection and the subscription go on: the next message is the next one seen.
    assert_eq!(peer.publish("b/after", json!(5)).await.unwrap(), 1);
    assert_eq!(topic.next().await.unwrap().unwrap()["topic"], "b/after");
}
