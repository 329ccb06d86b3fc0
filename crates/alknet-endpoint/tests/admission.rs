//! Admission over real sockets on loopback: handshakes in flight per address and in total, QUIC
//! address validation (Retry) before anything is counted, the node-wide connection cap, and the
//! TCP handshake deadline against clients that stall or trickle.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_core::connection::SingleStreamTransport;
use alknet_core::{Connection, SecretKey};
use alknet_endpoint::tls::{client_config, ServerCheck};
use alknet_endpoint::{Client, DialOptions, EndpointLoad, TransportKind};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

fn client() -> Client {
    Client::new(SecretKey::generate()).unwrap()
}

async fn echo_node_with(edit: impl FnOnce(&mut alknet_endpoint::EndpointConfig)) -> Node {
    node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), edit).await
}

/// Waits (yielding, bounded) until the endpoint's load satisfies `done`.
async fn wait_for_load(node: &Node, done: impl Fn(EndpointLoad) -> bool) {
    for _ in 0..10_000 {
        if done(node.endpoint.load()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("load never reached: {:?}", node.endpoint.load());
}

/// A UDP forwarder in front of the node for QUIC clients that stall their handshake: it passes
/// every datagram from the client on, and from the node only Retry packets (when `pass_retry`),
/// so the node's handshake packets are lost and the handshake never completes. Counts the
/// datagrams it passed on to the node.
struct StallProxy {
    addr: SocketAddr,
    forwarded: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl StallProxy {
    async fn new(node: SocketAddr, pass_retry: bool) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let count = forwarded.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut client = None;
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if from == node {
                    // A QUIC v1 Retry: long header, fixed bit, type 0b11.
                    let retry = buf[0] & 0xf0 == 0xf0;
                    if let (true, true, Some(client)) = (pass_retry, retry, client) {
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                } else {
                    client = Some(from);
                    let _ = socket.send_to(&buf[..n], node).await;
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            addr,
            forwarded,
            task,
        }
    }

    /// Starts a dial through the proxy (it never completes) and waits until its first packet
    /// has been passed to the node.
    async fn start_stalled_dial(&self, client: &Client, fingerprint: &str) -> JoinHandle<()> {
        let before = self.forwarded.load(Ordering::SeqCst);
        let client = client.clone();
        let options = DialOptions::pinned(b"echo", fingerprint);
        let addr = self.addr;
        let dial = tokio::spawn(async move {
            let _ = client.dial(addr, &options).await;
        });
        for _ in 0..10_000 {
            if self.forwarded.load(Ordering::SeqCst) > before {
                return dial;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the stalled dial sent nothing");
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Dials the node over TCP+TLS from the local address `from` (another loopback IP).
async fn dial_tcp_from(node: &Node, from: IpAddr) -> std::io::Result<Connection> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(node.endpoint.local_addr()).await?;
    let config = client_config(
        &SecretKey::generate(),
        &ServerCheck::Pin(node.endpoint.fingerprint().to_string()),
        &[b"echo".to_vec()],
    )
    .map_err(std::io::Error::other)?;
    let name = rustls::pki_types::ServerName::try_from("alknet").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(Connection::new(
        SingleStreamTransport::new(tls),
        b"echo",
        node.endpoint.local_addr(),
    ))
}

/// Whether the node has closed `stream` (it reads end of file or an error).
async fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn unvalidated_quic_initials_take_no_connection_slot() {
    // What a flood of Initials with a victim's spoofed address looks like to the node: Initials
    // from an address that never answers. They must not hold the address's connection slot.
    let node = echo_node_with(|c| {
        c.limits.connections_per_ip = 1;
        c.limits.handshakes_per_ip = 2;
    })
    .await;
    let fingerprint = node.endpoint.fingerprint().to_string();
    let proxy = StallProxy::new(node.endpoint.local_addr(), false).await;
    let flooder = client();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(proxy.start_stalled_dial(&flooder, &fingerprint).await);
    }
    // At most one of them got as far as a handshake slot; the rest were sent a Retry they never
    // saw. A client from the same address proves its address with the Retry and is served.
    let conn = client()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"echo", &fingerprint),
        )
        .await
        .unwrap();
    assert_eq!(round_trip(&conn, b"hi").await.unwrap(), b"echo:hi");
    assert!(
        node.endpoint.load().handshakes <= 1,
        "{:?}",
        node.endpoint.load()
    );
    for dial in stalled {
        dial.abort();
    }
}

#[tokio::test]
async fn one_address_cannot_exceed_its_quic_handshakes_in_flight() {
    let node = echo_node_with(|c| {
        c.limits.handshakes_per_ip = 2;
        // Long enough that both stalled handshakes are surely in flight together on a loaded
        // machine; the test waits it out once.
        c.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let fingerprint = node.endpoint.fingerprint().to_string();
    let addr = node.endpoint.local_addr();
    let options = DialOptions::pinned(b"echo", &fingerprint);
    // Two clients that pass the Retry (their address is real) and then stall their handshakes.
    let stalling = client();
    let mut proxies = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let proxy = StallProxy::new(addr, true).await;
        stalled.push(proxy.start_stalled_dial(&stalling, &fingerprint).await);
        proxies.push(proxy);
    }
    wait_for_load(&node, |load| load.handshakes == 2).await;
    // A third handshake from the same address is refused while they last.
    let err = client().dial(addr, &options).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("refused"), "{err}");
    // They are cut off at the handshake deadline, and the address is served again.
    wait_for_load(&node, |load| load.handshakes == 0).await;
    let conn = client().dial(addr, &options).await.unwrap();
    assert_eq!(round_trip(&conn, b"hi").await.unwrap(), b"echo:hi");
    for dial in stalled {
        dial.abort();
    }
}

#[tokio::test]
async fn one_address_cannot_exceed_its_tcp_handshakes_in_flight_and_others_are_served() {
    let node = echo_node_with(|c| c.limits.handshakes_per_ip = 2).await;
    let addr = node.endpoint.local_addr();
    // Two TCP connections that never send a ClientHello hold the address's two handshakes.
    let _first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    wait_for_load(&node, |load| load.handshakes == 2).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_node(&mut third).await);
    let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint());
    let refused = client()
        .dial(addr, &options.clone().over(TransportKind::Tcp))
        .await;
    assert!(refused.is_err(), "a fourth handshake from the address");
    // Another address is not affected.
    let other = dial_tcp_from(&node, "127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(round_trip(&other, b"hi").await.unwrap(), b"echo:hi");
}

#[tokio::test]
async fn tcp_slowloris_is_cut_off_at_the_handshake_deadline() {
    let node = echo_node_with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(node.endpoint.local_addr())
        .await
        .unwrap();
    // A TLS record header announcing a 16 KiB handshake message, then one byte at a time.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00])
        .await
        .unwrap();
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let mut byte = [0u8; 1];
    let mut sent = 0usize;
    let cut = loop {
        tokio::select! {
            read = stream.read(&mut byte) => break matches!(read, Ok(0) | Err(_)),
            _ = ticks.tick() => {
                if stream.write_all(&[0x01]).await.is_err() {
                    break true;
                }
                sent += 1;
                // 16 KiB would take minutes at this pace; the node must cut it long before.
                assert!(sent < 16 * 1024, "never cut off");
            }
        }
    };
    assert!(cut);
    wait_for_load(&node, |load| load == EndpointLoad::default()).await;
}

#[tokio::test]
async fn node_wide_connection_cap_refuses_with_a_reason_and_keeps_serving_the_rest() {
    let node = echo_node_with(|c| c.limits.connections = 2).await;
    let addr = node.endpoint.local_addr();
    let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint());
    let first = client().dial(addr, &options).await.unwrap();
    let second = client()
        .dial(addr, &options.clone().over(TransportKind::Tcp))
        .await
        .unwrap();
    assert_eq!(round_trip(&first, b"1").await.unwrap(), b"echo:1");
    // Over QUIC the refused connection is told why.
    let third = client().dial(addr, &options).await.unwrap();
    third.closed().await;
    let err = third.open_bi().await.err().unwrap().to_string();
    assert!(
        err.contains("the node is at its connection limit (2)"),
        "{err}"
    );
    // Over TCP it is closed before TLS.
    let tcp = client()
        .dial(addr, &options.clone().over(TransportKind::Tcp))
        .await;
    assert!(tcp.is_err(), "a TCP connection past the cap");
    // Those already connected are still served.
    assert_eq!(round_trip(&first, b"3").await.unwrap(), b"echo:3");
    assert_eq!(round_trip(&second, b"4").await.unwrap(), b"echo:4");
}
