//! iroh beside quinn, over real sockets on loopback with an in-process relay: relay-only and
//! direct connections, one identity on both paths, node-id pinning, shutdown.
#![cfg(feature = "iroh")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use alknet_core::config::PeerEntry;
use alknet_core::{Alpn, AuthContext, Connection, HandlerError, ProtocolHandler, SecretKey};
use alknet_endpoint::{Client, DialError, DialOptions, IrohConfig, IrohTarget};
use async_trait::async_trait;
use support::relay::TestRelay;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

/// Generous: a relay registration on a loaded 2-core machine. Not a threshold under test.
const ONLINE: Duration = Duration::from_secs(30);

/// Direct paths only, on loopback.
fn direct() -> IrohConfig {
    IrohConfig {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        ..IrohConfig::default()
    }
}

async fn iroh_echo_node(iroh: IrohConfig) -> Node {
    node_with(
        vec![Arc::new(Echo(b"echo")), Arc::new(WhoAmI)],
        Default::default(),
        |c| c.iroh = Some(iroh),
    )
    .await
}

/// Several streams at once on one connection, each echoed back.
async fn streams_echo(conn: &Connection) {
    let rounds = (0..8).map(|i| {
        let conn = conn.clone();
        async move {
            let msg = format!("stream {i} ").repeat(1000);
            let out = round_trip(&conn, msg.as_bytes()).await.unwrap();
            assert_eq!(out, format!("echo:{msg}").into_bytes());
        }
    });
    futures::future::join_all(rounds).await;
}

#[tokio::test]
async fn relay_only_connection_carries_bidirectional_streams() {
    let relay = TestRelay::start().await.unwrap();
    // The node has no direct paths at all: the relay is the only way in.
    let node = iroh_echo_node(IrohConfig {
        direct: false,
        ..relay.config()
    })
    .await;
    let published = node.endpoint.iroh_online(ONLINE).await.unwrap();
    assert_eq!(published.relay_url.as_ref(), Some(&relay.url));
    assert!(published.direct_addrs.is_empty(), "{published}");

    // The dialer knows only the node id and the relay URL, and has no relay of its own.
    let target = IrohTarget::new(node.key.public()).with_relay(relay.url.clone());
    let client = Client::with_iroh(SecretKey::generate(), relay.trusting()).unwrap();
    let conn = client.dial_iroh(&target, b"echo").await.unwrap();
    assert_eq!(conn.alpn(), b"echo");
    streams_echo(&conn).await;
    // The ticket string dials the same node.
    let again = client
        .dial_iroh(&published.to_string().parse().unwrap(), b"echo")
        .await
        .unwrap();
    assert_eq!(round_trip(&again, b"ticket").await.unwrap(), b"echo:ticket");
}

#[tokio::test]
async fn relayed_connections_have_a_limit_of_their_own() {
    // Everyone behind the relay shares its address; they are counted together, under
    // `relay_connections`, not under one address's limit.
    let relay = TestRelay::start().await.unwrap();
    let node = node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), |c| {
        c.iroh = Some(IrohConfig {
            direct: false,
            ..relay.config()
        });
        c.limits.relay_connections = 1;
    })
    .await;
    node.endpoint.iroh_online(ONLINE).await.unwrap();
    let target = IrohTarget::new(node.key.public()).with_relay(relay.url.clone());
    // Each dialer is kept: dropping it would end its connection.
    let dial = || async {
        let client = Client::with_iroh(SecretKey::generate(), relay.trusting()).unwrap();
        let conn = client.dial_iroh(&target, b"echo").await.unwrap();
        (client, conn)
    };
    let (_first_client, first) = dial().await;
    assert_eq!(round_trip(&first, b"1").await.unwrap(), b"echo:1");
    let (_second_client, second) = dial().await;
    second.closed().await;
    let err = second.open_bi().await.err().unwrap().to_string();
    assert!(
        err.contains("too many connections through the relay (limit 1)"),
        "{err}"
    );
    assert_eq!(round_trip(&first, b"2").await.unwrap(), b"echo:2");
}

#[tokio::test]
async fn direct_connection_works_without_a_relay() {
    let node = iroh_echo_node(direct()).await;
    let target = node.endpoint.iroh_target().unwrap();
    assert!(target.relay_url.is_none());
    assert!(!target.direct_addrs.is_empty(), "{target}");
    let client = Client::with_iroh(SecretKey::generate(), direct()).unwrap();
    let conn = client.dial_iroh(&target, b"echo").await.unwrap();
    streams_echo(&conn).await;
    // 4 MiB through the stream's chunk I/O (iroh's receive buffers handed over, the chunks
    // kept in its send buffer), byte for byte.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let echoed = chunk_round_trip(&conn, big.clone().into()).await.unwrap();
    assert_eq!(echoed.len(), big.len() + 5);
    assert!(echoed[5..] == big[..], "the chunked echo differs");
    // quinn keeps working on the node's own port beside it.
    let quic = client
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"echo", node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    assert_eq!(round_trip(&quic, b"quinn").await.unwrap(), b"echo:quinn");
    let echoed = chunk_round_trip(&quic, big.clone().into()).await.unwrap();
    assert!(
        echoed[5..] == big[..],
        "the chunked echo over quinn differs"
    );
}

