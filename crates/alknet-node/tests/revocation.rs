//! Revocation reaches what is open: a reload that disables a peer, takes scopes away or lets an
//! API key expire ends that identity's open subscriptions and in-flight calls (their handlers
//! see their signal abort), over real QUIC and TCP+TLS connections, while other peers go on.

use std::time::{SystemTime, UNIX_EPOCH};

use alknet_call::access::Access;
use alknet_call::{
    CallContext, CallService, Handler, OperationRegistry, OperationSpec, OperationType, Peer,
    RequestOptions, TopicRule,
};
use alknet_core::config::{ApiKeyEntry, PeerEntry};
use alknet_core::fingerprint::token_hash;
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{Node, NodeConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const KEY_TOKEN: &str = "alk_soon_0123456789abcdef";

/// What the `test/watch` handlers report: `started`, then `aborted` when their signal fires
/// (seen by a task the handler started, which outlives the handler itself).
type Events = mpsc::UnboundedReceiver<&'static str>;

fn watch_op(
    name: &str,
    access: Access,
    events: mpsc::UnboundedSender<&'static str>,
) -> (OperationSpec, Handler) {
    let spec = OperationSpec::new(name, OperationType::Query, json!({}), json!({})).access(access);
    let handler = Handler::unary(move |ctx: CallContext, _: Value| {
        let events = events.clone();
        async move {
            // Work the handler started goes on beside it and watches the request's signal.
            let signal = ctx.token().clone();
            let watcher = events.clone();
            tokio::spawn(async move {
                signal.cancelled().await;
                let _ = watcher.send("aborted");
            });
            let _ = events.send("started");
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    });
    (spec, handler)
}

fn operations() -> (OperationRegistry, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut ops = OperationRegistry::new();
    let (spec, handler) = watch_op("test/watch", Access::default(), tx.clone());
    ops.register(spec, handler).unwrap();
    let admin = Access {
        required_scopes: vec!["admin".into()],
        ..Access::default()
    };
    let (spec, handler) = watch_op("test/admin-watch", admin, tx);
    ops.register(spec, handler).unwrap();
    ops.query("test/echo", json!({}), json!({}), |_, input| async move {
        Ok(input)
    })
    .unwrap();
    (ops, rx)
}

struct Fleet {
    node: Node,
    alice: SecretKey,
    bob: SecretKey,
}

fn config(alice: &SecretKey, bob: &SecretKey, key_expires_at: Option<u64>) -> NodeConfig {
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth.peers = vec![
        PeerEntry::new("alice", [alice.public().fingerprint()]).with_scopes(["admin"]),
        PeerEntry::new("bob", [bob.public().fingerprint()]),
    ];
    // secret/… only for the admin scope (alice); everything else for any identity.
    config.pubsub.rules = vec![TopicRule {
        pattern: "secret/>".into(),
        publish: None,
        subscribe: Some(vec!["admin".into()]),
        anonymous: false,
    }];
    config.auth.api_keys = vec![ApiKeyEntry {
        prefix: "soon".into(),
        hash: token_hash(KEY_TOKEN.as_bytes()),
        scopes: Vec::new(),
        resources: Default::default(),
        expires_at: key_expires_at,
    }];
    config
}

async fn fleet(key_expires_at: Option<u64>) -> (Fleet, Events) {
    let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
    let (ops, events) = operations();
    let node = Node::builder(config(&alice, &bob, key_expires_at))
        .key(SecretKey::generate())
        .operations(ops)
        .start()
        .await
        .unwrap();
    (Fleet { node, alice, bob }, events)
}

impl Fleet {
    async fn dial(&self, key: &SecretKey, over: TransportKind) -> Peer {
        let client = Client::new(key.clone()).unwrap();
        let fp = self.node.fingerprint().to_string();
        let conn = client
            .dial(
                self.node.local_addr(),
                &DialOptions::pinned(alknet_call::ALPN, fp.clone()).over(over),
            )
            .await
            .unwrap();
        let service = CallService::anonymous(OperationRegistry::new()).unwrap();
        Peer::connect(conn, service, Some(fp))
    }

    /// Reloads with alice changed by `edit`.
    fn reload_alice(&self, edit: impl FnOnce(&mut PeerEntry)) {
        let mut dynamic = self.node.dynamic();
        edit(
            dynamic
                .auth
                .peers
                .iter_mut()
                .find(|p| p.id == "alice")
                .unwrap(),
        );
        self.node.reload(dynamic).unwrap();
    }

    /// Publishes until every one of `subs` is registered, then reads each up to a marker, so
    /// what they read next is what is published next.
    async fn until_subscribed(&self, subs: &mut [&mut alknet_call::Subscription]) {
        while self.node.publish("news", &json!("hello")).unwrap() < subs.len() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            self.node.publish("news", &json!("ready")).unwrap(),
            subs.len()
        );
        for sub in subs {
            loop {
                let item = sub.next().await.unwrap().unwrap();
                if item["data"] == json!("ready") {
                    break;
                }
                assert_eq!(item["data"], json!("hello"));
            }
        }
    }
}

async fn started(events: &mut Events) {
    assert_eq!(events.recv().await, Some("started"));
}

#[tokio::test]
async fn disabling_a_peer_ends_its_open_subscriptions_and_not_the_others() {
    let (fleet, _) = fleet(None).await;
    for over in [TransportKind::Quic, TransportKind::Tcp] {
        let alice = fleet.dial(&fleet.alice, over).await;
        let bob = fleet.dial(&fleet.bob, over).await;
        let mut alice_sub = alice.topic("news").await.unwrap();
        let mut bob_sub = bob.topic("news").await.unwrap();
        fleet
            .until_subscribed(&mut [&mut alice_sub, &mut bob_sub])
            .await;

        fleet.reload_alice(|p| p.enabled = false);
        let ended = alice_sub.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code, "UNAUTHENTICATED", "{ended}");
        assert!(alice_sub.next().await.is_none());
        // Bob goes on receiving, and alice's connection now has no identity.
        assert_eq!(fleet.node.publish("news", &json!("still")).unwrap(), 1);
        assert_eq!(
            bob_sub.next().await.unwrap().unwrap()["data"],
            json!("still")
        );
        let refused = alice.call("test/admin-watch", json!({})).await.unwrap_err();
        assert_eq!(refused.code, "UNAUTHENTICATED", "{refused}");
        assert_eq!(bob.call("test/echo", json!(1)).await.unwrap(), json!(1));

        fleet.reload_alice(|p| p.enabled = true);
    }
}

