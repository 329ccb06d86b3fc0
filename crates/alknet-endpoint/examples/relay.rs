//! An iroh relay on loopback with a self-signed certificate, for tests of other processes (the
//! Node package's iroh tests): prints one JSON line `{ "url": …, "ca": <PEM> }` and serves until
//! its stdin closes. For a real relay, run `alknet relay --config relay.toml` (see the README).

use std::io::Read;
use std::net::Ipv4Addr;

use alknet_endpoint::relay_server::{RelayServer, RelayServerConfig, RelayTls};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let relay = RelayServer::spawn(RelayServerConfig {
        https: (Ipv4Addr::LOCALHOST, 0).into(),
        http: (Ipv4Addr::LOCALHOST, 0).into(),
        tls: RelayTls::SelfSigned {
            names: vec!["localhost".to_string(), "127.0.0.1".to_string()],
        },
    })
    .await?;
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