#[tokio::test]
async fn node_id_is_the_node_key_and_its_fingerprint() {
    let node = iroh_echo_node(direct()).await;
    let id = node.endpoint.iroh_node_id().unwrap();
    assert_eq!(id, node.key.public());
    assert_eq!(id.fingerprint(), node.endpoint.fingerprint());
    let ticket = node.endpoint.iroh_target().unwrap().to_string();
    assert!(
        ticket.starts_with(&format!(
            "iroh:{}",
            node.endpoint.fingerprint().trim_start_matches("ed25519:")
        )),
        "{ticket}"
    );
}

/// Reports the AuthContext of every connection.
struct Reporter(mpsc::UnboundedSender<AuthContext>);

#[async_trait]
impl ProtocolHandler for Reporter {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(b"report")]
    }
    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let _ = self.0.send(auth);
        // Hold the connection until the client closes it.
        conn.closed().await;
        Ok(())
    }
}

#[tokio::test]
async fn one_peer_entry_authorises_the_same_key_over_quinn_and_iroh() {
    let alice = SecretKey::generate();
    let (reports, mut reported) = mpsc::unbounded_channel();
    let node = node_with(
        vec![Arc::new(Reporter(reports)), Arc::new(WhoAmI)],
        peers_config(vec![PeerEntry::new(
            "alice",
            [alice.public().fingerprint()],
        )
        .with_scopes(["todo:write"])]),
        |c| c.iroh = Some(direct()),
    )
    .await;
    let client = Client::with_iroh(alice.clone(), direct()).unwrap();
    let target = node.endpoint.iroh_target().unwrap();

    let over_quinn = client
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"report", node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    let quinn_auth = reported.recv().await.unwrap();
    let over_iroh = client.dial_iroh(&target, b"report").await.unwrap();
    let iroh_auth = reported.recv().await.unwrap();

    let identity = quinn_auth.identity.clone().unwrap();
    assert_eq!(identity.id, "alice");
    assert_eq!(identity.scopes, ["todo:write"]);
    assert_eq!(iroh_auth.identity, quinn_auth.identity);
    assert_eq!(iroh_auth.tls_fingerprint, quinn_auth.tls_fingerprint);
    assert_eq!(
        iroh_auth.tls_fingerprint.as_deref(),
        Some(alice.public().fingerprint().as_str())
    );
    assert_eq!(iroh_auth.alpn, b"report");
    over_quinn.close(0, "bye");
    over_iroh.close(0, "bye");

    // A key the peer list does not know has no identity over iroh either.
    let stranger = Client::with_iroh(SecretKey::generate(), direct()).unwrap();
    let conn = stranger.dial_iroh(&target, b"whoami").await.unwrap();
    assert_eq!(whoami(&conn).await.unwrap(), "-");
    let conn = client.dial_iroh(&target, b"whoami").await.unwrap();
    assert_eq!(whoami(&conn).await.unwrap(), "alice");
}

/// A dial timeout short enough for a test that expects the dial to fail.
fn impatient(mut config: IrohConfig) -> IrohConfig {
    config.dial_timeout = Duration::from_secs(3);
    config
}

#[tokio::test]
async fn wrong_node_id_at_a_direct_address_fails_with_a_clear_error() {
    let node = iroh_echo_node(direct()).await;
    let real = node.endpoint.iroh_target().unwrap();
    let impostor = SecretKey::generate().public();
    let target = IrohTarget {
        node_id: impostor,
        ..real
    };
    let client = Client::with_iroh(SecretKey::generate(), impatient(direct())).unwrap();
    let err = client.dial_iroh(&target, b"echo").await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, DialError::Iroh { .. }), "{shown}");
    assert!(shown.contains(&impostor.fingerprint()), "{shown}");
    assert!(shown.contains("presented a different key"), "{shown}");
}

#[tokio::test]
async fn wrong_node_id_through_the_relay_fails_within_the_dial_timeout() {
    let relay = TestRelay::start().await.unwrap();
    let node = iroh_echo_node(IrohConfig {
        direct: false,
        ..relay.config()
    })
    .await;
    node.endpoint.iroh_online(ONLINE).await.unwrap();
    let impostor = SecretKey::generate().public();
    let target = IrohTarget::new(impostor).with_relay(relay.url.clone());
    let client = Client::with_iroh(SecretKey::generate(), impatient(relay.trusting())).unwrap();
    let err = client.dial_iroh(&target, b"echo").await.unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(err, DialError::IrohTimeout { .. } | DialError::Iroh { .. }),
        "{shown}"
    );
    assert!(shown.contains(&impostor.fingerprint()), "{shown}");
}

