//! `alknet relay --config relay.toml`: the iroh relay server (`iroh-relay`, run as a library),
//! so self-hosting the relay needs no second tool.
//!
//! ```toml
//! listen = "[::]:443"          # HTTPS: the relay
//! http_listen = "[::]:80"      # plain HTTP: iroh's captive-portal probe
//! [tls]
//! mode = "x509"                # a certificate for the relay's domain name
//! cert = "relay.crt"           # relative paths: beside this file
//! key = "relay.key"
//! # mode = "self-signed"       # development: prints the certificate nodes put in iroh.relay_ca
//! # names = ["localhost", "127.0.0.1"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alknet_endpoint::relay_server::{RelayServer, RelayServerConfig, RelayTls};
use serde::Deserialize;

use crate::config_file::{beside, read_toml};
use crate::failure::{Failure, Outcome};
use crate::signals::Signals;

/// The shape of `relay.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    /// HTTPS address of the relay.
    listen: SocketAddr,
    /// Plain HTTP address (captive-portal probe).
    http_listen: SocketAddr,
    /// The certificate.
    tls: RelayTlsFile,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
enum RelayTlsFile {
    X509 {
        cert: PathBuf,
        key: PathBuf,
    },
    SelfSigned {
        #[serde(default)]
        names: Vec<String>,
    },
}

fn read(path: &Path) -> Result<RelayServerConfig, Failure> {
    let file: RelayFile = read_toml(path)?;
    let tls = match file.tls {
        RelayTlsFile::X509 { cert, key } => RelayTls::Files {
            cert: beside(path, &cert),
            key: beside(path, &key),
        },
        RelayTlsFile::SelfSigned { names } => RelayTls::SelfSigned { names },
    };
    Ok(RelayServerConfig {
        https: file.listen,
        http: file.http_listen,
        tls,
    })
}

/// Runs the relay until SIGTERM or Ctrl-C.
pub async fn relay(config: &Path) -> Outcome {
    let settings = read(config)?;
    let mut signals = Signals::new()?;
    let mut server = RelayServer::spawn(settings)
        .await
        .map_err(|e| Failure::usage(format!("{}: {e}", config.display())))?;
    println!("url {}", server.url());
    if let Some(pem) = server.self_signed_pem() {
        println!(
            "# self-signed: nodes trust it with iroh.relay_ca (alknet.toml) or --relay-ca FILE"
        );
        print!("{pem}");
    }
    match server.http_addr() {
        Some(http) => println!(
            "relay listening on {} (HTTP probe on {http})",
            server.https_addr()
        ),
        None => println!("relay listening on {}", server.https_addr()),
    }
    let stopped = tokio::select! {
        _ = signals.stop() => None,
        why = server.stopped() => Some(why),
    };
    match stopped {
        Some(why) => Err(Failure::usage(why)),
        None => {
            server.shutdown().await;
            Ok(())
        }
    }
}
