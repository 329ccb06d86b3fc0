//! Pub/sub across three nodes through a real `nats-server` (Debian package `nats-server`,
//! installed here when missing and running as root; under `CI=true` a missing server fails).

mod fleet;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alknet_call::{Peer, Subscription};
use alknet_node::Node;
use futures::StreamExt;
use serde_json::{json, Value};

/// A `nats-server` process on loopback; killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `nats-server` binary, or `None` after saying the test is skipped (a failure under `CI=true`).
fn nats_or_skip() -> Option<PathBuf> {
    let binary = nats_binary();
    if binary.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is needed (Debian package nats-server) and could not be installed"
        );
        eprintln!("SKIPPED: nats-server is not installed (Debian package nats-server)");
    }
    binary
}

/// The `nats-server` binary, installed once per test process when missing.
fn nats_binary() -> Option<PathBuf> {
    static BINARY: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BINARY.get_or_init(find_or_install).clone()
}

fn find_or_install() -> Option<PathBuf> {
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    };
    if let Some(found) = find() {
        return Some(found);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        eprintln!("installing nats-server with apt-get");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "nats-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    find()
}

impl NatsServer {
    /// Starts a server on `port` (0: any free one) and waits until it accepts clients.
    fn start(binary: &PathBuf, port: u16) -> Self {
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut port = port;
        for line in lines.by_ref() {
            let line = line.expect("nats-server log");
            if let Some(at) = line.find("Listening for client connections on ") {
                let addr = &line[at + "Listening for client connections on ".len()..];
                port = addr.rsplit(':').next().unwrap().trim().parse().unwrap();
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        assert_ne!(port, 0, "nats-server did not say where it listens");
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

async fn publish(peer: &Peer, topic: &str, data: Value) -> u64 {
    let out = peer
        .call("pubsub/publish", json!({"topic": topic, "data": data}))
        .await
        .unwrap();
    out["delivered"].as_u64().unwrap()
}

async fn next(sub: &mut Subscription, stage: &str) -> Value {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap_or_else(|_| panic!("{stage}: no message within 20 s"))
        .expect("the subscription is open")
        .expect("an item, not an error")
}

/// Waits until every node's backplane is connected and has its NATS subscriptions.
async fn all_ready(nodes: &[Node]) {
    for node in nodes {
        node.backplane().unwrap().ready().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_topics_through_nats_and_survive_a_nats_restart() {
    let Some(binary) = nats_or_skip() else {
        return;
    };
    let server = NatsServer::start(&binary, 0);
    let nodes = vec![
        fleet::node(Some(&server.url()), "fleet/>").await,
        fleet::node(Some(&server.url()), "fleet/>").await,
        fleet::node(Some(&server.url()), "fleet/>").await,
    ];
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for node in &nodes {
        let c = fleet::client(node).await;
        subs.push(fleet::subscribe(&c, node, "fleet/>").await);
        clients.push(c);
    }
    all_ready(&nodes).await;

    // A publish on each node reaches the subscribers on every node; `delivered` counts the
    // publishing node's own subscribers.
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(publish(&c.peer, &format!("fleet/n{i}"), json!(i)).await, 1);
        for sub in &mut subs {
            let item = next(sub, "one publish per node").await;
            assert_eq!(item, json!({"topic": format!("fleet/n{i}"), "data": i}));
        }
    }

    // One publisher's messages arrive in order everywhere.
    for seq in 0..200 {
        publish(&clients[0].peer, "fleet/seq", json!(seq)).await;
    }
    for sub in &mut subs {
        for seq in 0..200 {
            assert_eq!(next(sub, "ordered").await["data"], seq);
        }
    }

    // NATS goes away: local delivery goes on, what other nodes miss is counted.
    let port = server.port;
    drop(server);
    for node in &nodes {
        node.backplane().unwrap().wait_connected(false).await;
    }
    assert_eq!(
        publish(&clients[0].peer, "fleet/outage", json!("local")).await,
        1
    );
    assert_eq!(next(&mut subs[0], "outage").await["data"], "local");
    let lost = nodes[0].backplane().unwrap().stats().lost;
    assert!(lost >= 1, "the message for other nodes is counted as lost");

    // NATS is back on the same port: the nodes reconnect and renew their subscriptions.
    let _server = NatsServer::start(&binary, port);
    all_ready(&nodes).await;
    for (i, c) in clients.iter().enumerate() {
        publish(&c.peer, "fleet/back", json!(i)).await;
        for sub in &mut subs {
            // At most once: the message published during the outage never shows up late.
            assert_eq!(
                next(sub, "after the restart").await,
                json!({"topic": "fleet/back", "data": i})
            );
        }
    }
    let stats = nodes[1].backplane().unwrap().stats();
    assert!(stats.sent >= 2 && stats.received >= 200, "{stats:?}");
    assert_eq!(stats.rejected, 0);

    for c in clients {
        c.client.close();
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_foreign_message_on_the_subject_is_refused_and_counted() {
    let Some(binary) = nats_or_skip() else {
        return;
    };
    let server = NatsServer::start(&binary, 0);
    let node = fleet::node(Some(&server.url()), "fleet/>").await;
    let c = fleet::client(&node).await;
    let mut sub = fleet::subscribe(&c, &node, "fleet/>").await;
    node.backplane().unwrap().ready().await;
    // Another NATS client (not a node) writes garbage and a mislabelled item on the subject.
    let other = async_nats::connect(server.url()).await.unwrap();
    let subject = format!("{}.fleet.x", fleet::PREFIX);
    for payload in [
        "not json",
        r#"{"topic":"fleet/elsewhere","data":1}"#,
        r#"{"topic":"fleet/x","data":2}"#,
    ] {
        other
            .publish(subject.clone(), payload.into())
            .await
            .unwrap();
    }
    other.flush().await.unwrap();
    // Only the well-formed one arrives; the others are counted.
    assert_eq!(
        next(&mut sub, "foreign").await,
        json!({"topic": "fleet/x", "data": 2})
    );
    assert_eq!(node.backplane().unwrap().stats().rejected, 2);
    c.client.close();
    node.shutdown().await;
}
