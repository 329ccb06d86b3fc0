//! The endpoint over real sockets on loopback: TLS identity rules, ALPN routing, failure
//! isolation, hot reload, limits and shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use alknet_core::config::PeerEntry;
use alknet_core::{Carrier, SecretKey};
use alknet_endpoint::tls::{provider, raw_certified_key, ServerTls};
use alknet_endpoint::verifier::{AnyClientKeyVerifier, PinnedServerVerifier};
use alknet_endpoint::{
    Client, DialError, DialOptions, ServerCheck, ServerIdentity, ShutdownReport, TransportKind,
};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use support::*;
use tokio::sync::{mpsc, Notify};

const BOTH: [TransportKind; 2] = [TransportKind::Quic, TransportKind::Tcp];

fn client() -> Client {
    Client::new(SecretKey::generate()).unwrap()
}

#[tokio::test]
async fn raw_key_to_raw_key_with_pinned_fingerprint_carries_data() {
    let node = echo_node().await;
    let client = client();
    for kind in BOTH {
        let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint()).over(kind);
        let conn = client
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap();
        assert_eq!(
            round_trip(&conn, b"hello").await.unwrap(),
            b"echo:hello",
            "{kind:?}"
        );
    }
    assert!(node.endpoint.fingerprint().starts_with("ed25519:"));
}

/// Dials `node` and expects the TLS handshake to fail.
async fn handshake_error(node: &Node, options: &DialOptions) -> DialError {
    let err = client()
        .dial(node.endpoint.local_addr(), options)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DialError::Handshake { .. }),
        "{:?}: {err}",
        options.transport
    );
    err
}

#[tokio::test]
async fn wrong_pinned_fingerprint_fails_with_clear_error() {
    let node = echo_node().await;
    let other = SecretKey::generate().public().fingerprint();
    for kind in BOTH {
        let options = DialOptions::pinned(b"echo", other.clone()).over(kind);
        let shown = handshake_error(&node, &options).await.to_string();
        assert!(
            shown.contains("does not match the pinned fingerprint"),
            "{kind:?}: {shown}"
        );
        assert!(shown.contains(&other), "{kind:?}: {shown}");
    }
}

#[tokio::test]
async fn malformed_pinned_fingerprint_is_refused_before_dialing() {
    let node = echo_node().await;
    let err = client()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"echo", "ed25519:nothex"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Tls(_)), "{err}");
}

/// A key whose public half is `claimed` but which signs with `actual`.
fn impostor_key(claimed: &SecretKey, actual: &SecretKey) -> Arc<CertifiedKey> {
    let honest = raw_certified_key(actual).unwrap();
    Arc::new(CertifiedKey::new(
        vec![rustls::pki_types::CertificateDer::from(
            claimed.public().to_spki_der(),
        )],
        honest.key.clone(),
    ))
}

#[tokio::test]
async fn raw_key_client_without_secret_is_rejected() {
    let victim = SecretKey::generate();
    let node = whoami_node("victim", &victim).await;
    // Sanity: the real victim is recognised.
    let honest = Client::new(victim.clone()).unwrap();
    for kind in BOTH {
        let conn = honest
            .dial(
                node.endpoint.local_addr(),
                &DialOptions::pinned(b"whoami", node.endpoint.fingerprint()).over(kind),
            )
            .await
            .unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "victim");
    }
    // An impostor that knows the victim's public key but not its secret.
    for kind in BOTH {
        let outcome = impostor_whoami(&node, &victim, node.endpoint.fingerprint(), kind).await;
        assert!(outcome.is_err(), "{kind:?}: {outcome:?}");
    }
}

/// Dials `node` as a raw-key client that claims `victim`'s public key but signs with another key,
/// pinning `pin`, and asks WhoAmI who it is.
async fn impostor_whoami(
    node: &Node,
    victim: &SecretKey,
    pin: &str,
    kind: TransportKind,
) -> Result<String, String> {
    let attacker = SecretKey::generate();
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
            pin.parse().unwrap(),
            provider.clone(),
        )))
        .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
            impostor_key(victim, &attacker),
        )));
    config.alpn_protocols = vec![b"whoami".to_vec()];
    let outcome = match client()
        .dial_with_config(node.endpoint.local_addr(), kind, config, "alknet")
        .await
    {
        Err(e) => Err(e.to_string()),
        Ok(conn) => whoami(&conn).await.map_err(|e| e.to_string()),
    };
    // Either the handshake fails, or the server never resolves (or answers) an identity.
    assert!(
        !outcome.as_deref().is_ok_and(|who| who == "victim"),
        "{kind:?}: impostor was identified as the victim: {outcome:?}"
    );
    outcome
}