#[tokio::test]
async fn unregistered_alpn_over_iroh_fails_with_clear_error() {
    let node = iroh_echo_node(direct()).await;
    let client = Client::with_iroh(SecretKey::generate(), impatient(direct())).unwrap();
    let err = client
        .dial_iroh(&node.endpoint.iroh_target().unwrap(), b"nope")
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Iroh { .. }), "{err}");
    assert!(
        err.to_string().contains("does not serve ALPN \"nope\""),
        "{err}"
    );
}

#[tokio::test]
async fn relay_only_node_without_a_relay_is_refused_at_bind() {
    let config = alknet_endpoint::EndpointConfig {
        iroh: Some(IrohConfig {
            direct: false,
            ..IrohConfig::default()
        }),
        ..alknet_endpoint::EndpointConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            SecretKey::generate(),
        )
    };
    let store = alknet_core::ConfigStore::new(Default::default()).unwrap();
    let err = alknet_endpoint::Endpoint::bind(
        config,
        alknet_endpoint::HandlerRegistry::new([Arc::new(WhoAmI) as Arc<dyn ProtocolHandler>])
            .unwrap(),
        Arc::new(alknet_core::ConfigIdentityProvider::new(store)),
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("no relay is configured"), "{err}");
}

#[tokio::test]
async fn shutdown_cuts_off_iroh_connections_and_refuses_new_ones() {
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let node = node_with(
        vec![
            Arc::new(Held {
                started,
                release: Release::Notified(release.clone()),
            }),
            Arc::new(Echo(b"echo")),
        ],
        Default::default(),
        |c| {
            c.iroh = Some(direct());
            c.drain_timeout = Duration::from_millis(200);
        },
    )
    .await;
    let target = node.endpoint.iroh_target().unwrap();
    let client = Client::with_iroh(SecretKey::generate(), impatient(direct())).unwrap();
    let conn = client.dial_iroh(&target, b"held").await.unwrap();
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(b"?").await.unwrap();
    started_rx.recv().await.unwrap();

    node.endpoint.stop_accepting();
    assert!(client.dial_iroh(&target, b"echo").await.is_err());

    let report = node.endpoint.shutdown().await;
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.cut_off, 1);
    // The held connection is closed by the node, not left to time out.
    conn.closed().await;
    let mut out = Vec::new();
    assert!(stream.read_to_end(&mut out).await.is_err() || out.is_empty());
}

#[tokio::test]
async fn shutdown_drains_an_iroh_handler_that_finishes_in_time() {
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let node = node_with(
        vec![Arc::new(Held {
            started,
            release: Release::Notified(release.clone()),
        })],
        Default::default(),
        |c| c.iroh = Some(direct()),
    )
    .await;
    let client = Client::with_iroh(SecretKey::generate(), direct()).unwrap();
    let conn = client
        .dial_iroh(&node.endpoint.iroh_target().unwrap(), b"held")
        .await
        .unwrap();
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(b"?").await.unwrap();
    started_rx.recv().await.unwrap();
    let shutdown = tokio::spawn(node.endpoint.shutdown());
    release.notify_one();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"done");
    drop(stream);
    conn.close(0, "bye");
    let report = shutdown.await.unwrap();
    assert_eq!((report.in_flight, report.cut_off), (1, 0));
}

#[tokio::test]
async fn call_protocol_runs_over_a_relayed_iroh_connection() {
    use alknet_call::{CallHandler, CallService, OperationRegistry, Peer};
    use serde_json::json;

    let relay = TestRelay::start().await.unwrap();
    let mut ops = OperationRegistry::new();
    ops.query(
        "math/add",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        json!({"type": "number"}),
        |_, i| async move { Ok(json!(i["a"].as_f64().unwrap_or(0.0) + i["b"].as_f64().unwrap_or(0.0))) },
    )
    .unwrap();
    let handler = CallHandler::new(CallService::anonymous(ops).unwrap());
    let node = node_with(vec![Arc::new(handler)], Default::default(), |c| {
        c.iroh = Some(IrohConfig {
            direct: false,
            ..relay.config()
        })
    })
    .await;
    let target = node.endpoint.iroh_online(ONLINE).await.unwrap();
    let client = Client::with_iroh(SecretKey::generate(), relay.trusting()).unwrap();
    let conn = client.dial_iroh(&target, alknet_call::ALPN).await.unwrap();
    let peer = Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new()).unwrap(),
        Some(node.endpoint.fingerprint().to_string()),
    );
    assert_eq!(
        peer.call("math/add", json!({"a": 2, "b": 3}))
            .await
            .unwrap(),
        json!(5.0)
    );
    peer.close();
}
