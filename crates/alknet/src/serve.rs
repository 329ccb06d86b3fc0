//! `alknet serve`: a node from its config file. SIGHUP (or `--watch`, or `alknet reload`)
//! reloads the dynamic part; SIGTERM/SIGINT drain, a second one stops at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use alknet_call::CallError;
use alknet_core::SecretKey;
use alknet_node::{Node, NodeConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::admin::{self, AdminRequest, Ask, CONFIG_REFUSED};
use crate::cli::ServeArgs;
use crate::config_file::{read_node_config, static_changes};
use crate::failure::{Failure, Outcome};
use crate::signals::{Signal, Signals};

/// How long `serve` waits for a configured iroh relay before giving up.
const RELAY_WAIT: Duration = Duration::from_secs(20);

fn load_key(config: &NodeConfig, path: &Path) -> Result<SecretKey, Failure> {
    let key_file = config.key_file.as_ref().ok_or_else(|| {
        Failure::usage(format!(
            "{}: key_file is not set; create a key with `alknet keygen -o node.key` and add key_file = \"node.key\"",
            path.display()
        ))
    })?;
    SecretKey::load(key_file).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// The running node and what it was started from.
struct Running {
    node: Node,
    path: PathBuf,
    /// The configuration the node was started from.
    config: NodeConfig,
    started: Instant,
    modified: Option<(SystemTime, u64)>,
}

/// When the file was last written, and its length: file times are coarse, so a write caught
/// halfway (truncated, then filled) can share its time with the finished file, not its length.
fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Running {
    /// Reads the file again and applies its dynamic part; static changes are reported as
    /// needing a restart. On any error the running configuration stays in force.
    fn reload(&mut self) -> Result<Value, Failure> {
        self.modified = modified(&self.path); // before reading, as at start
        let new = read_node_config(&self.path)?;
        self.node
            .reload(new.dynamic())
            .map_err(|e| Failure::usage(format!("{}: {e}", self.path.display())))?;
        // Compared with what the node was started from: until a restart, it still runs that.
        let restart = static_changes(&self.config, &new);
        if restart.is_empty() {
            tracing::info!(target: "alknet::serve", "{}: configuration reloaded", self.path.display());
        } else {
            tracing::warn!(
                target: "alknet::serve",
                "{}: configuration reloaded; changed static settings need a restart to apply: {}",
                self.path.display(),
                restart.join(", ")
            );
        }
        Ok(json!({ "reloaded": true, "restart_needed": restart }))
    }

    fn reload_logged(&mut self) -> Result<Value, Failure> {
        let result = self.reload();
        if let Err(e) = &result {
            tracing::error!(
                target: "alknet::serve",
                "reload refused, the running configuration stays in force: {e}"
            );
        }
        result
    }

    fn answer(&mut self, ask: Ask) -> Result<Value, CallError> {
        match ask {
            Ask::Status => {
                let addresses = self.node.addresses();
                Ok(json!({
                    "fingerprint": self.node.fingerprint(),
                    "quic": addresses.quic.to_string(),
                    "tcp": addresses.tcp.map(|a| a.to_string()),
                    "iroh": addresses.iroh.map(|t| t.to_string()),
                    "config": self.path.display().to_string(),
                    "uptime_s": self.started.elapsed().as_secs(),
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            }
            Ask::Peers => {
                let auth = self.node.dynamic().auth;
                let peers: Vec<Value> = auth
                    .peers
                    .iter()
                    .map(|p| {
                        json!({
                            "id": p.id,
                            "fingerprints": p.fingerprints,
                            "token": p.token_hash.is_some(),
                            "scopes": p.scopes,
                            "enabled": p.enabled,
                        })
                    })
                    .collect();
                let api_keys: Vec<Value> = auth
                    .api_keys
                    .iter()
                    .map(|k| json!({ "prefix": k.prefix, "scopes": k.scopes, "expires_at": k.expires_at }))
                    .collect();
                Ok(json!({ "peers": peers, "api_keys": api_keys }))
            }
            Ask::Reload => self
                .reload_logged()
                .map_err(|e| CallError::custom(CONFIG_REFUSED, e.message)),
        }
    }
}

/// `alknet serve [--config alknet.toml] [--check] [--watch]`.
pub async fn serve(args: ServeArgs) -> Outcome {
    let path = args.config.clone();
    // Before reading: a write from now on is seen by --watch, even one during startup.
    let read_version = modified(&path);
    let config = read_node_config(&path)?;
    let key = load_key(&config, &path)?;
    if args.check {
        println!("{}: valid ({})", path.display(), key.public().fingerprint());
        return Ok(());
    }
    let mut signals = Signals::new()?;
    let (admin_tx, mut admin_rx) = mpsc::channel::<AdminRequest>(8);
    let operations = admin::operations(admin_tx).map_err(|e| Failure::usage(e.to_string()))?;
    let node = Node::builder(config.clone())
        .key(key)
        .operations(operations)
        .wait_for_relay(RELAY_WAIT)
        .start()
        .await
        .map_err(|e| Failure::usage(format!("{}: {} ({e})", path.display(), e.code())))?;
    announce(&node);
    let mut running = Running {
        node,
        modified: read_version,
        path,
        config,
        started: Instant::now(),
    };
    let mut watch = tokio::time::interval(Duration::from_millis(args.watch_interval_ms.max(100)));
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Hangup => { let _ = running.reload_logged(); }
                Signal::Terminate | Signal::Interrupt => break,
            },
            Some((ask, reply)) = admin_rx.recv() => {
                let _ = reply.send(running.answer(ask));
            }
            _ = watch.tick(), if args.watch => {
                if modified(&running.path) != running.modified {
                    let _ = running.reload_logged();
                }
            }
        }
    }
    tracing::info!(target: "alknet::serve", "draining (a second signal stops at once)");
    let shutdown = running.node.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            report = &mut shutdown => {
                tracing::info!(
                    target: "alknet::serve",
                    "stopped ({} connections in flight, {} cut off)",
                    report.in_flight, report.cut_off
                );
                return Ok(());
            }
            _ = signals.stop() => {
                tracing::warn!(target: "alknet::serve", "stopped at once, without draining");
                return Ok(());
            }
            // Control requests while draining: refuse them, the node is going away.
            Some((_, reply)) = admin_rx.recv() => drop(reply),
        }
    }
}

/// Prints where the node is, the `listening` line last (scripts wait for it).
fn announce(node: &Node) {
    let addresses = node.addresses();
    println!("fingerprint {}", node.fingerprint());
    if let Some(ticket) = &addresses.iroh {
        println!("iroh {ticket}");
    }
    let carriers = if addresses.tcp.is_some() {
        "QUIC + TCP+TLS"
    } else {
        "QUIC"
    };
    println!("listening on {} ({carriers})", addresses.quic);
}