#[tokio::test]
async fn raw_key_server_without_secret_is_rejected() {
    let victim = SecretKey::generate();
    let attacker = SecretKey::generate();
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(AnyClientKeyVerifier::new(true, provider.clone())))
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
            impostor_key(&victim, &attacker),
        )));
    config.alpn_protocols = vec![b"echo".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let err = client()
        .dial(
            addr,
            &DialOptions::pinned(b"echo", victim.public().fingerprint()).over(TransportKind::Tcp),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn self_signed_server_with_pinned_sha256_works() {
    let node = node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), |c| {
        c.tls = ServerIdentity::SelfSigned { names: vec![] }
    })
    .await;
    assert!(node.endpoint.fingerprint().starts_with("SHA256:"));
    for kind in BOTH {
        let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint()).over(kind);
        let conn = client()
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap();
        assert_eq!(round_trip(&conn, b"x509").await.unwrap(), b"echo:x509");
    }
}

#[tokio::test]
async fn self_signed_server_identifies_client_by_its_ed25519_key() {
    let alice = SecretKey::generate();
    let node = node_with(
        vec![Arc::new(WhoAmI)],
        peers_config(vec![PeerEntry::new(
            "alice",
            [alice.public().fingerprint()],
        )]),
        |c| c.tls = ServerIdentity::SelfSigned { names: vec![] },
    )
    .await;
    let conn = Client::new(alice)
        .unwrap()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"whoami", node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    assert_eq!(whoami(&conn).await.unwrap(), "alice");
}

#[tokio::test]
async fn a_node_is_recognised_by_its_sha256_fingerprint() {
    // A node in self-signed mode reports `SHA256:…`, and presents that certificate when it dials
    // pinning a certificate; a peer entry naming it by that fingerprint must match.
    let dialer = SecretKey::generate();
    let reported = ServerTls::new(&dialer, &ServerIdentity::SelfSigned { names: vec![] })
        .unwrap()
        .fingerprint()
        .to_string();
    assert!(reported.starts_with("SHA256:"));
    let node = node_with(
        vec![Arc::new(WhoAmI)],
        peers_config(vec![PeerEntry::new("dialer", [reported])]),
        |c| c.tls = ServerIdentity::SelfSigned { names: vec![] },
    )
    .await;
    for kind in BOTH {
        let conn = Client::new(dialer.clone())
            .unwrap()
            .dial(
                node.endpoint.local_addr(),
                &DialOptions::pinned(b"whoami", node.endpoint.fingerprint()).over(kind),
            )
            .await
            .unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "dialer");
    }
}

#[tokio::test]
async fn ca_verification_requires_an_explicit_server_name() {
    // A certificate the CA issued for the name "alknet" would pass a dial that defaulted to it.
    let pki = TestPki::with_names(&["alknet"]);
    let node = x509_node(&pki, vec![]).await;
    let options = DialOptions {
        alpn: b"echo".to_vec(),
        check: ServerCheck::Ca(Some(pki.roots.clone())),
        transport: TransportKind::Quic,
        server_name: None,
    };
    for kind in BOTH {
        let Err(err) = client()
            .dial(node.endpoint.local_addr(), &options.clone().over(kind))
            .await
        else {
            panic!("a CA-verified dial without a server name must fail");
        };
        assert!(matches!(err, DialError::ServerNameRequired), "{err}");
        assert!(err.to_string().contains("server_name"), "{err}");
    }
}

#[tokio::test]
async fn raw_key_server_dialed_without_fingerprint_fails_closed() {
    let node = echo_node().await;
    for kind in BOTH {
        for check in [ServerCheck::Default, ServerCheck::Ca(None)] {
            let options = DialOptions {
                alpn: b"echo".to_vec(),
                check,
                transport: kind,
                server_name: Some("localhost".into()),
            };
            handshake_error(&node, &options).await;
        }
    }
}

#[tokio::test]
async fn self_signed_server_is_not_trusted_without_a_pin() {
    let node = node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), |c| {
        c.tls = ServerIdentity::SelfSigned { names: vec![] }
    })
    .await;
    let options = DialOptions {
        alpn: b"echo".to_vec(),
        check: ServerCheck::Default,
        transport: TransportKind::Quic,
        server_name: Some("localhost".into()),
    };
    let err = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

