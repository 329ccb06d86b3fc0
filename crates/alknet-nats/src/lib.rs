//! A NATS backplane for alknet pub/sub: a topic published on any node of a fleet reaches the
//! subscribers on every node connected to the same NATS servers.
//!
//! Each node keeps serving its own subscribers as before (access rules are checked locally, before
//! anything reaches NATS, and again for each local subscriber of a message that arrives from
//! NATS); the backplane only carries messages between nodes, with the official client
//! (`async-nats`).
//!
//! - **Topics and subjects**: topic `a/b/c` is the subject `<prefix>.a.b.c` (prefix `alknet` by
//!   default); `*` and `>` in a pattern are NATS's own `*` and `>`. Bytes that NATS does not allow
//!   in a subject token (`.`, `*`, `>`, whitespace, anything outside `A–Z a–z 0–9 - _`) are written
//!   `%XX` (and `%` itself `%25`), so every topic maps to one subject and back.
//! - **Interest**: a node subscribes in NATS only to the patterns its own subscribers use, one NATS
//!   subscription per pattern, so a node receives only what some local subscriber wants, once.
//! - **Semantics**: at most once, like NATS core. Messages from one publisher arrive in the order
//!   it published them. `pubsub/publish` answers `delivered` = the subscriptions reached **on the
//!   publishing node**; remote deliveries are not counted (they happen later, elsewhere).
//! - **Faults**: publishing never waits for NATS. While the NATS connection is down, local delivery
//!   goes on, messages for other nodes are dropped and counted ([`Stats::lost`]), and the loss is
//!   logged when the connection returns; the client reconnects by itself and renews the node's
//!   NATS subscriptions, so remote delivery resumes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::pubsub::{Backplane, Broker, PubSubPolicy, Published};
use alknet_core::config::ConfigStore;
use async_nats::{Client, ConnectOptions, Event, Subject};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Messages waiting to be handed to the NATS client; beyond this they are dropped and counted.
const SEND_QUEUE: usize = 8192;
/// Reconnect delays: doubling from 50 ms, at most 2 s.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// `pubsub.backplane.nats` in `alknet.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://…`); the client fails over between them.
    pub servers: Vec<String>,
    /// A NATS credentials file (`.creds`: JWT and NKey seed), for servers that need one.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// The first subject token(s) of every topic (default `alknet`); nodes with different
    /// prefixes on one NATS server do not see each other's topics.
    #[serde(default)]
    pub subject_prefix: Option<String>,
}

impl NatsConfig {
    /// The subject prefix in force.
    pub fn prefix(&self) -> &str {
        self.subject_prefix.as_deref().unwrap_or("alknet")
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.servers.is_empty() {
            return Err("servers: name at least one NATS server (nats://host:4222)".into());
        }
        for server in &self.servers {
            server
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("servers: {server:?} is not a NATS server URL: {e}"))?;
        }
        let prefix = self.prefix();
        let valid = |t: &str| !t.is_empty() && t.bytes().all(plain);
        if !prefix.split('.').all(valid) {
            return Err(format!(
                "subject_prefix {prefix:?}: dot-separated tokens of A-Z a-z 0-9 - _ only"
            ));
        }
        Ok(())
    }
}

/// The backplane could not start.
#[derive(Debug, Error)]
pub enum NatsError {
    /// The configuration is invalid.
    #[error("pubsub.backplane.nats.{0}")]
    Config(String),
    /// The credentials file could not be read.
    #[error("pubsub.backplane.nats.credentials: {0}")]
    Credentials(std::io::Error),
    /// The client could not be set up.
    #[error("NATS: {0}")]
    Connect(String),
}

/// What the backplane has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to NATS for the other nodes.
    pub sent: u64,
    /// Messages from other nodes delivered into this node's broker.
    pub received: u64,
    /// Messages for other nodes that were dropped: NATS was unreachable, or too slow.
    pub lost: u64,
    /// Messages from NATS that were refused (not a pub/sub item, or on the wrong subject).
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    rejected: AtomicU64,
    /// `lost` when the last outage was reported.
    reported: AtomicU64,
    /// Connections made so far.
    connects: AtomicU64,
}

