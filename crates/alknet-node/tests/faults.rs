//! Faults on the path: a lossy, reordering UDP path (an in-process proxy between a QUIC client
//! and the node drops one datagram in twenty and holds others back behind later ones) still
//! completes every call; a caller process killed mid-call (SIGKILL: no close of any kind) has its
//! request cancelled on the node, over QUIC and over TCP+TLS. The caller is this test binary
//! itself, re-executed with [`CALLER_ENV`] set.

mod suite;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alknet_call::{CallService, OperationRegistry, Peer, RequestOptions};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{Node, NodeConfig};
use serde_json::json;
use suite::echo_node;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};

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

/// Set in the child process this test re-executes as the caller: `<addr> <fingerprint> <quic|tcp>`.
const CALLER_ENV: &str = "ALKNET_FAULTS_KILLED_CALLER";

/// The caller process: dials the node, calls `fault/wait` and waits; the test kills it mid-call.
/// Does nothing unless [`CALLER_ENV`] is set (in the child the test spawns).
#[tokio::test]
async fn killed_caller_child() {
    let Ok(spec) = std::env::var(CALLER_ENV) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (addr, fingerprint, carrier) = (
        parts.next().unwrap().parse::<SocketAddr>().unwrap(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap(),
    );
    let transport = match carrier {
        "tcp" => TransportKind::Tcp,
        _ => TransportKind::Quic,
    };
    let client = Client::new(SecretKey::generate()).unwrap();
    let options = DialOptions::pinned(alknet_call::ALPN, fingerprint).over(transport);
    let conn = client.dial(addr, &options).await.unwrap();
    let peer = Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new()).unwrap(),
        None,
    );
    // Never answered: the handler waits for its cancellation.
    let _ = peer
        .call_with("fault/wait", json!({}), RequestOptions::default())
        .await;
    unreachable!("the call was answered; the test should have killed this process first");
}

/// A node whose `fault/wait` tells `started` when it begins and never answers; its cancellation
/// token tells `cancelled`.
async fn waiting_node(
    quic_idle_timeout: Option<Duration>,
) -> (
    Node,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (cancelled_tx, cancelled) = mpsc::unbounded_channel();
    let mut ops = OperationRegistry::new();
    ops.query("fault/wait", json!({}), json!({}), move |ctx, _| {
        let (started, cancelled) = (started_tx.clone(), cancelled_tx.clone());
        // Watched from a task of its own: a cancelled request's handler future is dropped, so
        // the token (what `ctx.signal` follows in the Node.js binding) is what fires.
        let token = ctx.token().clone();
        tokio::spawn(async move {
            token.cancelled().await;
            let _ = cancelled.send(());
        });
        async move {
            let _ = started.send(());
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    })
    .unwrap();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits.quic_idle_timeout_ms = quic_idle_timeout.map(|t| t.as_millis() as u64);
    // An hour's deadline: within the test's guard only the lost connection can cancel.
    config.limits.default_timeout_ms = Some(3_600_000);
    config.limits.max_timeout_ms = Some(3_600_000);
    let node = suite::node(config, ops).await;
    (node, started, cancelled)
}

/// Starts the caller process over `carrier`, waits until its request runs on the node, kills
/// it (SIGKILL: no close, no TLS close_notify, no QUIC CONNECTION_CLOSE) and expects the
/// handler's cancellation.
async fn killed_caller_cancels_its_requests(carrier: &str, idle: Option<Duration>) {
    // Only a hang guard; the test waits for events, never for time.
    const GUARD: Duration = Duration::from_secs(60);
    let (node, mut started, mut cancelled) = waiting_node(idle).await;
    let spec = format!("{} {} {carrier}", node.local_addr(), node.fingerprint());
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_caller_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CALLER_ENV, spec)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::select! {
        s = started.recv() => s.unwrap(),
        status = child.wait() => panic!("the caller exited before its call started: {status:?}"),
        _ = tokio::time::sleep(GUARD) => panic!("the call never started on the node"),
    }
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the caller was not SIGKILLed: {status:?}"
    );
    tokio::time::timeout(GUARD, cancelled.recv())
        .await
        .unwrap_or_else(|_| {
            panic!("{carrier}: the handler was not cancelled after its caller was killed")
        })
        .unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_quic_caller_cancels_its_requests() {
    // The node notices a silent peer at its idle timeout; shortened so the test is quick.
    killed_caller_cancels_its_requests("quic", Some(Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tcp_caller_cancels_its_requests() {
    killed_caller_cancels_its_requests("tcp", None).await;
}