async fn x509_node(pki: &TestPki, peers: Vec<PeerEntry>) -> Node {
    node_with(
        vec![Arc::new(Echo(b"echo")), Arc::new(WhoAmI)],
        peers_config(peers),
        |c| c.tls = pki.identity(),
    )
    .await
}

#[cfg(unix)]
#[tokio::test]
async fn an_x509_key_file_other_users_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::new();
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = match ServerTls::new(&SecretKey::generate(), &pki.identity()) {
        Ok(_) => panic!("a world-readable X.509 key was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("readable by other users") && err.contains("chmod 600"),
        "{err}"
    );
    // Debian's ssl-cert layout: root-owned, readable by its group, nobody else.
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let root_owned =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pki.key).unwrap()) == 0;
    let group_read = ServerTls::new(&SecretKey::generate(), &pki.identity());
    assert_eq!(
        group_read.is_ok(),
        root_owned,
        "a 0640 key: accepted only when root owns it"
    );
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o660)).unwrap();
    assert!(
        ServerTls::new(&SecretKey::generate(), &pki.identity()).is_err(),
        "a group-writable key was accepted"
    );
}

#[tokio::test]
async fn x509_node_reports_its_certificate_and_its_key_fingerprints() {
    let pki = TestPki::new();
    let node = x509_node(&pki, vec![]).await;
    assert!(node.endpoint.fingerprint().starts_with("SHA256:"));
    assert_eq!(
        node.endpoint.key_fingerprint(),
        node.key.public().fingerprint()
    );
}

#[tokio::test]
async fn x509_node_serves_a_raw_key_peer_pinning_its_key_on_both_carriers() {
    let pki = TestPki::new();
    let alice = SecretKey::generate();
    let node = x509_node(
        &pki,
        vec![PeerEntry::new("alice", [alice.public().fingerprint()])],
    )
    .await;
    let client = Client::new(alice).unwrap();
    for kind in BOTH {
        let options = DialOptions::pinned(b"whoami", node.endpoint.key_fingerprint()).over(kind);
        let conn = client
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "alice", "{kind:?}");
    }
}

