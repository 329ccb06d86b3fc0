//! An iroh relay on loopback with a self-signed certificate, for tests of other processes (the
//! Node package's iroh tests): prints one JSON line `{ "url": …, "ca": <PEM> }` and serves until
//! its stdin closes. For a real relay, run the `iroh-relay` binary (see the README).

#[path = "../tests/support/relay.rs"]
#[allow(dead_code)] // the tests use more of it than this binary
mod relay;

use std::io::Read;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let relay = relay::TestRelay::start().await?;
    let line = serde_json::json!({ "url": relay.url.to_string(), "ca": relay.ca_pem });
    println!("{line}");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    Ok(())
}
