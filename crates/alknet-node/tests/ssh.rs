//! `alknet/ssh` through a real node: the alknet client (SOCKS5, -L, -R) over QUIC and TCP+TLS,
//! and OpenSSH's `ssh` against the plain SSH port, with real HTTP fetched by `curl`.
//!
//! OpenSSH and curl are installed with `apt-get` when missing (as root); elsewhere the tests that
//! need them say which tool is missing and skip, and under `CI=true` a skip is a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};

use alknet_core::config::PeerEntry;
use alknet_core::SecretKey;
use alknet_node::{ssh_tunnel, DialTarget, Node, NodeConfig, Transport};
use alknet_ssh::client::{ClientError, LocalForward, Socks5, SshClient};
use alknet_ssh::policy::ForwardingPolicy;
use alknet_ssh::Carrier;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A tiny HTTP server on loopback: every request gets `200` with body `hello <tag>`.
async fn http_server(tag: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer_http(socket, tag));
        }
    });
    addr
}

/// The same on a Unix socket at `path`.
fn unix_http_server(path: &std::path::Path, tag: &'static str) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer_http(socket, tag));
        }
    });
}

/// Reads one request head from `socket` and answers `200` with body `hello <tag>`.
async fn answer_http(
    mut socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    tag: &str,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("hello {tag}");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// An HTTP/1.0 GET over `stream`; returns the body.
async fn get(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) -> String {
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

fn loopback_allowed() -> ForwardingPolicy {
    serde_json::from_str(
        r#"{"rules":[{"peers":["alice"],"hosts":["127.0.0.0/8","::1"],"action":"allow"}]}"#,
    )
    .unwrap()
}

struct TestNode {
    node: Node,
    alice: SecretKey,
    bob: SecretKey,
}

async fn node_with(forwarding: ForwardingPolicy, max_channels: Option<u32>) -> TestNode {
    let alice = SecretKey::generate();
    let bob = SecretKey::generate();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.services.ssh = true;
    config.services.tunnel = true;
    config.ssh.listen = Some("127.0.0.1:0".parse().unwrap());
    config.auth.peers = vec![
        PeerEntry::new("alice", [alice.public().fingerprint()]),
        PeerEntry::new("bob", [bob.public().fingerprint()]),
    ];
    config.forwarding = forwarding;
    config.forwarding.max_channels = max_channels;
    let node = Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap();
    TestNode { node, alice, bob }
}

fn target(node: &Node, over: Transport) -> DialTarget {
    DialTarget::Direct {
        address: node.local_addr(),
        fingerprint: node.fingerprint().to_string(),
        over: Some(over),
        timeout: std::time::Duration::from_secs(10),
    }
}

/// An SSH session over a fresh connection to the node on `over`, TLS with `tls_key`, SSH with
/// `ssh_key`.
async fn session(
    node: &Node,
    over: Transport,
    tls_key: &SecretKey,
    ssh_key: &SecretKey,
) -> Result<(SshClient, alknet_endpoint::Client), ClientError> {
    let (client, conn, _) =
        alknet_node::dial(tls_key.clone(), target(node, over), alknet_ssh::ALPN)
            .await
            .unwrap();
    let stream = alknet_node::open_stream(&conn).await.unwrap();
    let ssh = SshClient::connect_stream(
        stream,
        ssh_key,
        Some(node.fingerprint()),
        Carrier::Encrypted,
    )
    .await?;
    Ok((ssh, client))
}

// ---- the alknet client ----

#[tokio::test]
async fn socks5_over_quic_and_tcp_reaches_a_local_http_server_by_name_resolved_on_the_node() {
    let http = http_server("socks").await;
    let t = node_with(loopback_allowed(), None).await;
    for over in [Transport::Quic, Transport::Tcp] {
        let tunnel = ssh_tunnel(t.alice.clone(), target(&t.node, over));
        let socks = Socks5::start("127.0.0.1:0".parse().unwrap(), tunnel.clone())
            .await
            .unwrap();
        // A hand-made SOCKS5 CONNECT with a domain name (what curl --socks5-hostname sends).
        let mut s = TcpStream::connect(socks.local_addr()).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [5, 0]);
        let name = b"localhost";
        let mut req = vec![5, 1, 0, 3, name.len() as u8];
        req.extend_from_slice(name);
        req.extend_from_slice(&http.port().to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut head = [0u8; 10];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1], 0, "SOCKS5 reply {head:?} over {over:?}");
        assert_eq!(get(s).await, "hello socks");
        if which("curl") {
            let proxy = socks.local_addr().to_string();
            let url = format!("http://localhost:{}/", http.port());
            let got = curl(&["--socks5-hostname", &proxy, &url]).await;
            assert_eq!(got, (true, "hello socks".into()));
        }
        socks.close().await;
        tunnel.close().await;
    }
    t.node.shutdown().await;
}

/// Waits (at most 20 s) until nothing accepts on the loopback `port`.
async fn stops_accepting(port: u16, what: &str) {
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}");
}

#[tokio::test]
async fn local_and_remote_forwards_carry_http_both_ways() {
    let http = http_server("forward").await;
    let t = node_with(loopback_allowed(), None).await;
    let tunnel = ssh_tunnel(t.alice.clone(), target(&t.node, Transport::Quic));
    let local = LocalForward::start(
        "127.0.0.1:0".parse().unwrap(),
        tunnel.clone(),
        "127.0.0.1".into(),
        http.port(),
    )
    .await
    .unwrap();
    let s = TcpStream::connect(local.local_addr()).await.unwrap();
    assert_eq!(get(s).await, "hello forward");

    // -R: the node listens on its loopback, connections come back here to `http`.
    let port = tunnel.remote_forward("127.0.0.1", 0, http).await.unwrap();
    assert_ne!(port, 0);
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(get(s).await, "hello forward");
    let echo = echo_server().await;
    let echo_port = tunnel.remote_forward("127.0.0.1", 0, echo).await.unwrap();
    let mut held = TcpStream::connect(("127.0.0.1", echo_port)).await.unwrap();
    echoes(&mut held).await;

    // A cancelled -R stops listening; cancelling it again is refused.
    let cancelled = tunnel.remote_forward("127.0.0.1", 0, http).await.unwrap();
    tunnel
        .cancel_remote_forward("127.0.0.1", cancelled)
        .await
        .unwrap();
    stops_accepting(cancelled, "the cancelled -R listener still accepts").await;
    assert!(matches!(
        tunnel.cancel_remote_forward("127.0.0.1", cancelled).await,
        Err(ClientError::Refused)
    ));

    // A reload that takes away alice's -R (she may still connect out) closes the node's
    // listeners; the connection one forwarded before goes on, as -L channels do.
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = serde_json::from_str(
        r#"{"rules":[{"hosts":["127.0.0.1"],"action":"allow"},{"direction":"listen","action":"deny"}]}"#,
    )
    .unwrap();
    t.node.reload(dynamic).unwrap();
    for port in [port, echo_port] {
        stops_accepting(port, "the -R listener still accepts after the reload").await;
    }
    echoes(&mut held).await;
    let s = TcpStream::connect(local.local_addr()).await.unwrap();
    assert_eq!(get(s).await, "hello forward");
    // The closed listener's entry is gone: the node has no forward to cancel there.
    assert!(matches!(
        tunnel.cancel_remote_forward("127.0.0.1", port).await,
        Err(ClientError::Refused)
    ));
    // A new session (after the old one ends) asks for the remaining -R again; the node refuses
    // it now, and the session still carries -L.
    tunnel.close().await;
    let s = TcpStream::connect(local.local_addr()).await.unwrap();
    assert_eq!(get(s).await, "hello forward");
    // The refused -R is asked for again with backoff: once a reload grants it, the node listens
    // on its port again, without another reconnect.
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = loopback_allowed();
    t.node.reload(dynamic).unwrap();
    let back = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", echo_port)).await {
                echoes(&mut s).await;
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        back.is_ok(),
        "the refused -R never came back after the reload"
    );
    local.close().await;
    tunnel.close().await;
    t.node.shutdown().await;
}