#[tokio::test]
async fn x509_node_serves_a_ca_verifying_client_on_both_carriers() {
    let pki = TestPki::new();
    let node = x509_node(&pki, vec![]).await;
    for kind in BOTH {
        let options = DialOptions {
            alpn: b"echo".to_vec(),
            check: ServerCheck::Ca(Some(pki.roots.clone())),
            transport: kind,
            server_name: Some("localhost".into()),
        };
        let conn = client()
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap();
        assert_eq!(
            round_trip(&conn, b"ca").await.unwrap(),
            b"echo:ca",
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn x509_node_refuses_a_peer_pinning_a_wrong_key() {
    let pki = TestPki::new();
    let node = x509_node(&pki, vec![]).await;
    let other = SecretKey::generate().public().fingerprint();
    for kind in BOTH {
        let options = DialOptions::pinned(b"echo", other.clone()).over(kind);
        handshake_error(&node, &options).await;
    }
}

#[tokio::test]
async fn x509_node_rejects_a_raw_key_client_without_its_secret() {
    let pki = TestPki::new();
    let victim = SecretKey::generate();
    let node = x509_node(
        &pki,
        vec![PeerEntry::new("victim", [victim.public().fingerprint()])],
    )
    .await;
    for kind in BOTH {
        let outcome = impostor_whoami(&node, &victim, node.endpoint.key_fingerprint(), kind).await;
        assert!(outcome.is_err(), "{kind:?}: {outcome:?}");
    }
}

#[tokio::test]
async fn each_handler_receives_only_its_alpn() {
    let node = node_with(
        vec![Arc::new(Echo(b"one")), Arc::new(Echo(b"two"))],
        Default::default(),
        |_| {},
    )
    .await;
    let client = client();
    for kind in BOTH {
        for alpn in [&b"one"[..], b"two"] {
            let options = DialOptions::pinned(alpn, node.endpoint.fingerprint()).over(kind);
            let conn = client
                .dial(node.endpoint.local_addr(), &options)
                .await
                .unwrap();
            let mut expected = alpn.to_vec();
            expected.extend_from_slice(b":ping");
            assert_eq!(round_trip(&conn, b"ping").await.unwrap(), expected);
        }
    }
}

/// A node with `h2` offered over TCP+TLS only and `alknet/call` everywhere.
async fn mixed_carrier_node() -> Node {
    node_with(
        vec![
            Arc::new(EchoOver(b"h2", &[Carrier::Tcp])),
            Arc::new(Echo(b"alknet/call")),
        ],
        Default::default(),
        |_| {},
    )
    .await
}

#[tokio::test]
async fn a_tcp_only_alpn_is_negotiated_over_tcp() {
    let node = mixed_carrier_node().await;
    let options = DialOptions::pinned(b"h2", node.endpoint.fingerprint()).over(TransportKind::Tcp);
    let conn = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap();
    assert_eq!(round_trip(&conn, b"x").await.unwrap(), b"h2:x");
}

#[tokio::test]
async fn a_tcp_only_alpn_is_not_offered_over_quic() {
    let node = mixed_carrier_node().await;
    let options = DialOptions::pinned(b"h2", node.endpoint.fingerprint());
    let err = handshake_error(&node, &options).await;
    assert!(
        err.to_string().contains("does not serve ALPN \"h2\""),
        "{err}"
    );
}

#[tokio::test]
async fn an_alpn_offered_everywhere_is_negotiated_on_quic_and_tcp() {
    let node = mixed_carrier_node().await;
    for kind in BOTH {
        let options = DialOptions::pinned(b"alknet/call", node.endpoint.fingerprint()).over(kind);
        let conn = client()
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap();
        assert_eq!(
            round_trip(&conn, b"x").await.unwrap(),
            b"alknet/call:x",
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn unregistered_alpn_fails_with_clear_error() {
    let node = echo_node().await;
    for kind in BOTH {
        let options = DialOptions::pinned(b"nope", node.endpoint.fingerprint()).over(kind);
        let err = client()
            .dial(node.endpoint.local_addr(), &options)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("does not serve ALPN \"nope\""),
            "{kind:?}: {err}"
        );
    }
}

#[tokio::test]
async fn duplicate_alpn_is_refused_when_the_registry_is_built() {
    let err = alknet_endpoint::HandlerRegistry::new([
        Arc::new(Echo(b"same")) as Arc<dyn alknet_core::ProtocolHandler>,
        Arc::new(Echo(b"same")),
    ])
    .err()
    .unwrap();
    assert!(err.to_string().contains("same"));
}

#[tokio::test]
async fn failing_handler_closes_only_its_own_connection() {
    let node = node_with(
        vec![
            Arc::new(Echo(b"echo")),
            Arc::new(Failing { panic: false }),
            Arc::new(Failing { panic: true }),
        ],
        Default::default(),
        |_| {},
    )
    .await;
    let client = client();
    let fp = node.endpoint.fingerprint().to_string();
    let addr = node.endpoint.local_addr();
    let healthy = client
        .dial(addr, &DialOptions::pinned(b"echo", fp.clone()))
        .await
        .unwrap();
    for kind in BOTH {
        for alpn in [&b"errors"[..], b"panics"] {
            let conn = client
                .dial(addr, &DialOptions::pinned(alpn, fp.clone()).over(kind))
                .await
                .unwrap();
            assert!(
                round_trip(&conn, b"boom").await.is_err(),
                "{alpn:?} over {kind:?}"
            );
        }
    }
    assert_eq!(round_trip(&healthy, b"still").await.unwrap(), b"echo:still");
    let fresh = client
        .dial(
            addr,
            &DialOptions::pinned(b"echo", fp).over(TransportKind::Tcp),
        )
        .await
        .unwrap();
    assert_eq!(round_trip(&fresh, b"new").await.unwrap(), b"echo:new");
}

#[tokio::test]
async fn hot_reload_applies_to_the_next_connection() {
    let alice = SecretKey::generate();
    let node = node_with(vec![Arc::new(WhoAmI)], Default::default(), |_| {}).await;
    let client = Client::new(alice.clone()).unwrap();
    let addr = node.endpoint.local_addr();
    let options = DialOptions::pinned(b"whoami", node.endpoint.fingerprint());
    let ask = || async {
        whoami(&client.dial(addr, &options).await.unwrap())
            .await
            .unwrap()
    };

    assert_eq!(ask().await, "-");
    let mut alice_peer = PeerEntry::new("alice", [alice.public().fingerprint()]);
    node.store
        .reload(peers_config(vec![alice_peer.clone()]))
        .unwrap();
    assert_eq!(ask().await, "alice");

    alice_peer.enabled = false;
    node.store
        .reload(peers_config(vec![alice_peer.clone()]))
        .unwrap();
    assert_eq!(ask().await, "-");

    alice_peer.enabled = true;
    node.store
        .reload(peers_config(vec![alice_peer.clone()]))
        .unwrap();
    assert_eq!(ask().await, "alice");

    let err = node
        .store
        .reload(peers_config(vec![alice_peer.clone(), alice_peer.clone()]))
        .unwrap_err();
    assert!(
        err.to_string().contains("duplicate peer id \"alice\""),
        "{err}"
    );
    assert_eq!(ask().await, "alice", "the old config stays in force");

    node.store.reload(peers_config(vec![])).unwrap();
    assert_eq!(ask().await, "-");
}

async fn held_node(drain: Duration) -> (Node, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let node = node_with(
        vec![Arc::new(Held {
            started,
            release: Release::Notified(release.clone()),
        })],
        Default::default(),
        |c| c.drain_timeout = drain,
    )
    .await;
    (node, started_rx, release)
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_handlers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (node, mut started, release) = held_node(Duration::from_secs(30)).await;
    let addr = node.endpoint.local_addr();
    let fp = node.endpoint.fingerprint().to_string();
    let client = client();
    let conn = client
        .dial(addr, &DialOptions::pinned(b"held", fp.clone()))
        .await
        .unwrap();
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(b"?").await.unwrap();
    started.recv().await.unwrap();

    node.endpoint.stop_accepting();
    for kind in BOTH {
        assert!(
            client
                .dial(addr, &DialOptions::pinned(b"held", fp.clone()).over(kind))
                .await
                .is_err(),
            "{kind:?}"
        );
    }
    let shutdown = tokio::spawn(node.endpoint.shutdown());
    release.notify_one();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"done");
    drop(stream);
    conn.close(0, "bye");
    let report = shutdown.await.unwrap();
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.cut_off, 0);
}

#[tokio::test]
async fn shutdown_cuts_off_handlers_at_the_drain_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (node, mut started, _release) = held_node(Duration::from_millis(200)).await;
    let conn = client()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"held", node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(b"?").await.unwrap();
    started.recv().await.unwrap();
    let report = node.endpoint.shutdown().await;
    assert_eq!(report.cut_off, 1);
    let mut out = Vec::new();
    assert!(stream.read_to_end(&mut out).await.is_err() || out.is_empty());
}

#[tokio::test]
async fn shutdown_drains_a_single_stream_handler_that_waits_for_draining() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (started, mut started_rx) = mpsc::unbounded_channel();
    // The drain deadline is an hour away: the test only ends if the handler sees the drain.
    let node = node_with(
        vec![Arc::new(Held {
            started,
            release: Release::Draining,
        })],
        Default::default(),
        |c| c.drain_timeout = Duration::from_secs(3600),
    )
    .await;
    let options =
        DialOptions::pinned(b"held", node.endpoint.fingerprint()).over(TransportKind::Tcp);
    let conn = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap();
    let mut stream = conn.accept_bi().await.unwrap();
    stream.write_all(b"?").await.unwrap();
    started_rx.recv().await.unwrap();

    let shutdown = tokio::spawn(node.endpoint.shutdown());
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"done");
    drop(stream);
    let report = shutdown.await.unwrap();
    assert_eq!(
        report,
        ShutdownReport {
            in_flight: 1,
            cut_off: 0
        }
    );
}

