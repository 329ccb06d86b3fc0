//! `alknet subscribe` against a node in this test process, whose handler reports cancellation,
//! and `alknet relay` carrying calls to a relay-only node.

mod support;

use alknet_call::{Handler, OperationRegistry, OperationSpec, OperationType};
use alknet_core::SecretKey;
use alknet_node::{Node, NodeConfig};
use futures::StreamExt;
use serde_json::json;
use support::{explain, keygen, run, write, Running, Served, PATIENCE};
use tokio::sync::mpsc;

/// Sends on its channel when dropped: the handler's stream is dropped when it is cancelled.
struct ReportsDrop(mpsc::UnboundedSender<()>);

impl Drop for ReportsDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_cancelled_by_sigint_is_observed_by_the_handler() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let mut ops = OperationRegistry::new();
    ops.register(
        OperationSpec::new(
            "test/forever",
            OperationType::Subscription,
            json!({}),
            json!({}),
        ),
        Handler::stream(move |_, _| {
            let guard = ReportsDrop(dropped_tx.clone());
            // One item, then nothing until cancelled; the guard lives as long as the stream.
            futures::stream::once(async { Ok(json!("first")) })
                .chain(futures::stream::pending())
                .map(move |item| {
                    let _ = &guard;
                    item
                })
        }),
    )
    .unwrap();
    let node = Node::builder(NodeConfig::new("127.0.0.1:0".parse().unwrap()))
        .key(SecretKey::generate())
        .operations(ops)
        .start()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let address = node.local_addr().to_string();
    let fingerprint = node.fingerprint().to_string();
    let mut subscriber = tokio::task::spawn_blocking(move || {
        let mut process = Running::start(
            dir.path(),
            &[
                "subscribe",
                &address,
                "test/forever",
                "--fingerprint",
                &fingerprint,
            ],
        );
        assert_eq!(process.stdout_line(), "\"first\"");
        (process, dir)
    })
    .await
    .unwrap();
    assert!(
        dropped.try_recv().is_err(),
        "the handler still runs before the signal"
    );

    subscriber.0.signal("INT");
    tokio::time::timeout(PATIENCE, dropped.recv())
        .await
        .expect("the handler was cancelled")
        .unwrap();
    let code = tokio::task::spawn_blocking(move || subscriber.0.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    node.shutdown().await;
}

#[test]
fn a_relay_from_alknet_relay_carries_calls_to_a_relay_only_node() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write(
        dir,
        "relay.toml",
        "listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n[tls]\nmode = \"self-signed\"\nnames = [\"localhost\", \"127.0.0.1\"]\n",
    );
    let mut relay = Running::start(dir, &["relay", "--config", "relay.toml"]);
    let lines = relay.stdout_until("relay listening on ");
    let url = lines[0]
        .strip_prefix("url ")
        .expect("the url first")
        .to_string();
    let pem: String = lines
        .iter()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .take_while(|l| !l.starts_with("relay listening"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(pem.contains("-----END CERTIFICATE-----"), "{lines:?}");
    write(dir, "relay-ca.pem", &pem);

    keygen(dir, "node.key");
    write(
        dir,
        "alknet.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n[iroh]\nrelay = \"{url}\"\ndirect = false\nrelay_ca = '''\n{pem}'''\n"
        ),
    );
    let node = Served::start(dir, "alknet.toml");
    let ticket = node.iroh.clone().expect("an iroh ticket");
    assert!(
        ticket.contains("relay=") && !ticket.contains("addr="),
        "relay only: {ticket}"
    );

    let out = run(
        dir,
        &[
            "call",
            &ticket,
            "services/list",
            "--relay-ca",
            "relay-ca.pem",
        ],
    );
    assert!(out.status.success(), "{}", explain(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list["operations"]
        .as_array()
        .is_some_and(|ops| !ops.is_empty()));
}