#[tokio::test]
async fn default_policy_refuses_loopback_and_a_reload_opens_it_for_the_live_session() {
    let http = http_server("reload").await;
    let t = node_with(ForwardingPolicy::default(), None).await;
    let (ssh, _client) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    for host in ["127.0.0.1", "localhost", "::1"] {
        let refused = ssh.open(host, http.port()).await.err();
        assert!(
            matches!(refused, Some(ClientError::Refused)),
            "{host}: {refused:?}"
        );
    }
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = loopback_allowed();
    t.node.reload(dynamic).unwrap();
    let stream = ssh.open("127.0.0.1", http.port()).await.unwrap();
    assert_eq!(get(stream).await, "hello reload");
    // bob is not in the rule: still refused.
    let (bob, _c) = session(&t.node, Transport::Quic, &t.bob, &t.bob)
        .await
        .unwrap();
    assert!(matches!(
        bob.open("127.0.0.1", http.port()).await,
        Err(ClientError::Refused)
    ));
    t.node.shutdown().await;
}

#[tokio::test]
async fn an_unknown_ssh_key_is_rejected() {
    let t = node_with(ForwardingPolicy::default(), None).await;
    let stranger = SecretKey::generate();
    let result = session(&t.node, Transport::Tcp, &stranger, &stranger).await;
    assert!(
        matches!(result, Err(ClientError::AuthRejected)),
        "{:?}",
        result.err()
    );
    t.node.shutdown().await;
}

#[tokio::test]
async fn the_ssh_key_must_name_the_same_peer_as_the_tls_key() {
    let t = node_with(ForwardingPolicy::default(), None).await;
    // TLS says alice, SSH says bob: refused.
    let mismatch = session(&t.node, Transport::Quic, &t.alice, &t.bob).await;
    assert!(matches!(mismatch, Err(ClientError::AuthRejected)));
    // An unknown TLS key resolves to nobody: the SSH key alone decides.
    let anonymous_tls = SecretKey::generate();
    assert!(session(&t.node, Transport::Quic, &anonymous_tls, &t.bob)
        .await
        .is_ok());
    t.node.shutdown().await;
}

#[tokio::test]
async fn a_pinned_host_key_that_does_not_match_is_refused() {
    let t = node_with(ForwardingPolicy::default(), None).await;
    let socket = TcpStream::connect(t.node.ssh_addr().unwrap())
        .await
        .unwrap();
    let other = SecretKey::generate().public().fingerprint();
    let result = SshClient::connect_stream(socket, &t.alice, Some(&other), Carrier::Plain).await;
    assert!(
        matches!(result, Err(ClientError::HostKeyMismatch(_))),
        "{:?}",
        result.err()
    );
    t.node.shutdown().await;
}

#[tokio::test]
async fn thousands_of_channels_are_capped_and_the_node_keeps_serving_others() {
    let http = http_server("cap").await;
    let t = node_with(loopback_allowed(), Some(32)).await;
    let (flood, _c) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    let flood = Arc::new(flood);
    // Hold 32 channels open (the HTTP server waits for a request that never comes) ...
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(flood.open("127.0.0.1", http.port()).await.unwrap());
    }
    // ... then ask for 2000 more at once: every one is refused for the limit.
    let attempts = (0..2000).map(|_| {
        let flood = flood.clone();
        tokio::spawn(async move { flood.open("127.0.0.1", http.port()).await.err() })
    });
    for attempt in futures::future::join_all(attempts).await {
        assert!(matches!(attempt.unwrap(), Some(ClientError::Limit)));
    }
    // Another client is served meanwhile, and the flooding one again once it lets go.
    let (other, _c2) = session(&t.node, Transport::Tcp, &t.alice, &t.alice)
        .await
        .unwrap();
    assert_eq!(
        get(other.open("127.0.0.1", http.port()).await.unwrap()).await,
        "hello cap"
    );
    drop(held);
    let mut reopened = None;
    for _ in 0..1000 {
        // Slots free as the node sees each channel close; the count is bounded, not timed.
        match flood.open("127.0.0.1", http.port()).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(ClientError::Limit) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(get(reopened.expect("a slot frees")).await, "hello cap");
    t.node.shutdown().await;
}

#[tokio::test]
async fn malformed_socks_requests_are_refused_and_the_proxy_keeps_serving() {
    let http = http_server("socks-bad").await;
    let t = node_with(loopback_allowed(), None).await;
    let tunnel = ssh_tunnel(t.alice.clone(), target(&t.node, Transport::Quic));
    let socks = Socks5::start("127.0.0.1:0".parse().unwrap(), tunnel.clone())
        .await
        .unwrap();
    // Garbage instead of a greeting: closed.
    let mut garbage = TcpStream::connect(socks.local_addr()).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest).await;
    // BIND is not supported: reply 7 (command not supported).
    let mut bind = TcpStream::connect(socks.local_addr()).await.unwrap();
    bind.write_all(&[5, 1, 0]).await.unwrap();
    let mut reply = [0u8; 2];
    bind.read_exact(&mut reply).await.unwrap();
    bind.write_all(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    let mut head = [0u8; 10];
    bind.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1], 7);
    // A refused destination: reply 2 (not allowed by ruleset).
    let mut refused = TcpStream::connect(socks.local_addr()).await.unwrap();
    refused.write_all(&[5, 1, 0]).await.unwrap();
    refused.read_exact(&mut reply).await.unwrap();
    refused
        .write_all(&[5, 1, 0, 1, 10, 255, 255, 1, 0, 80])
        .await
        .unwrap();
    refused.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1], 2);
    // A good request still works.
    let mut good = TcpStream::connect(socks.local_addr()).await.unwrap();
    good.write_all(&[5, 1, 0]).await.unwrap();
    good.read_exact(&mut reply).await.unwrap();
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&http.port().to_be_bytes());
    good.write_all(&req).await.unwrap();
    good.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1], 0);
    assert_eq!(get(good).await, "hello socks-bad");
    socks.close().await;
    t.node.shutdown().await;
}