#[tokio::test]
async fn per_ip_connection_limit_refuses_the_excess_with_a_reason() {
    let node = node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), |c| {
        c.limits.connections_per_ip = 2
    })
    .await;
    let client = client();
    let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint());
    let addr = node.endpoint.local_addr();
    let first = client.dial(addr, &options).await.unwrap();
    let second = client.dial(addr, &options).await.unwrap();
    assert_eq!(round_trip(&first, b"1").await.unwrap(), b"echo:1");
    assert_eq!(round_trip(&second, b"2").await.unwrap(), b"echo:2");
    let third = client.dial(addr, &options).await.unwrap();
    third.closed().await;
    let err = third.open_bi().await.err().unwrap().to_string();
    assert!(
        err.contains("too many connections from your address (limit 2)"),
        "{err}"
    );
    // Over TCP the excess connection is closed without being served.
    let tcp = client
        .dial(addr, &options.clone().over(TransportKind::Tcp))
        .await;
    if let Ok(conn) = tcp {
        assert!(round_trip(&conn, b"4")
            .await
            .map_or(true, |out| out.is_empty()));
    }
    // Closing one frees a slot (released when the server has finished with it, so retry a bounded
    // number of times: each attempt is a full dial, not a sleep).
    first.close(0, "bye");
    let mut freed = false;
    for _ in 0..100 {
        let conn = client.dial(addr, &options).await.unwrap();
        if round_trip(&conn, b"5")
            .await
            .is_ok_and(|out| out == b"echo:5")
        {
            freed = true;
            break;
        }
    }
    assert!(freed, "a closed connection must free its slot");
}