/// The NATS backplane of one node's broker.
pub struct NatsBackplane {
    client: Client,
    prefix: String,
    outgoing: mpsc::Sender<Published>,
    connected: Arc<watch::Sender<bool>>,
    /// NATS subscriptions asked for and not yet made.
    pending: watch::Sender<usize>,
    counters: Arc<Counters>,
    /// One NATS subscription per pattern this node's subscribers use.
    interest: Mutex<HashMap<String, CancellationToken>>,
    broker: Broker,
    policy: ConfigStore<PubSubPolicy>,
    tasks: TaskTracker,
    closed: CancellationToken,
}

impl NatsBackplane {
    /// Connects `broker` to the NATS servers of `config`. Returns once the client is set up; the
    /// connection itself is made (and remade) in the background, so a node starts while NATS is
    /// down and joins the fleet when it comes up. `policy` decides, for each message from NATS,
    /// which local subscribers may receive it.
    pub async fn start(
        config: &NatsConfig,
        broker: Broker,
        policy: ConfigStore<PubSubPolicy>,
    ) -> Result<Arc<Self>, NatsError> {
        config.validate().map_err(NatsError::Config)?;
        let connected = Arc::new(watch::Sender::new(false));
        let counters = Arc::new(Counters::default());
        let mut options = ConnectOptions::new()
            .name("alknet")
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let exp = attempts.min(6) as u32;
                (Duration::from_millis(50) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
            })
            .event_callback({
                let (connected, counters) = (connected.clone(), counters.clone());
                move |event| {
                    on_event(&event, &connected, &counters);
                    async {}
                }
            });
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(NatsError::Credentials)?;
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| s.parse().expect("validated"))
            .collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let (outgoing, queue) = mpsc::channel(SEND_QUEUE);
        let backplane = Arc::new(Self {
            client: client.clone(),
            prefix: config.prefix().to_string(),
            outgoing,
            connected,
            pending: watch::Sender::new(0),
            counters: counters.clone(),
            interest: Mutex::default(),
            broker,
            policy,
            tasks: TaskTracker::new(),
            closed: CancellationToken::new(),
        });
        backplane.tasks.spawn(send_loop(
            client,
            backplane.prefix.clone(),
            queue,
            counters,
            backplane.closed.clone(),
        ));
        backplane
            .broker
            .set_backplane(backplane.clone())
            .map_err(|e| NatsError::Connect(e.into()))?;
        Ok(backplane)
    }

    /// What the backplane has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// Whether the NATS connection is up now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Resolves once the NATS connection is up (`true`) or down (`false`).
    pub async fn wait_connected(&self, up: bool) {
        let mut state = self.connected.subscribe();
        let _ = state.wait_for(|c| *c == up).await;
    }

    /// Resolves once the connection is up and the NATS server has every subscription this node
    /// asked for so far: from then on, what other nodes publish to the patterns of this node's
    /// subscribers reaches them.
    pub async fn ready(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
        self.wait_connected(true).await;
        // A round trip: the server has processed every SUB sent before it.
        let _ = self.client.flush().await;
    }

    /// Stops carrying messages: sends what is queued, then leaves NATS.
    pub async fn close(&self) {
        self.closed.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.client.flush().await;
        let _ = self.client.drain().await;
    }

    fn subscribe(&self, pattern: &str) -> CancellationToken {
        let stop = self.closed.child_token();
        let subject = subject_for(&self.prefix, pattern);
        let (client, broker, policy) = (
            self.client.clone(),
            self.broker.clone(),
            self.policy.clone(),
        );
        let (counters, prefix, pattern) = (
            self.counters.clone(),
            self.prefix.clone(),
            pattern.to_string(),
        );
        let until = stop.clone();
        self.pending.send_modify(|n| *n += 1);
        let pending = self.pending.clone();
        self.tasks.spawn(async move {
            let subscribed = client.subscribe(Subject::from(subject)).await;
            pending.send_modify(|n| *n -= 1);
            let mut messages = match subscribed {
                Ok(s) => s,
                Err(e) => {
                    warn!(target: "alknet::nats", error = %e, "could not subscribe in NATS; remote messages for a local pattern will not arrive");
                    return;
                }
            };
            loop {
                let message = tokio::select! {
                    _ = until.cancelled() => break,
                    m = messages.next() => m,
                };
                let Some(message) = message else { break };
                match Published::decode(message.payload) {
                    Ok(item) if *message.subject == subject_for(&prefix, item.topic()) => {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        // One snapshot per message: the rules and the subscribers' identities of one reload.
                        broker.deliver_remote(&policy.snapshot(), &item, &pattern);
                    }
                    Ok(_) => {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        debug!(target: "alknet::nats", "message refused: its subject does not match its topic");
                    }
                    Err(e) => {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        debug!(target: "alknet::nats", error = %alknet_core::log_text::escaped(&e), "message refused");
                    }
                }
            }
            let _ = messages.unsubscribe().await;
        });
        stop
    }
}