#[tokio::test]
async fn the_tunnel_redials_after_the_node_comes_back() {
    let http = http_server("redial").await;
    let t = node_with(loopback_allowed(), None).await;
    let ssh_addr = t.node.ssh_addr().unwrap();
    let config = alknet_ssh::client::TunnelConfig::new(t.alice.clone(), None);
    let tunnel = alknet_ssh::client::Tunnel::new(config, move || async move {
        let s = TcpStream::connect(ssh_addr).await?;
        Ok(Box::new(s) as alknet_ssh::client::BoxedDuplex)
    });
    assert_eq!(
        get(tunnel.open("127.0.0.1", http.port()).await.unwrap()).await,
        "hello redial"
    );
    // The node goes away and a new one (same key list, same SSH port) takes its place.
    let (alice, bob) = (t.alice.clone(), t.bob.clone());
    t.node.shutdown().await;
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.ssh.listen = Some(ssh_addr);
    config.auth.peers = vec![
        PeerEntry::new("alice", [alice.public().fingerprint()]),
        PeerEntry::new("bob", [bob.public().fingerprint()]),
    ];
    config.forwarding = loopback_allowed();
    let node = Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap();
    let mut body = None;
    for _ in 0..20 {
        if let Ok(s) = tunnel.open("127.0.0.1", http.port()).await {
            body = Some(get(s).await);
            break;
        }
    }
    assert_eq!(body.as_deref(), Some("hello redial"));
    node.shutdown().await;
}

#[tokio::test]
async fn a_rule_for_plain_ssh_only_refuses_the_destination_over_quic_and_tcp_tls() {
    let http = http_server("per-transport").await;
    // Loopback is opened for alice over iroh and the plain SSH port only.
    let only_ssh: ForwardingPolicy = serde_json::from_str(
        r#"{"rules":[{"peers":["alice"],"hosts":["127.0.0.1"],"transports":["iroh","ssh"],"action":"allow"}]}"#,
    )
    .unwrap();
    let t = node_with(only_ssh, None).await;
    for over in [Transport::Quic, Transport::Tcp] {
        let (ssh, _client) = session(&t.node, over, &t.alice, &t.alice).await.unwrap();
        let refused = ssh.open("127.0.0.1", http.port()).await.err();
        assert!(
            matches!(refused, Some(ClientError::Refused)),
            "{over:?}: {refused:?}"
        );
    }
    let native = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, Transport::Quic));
    let native_tcp = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, Transport::Tcp));
    for tunnel in [&native, &native_tcp] {
        assert!(matches!(
            tunnel.open("127.0.0.1", http.port()).await,
            Err(ClientError::Refused)
        ));
    }
    let socket = TcpStream::connect(t.node.ssh_addr().unwrap())
        .await
        .unwrap();
    let plain =
        SshClient::connect_stream(socket, &t.alice, Some(t.node.fingerprint()), Carrier::Plain)
            .await
            .unwrap();
    let stream = plain.open("127.0.0.1", http.port()).await.unwrap();
    assert_eq!(get(stream).await, "hello per-transport");

    // A reload turns it around: QUIC only, for SSH channels and the native tunnel alike.
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = serde_json::from_str(
        r#"{"rules":[{"hosts":["127.0.0.1"],"transports":["quic"],"action":"allow"}]}"#,
    )
    .unwrap();
    t.node.reload(dynamic).unwrap();
    assert!(matches!(
        plain.open("127.0.0.1", http.port()).await,
        Err(ClientError::Refused)
    ));
    assert_eq!(
        get(native.open("127.0.0.1", http.port()).await.unwrap()).await,
        "hello per-transport"
    );
    assert!(matches!(
        native_tcp.open("127.0.0.1", http.port()).await,
        Err(ClientError::Refused)
    ));
    let (quic, _client) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    assert_eq!(
        get(quic.open("127.0.0.1", http.port()).await.unwrap()).await,
        "hello per-transport"
    );
    t.node.shutdown().await;
}

// ---- the native tunnel (alknet/tunnel) ----

#[tokio::test]
async fn socks5_over_the_native_tunnel_reaches_http_by_name() {
    let http = http_server("native").await;
    let t = node_with(loopback_allowed(), None).await;
    // Over QUIC a stream per connection; over TCP+TLS a TLS connection per connection.
    for over in [Transport::Quic, Transport::Tcp] {
        let tunnel = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, over));
        let socks = Socks5::start("127.0.0.1:0".parse().unwrap(), tunnel.clone())
            .await
            .unwrap();
        let stream = tunnel.open("localhost", http.port()).await.unwrap();
        assert_eq!(get(stream).await, "hello native", "{over:?}");
        // Several at once, each answered in full.
        let gets = (0..8).map(|_| {
            let tunnel = tunnel.clone();
            async move { get(tunnel.open("127.0.0.1", http.port()).await.unwrap()).await }
        });
        for got in futures::future::join_all(gets).await {
            assert_eq!(got, "hello native", "{over:?}");
        }
        if which("curl") {
            let proxy = socks.local_addr().to_string();
            let url = format!("http://localhost:{}/", http.port());
            let got = curl(&["--socks5-hostname", &proxy, &url]).await;
            assert_eq!(got, (true, "hello native".into()), "{over:?}");
        }
        socks.close().await;
    }
    t.node.shutdown().await;
}

