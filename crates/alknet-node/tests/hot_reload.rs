//! Hot reload under load: calls, subscriptions, native tunnel streams and SSH channels run over
//! real QUIC and TCP+TLS connections while the node reloads again and again between two
//! configurations, A and B, that differ in `auth`, `pubsub` and `forwarding` at once:
//!
//! | | A | B |
//! |---|---|---|
//! | the client key's peer | `pa`, scope `a` | `pb`, scope `b` |
//! | the API key `alk_load_…` | scope `a` | scope `b` |
//! | topics `t/>` (publish, subscribe) | scope `a` | scope `b` |
//! | forwarding to loopback | peer `pa` only | peer `pb` only |
//!
//! Every operation succeeds under A and under B, and fails under any mix of the two (A's `auth`
//! with B's `pubsub` or `forwarding`, or the reverse): a publish is `FORBIDDEN`, a published
//! message is not delivered to a subscriber, a forward is refused. So the test asserts that every
//! operation succeeds, and that the node goes on serving afterwards.

mod suite;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use alknet_call::{CallService, OperationRegistry, Peer, RequestOptions, TopicRule};
use alknet_core::config::{ApiKeyEntry, PeerEntry};
use alknet_core::fingerprint::token_hash;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{DialTarget, DynamicConfig, Node, NodeConfig, Transport};
use alknet_ssh::policy::ForwardingPolicy;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

const TOKEN: &str = "alk_load_0123456789abcdef";
const RELOADS: u64 = 60;
const CONNECTIONS: usize = 4;
const SUBSCRIBERS: usize = 8;

/// Configuration A (`side` = "a") or B ("b").
fn dynamic(client: &SecretKey, side: &str) -> DynamicConfig {
    let mut config = DynamicConfig::default();
    config.auth.peers = vec![
        PeerEntry::new(format!("p{side}"), [client.public().fingerprint()]).with_scopes([side]),
    ];
    config.auth.api_keys = vec![ApiKeyEntry {
        prefix: "load".into(),
        hash: token_hash(TOKEN.as_bytes()),
        scopes: vec![side.into()],
        resources: Default::default(),
        expires_at: None,
    }];
    config.pubsub.rules = vec![TopicRule {
        pattern: "t/>".into(),
        publish: Some(vec![side.into()]),
        subscribe: Some(vec![side.into()]),
        anonymous: false,
    }];
    config.forwarding = serde_json::from_value::<ForwardingPolicy>(json!({
        "default": "deny",
        "rules": [{ "peers": [format!("p{side}")], "hosts": ["127.0.0.1"], "action": "allow" }]
    }))
    .unwrap();
    config
}

/// A TCP server on loopback that answers every connection with `ok` and closes it.
async fn ok_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(b"ok").await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

async fn dial(node: &Node, key: &SecretKey, over: TransportKind) -> Peer {
    let client = Client::new(key.clone()).unwrap();
    let fp = node.fingerprint().to_string();
    let conn = client
        .dial(
            node.local_addr(),
            &DialOptions::pinned(alknet_call::ALPN, fp.clone()).over(over),
        )
        .await
        .unwrap();
    let service = CallService::anonymous(OperationRegistry::new()).unwrap();
    Peer::connect(conn, service, Some(fp))
}

fn target(node: &Node) -> DialTarget {
    DialTarget::Direct {
        address: node.local_addr(),
        fingerprint: node.fingerprint().to_string(),
        over: Some(Transport::Quic),
        timeout: std::time::Duration::from_secs(10),
    }
}

fn with_token() -> RequestOptions {
    RequestOptions {
        auth_token: Some(TOKEN.into()),
        ..RequestOptions::default()
    }
}

/// Counts what one kind of worker completed, so the reloader can wait for each kind to have
/// worked between two reloads.
#[derive(Clone)]
struct Progress(Arc<watch::Sender<u64>>);