/// Opens a stream on `conn` and waits until the echo handler answered on it (so the node has
/// accepted it); the stream stays open.
async fn held_stream(conn: &alknet_core::Connection) -> alknet_core::BoxedStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut answer = [0u8; 6];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"echo:x");
    stream
}

/// Opens `n` streams at once over QUIC and holds them, failing (rather than hanging) if the node
/// stops giving credit.
async fn hold_streams(conn: &alknet_core::Connection, n: usize) -> Vec<alknet_core::BoxedStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        // A hang guard, not a timing assertion: without credit `open_bi` waits forever.
        let stream = tokio::time::timeout(Duration::from_secs(60), held_stream(conn))
            .await
            .unwrap_or_else(|_| panic!("no credit for stream {} of {n}", i + 1));
        held.push(stream);
    }
    held
}

#[tokio::test]
async fn stream_credit_grows_with_use_up_to_the_limit() {
    // A connection starts with a small credit (quinn allocates state per credited stream) and
    // grows it while streams are in use: 1 000 held at once work under the default limit (1 024).
    let node = echo_node().await;
    let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint());
    let conn = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap();
    let held = hold_streams(&conn, 1000).await;
    assert_eq!(held.len(), 1000);
}

#[tokio::test]
async fn stream_credit_never_exceeds_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = node_with(vec![Arc::new(Echo(b"echo"))], Default::default(), |c| {
        c.limits.streams_per_connection = 200
    })
    .await;
    let options = DialOptions::pinned(b"echo", node.endpoint.fingerprint());
    let conn = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap();
    let mut held = hold_streams(&conn, 200).await;
    // A round trip on a held stream: credit the node sent before its answer has arrived.
    held[0].write_all(b"y").await.unwrap();
    let mut answer = [0u8; 1];
    held[0].read_exact(&mut answer).await.unwrap();
    let opened = tokio::select! {
        biased;
        stream = conn.open_bi() => Some(stream),
        _ = std::future::ready(()) => None,
    };
    assert!(
        opened.is_none(),
        "a 201st stream opened past the limit of 200"
    );
    // Finished streams give their credit back (quinn announces it in batches of more than an
    // eighth of the limit: finish a quarter, open half of that again).
    for mut stream in held.drain(..50) {
        stream.shutdown().await.unwrap();
        stream.read_to_end(&mut Vec::new()).await.unwrap();
    }
    held.extend(hold_streams(&conn, 25).await);
    assert_eq!(held.len(), 175);
}

/// The kernel's timer states of the established loopback TCP sockets whose local port is
/// `local_port` (or, with `remote`, whose peer's port is), from `/proc/net/tcp`: `2` is the
/// keep-alive timer, `0` none.
#[cfg(target_os = "linux")]
fn tcp_timers(port: u16, remote: bool) -> Vec<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields[if remote { 2 } else { 1 }];
            let this_port = u16::from_str_radix(address.rsplit(':').next()?, 16).ok()?;
            (this_port == port && fields[3] == "01")
                .then(|| u8::from_str_radix(fields[5].split(':').next()?, 16).ok())?
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn tcp_connections_are_watched_by_keepalive_on_both_ends() {
    use tokio::io::AsyncReadExt;
    // No traffic of its own keeps a TCP+TLS connection alive (idle subscribers are legitimate),
    // so the kernel's keep-alive must be on to notice a peer that vanished.
    let node = echo_node().await;
    let port = node.endpoint.local_addr().port();
    let options =
        DialOptions::pinned(b"echo", node.endpoint.fingerprint()).over(TransportKind::Tcp);
    let conn = client()
        .dial(node.endpoint.local_addr(), &options)
        .await
        .unwrap();
    // The one stream of a TCP+TLS connection, held open while the sockets are looked at.
    let mut stream = conn.accept_bi().await.unwrap();
    let mut answer = [0u8; 5];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"echo:");
    let (node_side, client_side) = (tcp_timers(port, false), tcp_timers(port, true));
    assert_eq!(node_side, [2], "the node's socket: {node_side:?}");
    assert_eq!(client_side, [2], "the client's socket: {client_side:?}");
}