#[tokio::test]
async fn the_native_tunnel_refuses_bad_headers_refused_destinations_and_the_limit() {
    let http = http_server("native-bad").await;
    let t = node_with(loopback_allowed(), Some(4)).await;
    let (client, conn, _) = alknet_node::dial(
        t.alice.clone(),
        target(&t.node, Transport::Quic),
        alknet_ssh::TUNNEL_ALPN,
    )
    .await
    .unwrap();
    // A header of another version: status 5, and the connection keeps serving.
    let mut bad = conn.open_bi().await.unwrap();
    bad.write_all(&[9, 1, b'x', 0, 80]).await.unwrap();
    assert_eq!(bad.read_u8().await.unwrap(), 5);
    // A private destination outside alice's rule: status 1.
    let mut refused = conn.open_bi().await.unwrap();
    refused
        .write_all(&alknet_ssh::tunnel::encode_header("10.255.255.1", 80).unwrap())
        .await
        .unwrap();
    assert_eq!(refused.read_u8().await.unwrap(), 1);
    // Four held streams fill the limit; the fifth gets status 4.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = conn.open_bi().await.unwrap();
        s.write_all(&alknet_ssh::tunnel::encode_header("127.0.0.1", http.port()).unwrap())
            .await
            .unwrap();
        assert_eq!(s.read_u8().await.unwrap(), 0);
        held.push(s);
    }
    let mut over = conn.open_bi().await.unwrap();
    over.write_all(&alknet_ssh::tunnel::encode_header("127.0.0.1", http.port()).unwrap())
        .await
        .unwrap();
    assert_eq!(over.read_u8().await.unwrap(), 4);
    // The held streams still work.
    assert_eq!(get(held.pop().unwrap()).await, "hello native-bad");
    client.close();
    t.node.shutdown().await;
}

#[tokio::test]
async fn the_native_tunnel_over_tcp_tls_answers_each_connection_alone() {
    let http = http_server("native-tcp").await;
    let t = node_with(loopback_allowed(), None).await;
    let raw = |header: Vec<u8>| {
        let target = target(&t.node, Transport::Tcp);
        let alice = t.alice.clone();
        async move {
            let (client, conn, _) = alknet_node::dial(alice, target, alknet_ssh::TUNNEL_ALPN)
                .await
                .unwrap();
            // A TCP+TLS connection carries one stream: the tunnel's.
            assert!(conn.open_bi().await.is_err());
            let mut stream = alknet_node::open_stream(&conn).await.unwrap();
            stream.write_all(&header).await.unwrap();
            let status = stream.read_u8().await.unwrap();
            (client, stream, status)
        }
    };
    let (_c1, mut bad, status) = raw(vec![9, 1, b'x', 0, 80]).await;
    assert_eq!(status, 5);
    // The node finishes a refused stream, which on TCP+TLS ends its connection.
    let mut rest = Vec::new();
    assert_eq!(bad.read_to_end(&mut rest).await.unwrap_or(0), 0);
    let refused = alknet_ssh::tunnel::encode_header("10.255.255.1", 80).unwrap();
    assert_eq!(raw(refused).await.2, 1);
    let good = alknet_ssh::tunnel::encode_header("127.0.0.1", http.port()).unwrap();
    let (_c2, stream, status) = raw(good).await;
    assert_eq!(status, 0);
    assert_eq!(get(stream).await, "hello native-tcp");
    t.node.shutdown().await;
}

/// A TCP server that sends back everything it reads, then closes its side once the client
/// closed its own.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.into_split();
                if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                    let _ = write.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_native_tunnel_carries_megabytes_both_ways_intact_and_passes_on_half_close() {
    // Both ends copy chunk-wise (QUIC receive buffers to TCP, TCP reads into QUIC's send
    // buffer): every byte must arrive once, in order, and the client's FIN must travel through.
    let echo = echo_server().await;
    let t = node_with(loopback_allowed(), None).await;
    for over in [Transport::Quic, Transport::Tcp] {
        megabytes_through_the_native_tunnel(&t, over, echo).await;
    }
    t.node.shutdown().await;
}

async fn megabytes_through_the_native_tunnel(t: &TestNode, over: Transport, echo: SocketAddr) {
    let tunnel = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, over));
    let local = LocalForward::start(
        "127.0.0.1:0".parse().unwrap(),
        tunnel.clone(),
        "127.0.0.1".into(),
        echo.port(),
    )
    .await
    .unwrap();
    let sent: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let socket = TcpStream::connect(local.local_addr()).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            // Odd-sized writes, so chunk edges fall anywhere.
            for piece in sent.chunks(100_003) {
                write.write_all(piece).await.unwrap();
            }
            write.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::with_capacity(sent.len());
    read.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), sent.len(), "{over:?}");
    assert!(
        back == sent,
        "{over:?}: the echoed bytes differ from the sent ones"
    );
    local.close().await;
}

#[tokio::test]
async fn the_native_tunnel_needs_a_known_peer_key() {
    let t = node_with(loopback_allowed(), None).await;
    for over in [Transport::Quic, Transport::Tcp] {
        let tunnel = alknet_node::native_tunnel(SecretKey::generate(), target(&t.node, over));
        assert!(tunnel.open("127.0.0.1", 80).await.is_err(), "{over:?}");
    }
    t.node.shutdown().await;
}

// ---- OpenSSH ----

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `ssh` and `curl` are there, installing them with apt-get where that works.
fn openssh_tools() -> bool {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if !(which("ssh") && which("curl")) && which("apt-get") {
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client curl",
                ])
                .stdout(Stdio::null())
                .status();
        }
    });
    let missing: Vec<&str> = ["ssh", "curl"].into_iter().filter(|t| !which(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "skipped: {} not installed (Debian: apt-get install openssh-client curl)",
        missing.join(" and ")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("{message}");
    false
}

struct OpenSsh {
    dir: tempfile::TempDir,
    port: u16,
}

impl OpenSsh {
    /// Key files and known_hosts for `key` against the node's plain SSH port.
    fn new(node: &Node, key: &SecretKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pem = alknet_ssh::keys::openssh_private_key(key);
        let id = dir.path().join("id");
        std::fs::write(&id, pem.as_bytes()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = node.ssh_addr().unwrap().port();
        let host_key = alknet_ssh::keys::openssh_public_key(&node_public_key(node));
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}\n"),
        )
        .unwrap();
        Self { dir, port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(self.path("id"))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.path("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ExitOnForwardFailure=yes",
            ])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .arg("alice@127.0.0.1")
            .stdin(Stdio::null());
        cmd
    }
}

fn node_public_key(node: &Node) -> alknet_core::PublicKey {
    let hex = node.fingerprint().strip_prefix("ed25519:").unwrap();
    let bytes: [u8; 32] = hex::decode(hex).unwrap().try_into().unwrap();
    alknet_core::PublicKey::from_bytes(&bytes).unwrap()
}

