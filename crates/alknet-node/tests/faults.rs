//! Faults on the path: a lossy, reordering UDP path (an in-process proxy between a QUIC client
//! and the node drops one datagram in twenty and holds others back behind later ones) still
//! completes every call.

mod suite;

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_call::{CallService, OperationRegistry, Peer};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions};
use serde_json::json;
use suite::echo_node;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// What the proxy does to one direction's datagrams, by their sequence number: drop every
/// 20th, and hold every 7th back until the next one has gone out (so the two swap places).
struct Mangler {
    seen: u64,
    held: Option<Vec<u8>>,
    dropped: u64,
    reordered: u64,
}

impl Mangler {
    fn new() -> Self {
        Self {
            seen: 0,
            held: None,
            dropped: 0,
            reordered: 0,
        }
    }

    /// The datagrams to send now, in order, for one that arrived.
    fn pass(&mut self, datagram: Vec<u8>) -> Vec<Vec<u8>> {
        self.seen += 1;
        if self.seen.is_multiple_of(20) {
            self.dropped += 1;
            return Vec::new();
        }
        if self.seen.is_multiple_of(7) && self.held.is_none() {
            self.held = Some(datagram);
            return Vec::new();
        }
        let mut out = vec![datagram];
        if let Some(held) = self.held.take() {
            self.reordered += 1;
            out.push(held);
        }
        out
    }
}

/// A UDP proxy in front of `target`: returns its address and the counters of both directions.
async fn lossy_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<(Mangler, Mangler)>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let addr = front.local_addr().unwrap();
    let manglers = Arc::new(Mutex::new((Mangler::new(), Mangler::new())));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, manglers, client) = (
            front.clone(),
            back.clone(),
            manglers.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                let out = manglers.lock().await.0.pass(buf[..n].to_vec());
                for d in out {
                    let _ = back.send(&d).await;
                }
            }
        });
    }
    {
        let manglers = manglers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                let out = manglers.lock().await.1.pass(buf[..n].to_vec());
                if let Some(to) = *client.lock().await {
                    for d in out {
                        let _ = front.send_to(&d, to).await;
                    }
                }
            }
        });
    }
    (addr, manglers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_complete_over_a_lossy_reordering_udp_path() {
    let node = echo_node("fault/echo").await;
    let (proxy, manglers) = lossy_proxy(node.local_addr()).await;
    let client = Client::new(SecretKey::generate()).unwrap();
    let options = DialOptions::pinned(alknet_call::ALPN, node.fingerprint().to_string());
    let conn = client.dial(proxy, &options).await.unwrap();
    let peer = Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new()).unwrap(),
        None,
    );
    // Sequential and concurrent calls, some larger than one datagram.
    for i in 0..200 {
        let pad = "x".repeat(if i % 10 == 0 { 20_000 } else { 10 });
        let answer = peer.call("fault/echo", json!({"i": i, "pad": pad})).await;
        assert_eq!(answer.unwrap()["i"], json!(i));
    }
    let concurrent: Vec<_> = (0..100)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move { peer.call("fault/echo", json!(i)).await })
        })
        .collect();
    for (i, call) in concurrent.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(json!(i)));
    }
    let m = manglers.lock().await;
    println!(
        "lossy path: to the node {} datagrams ({} dropped, {} reordered), back {} ({} dropped, {} reordered)",
        m.0.seen, m.0.dropped, m.0.reordered, m.1.seen, m.1.dropped, m.1.reordered
    );
    // The path really was lossy and reordering in both directions.
    assert!(m.0.dropped > 0 && m.1.dropped > 0 && m.0.reordered > 0 && m.1.reordered > 0);
}
