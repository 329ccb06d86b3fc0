//! Load: 1 000 concurrent QUIC connections on loopback and 10 000 calls in flight at once against
//! one node; every call is answered. Prints the process's RSS before and after the connections
//! are open (client and node sides live in this one process, so the per-connection figure is an
//! upper bound for the node's share). `ALKNET_LOAD_CONNECTIONS` / `ALKNET_LOAD_CALLS` change the
//! numbers.

mod suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_call::{CallOptions, CallService, OperationRegistry, Peer};
use alknet_core::{LiveConfig, SecretKey};
use alknet_endpoint::{Client, DialOptions};
use alknet_node::NodeConfig;
use serde_json::json;
use suite::rss_kib;
use tokio::sync::{watch, Semaphore};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_and_ten_thousand_calls_in_flight_are_all_answered() {
    let connections = env_or("ALKNET_LOAD_CONNECTIONS", 1_000);
    let calls = env_or("ALKNET_LOAD_CALLS", 10_000);

    // `load/gate` holds every call until all of them have arrived, so they are all in flight.
    let arrived = Arc::new(AtomicUsize::new(0));
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let gate = Arc::new(Semaphore::new(0));
    let mut ops = OperationRegistry::new();
    {
        let (arrived, gate) = (arrived.clone(), gate.clone());
        ops.query("load/gate", json!({}), json!({}), move |_, input| {
            let (arrived, gate, count_tx) = (arrived.clone(), gate.clone(), count_tx.clone());
            async move {
                count_tx.send_replace(arrived.fetch_add(1, Ordering::SeqCst) + 1);
                gate.acquire().await.unwrap().forget();
                Ok(input)
            }
        })
        .unwrap();
    }
    ops.query("load/echo", json!({}), json!({}), |_, input| async move {
        Ok(input)
    })
    .unwrap();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits.connections_per_ip = Some(u32::try_from(connections).unwrap() + 16);
    config.limits.default_timeout_ms = Some(600_000);
    let node = suite::node(config, ops).await;

    let before = rss_kib();
    // One client endpoint (one UDP socket) carries every connection.
    let client = Client::new(SecretKey::generate()).unwrap();
    let options = DialOptions::pinned(alknet_call::ALPN, node.fingerprint().to_string());
    // The calls wait for each other, so on a loaded machine the last answer may come late: the
    // callers' deadline is as far off as the node's (the test is about answers, not speed).
    let call_options = CallOptions {
        default_timeout: Duration::from_secs(600),
        ..CallOptions::default()
    };
    let service = CallService::new(
        OperationRegistry::new(),
        LiveConfig::default(),
        call_options,
    )
    .unwrap();
    let mut peers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let conn = client.dial(node.local_addr(), &options).await.unwrap();
        peers.push(Peer::connect(conn, service.clone(), None));
    }
    // Each connection proves it is served before it is counted idle.
    for peer in &peers {
        assert_eq!(peer.call("load/echo", json!(0)).await, Ok(json!(0)));
    }
    let idle = rss_kib();
    println!(
        "load: {connections} idle connections: RSS {before} KiB -> {idle} KiB, {:.1} KiB per connection (client and node sides together)",
        (idle.saturating_sub(before)) as f64 / connections as f64
    );

    let in_flight: Vec<_> = (0..calls)
        .map(|i| {
            let peer = peers[i % connections].clone();
            tokio::spawn(async move { peer.call("load/gate", json!(i)).await })
        })
        .collect();
    count_rx.wait_for(|n| *n >= calls).await.unwrap();
    println!(
        "load: {calls} calls in flight at once, RSS {} KiB",
        rss_kib()
    );
    gate.add_permits(calls);
    for (i, call) in in_flight.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(json!(i)), "call {i}");
    }
}