/// A running `ssh`, killed when dropped.
struct Running(tokio::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts `ssh -N` with `args` and waits until `port` accepts (or ssh exits, which fails).
async fn ssh_listening(ssh: &OpenSsh, args: &[&str], port: u16) -> Running {
    listening(ssh.command(&[&["-N"], args].concat()), port, "ssh").await
}

/// Starts `command` and waits until 127.0.0.1:`port` accepts; `what` exiting first fails the test
/// with its stderr.
async fn listening(command: Command, port: u16, what: &str) -> Running {
    let mut child = tokio::process::Command::from(command)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Running(child);
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!("{what} exited ({status}) before listening: {err}");
        }
        tokio::task::yield_now().await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn output(cmd: Command) -> std::process::Output {
    tokio::process::Command::from(cmd).output().await.unwrap()
}

/// Runs curl without blocking the runtime the node runs on.
async fn curl(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn openssh_dynamic_forward_reaches_http_and_follows_a_policy_reload() {
    if !openssh_tools() {
        return;
    }
    let http = http_server("openssh").await;
    let t = node_with(ForwardingPolicy::default(), None).await;
    let ssh = OpenSsh::new(&t.node, &t.alice);
    let socks = free_port();
    let _d = ssh_listening(&ssh, &["-D", &format!("127.0.0.1:{socks}")], socks).await;
    let url = format!("http://localhost:{}/", http.port());
    let proxy = format!("127.0.0.1:{socks}");
    // Loopback is refused by the default policy ...
    let (ok, _) = curl(&["--socks5-hostname", &proxy, &url]).await;
    assert!(!ok, "the default policy must refuse loopback");
    // ... until a reload opens it, for the ssh already connected.
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = loopback_allowed();
    t.node.reload(dynamic).unwrap();
    assert_eq!(
        curl(&["--socks5-hostname", &proxy, &url]).await,
        (true, "hello openssh".into())
    );
    t.node.shutdown().await;
}

#[tokio::test]
async fn openssh_local_and_remote_forwards_work() {
    if !openssh_tools() {
        return;
    }
    let http = http_server("openssh-lr").await;
    let t = node_with(loopback_allowed(), None).await;
    let ssh = OpenSsh::new(&t.node, &t.alice);
    let local = free_port();
    let _l = ssh_listening(
        &ssh,
        &[
            "-L",
            &format!("127.0.0.1:{local}:127.0.0.1:{}", http.port()),
        ],
        local,
    )
    .await;
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{local}/")]).await,
        (true, "hello openssh-lr".into())
    );

    // -R with port 0: ssh prints the port the node allocated.
    let mut child = tokio::process::Command::from(ssh.command(&[
        "-N",
        "-R",
        &format!("0:127.0.0.1:{}", http.port()),
    ]))
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("ssh printed the allocated port");
        if let Some(rest) = line.strip_prefix("Allocated port ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let _r = Running(child);
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{port}/")]).await,
        (true, "hello openssh-lr".into())
    );
    t.node.shutdown().await;
}

/// A node whose policy opens `<dir>/allowed/` to alice only (and TCP loopback, which opens
/// no socket); `<dir>/other.sock` is named by no rule.
async fn node_with_sockets() -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("allowed")).unwrap();
    unix_http_server(&dir.path().join("allowed/app.sock"), "unix");
    unix_http_server(&dir.path().join("other.sock"), "other");
    // A link inside the allowed directory that leads out of it, and a rule that names a socket
    // through a linked directory.
    std::os::unix::fs::symlink(
        dir.path().join("other.sock"),
        dir.path().join("allowed/escape.sock"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("allowed"), dir.path().join("via")).unwrap();
    let at = |p: &str| format!("{}/{p}", dir.path().display());
    let rules = serde_json::json!({ "default": "allow", "rules": [
        { "peers": ["alice"], "sockets": [at("allowed/"), at("via/app.sock")], "action": "allow" },
    ]});
    let t = node_with(serde_json::from_value(rules).unwrap(), None).await;
    (t, dir)
}

#[tokio::test]
async fn unix_sockets_open_only_where_a_sockets_rule_allows() {
    let (t, dir) = node_with_sockets().await;
    let path = |p: &str| format!("{}/{p}", dir.path().display());
    let (alice, _c) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    let stream = alice.open_socket(&path("allowed/app.sock")).await.unwrap();
    assert_eq!(get(stream).await, "hello unix");
    let stream = alice.open_socket(&path("via/app.sock")).await.unwrap();
    assert_eq!(get(stream).await, "hello unix");
    // A link out of the allowed directory, another socket (`default = "allow"` opens none), a
    // way out of the directory, a relative path, and another peer: refused, and the session
    // goes on.
    for refused in [
        path("allowed/escape.sock"),
        path("other.sock"),
        path("allowed/../other.sock"),
        "allowed/app.sock".into(),
    ] {
        assert!(
            matches!(alice.open_socket(&refused).await, Err(ClientError::Refused)),
            "{refused}"
        );
    }
    let (bob, _c) = session(&t.node, Transport::Tcp, &t.bob, &t.bob)
        .await
        .unwrap();
    assert!(matches!(
        bob.open_socket(&path("allowed/app.sock")).await,
        Err(ClientError::Refused)
    ));
    // Allowed, but nothing listens there.
    assert!(matches!(
        alice.open_socket(&path("allowed/none.sock")).await,
        Err(ClientError::ConnectFailed)
    ));
    let stream = alice.open_socket(&path("allowed/app.sock")).await.unwrap();
    assert_eq!(get(stream).await, "hello unix");
    t.node.shutdown().await;
}

#[tokio::test]
async fn openssh_local_forward_reaches_a_unix_socket() {
    if !openssh_tools() {
        return;
    }
    let (t, dir) = node_with_sockets().await;
    let ssh = OpenSsh::new(&t.node, &t.alice);
    let (allowed, other) = (free_port(), free_port());
    let _l = ssh_listening(
        &ssh,
        &[
            "-L",
            &format!(
                "127.0.0.1:{allowed}:{}/allowed/app.sock",
                dir.path().display()
            ),
            "-L",
            &format!("127.0.0.1:{other}:{}/other.sock", dir.path().display()),
        ],
        allowed,
    )
    .await;
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{allowed}/")]).await,
        (true, "hello unix".into())
    );
    // The node refuses the channel; ssh closes the local connection, and curl gets nothing.
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{other}/")]).await;
    assert!(!ok, "a socket no rule names was reached");
    t.node.shutdown().await;
}

/// A node whose policy lets alice have it listen on sockets under `<dir>/allowed/` only;
/// `<dir>/allowed/out` is a link to the directory `<dir>/outside`.
async fn node_with_socket_listeners() -> (TestNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("allowed")).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("allowed/out")).unwrap();
    let allowed = format!("{}/allowed/", dir.path().display());
    let rules = serde_json::json!({ "default": "allow", "rules": [
        { "peers": ["alice"], "direction": "listen", "sockets": [allowed], "action": "allow" },
    ]});
    let t = node_with(serde_json::from_value(rules).unwrap(), None).await;
    (t, dir)
}

/// Waits (at most 20 s) until nothing is at `path`.
async fn removed(path: &Path, what: &str) {
    let gone = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while std::fs::symlink_metadata(path).is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{what}");
}