#[tokio::test]
async fn an_in_flight_call_of_a_disabled_peer_fails_and_its_handler_is_aborted() {
    let (fleet, mut events) = fleet(None).await;
    let alice = fleet.dial(&fleet.alice, TransportKind::Quic).await;
    let call = tokio::spawn({
        let alice = alice.clone();
        async move { alice.call("test/watch", json!({})).await }
    });
    started(&mut events).await;
    fleet.reload_alice(|p| p.enabled = false);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code, "UNAUTHENTICATED", "{err}");
    assert_eq!(events.recv().await, Some("aborted"));
}

#[tokio::test]
async fn a_call_whose_scopes_shrank_is_forbidden() {
    let (fleet, mut events) = fleet(None).await;
    let alice = fleet.dial(&fleet.alice, TransportKind::Tcp).await;
    let admin = tokio::spawn({
        let alice = alice.clone();
        async move { alice.call("test/admin-watch", json!({})).await }
    });
    started(&mut events).await;
    fleet.reload_alice(|p| p.scopes.clear());
    let err = admin.await.unwrap().unwrap_err();
    assert_eq!(err.code, "FORBIDDEN", "{err}");
    assert_eq!(events.recv().await, Some("aborted"));
    // Alice is still known: what needs no scope she may still call.
    assert_eq!(alice.call("test/echo", json!(2)).await.unwrap(), json!(2));
}

#[tokio::test]
async fn a_subscriber_whose_scopes_shrank_stops_receiving_the_topics_they_opened() {
    let (fleet, _) = fleet(None).await;
    let alice = fleet.dial(&fleet.alice, TransportKind::Quic).await;
    let mut secret = alice.topic("secret/>").await.unwrap();
    while fleet.node.publish("secret/a", &json!("hello")).unwrap() < 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        secret.next().await.unwrap().unwrap()["data"],
        json!("hello")
    );
    // The subscription stays open (alice is still known, subscribing needs no scope), but once
    // the reload reached it the topic rule refuses her what it no longer allows.
    fleet.reload_alice(|p| p.scopes.clear());
    let reached = async {
        while fleet.node.publish("secret/a", &json!("pending")).unwrap() > 0 {
            tokio::task::yield_now().await;
        }
    };
    // A hang guard only: the reload reaches the subscription at once in practice.
    tokio::time::timeout(std::time::Duration::from_secs(60), reached)
        .await
        .expect("the subscription kept receiving a topic its scopes no longer open");
    assert_eq!(fleet.node.publish("secret/a", &json!("hidden")).unwrap(), 0);
    fleet.reload_alice(|p| p.scopes = vec!["admin".into()]);
    while fleet.node.publish("secret/a", &json!("again")).unwrap() < 1 {
        tokio::task::yield_now().await;
    }
    loop {
        let data = secret.next().await.unwrap().unwrap()["data"].clone();
        assert_ne!(data, json!("hidden"), "delivered while the scope was gone");
        if data == json!("again") {
            break;
        }
        assert_eq!(data, json!("pending"));
    }
}

#[tokio::test]
async fn an_api_key_ends_its_subscription_when_it_expires() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Valid now, expired within two seconds.
    let (fleet, _) = fleet(Some(now + 2)).await;
    let bob = fleet.dial(&fleet.bob, TransportKind::Quic).await;
    let with_key = RequestOptions {
        auth_token: Some(KEY_TOKEN.into()),
        ..RequestOptions::default()
    };
    let mut keyed = bob
        .subscribe_with("pubsub/subscribe", json!({"topic": "news"}), with_key)
        .await
        .unwrap();
    let mut own = bob.topic("news").await.unwrap();
    fleet.until_subscribed(&mut [&mut keyed, &mut own]).await;

    // Waits for the expiry itself: nothing else ends this subscription.
    let ended = keyed.next().await.unwrap().unwrap_err();
    assert_eq!(ended.code, "UNAUTHENTICATED", "{ended}");
    assert_eq!(fleet.node.publish("news", &json!("after")).unwrap(), 1);
    assert_eq!(own.next().await.unwrap().unwrap()["data"], json!("after"));
}
