//! Log lines a peer cannot forge: text it chooses (here a QUIC close reason that reaches a
//! handler's error) is logged escaped, on one line, without control bytes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions};
use support::*;

/// Log output written while the subscriber is installed.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_peer_chosen_close_reason_cannot_forge_a_log_line() {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let node = node_with(
        vec![Arc::new(Failing { panic: false })],
        Default::default(),
        |_| {},
    )
    .await;
    let conn = Client::new(SecretKey::generate())
        .unwrap()
        .dial(
            node.endpoint.local_addr(),
            &DialOptions::pinned(b"errors", node.endpoint.fingerprint()),
        )
        .await
        .unwrap();
    let forged = "INFO alknet::auth: authentication accepted peer=admin";
    conn.close(0, &format!("bye\n{forged}\r\x1b[2K\"quoted\"\u{202e}"));
    // The handler fails with the peer's reason in its error; wait for the connection's last line.
    let mut text = String::new();
    for _ in 0..10_000 {
        text = log.text();
        if text.contains("connection closed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("handler failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(failed[0].contains(r#"bye\nINFO alknet::auth"#), "{text}");
    assert!(
        failed[0].contains(r#"\r\u{1b}[2K\"quoted\"\u{202e}"#),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with(forged)), "{text}");
    assert!(
        !text.chars().any(|c| c != '\n' && c.is_control()),
        "raw control bytes in {text:?}"
    );
}