#[tokio::test]
async fn a_remote_forward_on_a_unix_socket_carries_bytes_and_its_socket_goes_when_it_ends() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let (t, dir) = node_with_socket_listeners().await;
    let echo = echo_server().await;
    let path = dir.path().join("allowed/in.sock");
    let text = path.to_str().unwrap();
    let tunnel = ssh_tunnel(t.alice.clone(), target(&t.node, Transport::Quic));
    tunnel.remote_forward_socket(text, echo).await.unwrap();
    // A socket only the node's user may connect to; a connection to it reaches `echo` here.
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut held = tokio::net::UnixStream::connect(&path).await.unwrap();
    echoes(&mut held).await;
    // Asking for it again while it is there is refused (the path exists).
    assert!(matches!(
        tunnel.remote_forward_socket(text, echo).await,
        Err(ClientError::Refused)
    ));

    // Once its file is gone (removed behind the node's back), asking again takes the path
    // over: the new socket is served, and one cancel ends the forward.
    std::fs::remove_file(&path).unwrap();
    tunnel.remote_forward_socket(text, echo).await.unwrap();
    let mut again = tokio::net::UnixStream::connect(&path).await.unwrap();
    echoes(&mut again).await;

    // Cancel removes the socket (by the time the node answers) and ends what it forwarded.
    tunnel.cancel_remote_forward_socket(text).await.unwrap();
    assert!(std::fs::symlink_metadata(&path).is_err());
    ends(&mut again, "a connection of the cancelled forward").await;
    ends(&mut held, "a connection of the replaced forward").await;
    assert!(matches!(
        tunnel.cancel_remote_forward_socket(text).await,
        Err(ClientError::Refused)
    ));

    // The end of the session removes it.
    let (ssh, _client) = session(&t.node, Transport::Tcp, &t.alice, &t.alice)
        .await
        .unwrap();
    ssh.remote_forward_socket(text, echo).await.unwrap();
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    echoes(&mut s).await;
    ssh.close().await;
    removed(&path, "the socket of an ended session is still there").await;

    // A reload that no longer allows it closes the listener and removes the socket.
    tunnel.remote_forward_socket(text, echo).await.unwrap();
    let mut held = tokio::net::UnixStream::connect(&path).await.unwrap();
    echoes(&mut held).await;
    let mut dynamic = t.node.dynamic();
    let sockets = std::mem::replace(&mut dynamic.forwarding, loopback_allowed());
    t.node.reload(dynamic).unwrap();
    removed(&path, "the socket is still there after a reload denied it").await;
    // What it forwarded before goes on, as -L channels opened before a reload do.
    echoes(&mut held).await;

    // Once allowed again, the tunnel's next session asks for it again and the node listens.
    let mut dynamic = t.node.dynamic();
    dynamic.forwarding = sockets;
    t.node.reload(dynamic).unwrap();
    tunnel.close().await;
    tunnel.session().await.unwrap();
    let back = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Ok(mut s) = tokio::net::UnixStream::connect(&path).await {
                echoes(&mut s).await;
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(back.is_ok(), "the socket -R was not asked for again");
    tunnel.cancel_remote_forward_socket(text).await.unwrap();
    assert!(std::fs::symlink_metadata(&path).is_err());
    tunnel.close().await;
    t.node.shutdown().await;
}

#[tokio::test]
async fn a_remote_forward_on_a_unix_socket_is_refused_outside_its_rules_and_over_a_file() {
    let (t, dir) = node_with_socket_listeners().await;
    let echo = echo_server().await;
    let path = |p: &str| format!("{}/{p}", dir.path().display());
    // Files already there, a plain one and a stale socket: neither is replaced nor removed.
    std::fs::write(path("allowed/file"), "keep").unwrap();
    drop(std::os::unix::net::UnixListener::bind(path("allowed/stale.sock")).unwrap());
    let (alice, _c) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    for refused in [
        path("other.sock"),
        path("outside/in.sock"),
        path("allowed/../in.sock"),
        path("allowed/out/in.sock"),
        path("allowed/missing/in.sock"),
        path("allowed/"),
        path("allowed/file"),
        path("allowed/stale.sock"),
        "allowed/in.sock".into(),
    ] {
        assert!(
            matches!(
                alice.remote_forward_socket(&refused, echo).await,
                Err(ClientError::Refused)
            ),
            "{refused}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(path("allowed/file")).unwrap(),
        "keep"
    );
    assert!(std::fs::symlink_metadata(path("allowed/stale.sock")).is_ok());
    for nothing in [
        "other.sock",
        "in.sock",
        "outside/in.sock",
        "allowed/in.sock",
    ] {
        assert!(
            std::fs::symlink_metadata(path(nothing)).is_err(),
            "{nothing}"
        );
    }
    // bob has no listen rule; a connect rule would not do either.
    let (bob, _c) = session(&t.node, Transport::Quic, &t.bob, &t.bob)
        .await
        .unwrap();
    assert!(matches!(
        bob.remote_forward_socket(&path("allowed/bob.sock"), echo)
            .await,
        Err(ClientError::Refused)
    ));
    // The session that was refused still gets what its rule allows.
    alice
        .remote_forward_socket(&path("allowed/in.sock"), echo)
        .await
        .unwrap();
    let mut s = tokio::net::UnixStream::connect(path("allowed/in.sock"))
        .await
        .unwrap();
    echoes(&mut s).await;
    t.node.shutdown().await;
}

#[tokio::test]
async fn openssh_remote_forward_on_a_unix_socket_is_served_where_allowed_and_refused_elsewhere() {
    if !openssh_tools() {
        return;
    }
    let (t, dir) = node_with_socket_listeners().await;
    let http = http_server("openssh-srem").await;
    let ssh = OpenSsh::new(&t.node, &t.alice);
    let allowed = dir.path().join("allowed/web.sock");
    let mut child = tokio::process::Command::from(ssh.command(&[
        "-N",
        "-R",
        &format!("{}:127.0.0.1:{}", allowed.display(), http.port()),
    ]))
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    // ssh sets up its forwards right after authenticating; the node creates the socket.
    loop {
        if tokio::net::UnixStream::connect(&allowed).await.is_ok() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!("ssh exited ({status}) before the node listened: {err}");
        }
        tokio::task::yield_now().await;
    }
    let running = Running(child);
    let socket = allowed.to_str().unwrap();
    assert_eq!(
        curl(&["--unix-socket", socket, "http://x/"]).await,
        (true, "hello openssh-srem".into())
    );
    // ssh going away ends the session, and the node removes the socket.
    drop(running);
    removed(&allowed, "the socket is still there after ssh went away").await;

    // Outside the allowed directory the node refuses it, and ssh (ExitOnForwardFailure) gives up.
    let outside = dir.path().join("outside/web.sock");
    let out = output(ssh.command(&[
        "-N",
        "-R",
        &format!("{}:127.0.0.1:{}", outside.display(), http.port()),
    ]))
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("remote port forwarding failed"), "{err}");
    assert!(std::fs::symlink_metadata(&outside).is_err());
    t.node.shutdown().await;
}

