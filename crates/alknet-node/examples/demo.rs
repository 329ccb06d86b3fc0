//! The main job, end to end on loopback: a node serves operations over QUIC and TCP+TLS with a
//! raw Ed25519 key; a second node dials it with the pinned fingerprint and calls, subscribes,
//! publishes and cancels. Run with `npm run demo` or `cargo run -p alknet-node --example demo`.

use std::time::{Duration, Instant};

use alknet_call::access::Access;
use alknet_call::{
    CallError, CallService, ErrorCode, Handler, OperationRegistry, OperationSpec, OperationType,
    Peer, RequestOptions,
};
use alknet_core::config::PeerEntry;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{Node, NodeConfig};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn operations() -> anyhow::Result<OperationRegistry> {
    let mut ops = OperationRegistry::new();
    ops.query(
        "math/add",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        json!({"type": "number"}),
        |_, i| async move {
            let sum = i["a"].as_f64().unwrap_or(0.0) + i["b"].as_f64().unwrap_or(0.0);
            // Whole numbers print as integers, as a JavaScript peer would send them.
            Ok(if sum.fract() == 0.0 && sum.abs() < 9e15 { json!(sum as i64) } else { json!(sum) })
        },
    )?;
    ops.subscription(
        "clock/ticks",
        json!({"type": "object", "properties": {"everyMs": {"type": "integer", "minimum": 10}, "count": {"type": "integer"}}, "required": ["everyMs"]}),
        json!({"type": "string"}),
        |_, i| {
            let every = Duration::from_millis(i["everyMs"].as_u64().unwrap_or(100));
            let count = i["count"].as_u64().unwrap_or(u64::MAX);
            let start = Instant::now();
            futures::stream::unfold(0u64, move |n| async move {
                if n >= count {
                    return None;
                }
                tokio::time::sleep(every).await;
                Some((Ok(json!(format!("tick {n} at +{} ms", start.elapsed().as_millis()))), n + 1))
            })
        },
    )?;
    ops.register(
        OperationSpec::new("todo/create", OperationType::Mutation, json!({"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}), json!({"type": "object"}))
            .access(Access { required_scopes: vec!["todo:write".into()], ..Default::default() }),
        Handler::unary(|ctx: alknet_call::CallContext, i| async move {
            Ok(json!({"id": 1, "title": i["title"], "by": ctx.identity.map(|id| id.id)}))
        }),
    )?;
    ops.query(
        "work/slow",
        json!({}),
        json!({}),
        |ctx: alknet_call::CallContext, _| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!("done")),
                _ = ctx.cancelled() => Err(CallError::new(ErrorCode::Cancelled, "cancelled")),
            }
        },
    )?;
    Ok(ops)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server_key = SecretKey::generate();
    let alice = SecretKey::generate();
    println!("alknet demo — two nodes on loopback\n");

    // The serving node: one port, QUIC + TCP+TLS, peers from config.
    let mut config = NodeConfig::new("127.0.0.1:0".parse()?);
    config
        .auth
        .peers
        .push(PeerEntry::new("alice", [alice.public().fingerprint()]).with_scopes(["todo:write"]));
    let node = Node::builder(config)
        .key(server_key)
        .operations(operations()?)
        .start()
        .await?;
    println!("server  listening on {} (udp+tcp)", node.local_addr());
    println!("server  fingerprint {}", node.fingerprint());

    // The second node dials with the pinned fingerprint, as alice.
    let client = Client::new(alice.clone())?;
    println!(
        "client  fingerprint {} (known to the server as \"alice\")\n",
        alice.public().fingerprint()
    );
    for kind in [TransportKind::Quic, TransportKind::Tcp] {
        let started = Instant::now();
        let conn = client
            .dial(
                node.local_addr(),
                &DialOptions::pinned(alknet_call::ALPN, node.fingerprint()).over(kind),
            )
            .await?;
        let peer = Peer::connect(
            conn,
            CallService::anonymous(OperationRegistry::new())?,
            Some(node.fingerprint().into()),
        );
        let sum = peer.call("math/add", json!({"a": 1, "b": 2})).await?;
        println!(
            "[{kind:?}] dial+call math/add {{a:1,b:2}} = {sum}  ({} ms)",
            started.elapsed().as_millis()
        );
        peer.close();
    }

    let conn = client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, node.fingerprint()),
        )
        .await?;
    let peer = Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new())?,
        Some(node.fingerprint().into()),
    );

    let catalogue = peer.call("services/list", json!({})).await?;
    let names: Vec<&str> = catalogue["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str())
        .collect();
    println!("\nservices/list → {}", names.join(", "));

    let todo = peer
        .call("todo/create", json!({"title": "ship alknet"}))
        .await?;
    println!("todo/create (scope todo:write, identity from the TLS key) → {todo}");

    match peer.call("math/add", json!({"a": "one"})).await {
        Err(e) => println!(
            "math/add with a bad input → {} ({})",
            e.code,
            e.details.map(|d| d.to_string()).unwrap_or_default()
        ),
        Ok(v) => println!("unexpected: {v}"),
    }
    match peer
        .call_with(
            "todo/create",
            json!({"title": "x"}),
            RequestOptions {
                auth_token: Some("forged".into()),
                ..Default::default()
            },
        )
        .await
    {
        Err(e) => println!(
            "todo/create with a forged token → {}: {}",
            e.code, e.message
        ),
        Ok(v) => println!("unexpected: {v}"),
    }

    println!("\nsubscribe clock/ticks every 100 ms, stop after 3:");
    let mut ticks = peer
        .subscribe("clock/ticks", json!({"everyMs": 100}))
        .await?;
    for _ in 0..3 {
        if let Some(tick) = ticks.next().await {
            println!("  {}", tick?);
        }
    }
    drop(ticks);
    println!("  (dropped: the caller stopped its stream (QUIC STOP_SENDING); the server cancelled the handler)");

    println!("\npub/sub on chat/*:");
    let mut chat = peer.topic("chat/*").await?;
    let mut delivered = 0;
    for _ in 0..100 {
        delivered = peer.publish("chat/room1", json!({"text": "hello"})).await?;
        if delivered > 0 {
            break;
        }
    }
    println!("  publish chat/room1 → delivered to {delivered} subscriber(s)");
    node.publish("chat/room2", &json!({"text": "from the node itself"}))?;
    for _ in 0..2 {
        if let Some(item) = chat.next().await {
            let item = item?;
            if item["data"]["text"] != "hello" || item["topic"] == "chat/room1" {
                println!("  received {item}");
            }
        }
    }

    println!("\ncancel a slow call after 200 ms:");
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let slow = {
        let peer = peer.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            peer.call_with(
                "work/slow",
                json!({}),
                RequestOptions {
                    cancel: Some(cancel),
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    match slow.await? {
        Err(e) => println!(
            "  work/slow → {} after {} ms (the server's handler was dropped)",
            e.code,
            started.elapsed().as_millis()
        ),
        Ok(v) => println!("  unexpected: {v}"),
    }

    println!("\nreload: alice is disabled; her next connection has no identity:");
    let mut config = node.dynamic();
    config.auth.peers[0].enabled = false;
    node.reload(config)?;
    let conn = client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, node.fingerprint()),
        )
        .await?;
    let again = Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new())?,
        None,
    );
    match again.call("todo/create", json!({"title": "x"})).await {
        Err(e) => println!("  todo/create → {}", e.code),
        Ok(v) => println!("  unexpected: {v}"),
    }

    peer.close();
    again.close();
    let report = node.shutdown().await;
    println!(
        "\nshutdown: {} connection(s) in flight, {} cut off",
        report.in_flight, report.cut_off
    );
    Ok(())
}
