//! The state of one connection that the caller side shares with the dispatcher serving it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use alknet_core::config::Snapshot;
use alknet_core::{AuthContext, Connection, Identity};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::carrier::writer::Writer;
use crate::context::LiveIdentity;
use crate::envelope::Reply;
use crate::options::CallOptions;
use crate::peer::publisher::Publisher;
use crate::pubsub::ByteBudget;

/// One connection, as both directions of the protocol see it.
pub(crate) struct Link {
    /// The connection.
    pub(crate) conn: Connection,
    /// What the endpoint knew about the connection.
    pub(crate) auth: AuthContext,
    /// The limits of the service on this end.
    pub(crate) options: CallOptions,
    /// Our requests on the shared stream of a single-stream carrier, by id: the dispatcher
    /// reading that stream routes their answers here.
    pending: Mutex<HashMap<String, mpsc::Sender<Reply>>>,
    /// The writer of the shared stream, once the dispatcher has it.
    shared_writer: watch::Sender<Option<Writer>>,
    /// Cancelled once the connection is closed.
    pub(crate) closed: CancellationToken,
    /// What this connection's pub/sub subscriptions may hold, together.
    pub(crate) subscription_bytes: Arc<ByteBudget>,
    /// Bytes of partly received frames this connection may buffer (when it has an identity).
    pub(crate) input: Arc<Semaphore>,
    /// The connection's identity as last resolved, and the configuration version it was
    /// resolved at (`None`: as the endpoint resolved it, see [`identity_at`](Self::identity_at)).
    identity: Mutex<(Option<u64>, Option<Identity>)>,
    next_id: AtomicU64,
    /// The connection's identity as its requests see it (made by the first that needs it).
    pub(crate) live: OnceLock<Arc<LiveIdentity>>,
    /// Our publishes waiting to go out together.
    pub(crate) publisher: Publisher,
}

impl Link {
    pub(crate) fn new(conn: Connection, auth: AuthContext, options: CallOptions) -> Self {
        Self {
            subscription_bytes: ByteBudget::new(options.connection_subscription_bytes),
            input: Arc::new(Semaphore::new(options.connection_input_bytes)),
            identity: Mutex::new((None, auth.identity.clone())),
            conn,
            auth,
            options,
            pending: Mutex::default(),
            shared_writer: watch::channel(None).0,
            closed: CancellationToken::new(),
            next_id: AtomicU64::new(1),
            live: OnceLock::new(),
            publisher: Publisher::default(),
        }
    }

    /// The connection's identity in the configuration `at`: what its key (or, for a WebSocket,
    /// its bearer token) resolves to there, cached per configuration version. A connection that
    /// had no identity keeps none.
    pub(crate) fn identity_at(&self, at: &Snapshot) -> Option<Identity> {
        if self.auth.credential().is_none() {
            return self.auth.identity.clone();
        }
        let version = Some(at.version());
        let Ok(mut current) = self.identity.lock() else {
            return None;
        };
        if current.0 == version {
            return current.1.clone();
        }
        let identity = self.auth.identity_at(at);
        if current.0 < version {
            *current = (version, identity.clone());
        }
        identity
    }

    /// A fresh id for one of our requests.
    pub(crate) fn next_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Publishes (or withdraws, with `None`) the shared stream's writer.
    pub(crate) fn set_shared_writer(&self, writer: Option<Writer>) {
        self.shared_writer.send_replace(writer);
    }

    /// The shared stream's writer if there is one now.
    pub(crate) fn current_shared_writer(&self) -> Option<Writer> {
        self.shared_writer.borrow().clone()
    }

    /// The shared stream's writer, waiting until the dispatcher has one; `None` once closed.
    pub(crate) async fn shared_writer(&self) -> Option<Writer> {
        let mut watch = self.shared_writer.subscribe();
        tokio::select! {
            w = watch.wait_for(Option::is_some) => w.ok().and_then(|w| w.clone()),
            _ = self.closed.cancelled() => None,
        }
    }

    /// Registers one of our requests on the shared stream; its answers arrive on `tx`.
    pub(crate) fn expect(&self, id: &str, tx: mpsc::Sender<Reply>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.to_owned(), tx);
        }
    }

    /// How many of our requests are registered for answers.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Stops routing answers to `id`.
    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(id);
        }
    }

    /// Delivers an answer to one of our requests on the shared stream. A full queue waits: on a
    /// single-stream carrier the one stream is the unit of flow control, so a slow local consumer
    /// slows the connection (as TCP would) instead of losing answers.
    pub(crate) async fn route(&self, id: &str, reply: Reply) {
        let terminal = reply.is_terminal();
        let tx = match self.pending.lock() {
            Ok(mut pending) if terminal => pending.remove(id),
            Ok(pending) => pending.get(id).cloned(),
            Err(_) => None,
        };
        // Late frames after an abort or for unknown ids are discarded.
        if let Some(tx) = tx {
            if tx.send(reply).await.is_err() {
                self.forget(id);
            }
        }
    }

    /// Marks the connection closed: pending requests fail with `UNAVAILABLE`.
    pub(crate) fn shut(&self) {
        self.closed.cancel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear();
        }
        self.shared_writer.send_replace(None);
    }
}
