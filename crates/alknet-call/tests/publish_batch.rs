//! A `Peer`'s publishes in flight together travel as one `pubsub/publish_batch`, and a remote
//! without that operation gets each as its own `pubsub/publish` (remembered per connection).
//! The remote here is a bare connection this test answers by hand, so it can lack the operation;
//! `carriers.rs` in alknet-node runs batched publishes against a real node over QUIC and TCP+TLS.

mod support;

use alknet_core::connection::BoxedStream;
use serde_json::{json, Value};
use support::*;

/// The next request on `raw`: its stream, id, operation and input.
async fn next_request(raw: &alknet_core::Connection) -> (BoxedStream, String, String, Value) {
    let mut stream = raw.accept_bi().await.unwrap();
    let asked = recv_raw(&mut stream).await.unwrap();
    let id = asked["id"].as_str().unwrap().to_string();
    let op = asked["payload"]["operationId"].as_str().unwrap();
    let op = op.trim_start_matches('/').to_string();
    (stream, id, op, asked["payload"]["input"].clone())
}

async fn answer(stream: &mut BoxedStream, id: &str, kind: &str, payload: Value) {
    let frame = json!({ "type": kind, "id": id, "payload": payload });
    send_raw(stream, &frame.to_string()).await;
}

/// Publishes `data` 0..n on `peer` at once, from a task of their own; each its own answer.
fn publish_n(
    peer: &alknet_call::Peer,
    n: u64,
) -> tokio::task::JoinHandle<Vec<Result<u64, alknet_call::CallError>>> {
    let peer = peer.clone();
    tokio::spawn(async move {
        futures::future::join_all((0..n).map(|i| peer.publish("t", json!(i)))).await
    })
}

/// Answers the request `id` on `stream` with `output`.
async fn respond(stream: &mut BoxedStream, id: &str, output: Value) {
    answer(stream, id, "call.responded", json!({ "output": output })).await;
}

/// Answers the next `count` requests, each a `pubsub/publish` (in any order), with `delivered` =
/// the message's `data`; returns the data seen, sorted.
async fn answer_each_publish(raw: &alknet_core::Connection, count: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let (mut stream, id, op, input) = next_request(raw).await;
        assert_eq!(op, "pubsub/publish");
        let data = input["data"].as_u64().unwrap();
        seen.push(data);
        answer(
            &mut stream,
            &id,
            "call.responded",
            json!({ "output": { "delivered": data } }),
        )
        .await;
    }
    seen.sort_unstable();
    seen
}

#[tokio::test]
async fn publishes_made_together_become_one_batch_and_fall_back_on_not_found() {
    let (raw, c) = alknet_core::connection::memory::pair(alknet_call::ALPN);
    let peer = alknet_call::Peer::connect(c, client_service(), None);
    let publish_all = |peer: alknet_call::Peer, data: std::ops::Range<u64>| {
        tokio::spawn(async move {
            futures::future::join_all(data.map(|n| {
                let peer = peer.clone();
                async move { peer.publish("t", json!(n)).await.unwrap() }
            }))
            .await
        })
    };
    // Made before the sender runs (one thread here): one batch, in the order they were made.
    let first = publish_all(peer.clone(), 0..4);
    let (mut stream, id, op, input) = next_request(&raw).await;
    assert_eq!(op, "pubsub/publish_batch");
    let messages: Vec<_> = (0..4).map(|n| json!({ "topic": "t", "data": n })).collect();
    assert_eq!(input, json!({ "messages": messages }));
    // This remote does not know it: each message is sent again on its own.
    let missing = json!({ "code": "NOT_FOUND", "message": "no operation", "retryable": false });
    answer(&mut stream, &id, "call.error", missing).await;
    assert_eq!(answer_each_publish(&raw, 4).await, [0, 1, 2, 3]);
    // Each caller got its own answer.
    assert_eq!(first.await.unwrap(), [0, 1, 2, 3]);
    // From now on every publish on this connection is its own request.
    let later = publish_all(peer.clone(), 10..13);
    assert_eq!(answer_each_publish(&raw, 3).await, [10, 11, 12]);
    assert_eq!(later.await.unwrap(), [10, 11, 12]);
}

#[tokio::test]
async fn each_publish_of_a_batch_gets_its_own_result_or_the_batch_error() {
    let (raw, c) = alknet_core::connection::memory::pair(alknet_call::ALPN);
    let peer = alknet_call::Peer::connect(c, client_service(), None);
    let published = publish_n(&peer, 3);
    let (mut stream, id, op, _) = next_request(&raw).await;
    assert_eq!(op, "pubsub/publish_batch");
    let results = json!({ "results": [
        { "delivered": 1 },
        { "error": { "code": "FORBIDDEN", "message": "not allowed", "retryable": false } },
        { "delivered": 2 },
    ] });
    respond(&mut stream, &id, results).await;
    let results = published.await.unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &1);
    assert_eq!(results[1].as_ref().unwrap_err().code, "FORBIDDEN");
    assert_eq!(results[2].as_ref().unwrap(), &2);
    // A batch refused whole: each of its publishes fails with that error.
    let published = publish_n(&peer, 3);
    let (mut stream, id, _, _) = next_request(&raw).await;
    let busy = json!({ "code": "OVERLOADED", "message": "too many requests", "retryable": true });
    answer(&mut stream, &id, "call.error", busy).await;
    for r in published.await.unwrap() {
        assert_eq!(r.unwrap_err().code, "OVERLOADED");
    }
}

#[tokio::test]
async fn a_batch_answer_of_another_shape_fails_its_publishes_and_the_next_ones_still_go() {
    let (raw, c) = alknet_core::connection::memory::pair(alknet_call::ALPN);
    let peer = alknet_call::Peer::connect(c, client_service(), None);
    // A remote that is not alknet's: outputs that are not `{ results: [...] }`, and results
    // that are not objects. Each fails its publishes with INTERNAL; none stops the sender.
    for output in [
        json!(5),
        json!([]),
        json!({ "results": 7 }),
        json!({ "results": [1, "x"] }),
    ] {
        let published = publish_n(&peer, 2);
        let (mut stream, id, op, _) = next_request(&raw).await;
        assert_eq!(op, "pubsub/publish_batch");
        respond(&mut stream, &id, output.clone()).await;
        for r in published.await.unwrap() {
            assert_eq!(r.unwrap_err().code, "INTERNAL", "{output}");
        }
    }
    let published = publish_n(&peer, 2);
    let (mut stream, id, _, _) = next_request(&raw).await;
    let results = json!({ "results": [{ "delivered": 1 }, { "delivered": 1 }] });
    respond(&mut stream, &id, results).await;
    for r in published.await.unwrap() {
        assert_eq!(r.unwrap(), 1);
    }
}