impl Progress {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
    fn step(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    fn now(&self) -> u64 {
        *self.0.borrow()
    }
    async fn past(&self, n: u64) {
        let mut rx = self.0.subscribe();
        rx.wait_for(|done| *done > n).await.unwrap();
    }
}

async fn read_ok(mut stream: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    got
}

/// Opens forwards with `open` until `stop`, each of which must reach the `ok` server.
fn forward_worker<F, S>(
    stop: &Arc<AtomicBool>,
    progress: &Progress,
    what: &'static str,
    open: impl Fn() -> F + Send + 'static,
) -> tokio::task::JoinHandle<u64>
where
    F: std::future::Future<Output = Result<S, String>> + Send,
    S: tokio::io::AsyncRead + Unpin + Send,
{
    let (stop, progress) = (stop.clone(), progress.clone());
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match open().await {
                Ok(stream) => assert_eq!(read_ok(stream).await, "ok"),
                Err(e) => panic!("{what} {n} refused during reloads: {e}"),
            }
            n += 1;
            progress.step();
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_sees_a_half_applied_reload_under_load() {
    let client = SecretKey::generate();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.services.ssh = true;
    config.services.tunnel = true;
    let a = dynamic(&client, "a");
    let b = dynamic(&client, "b");
    config.auth = a.auth.clone();
    config.pubsub.rules = a.pubsub.rules.clone();
    config.forwarding = a.forwarding.clone();
    let node = Arc::new(suite::node(config, OperationRegistry::new()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let target_addr = ok_server().await;

    // Connections over QUIC and TCP+TLS, the client key's identity.
    let mut peers = Vec::new();
    for i in 0..CONNECTIONS {
        let over = [TransportKind::Quic, TransportKind::Tcp][i % 2];
        peers.push(dial(&node, &client, over).await);
    }

    // Subscriptions to `t/s`: half as the connection's key, half with the API key.
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let peer = &peers[i % CONNECTIONS];
        let input = json!({ "topic": "t/s" });
        let options = if i % 2 == 0 {
            RequestOptions::default()
        } else {
            with_token()
        };
        subs.push(
            peer.subscribe_with("pubsub/subscribe", input, options)
                .await
                .unwrap(),
        );
    }
    // Wait for the node to hold all of them. (Publishing until all count the message would fill
    // the queues of the first ones before the last registers: a full queue does not count.)
    let broker = node.call_service().unwrap().broker().clone();
    let registered = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while broker.len() < SUBSCRIBERS {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        registered.is_ok(),
        "{} of {SUBSCRIBERS} subscriptions registered",
        broker.len()
    );
    // A marker: what each subscription reads after it is what is published next.
    assert_eq!(node.publish("t/s", &json!(-2)).unwrap(), SUBSCRIBERS);
    for sub in &mut subs {
        while sub.next().await.unwrap().unwrap()["data"] != json!(-2) {}
    }

    let calls = Progress::new();
    let deliveries = Progress::new();
    let forwards = Progress::new();
    let mut workers = Vec::new();

    // Publishes as the client: under A or B it is allowed, under a mix it is FORBIDDEN.
    for (i, peer) in peers.iter().enumerate() {
        for token in [false, true] {
            let (peer, stop, calls) = (peer.clone(), stop.clone(), calls.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let options = if token {
                        with_token()
                    } else {
                        RequestOptions::default()
                    };
                    let input = json!({ "topic": format!("t/c{i}"), "data": n });
                    let answer = peer.call_with("pubsub/publish", input, options).await;
                    if let Err(e) = answer {
                        panic!("publish {n} (token: {token}) failed during reloads: {e}");
                    }
                    n += 1;
                    calls.step();
                }
                n
            }));
        }
    }

    // The node publishes to `t/s`, one message at a time: every subscriber may receive it under
    // A or B; under a mix (the subscriber's identity from one, the topic rules from the other)
    // it is not delivered.
    {
        let (node, stop, deliveries) = (node.clone(), stop.clone(), deliveries.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let delivered = node.publish("t/s", &json!(n)).unwrap();
                assert_eq!(
                    delivered, SUBSCRIBERS,
                    "message {n} reached {delivered} of {SUBSCRIBERS} subscribers during reloads"
                );
                for sub in &mut subs {
                    let item = sub.next().await.unwrap().unwrap();
                    assert_eq!(item["data"], json!(n));
                }
                n += 1;
                deliveries.step();
            }
            n
        }));
    }

    // Forwards to a loopback server through the native tunnel and SSH channels: allowed under A
    // or B, refused under a mix (the peer's name from one, the forwarding rules from the other).
    let native = alknet_node::native_tunnel(client.clone(), target(&node));
    let ssh = alknet_node::ssh_tunnel(client.clone(), target(&node));
    // Both connected (and the SSH session authenticated) before the reloads begin.
    assert_eq!(
        read_ok(native.open("127.0.0.1", target_addr.port()).await.unwrap()).await,
        "ok"
    );
    assert_eq!(
        read_ok(ssh.open("127.0.0.1", target_addr.port()).await.unwrap()).await,
        "ok"
    );
    for _ in 0..2 {
        let native = native.clone();
        workers.push(forward_worker(
            &stop,
            &forwards,
            "native tunnel stream",
            move || {
                let native = native.clone();
                async move {
                    native
                        .open("127.0.0.1", target_addr.port())
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        ));
        let ssh = ssh.clone();
        workers.push(forward_worker(&stop, &forwards, "SSH channel", move || {
            let ssh = ssh.clone();
            async move {
                ssh.open("127.0.0.1", target_addr.port())
                    .await
                    .map_err(|e| e.to_string())
            }
        }));
    }

    // Reload back and forth; between two reloads every kind of work makes progress, so each
    // reload lands among operations in flight.
    for r in 0..RELOADS {
        let (c, d, f) = (calls.now(), deliveries.now(), forwards.now());
        node.reload(if r % 2 == 0 { b.clone() } else { a.clone() })
            .unwrap();
        tokio::select! {
            () = async { tokio::join!(calls.past(c), deliveries.past(d), forwards.past(f)); } => {}
            // A worker that failed ends the test with its message.
            (done, _, _) = futures::future::select_all(workers.iter_mut()) => {
                done.unwrap();
                panic!("a worker stopped before the reloads were done");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for worker in workers {
        done.push(worker.await.unwrap());
    }
    println!(
        "{RELOADS} reloads: {} publishes, {} messages to {SUBSCRIBERS} subscribers, {} forwards, none saw a mixed configuration",
        calls.now(),
        deliveries.now(),
        forwards.now()
    );

    // The node keeps serving: a new connection under the configuration now in force (A).
    let fresh = dial(&node, &client, TransportKind::Quic).await;
    let answer = fresh
        .call("pubsub/publish", json!({ "topic": "t/x", "data": 1 }))
        .await
        .unwrap();
    assert_eq!(answer, json!({ "delivered": 0 }));
    assert_eq!(node.dynamic(), a);
}
