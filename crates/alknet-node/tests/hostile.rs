//! Hostile input over real sockets (QUIC and TCP+TLS on loopback): random bytes, truncated
//! frames, a frame trickled and never finished (slowloris at the frame level), 100 000 aborts of
//! unknown ids, and deeply nested JSON. Each attacker gets its stream or connection ended (or its
//! nonsense ignored), and a well-behaved peer's calls keep succeeding while the attacks run.

use alknet_call::{CallService, OperationRegistry, Peer};
use alknet_core::{BoxedStream, Connection, SecretKey};
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{Node, NodeConfig};
use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn node() -> Node {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    // A frame begun must be finished within a second: the slowloris attack waits for this.
    config.limits.frame_deadline_ms = Some(1_000);
    let mut ops = OperationRegistry::new();
    ops.query("math/add", json!({}), json!({}), |_, i| async move {
        Ok(json!(
            i["a"].as_i64().unwrap_or(0) + i["b"].as_i64().unwrap_or(0)
        ))
    })
    .unwrap();
    Node::builder(config)
        .key(SecretKey::generate())
        .operations(ops)
        .start()
        .await
        .unwrap()
}

async fn dial(node: &Node, over: TransportKind) -> Connection {
    let client = Client::new(SecretKey::generate()).unwrap();
    let fp = node.fingerprint().to_string();
    client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, fp).over(over),
        )
        .await
        .unwrap()
}

/// A raw stream on a fresh connection: its own stream on QUIC, the one stream on TCP+TLS.
async fn raw(node: &Node, over: TransportKind) -> (Connection, BoxedStream) {
    let conn = dial(node, over).await;
    let stream = match over {
        TransportKind::Tcp => conn.accept_bi().await.unwrap(),
        _ => conn.open_bi().await.unwrap(),
    };
    (conn, stream)
}

fn frame(json: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    alknet_call::framing::encode_frame(json.as_bytes(), &mut buf);
    buf
}

/// Reads until the node ends the stream (FIN, reset or closed connection); what it sent before
/// (an error frame, say) is discarded.
async fn until_ended(stream: &mut BoxedStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Reads one frame as JSON.
async fn next_frame(stream: &mut BoxedStream) -> Value {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

async fn random_bytes(node: &Node, over: TransportKind) {
    let (_conn, mut stream) = raw(node, over).await;
    // Whatever the first four bytes announce, the rest is no envelope.
    let _ = stream
        .write_all(&noise(64 * 1024, 0x9e37_79b9_7f4a_7c15))
        .await;
    until_ended(&mut stream).await;
}

async fn truncated_frame(node: &Node, over: TransportKind) {
    let (_conn, mut stream) = raw(node, over).await;
    let whole = frame(&json!({"type": "call.requested", "id": "1", "payload": {"operationId": "/math/add", "input": {"a": 1, "b": 2}}}).to_string());
    stream.write_all(&whole[..whole.len() / 2]).await.unwrap();
    let _ = stream.shutdown().await;
    until_ended(&mut stream).await;
}

async fn slowloris(node: &Node) {
    let (_conn, mut stream) = raw(node, TransportKind::Tcp).await;
    // Announces a 1000-byte frame and sends a little of it, then nothing more: the frame
    // deadline ends the connection.
    stream.write_all(&1000u32.to_be_bytes()).await.unwrap();
    stream.write_all(b"{\"type\":").await.unwrap();
    until_ended(&mut stream).await;
}

async fn unknown_aborts(node: &Node) {
    let (_conn, mut stream) = raw(node, TransportKind::Tcp).await;
    let reader = &mut stream;
    let mut batch = BytesMut::new();
    for i in 0..100_000u32 {
        batch.extend_from_slice(&frame(
            &json!({"type": "call.aborted", "id": format!("nobody-{i}"), "payload": {}})
                .to_string(),
        ));
        if batch.len() > 256 * 1024 {
            reader.write_all(&batch.split()).await.unwrap();
        }
    }
    reader.write_all(&batch).await.unwrap();
    // The connection still serves: a real request after them is answered.
    let request = json!({"type": "call.requested", "id": "real", "payload": {"operationId": "/math/add", "input": {"a": 2, "b": 3}}});
    reader
        .write_all(&frame(&request.to_string()))
        .await
        .unwrap();
    let answer = next_frame(reader).await;
    assert_eq!(answer["id"], "real", "{answer}");
    assert_eq!(answer["payload"]["output"], json!(5), "{answer}");
}

async fn deeply_nested(node: &Node, over: TransportKind) {
    let (_conn, mut stream) = raw(node, over).await;
    let depth = 100_000;
    let input = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let request = format!(
        r#"{{"type":"call.requested","id":"deep","payload":{{"operationId":"/math/add","input":{input}}}}}"#
    );
    stream.write_all(&frame(&request)).await.unwrap();
    // Finished, so the stream ends once the node has dealt with the frame, whatever it made of it.
    let _ = stream.shutdown().await;
    until_ended(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_a_well_behaved_peer_throughout_the_attacks() {
    let node = node().await;
    let good = Peer::connect(
        dial(&node, TransportKind::Quic).await,
        CallService::anonymous(OperationRegistry::new()).unwrap(),
        None,
    );
    let attacks_done = CancellationToken::new();
    let well_behaved = tokio::spawn({
        let (good, done) = (good.clone(), attacks_done.clone());
        async move {
            let mut answered = 0u64;
            while !done.is_cancelled() {
                let sum = good.call("math/add", json!({"a": answered, "b": 1})).await;
                assert_eq!(
                    sum,
                    Ok(json!(answered + 1)),
                    "a good call failed during the attacks"
                );
                answered += 1;
            }
            answered
        }
    });

    let node_ref = &node;
    let attacks = async move {
        for over in [TransportKind::Quic, TransportKind::Tcp] {
            tokio::join!(
                random_bytes(node_ref, over),
                truncated_frame(node_ref, over),
                deeply_nested(node_ref, over),
            );
        }
        tokio::join!(slowloris(node_ref), unknown_aborts(node_ref));
    };
    attacks.await;
    attacks_done.cancel();
    let answered = well_behaved.await.unwrap();
    assert!(answered > 0, "no good call ran during the attacks");
    // And after them.
    assert_eq!(
        good.call("math/add", json!({"a": 1, "b": 1})).await,
        Ok(json!(2))
    );
}