#[tokio::test]
async fn openssh_refused_key_and_refused_commands() {
    if !openssh_tools() {
        return;
    }
    let t = node_with(ForwardingPolicy::default(), None).await;
    let stranger = OpenSsh::new(&t.node, &SecretKey::generate());
    let out = output(stranger.command(&["-N"])).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A known key may forward, but gets no shell and runs no command.
    let alice = OpenSsh::new(&t.node, &t.alice);
    let out = output(alice.command(&["-T", "true"])).await;
    assert!(!out.status.success(), "{out:?}");
    t.node.shutdown().await;
}

/// Whether `sshd` is there, installing openssh-server with apt-get where that works.
fn sshd_installed() -> bool {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() && which("apt-get") {
        let _ = Command::new("sh")
            .args([
                "-c",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server)",
            ])
            .stdout(Stdio::null())
            .status();
    }
    if sshd.exists() {
        return true;
    }
    let message = "skipped: sshd not installed (Debian: apt-get install openssh-server)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("{message}");
    false
}

#[tokio::test]
async fn openssh_reaches_a_real_sshd_through_the_node_with_alknet_proxy() {
    if !openssh_tools() || !sshd_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let alice = SecretKey::generate();
    // A real sshd on loopback, with its own host key, authorizing alice's key.
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path("host"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        path("authorized_keys"),
        alknet_ssh::keys::openssh_public_key(&alice.public()),
    )
    .unwrap();
    let sshd_port = free_port();
    let config = format!(
        "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nPidFile {pid}\n",
        host = path("host").display(),
        keys = path("authorized_keys").display(),
        pid = path("sshd.pid").display(),
    );
    std::fs::write(path("sshd_config"), config).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut sshd = Command::new("/usr/sbin/sshd");
    sshd.args(["-D", "-e", "-f"]).arg(path("sshd_config"));
    let _sshd = listening(sshd, sshd_port, "sshd").await;

    // The node may reach its own sshd for alice, and nothing else on loopback.
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.services.ssh = true;
    config.auth.peers = vec![PeerEntry::new("alice", [alice.public().fingerprint()])];
    config.forwarding = serde_json::from_value(serde_json::json!({
        "rules": [{ "peers": ["alice"], "hosts": ["127.0.0.1"], "ports": [sshd_port], "action": "allow" }]
    }))
    .unwrap();
    let node = Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap();

    alice.save(path("alice.pem")).unwrap();
    std::fs::write(path("id"), alknet_ssh::keys::openssh_private_key(&alice)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path("id"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let host_pub = std::fs::read_to_string(path("host.pub")).unwrap();
    std::fs::write(path("known_hosts"), format!("sshd-via-alknet {host_pub}")).unwrap();
    let proxy = format!(
        "{} --key {} --node {} --fingerprint {} --to 127.0.0.1:{sshd_port}",
        env!("CARGO_BIN_EXE_alknet-proxy"),
        path("alice.pem").display(),
        node.local_addr(),
        node.fingerprint(),
    );
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let mut ssh = Command::new("ssh");
    ssh.args(["-F", "/dev/null", "-i"])
        .arg(path("id"))
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            path("known_hosts").display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("ProxyCommand={proxy}"))
        .arg(format!("{}@sshd-via-alknet", user.trim()))
        .args(["echo", "through-alknet"])
        .stdin(Stdio::null());
    let out = output(ssh).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through-alknet\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.shutdown().await;
}

// ---- OpenSSH user certificates ----

/// Runs `ssh-keygen` with `args` in `dir`; panics when it fails.
fn keygen(dir: &Path, args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
}

#[tokio::test]
async fn openssh_user_certificates_signed_by_the_configured_ca() {
    if !openssh_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["ca", "other-ca", "user"] {
        keygen(
            d,
            &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name],
        );
    }
    let sign = |ca: &str, principal: &str, validity: &str, extra: &[&str], out: &str| {
        std::fs::copy(d.join("user.pub"), d.join(format!("{out}.pub"))).unwrap();
        let pubfile = format!("{out}.pub");
        let args = [
            &[
                "-q", "-s", ca, "-I", "test-id", "-n", principal, "-V", validity,
            ][..],
            extra,
            &[&pubfile[..]],
        ]
        .concat();
        keygen(d, &args);
    };
    sign("ca", "carol", "-5m:+1h", &[], "good");
    sign("ca", "carol", "20200101:20200102", &[], "expired");
    sign("other-ca", "carol", "-5m:+1h", &[], "wrong-ca");
    sign("ca", "mallory", "-5m:+1h", &[], "stranger");
    sign("ca", "dave", "-5m:+1h", &[], "disabled");
    sign(
        "ca",
        "carol",
        "-5m:+1h",
        &["-O", "force-command=true"],
        "forced",
    );
    sign(
        "ca",
        "carol",
        "-5m:+1h",
        &["-O", "no-port-forwarding"],
        "no-fwd",
    );
    sign(
        "ca",
        "carol",
        "-5m:+1h",
        &["-O", "source-address=10.9.0.0/16"],
        "elsewhere",
    );
    sign(
        "ca",
        "carol",
        "-5m:+1h",
        &["-O", "source-address=127.0.0.0/8,::1"],
        "loopback-only",
    );

    let http = http_server("cert").await;
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.ssh.listen = Some("127.0.0.1:0".parse().unwrap());
    config.ssh.user_ca = vec![std::fs::read_to_string(d.join("ca.pub")).unwrap()];
    // carol and dave have no key in the peer list: only a certificate names them.
    let mut dave = PeerEntry::new("dave", Vec::<String>::new());
    dave.enabled = false;
    config.auth.peers = vec![PeerEntry::new("carol", Vec::<String>::new()), dave];
    config.forwarding = serde_json::from_str(
        r#"{"rules":[{"peers":["carol","dave","mallory"],"hosts":["127.0.0.1"],"action":"allow"}]}"#,
    )
    .unwrap();
    let node = Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap();
    let port = node.ssh_addr().unwrap().port();
    let host_key = alknet_ssh::keys::openssh_public_key(&node_public_key(&node));
    std::fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_key}\n"),
    )
    .unwrap();
    let ssh = |cert: &str, user: &str, args: &[&str], command: &[&str]| {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(d.join("user"))
            .arg("-o")
            .arg(format!(
                "CertificateFile={}",
                d.join(format!("{cert}-cert.pub")).display()
            ))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                d.join("known_hosts").display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ExitOnForwardFailure=yes",
            ])
            .args(["-p", &port.to_string()])
            .args(args)
            .arg(format!("{user}@127.0.0.1"))
            .args(command)
            .stdin(Stdio::null());
        cmd
    };

    // A good certificate forwards (-L), for carol, under carol's rule.
    for cert in ["good", "loopback-only"] {
        let local = free_port();
        let forward = format!("127.0.0.1:{local}:127.0.0.1:{}", http.port());
        let _running = listening(
            ssh(cert, "carol", &["-N", "-L", &forward], &[]),
            local,
            &format!("{cert}: ssh"),
        )
        .await;
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{local}/")]).await,
            (true, "hello cert".into()),
            "{cert}"
        );
    }

    // Refused: expired, another CA, a principal that is no peer, a disabled peer, a user name
    // the certificate does not name, an unknown critical option, no port forwarding, and a
    // source address the client is not at. The user key alone is no peer's key either.
    for (cert, user) in [
        ("expired", "carol"),
        ("wrong-ca", "carol"),
        ("stranger", "mallory"),
        ("disabled", "dave"),
        ("good", "dave"),
        ("forced", "carol"),
        ("no-fwd", "carol"),
        ("elsewhere", "carol"),
    ] {
        // A command, not -N: if the login were accepted, ssh would exit at once with another error.
        let out = output(ssh(cert, user, &["-T"], &["true"])).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Permission denied"),
            "{cert} as {user}: {stderr}"
        );
    }
    node.shutdown().await;
}

