//! `alknet-proxy`: stdin/stdout ↔ one TCP connection made by a node, for OpenSSH's
//! `ProxyCommand`, so a normal `ssh` reaches a host (typically the node's own `sshd`) through the
//! node, over QUIC or TCP+TLS, with your alknet key:
//!
//! ```sh
//! ssh -o ProxyCommand='alknet-proxy --key ~/.alknet/key.pem --node 203.0.113.7:4433 \
//!     --fingerprint ed25519:… --to 127.0.0.1:22' me@node
//! ```
//!
//! The node needs `[services] ssh = true` (or `tunnel = true` with `--via tunnel`), your key in
//! its peers, and a forwarding rule that allows the destination (loopback is refused by default):
//! `[[forwarding.rules]] peers = ["me"], hosts = ["127.0.0.1"], ports = [22], action = "allow"`.

use std::process::ExitCode;

use alknet_core::SecretKey;
use alknet_node::{native_tunnel, ssh_tunnel, DialTarget, Transport, DEFAULT_CONNECT_TIMEOUT};
use alknet_ssh::client::Opener;

const USAGE: &str = "usage: alknet-proxy --key <pem> --node <ip:port> --fingerprint <ed25519:…> --to <host:port> [--via ssh|tunnel] [--transport quic|tcp]";

struct Args {
    key: String,
    node: String,
    fingerprint: String,
    to: String,
    via: String,
    transport: Option<Transport>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut key, mut node, mut fingerprint, mut to) = (None, None, None, None);
    let (mut via, mut transport) = ("ssh".to_string(), None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--key" => key = Some(value),
            "--node" => node = Some(value),
            "--fingerprint" => fingerprint = Some(value),
            "--to" => to = Some(value),
            "--via" => via = value,
            "--transport" => {
                transport = Some(match value.as_str() {
                    "quic" => Transport::Quic,
                    "tcp" => Transport::Tcp,
                    other => return Err(format!("--transport {other:?}: quic or tcp")),
                })
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let missing = |name: &str| format!("{name} is required");
    Ok(Args {
        key: key.ok_or_else(|| missing("--key"))?,
        node: node.ok_or_else(|| missing("--node"))?,
        fingerprint: fingerprint.ok_or_else(|| missing("--fingerprint"))?,
        to: to.ok_or_else(|| missing("--to"))?,
        via,
        transport,
    })
}

async fn run(args: Args) -> Result<(), String> {
    let key = SecretKey::load(&args.key).map_err(|e| format!("--key: {e}"))?;
    let address = args
        .node
        .parse()
        .map_err(|e| format!("--node {:?} is not ip:port: {e}", args.node))?;
    let (host, port) = args
        .to
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("--to {:?} is not host:port", args.to))?;
    let target = DialTarget::Direct {
        address,
        fingerprint: args.fingerprint,
        over: args.transport,
        timeout: DEFAULT_CONNECT_TIMEOUT,
    };
    let opener: std::sync::Arc<dyn Opener> = match args.via.as_str() {
        "ssh" => ssh_tunnel(key, target),
        "tunnel" => native_tunnel(key, target),
        other => return Err(format!("--via {other:?}: ssh or tunnel")),
    };
    let mut remote = opener.open(host, port).await.map_err(|e| e.to_string())?;
    let mut local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    tokio::io::copy_bidirectional(&mut local, &mut remote)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("alknet-proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alknet-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alknet-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
