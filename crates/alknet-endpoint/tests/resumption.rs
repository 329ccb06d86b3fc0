//! A client reuses its TLS configs and resumes TLS sessions: neither may weaken verification. A
//! reused client still checks each dial against that dial's own pin, a session ticket never
//! stands in for another pin or another node's key, and a resumed session still carries the
//! identity its key proved.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alknet_core::{AuthConfig, ConfigIdentityProvider, ConfigStore, SecretKey};
use alknet_endpoint::tls::{client_config, ServerCheck};
use alknet_endpoint::{
    Client, DialError, DialOptions, Endpoint, EndpointConfig, EndpointError, HandlerRegistry,
    TransportKind,
};
use rustls::client::{ClientSessionMemoryCache, Resumption};
use support::*;

const BOTH: [TransportKind; 2] = [TransportKind::Quic, TransportKind::Tcp];

fn pinned(fingerprint: &str, kind: TransportKind) -> DialOptions {
    DialOptions::pinned(b"echo", fingerprint).over(kind)
}

/// Dials and expects a pin mismatch naming `pin`.
async fn refused(client: &Client, node: &Node, pin: &str, kind: TransportKind) {
    let err = client
        .dial(node.endpoint.local_addr(), &pinned(pin, kind))
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(err, DialError::Handshake { .. })
            && shown.contains("does not match the pinned fingerprint")
            && shown.contains(pin),
        "{kind:?}: {shown}"
    );
}

async fn echoes(client: &Client, node: &Node, kind: TransportKind) {
    let conn = client
        .dial(
            node.endpoint.local_addr(),
            &pinned(node.endpoint.fingerprint(), kind),
        )
        .await
        .unwrap();
    assert_eq!(
        round_trip(&conn, b"hi").await.unwrap(),
        b"echo:hi",
        "{kind:?}"
    );
    conn.close(0, "done");
}

#[tokio::test]
async fn a_reused_client_refuses_a_second_node_that_does_not_match_its_own_pin() {
    let (a, b) = (echo_node().await, echo_node().await);
    let client = Client::new(SecretKey::generate()).unwrap();
    for kind in BOTH {
        // Twice, so the client holds a config and a session ticket for A's pin.
        echoes(&client, &a, kind).await;
        echoes(&client, &a, kind).await;
        // B is checked against the pin of this dial, whatever was dialed before.
        let other = SecretKey::generate().public().fingerprint();
        refused(&client, &b, &other, kind).await;
        // Nor does A's pin (with its config and tickets) let B through.
        refused(&client, &b, a.endpoint.fingerprint(), kind).await;
        // And A itself is still refused under a pin that is not its own.
        refused(&client, &a, b.endpoint.fingerprint(), kind).await;
        echoes(&client, &b, kind).await;
    }
}

/// An echo endpoint with a new key on `addr`, once the node that held it let go of its port
/// (quinn closes its UDP socket in the background after shutdown; bounded at 10 s).
async fn rebind(addr: SocketAddr) -> Endpoint {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let config = EndpointConfig::new(addr, SecretKey::generate());
        let registry = HandlerRegistry::new([Arc::new(Echo(b"echo")) as _]).unwrap();
        let identity = Arc::new(ConfigIdentityProvider::new(
            ConfigStore::new(AuthConfig::default()).unwrap(),
        ));
        match Endpoint::bind(config, registry, identity).await {
            Ok(endpoint) => return endpoint,
            Err(EndpointError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    }
}

#[tokio::test]
async fn a_node_with_another_key_at_an_address_dialed_before_is_refused() {
    let client = Client::new(SecretKey::generate()).unwrap();
    for kind in BOTH {
        let first = echo_node().await;
        let addr = first.endpoint.local_addr();
        let pin = first.endpoint.fingerprint().to_string();
        echoes(&client, &first, kind).await;
        echoes(&client, &first, kind).await;
        first.endpoint.shutdown().await;
        // Another node (another key) on the same address and port.
        let second = rebind(addr).await;
        assert_ne!(second.fingerprint(), pin);
        let err = client.dial(addr, &pinned(&pin, kind)).await.unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("does not match the pinned fingerprint"),
            "{kind:?}: {shown}"
        );
        second.shutdown().await;
    }
}

/// Shows the client's key in the first handshake that asks for it, and no key after that.
#[derive(Debug)]
struct KeyOnce {
    inner: Arc<dyn rustls::client::ResolvesClientCert>,
    shown: std::sync::atomic::AtomicBool,
}

impl rustls::client::ResolvesClientCert for KeyOnce {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if self.shown.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        self.inner.resolve(root_hint_subjects, sigschemes)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_resumed_session_carries_the_identity_its_key_proved() {
    let alice = SecretKey::generate();
    let node = whoami_node("alice", &alice).await;
    let client = Client::new(alice.clone()).unwrap();
    let check = ServerCheck::Pin(node.endpoint.fingerprint().to_string());
    for kind in BOTH {
        // rustls resumes only with the same verifier and key resolver (pointer-equal), so every
        // dial here shares one config's, and the resolver shows alice's key only once.
        let mut config = client_config(&alice, &check, &[b"whoami".to_vec()]).unwrap();
        config.client_auth_cert_resolver = Arc::new(KeyOnce {
            inner: config.client_auth_cert_resolver.clone(),
            shown: false.into(),
        });
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(8)));
        let dial =
            |config| client.dial_with_config(node.endpoint.local_addr(), kind, config, "alknet");
        // The full handshake: alice shows and proves her key; the node sends tickets.
        let conn = dial(config.clone()).await.unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "alice", "{kind:?}");
        // Resumed: no key shown this time, yet the node knows her from the session her key
        // proved.
        let conn = dial(config.clone()).await.unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "alice", "{kind:?}");
        // Without a ticket the same config is a full handshake showing no key: nobody.
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(8)));
        let conn = dial(config).await.unwrap();
        assert_eq!(whoami(&conn).await.unwrap(), "-", "{kind:?}");
    }
}