impl Backplane for NatsBackplane {
    fn publish(&self, item: &Published) {
        if !self.is_connected() || self.outgoing.try_send(item.clone()).is_err() {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn interest(&self, pattern: &str, on: bool) {
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            if !interest.contains_key(pattern) && !self.closed.is_cancelled() {
                let stop = self.subscribe(pattern);
                interest.insert(pattern.to_string(), stop);
            }
        } else if let Some(stop) = interest.remove(pattern) {
            stop.cancel();
        }
    }
}

fn on_event(event: &Event, connected: &watch::Sender<bool>, counters: &Counters) {
    match event {
        Event::Connected => {
            connected.send_replace(true);
            let lost = counters.lost.load(Ordering::Relaxed);
            let missed = lost - counters.reported.swap(lost, Ordering::Relaxed);
            let first = counters.connects.fetch_add(1, Ordering::Relaxed) == 0;
            match (first, missed) {
                (_, 0) => info!(target: "alknet::nats", "backplane connected"),
                (true, _) => {
                    warn!(target: "alknet::nats", lost = missed, "backplane connected; messages published before it was reached only this node's subscribers")
                }
                (false, _) => {
                    warn!(target: "alknet::nats", lost = missed, "backplane connected again; messages published while it was down reached only this node's subscribers")
                }
            }
        }
        Event::Disconnected => {
            connected.send_replace(false);
            warn!(target: "alknet::nats", "backplane disconnected; local delivery goes on, other nodes miss what is published until it is back");
        }
        Event::Closed => {
            connected.send_replace(false);
        }
        other => debug!(target: "alknet::nats", event = %other, "NATS event"),
    }
}

async fn send_loop(
    client: Client,
    prefix: String,
    mut queue: mpsc::Receiver<Published>,
    counters: Arc<Counters>,
    closed: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            biased;
            item = queue.recv() => item,
            _ = closed.cancelled() => break,
        };
        let Some(item) = item else { break };
        let subject = subject_for(&prefix, item.topic());
        match client.publish(subject, item.json().clone()).await {
            Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.lost.fetch_add(1, Ordering::Relaxed),
        };
    }
    // Hand over what was queued before closing.
    while let Ok(item) = queue.try_recv() {
        let subject = subject_for(&prefix, item.topic());
        if client.publish(subject, item.json().clone()).await.is_ok() {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Bytes a subject token may hold as they are.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The NATS subject of a topic or pattern: `/` becomes `.`, whole-segment `*` and `>` stay
/// wildcards, any other byte NATS does not take as it is becomes `%XX`.
pub fn subject_for(prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + topic.len() + 8);
    subject.push_str(prefix);
    for segment in topic.split('/') {
        subject.push('.');
        if segment == "*" || segment == ">" {
            subject.push_str(segment);
            continue;
        }
        for &b in segment.as_bytes() {
            if plain(b) {
                subject.push(b as char);
            } else {
                subject.push_str(&format!("%{b:02X}"));
            }
        }
    }
    subject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_one_to_one() {
        assert_eq!(subject_for("alknet", "news/tech"), "alknet.news.tech");
        assert_eq!(subject_for("p", "a/*/>"), "p.a.*.>");
        assert_eq!(subject_for("p", "v1.2/a b"), "p.v1%2E2.a%20b");
        assert_eq!(subject_for("p", "x*y/%/é"), "p.x%2Ay.%25.%C3%A9");
        // Distinct topics, distinct subjects.
        assert_ne!(subject_for("p", "a.b"), subject_for("p", "a/b"));
    }

    #[test]
    fn config_is_checked_naming_the_key() {
        let config = |servers: &[&str], prefix: Option<&str>| NatsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            credentials: None,
            subject_prefix: prefix.map(str::to_string),
        };
        assert!(config(&["nats://127.0.0.1:4222"], None).validate().is_ok());
        assert!(config(&[], None)
            .validate()
            .unwrap_err()
            .contains("servers"));
        assert!(config(&["nats://a:1"], Some("a..b"))
            .validate()
            .unwrap_err()
            .contains("subject_prefix"));
        assert!(config(&["nats://a:1"], Some("a.*")).validate().is_err());
    }
}
