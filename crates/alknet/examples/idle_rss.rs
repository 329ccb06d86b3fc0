//! Memory of an idle node, in its own process: `alknet serve` is started (the binary next to this
//! example, so build both: `cargo build --release -p alknet --bin alknet --example idle_rss`),
//! its RSS read when it is listening, then after this process opened N QUIC connections to it
//! (`ALKNET_RSS_CONNECTIONS`, default 1 000) and made one call on each, so each has a session.
//!
//!   cargo run --release -p alknet --example idle_rss
//!
//! Prints the node's RSS idle, with the connections open, and per connection (issue 14's goals:
//! < 40 MB idle, < 64 KiB per idle connection).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use alknet_call::{CallService, OperationRegistry, Peer};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions};
use serde_json::json;

/// The node's resident set, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmRSS line")
}

/// `alknet serve` in `dir`, once it printed its address and fingerprint.
fn serve(alknet: &Path, dir: &Path) -> (Child, String, String) {
    let status = Command::new(alknet)
        .args(["keygen", "-o"])
        .arg(dir.join("node.key"))
        .stdout(Stdio::null())
        .status()
        .expect("alknet keygen");
    assert!(status.success(), "alknet keygen failed");
    std::fs::write(
        dir.join("alknet.toml"),
        "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n\n[limits]\nconnections_per_ip = 100000\nhandshakes_per_ip = 1024\n",
    )
    .expect("write the config");
    let mut child = Command::new(alknet)
        .args(["serve", "--config", "alknet.toml"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("alknet serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut address, mut fingerprint) = (None, None);
    while address.is_none() || fingerprint.is_none() {
        let line = lines.next().expect("alknet serve exited").expect("a line");
        if let Some(rest) = line.strip_prefix("listening on ") {
            address = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(fp) = line.strip_prefix("fingerprint ") {
            fingerprint = Some(fp.trim().to_string());
        }
    }
    (child, address.unwrap(), fingerprint.unwrap())
}

#[tokio::main]
async fn main() {
    let connections: usize = std::env::var("ALKNET_RSS_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let exe = std::env::current_exe().expect("this example's path");
    let alknet = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples")
        .join("alknet");
    assert!(
        alknet.exists(),
        "{} is missing: cargo build --release -p alknet --bin alknet --example idle_rss",
        alknet.display()
    );
    let dir = std::env::temp_dir().join(format!("alknet-idle-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    // A node started elsewhere (e.g. under heaptrack): "PID ADDRESS FINGERPRINT".
    let (mut node, pid, address, fingerprint) = match std::env::var("ALKNET_RSS_NODE") {
        Ok(given) => {
            let mut parts = given.split_whitespace().map(str::to_string);
            let mut next = || {
                parts
                    .next()
                    .expect("ALKNET_RSS_NODE=\"PID ADDRESS FINGERPRINT\"")
            };
            let pid = next().parse().expect("a pid");
            (None, pid, next(), next())
        }
        Err(_) => {
            let (child, address, fingerprint) = serve(&alknet, &dir);
            let pid = child.id();
            (Some(child), pid, address, fingerprint)
        }
    };
    let idle = rss_kib(pid);

    let client = Client::new(SecretKey::generate()).expect("a client endpoint");
    let options = DialOptions::pinned(alknet_call::ALPN, fingerprint.clone());
    let mut peers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let conn = client
            .dial(address.parse().expect("an address"), &options)
            .await
            .expect("a connection");
        let service = CallService::anonymous(OperationRegistry::new()).expect("a call service");
        let peer = Peer::connect(conn, service, Some(fingerprint.clone()));
        // One round trip: the node has a session for this connection.
        let refused = peer.call("rss/none", json!({})).await.unwrap_err();
        assert_eq!(refused.code, "NOT_FOUND", "{refused}");
        peers.push(peer);
    }
    let open = rss_kib(pid);
    let per = (open.saturating_sub(idle) * 1024) / connections as u64;
    println!("alknet serve (its own process, release, QUIC, anonymous client key):");
    println!(
        "  idle node RSS:                    {:.1} MiB",
        idle as f64 / 1024.0
    );
    println!(
        "  with {connections} idle connections:   {:.1} MiB",
        open as f64 / 1024.0
    );
    println!(
        "  per idle connection:              {:.1} KiB",
        per as f64 / 1024.0
    );
    if std::env::var_os("ALKNET_RSS_HOLD").is_some() {
        println!("holding the connections open; press Enter to end");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    drop(peers);
    if let Some(node) = node.as_mut() {
        let _ = node.kill();
        let _ = node.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