#[test]
fn a_user_ca_that_is_not_a_key_is_a_config_error() {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.ssh.user_ca = vec!["ssh-ed25519 not-base64".into()];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("ssh.user_ca[0]"), "{err}");
}

/// Writes a line on `stream` and reads it back: the forwarded connection is alive.
async fn echoes(stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin)) {
    stream.write_all(b"ping\n").await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping\n");
}

/// Waits until the forwarded connection `stream` ends (EOF or error); a guard turns a hang into
/// a failure.
async fn ends(stream: &mut (impl tokio::io::AsyncRead + Unpin), what: &str) {
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(
        ended.is_ok(),
        "{what}: still open after the peer was revoked"
    );
}

#[tokio::test]
async fn revoking_a_peer_ends_its_open_ssh_sessions_and_tunnel_connections() {
    let echo = echo_server().await;
    let mut policy = loopback_allowed();
    policy.rules[0].peers.push("bob".into());
    let t = node_with(policy, None).await;
    let (alice_ssh, _a) = session(&t.node, Transport::Quic, &t.alice, &t.alice)
        .await
        .unwrap();
    let (bob_ssh, _b) = session(&t.node, Transport::Tcp, &t.bob, &t.bob)
        .await
        .unwrap();
    let native = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, Transport::Quic));
    let native_tcp = alknet_node::native_tunnel(t.alice.clone(), target(&t.node, Transport::Tcp));
    let mut over_ssh = alice_ssh.open("127.0.0.1", echo.port()).await.unwrap();
    let mut over_tunnel = native.open("127.0.0.1", echo.port()).await.unwrap();
    let mut over_tcp_tunnel = native_tcp.open("127.0.0.1", echo.port()).await.unwrap();
    let mut bobs = bob_ssh.open("127.0.0.1", echo.port()).await.unwrap();
    for stream in [
        &mut over_ssh,
        &mut over_tunnel,
        &mut over_tcp_tunnel,
        &mut bobs,
    ] {
        echoes(stream).await;
    }

    let mut dynamic = t.node.dynamic();
    for peer in &mut dynamic.auth.peers {
        if peer.id == "alice" {
            peer.enabled = false;
        }
    }
    t.node.reload(dynamic).unwrap();
    ends(&mut over_ssh, "alice's SSH channel").await;
    ends(&mut over_tunnel, "alice's tunnel stream").await;
    ends(
        &mut over_tcp_tunnel,
        "alice's tunnel connection over TCP+TLS",
    )
    .await;
    assert!(alice_ssh.is_closed(), "alice's SSH session stays open");
    // bob's session and channel go on, and he opens new ones.
    echoes(&mut bobs).await;
    let mut again = bob_ssh.open("127.0.0.1", echo.port()).await.unwrap();
    echoes(&mut again).await;
    t.node.shutdown().await;
}

/// A stream that keeps a copy of every byte written to and read from it: what the SSH client
/// hands its carrier, before the carrier's own encryption.
struct Tapped<S> {
    inner: S,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tapped<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&read);
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fetches over a forwarded channel of an SSH session on `stream` (the client saying the
/// carrier is `carrier`) and says whether the request and the answer crossed the carrier as
/// cleartext SSH payload, that is whether SSH negotiated its `none` cipher.
async fn ssh_in_cleartext(
    t: &TestNode,
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    carrier: Carrier,
) -> bool {
    let http = http_server("tapped").await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tapped = Tapped {
        inner: stream,
        seen: seen.clone(),
    };
    let ssh = SshClient::connect_stream(tapped, &t.alice, Some(t.node.fingerprint()), carrier)
        .await
        .unwrap();
    let channel = ssh.open("127.0.0.1", http.port()).await.unwrap();
    assert_eq!(get(channel).await, "hello tapped");
    let seen = seen.lock().unwrap();
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    let (request, answer) = (contains(b"GET / HTTP/1.0"), contains(b"hello tapped"));
    assert_eq!(request, answer, "one direction encrypted, the other not");
    request
}

#[tokio::test]
async fn ssh_inside_quic_or_tls_skips_its_own_encryption_and_never_on_a_plain_carrier() {
    let t = node_with(loopback_allowed(), None).await;
    // A client that does not know its carrier is encrypted keeps SSH's encryption.
    for over in [Transport::Quic, Transport::Tcp] {
        for carrier in [Carrier::Encrypted, Carrier::Plain] {
            let (_client, conn, _) =
                alknet_node::dial(t.alice.clone(), target(&t.node, over), alknet_ssh::ALPN)
                    .await
                    .unwrap();
            let stream = alknet_node::open_stream(&conn).await.unwrap();
            assert_eq!(
                ssh_in_cleartext(&t, stream, carrier).await,
                carrier == Carrier::Encrypted,
                "{over:?}, client on {carrier:?}"
            );
        }
    }
    // On the plain SSH port the node never agrees to `none`, whatever the client offers.
    let socket = TcpStream::connect(t.node.ssh_addr().unwrap())
        .await
        .unwrap();
    assert!(!ssh_in_cleartext(&t, socket, Carrier::Encrypted).await);
    t.node.shutdown().await;
}
