//! Benchmark (`npm run bench` runs it; needs `nats-server` on the PATH or in /usr/sbin): pub/sub
//! fan-out within one node vs across two nodes through a NATS backplane, and NATS alone as the
//! limit, in messages delivered per second, from one run.
//!
//! A node publishes bursts of `BURST` messages to a topic with `SUBSCRIBERS` subscribers (each on
//! its own QUIC connection); a burst counts once every subscriber has received all of it.
//! Bursts stay below the backplane's send queue and the subscription queues, so nothing is
//! dropped: the figure is throughput, not loss.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use alknet_node::Node;
use futures::StreamExt;
use serde_json::json;

#[path = "../tests/fleet/mod.rs"]
mod fleet;

const SUBSCRIBERS: usize = 4;
/// What topic `bench/x` is in NATS.
const SUBJECT: &str = "test.fleet.bench.x";
const BURST: usize = 500;
const BURSTS: usize = 40;

fn nats_server() -> Option<(Child, String)> {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((child, format!("nats://127.0.0.1:{port}")))
}

/// Messages delivered per second: `publisher` publishes, the subscribers of `receiver` count.
async fn fan_out(publisher: &Node, receiver: &Node) -> f64 {
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let c = fleet::client(receiver).await;
        let sub = fleet::subscribe(&c, receiver, "bench/>").await;
        subs.push((c, sub));
    }
    if let Some(b) = receiver.backplane() {
        b.ready().await;
    }
    let started = Instant::now();
    for burst in 0..BURSTS {
        for i in 0..BURST {
            publisher
                .publish("bench/x", &json!({"burst": burst, "i": i}))
                .unwrap();
        }
        for (_, sub) in &mut subs {
            for _ in 0..BURST {
                sub.next().await.unwrap().unwrap();
            }
        }
    }
    let rate = (BURSTS * BURST * SUBSCRIBERS) as f64 / started.elapsed().as_secs_f64();
    for (c, _) in subs {
        c.client.close();
    }
    rate
}

/// NATS alone: one client publishes, `SUBSCRIBERS` subscriptions receive, same bursts.
async fn nats_alone(url: &str) -> f64 {
    let publisher = async_nats::connect(url).await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let client = async_nats::connect(url).await.unwrap();
        subs.push((client.subscribe(SUBJECT).await.unwrap(), client));
    }
    for (_, client) in &subs {
        client.flush().await.unwrap();
    }
    let payload =
        serde_json::to_vec(&json!({"topic": "bench/x", "data": {"burst": 0, "i": 0}})).unwrap();
    let started = Instant::now();
    for _ in 0..BURSTS {
        for _ in 0..BURST {
            publisher
                .publish(SUBJECT, payload.clone().into())
                .await
                .unwrap();
        }
        for (sub, _) in &mut subs {
            for _ in 0..BURST {
                sub.next().await.unwrap();
            }
        }
    }
    (BURSTS * BURST * SUBSCRIBERS) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let Some((mut server, url)) = nats_server() else {
        println!("nats fan-out: skipped (nats-server not found; apt-get install nats-server)");
        return;
    };
    // Wait until it accepts clients.
    let mut up = None;
    for _ in 0..200 {
        if let Ok(c) = async_nats::connect(&url).await {
            up = Some(c);
            break;
        }
        tokio::task::yield_now().await;
    }
    up.expect("nats-server accepts clients");

    let alone = fleet::node(None, "bench/>").await;
    let local = fan_out(&alone, &alone).await;
    alone.shutdown().await;

    let a = fleet::node(Some(&url), "bench/>").await;
    let b = fleet::node(Some(&url), "bench/>").await;
    let across = fan_out(&a, &b).await;
    let lost = a.backplane().unwrap().stats().lost;
    a.shutdown().await;
    b.shutdown().await;

    let limit = nats_alone(&url).await;
    let _ = server.kill();
    let _ = server.wait();

    println!(
        "pub/sub fan-out, {SUBSCRIBERS} subscribers, bursts of {BURST} (messages delivered/s):"
    );
    println!("  one node alone                 {local:>10.0}");
    println!(
        "  node A → NATS → node B         {across:>10.0}   ({:.2}× one node; lost {lost})",
        across / local
    );
    println!(
        "  nats-server alone (async-nats) {limit:>10.0}   (node A → B is {:.2}× this)",
        across / limit
    );
}
