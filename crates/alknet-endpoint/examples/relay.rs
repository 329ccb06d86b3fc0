//! An iroh relay on loopback with a self-signed certificate, for tests of other processes (the
//! Node package's iroh tests): prints one JSON line `{ "url": …, "ca": <PEM> }` and serves until
//! its stdin closes. For a real relay, run `alknet relay --config relay.toml` (see the README).

use alknet_endpoint::relay_server::{RelayServer, RelayServerConfig};
use std::io::Read;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let relay = RelayServer::spawn(RelayServerConfig::loopback()).await?;
    let line = serde_json::json!({ "url": relay.url().to_string(), "ca": relay.self_signed_pem() });
    println!("{line}");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    relay.shutdown().await;
    Ok(())
}
