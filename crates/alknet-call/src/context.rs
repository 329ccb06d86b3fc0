//! What a handler gets besides its input: who is calling, a cancellation signal, and the means
//! to call other operations (composition) here or on another node.

use std::sync::{Arc, Weak};

use alknet_core::config::Snapshot;
use alknet_core::{AuthConfig, Credential, Identity};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{CallError, ErrorCode};
use crate::peer::link::Link;
use crate::peer::{Peer, RequestOptions, Subscription};

/// The operations of the node a handler runs in, for composition. The call service implements
/// it; the context holds it as a trait object so that handlers (and the registry that stores
/// them) do not depend on the service.
pub(crate) trait LocalOperations: Send + Sync {
    /// Runs a unary operation (internal ones too) for `ctx`, with its access check, input
    /// validation and output vetting.
    fn call_local(
        &self,
        ctx: CallContext,
        operation: &str,
        input: Value,
    ) -> BoxFuture<'static, Result<Value, CallError>>;
}

/// A caller's identity as the node knows it now, resolved against a given configuration
/// [`Snapshot`]: from what it was first resolved from (the request's `auth_token`, the
/// connection's key or bearer token), again whenever a newer snapshot asks, so the identity
/// and whatever else is read from that snapshot (topic rules) always come from the same reload.
/// A request whose identity stops resolving is ended.
pub struct LiveIdentity {
    resolved: ArcSwap<Resolved>,
    source: Source,
}

/// An identity and the snapshot version it was resolved at.
struct Resolved {
    version: Option<u64>,
    identity: Option<Identity>,
}

enum Source {
    /// Stays as it is (an identity handed over as such, or none).
    Fixed,
    /// The request's `auth_token`.
    Token(Credential),
    /// Whatever the connection was authenticated with (weak: the connection holds this one).
    Connection(Weak<Link>),
}

impl LiveIdentity {
    /// An identity that stays as it is, whatever the configuration.
    pub fn fixed(identity: Option<Identity>) -> Arc<Self> {
        Arc::new(Self {
            resolved: ArcSwap::from_pointee(Resolved {
                version: None,
                identity,
            }),
            source: Source::Fixed,
        })
    }

    /// The identity of a request's `auth_token`, resolved at `at`.
    pub(crate) fn of_token(token: Credential, at: &Snapshot, identity: Identity) -> Arc<Self> {
        Self::resolved(Source::Token(token), at, Some(identity))
    }

    /// The identity of a connection: one per connection, shared by its requests and resolved
    /// again (by [`with_at`](Self::with_at)) whenever a newer configuration asks.
    pub(crate) fn of_connection(link: &Arc<Link>) -> Arc<Self> {
        link.live
            .get_or_init(|| {
                Arc::new(Self {
                    resolved: ArcSwap::from_pointee(Resolved {
                        version: None,
                        identity: link.auth.identity.clone(),
                    }),
                    source: Source::Connection(Arc::downgrade(link)),
                })
            })
            .clone()
    }

    fn resolved(source: Source, at: &Snapshot, identity: Option<Identity>) -> Arc<Self> {
        Arc::new(Self {
            resolved: ArcSwap::from_pointee(Resolved {
                version: Some(at.version()),
                identity,
            }),
            source,
        })
    }

    /// The identity as last resolved.
    pub fn current(&self) -> Option<Identity> {
        self.resolved.load().identity.clone()
    }

    /// The identity in the configuration `at`: resolved again when `at` is not the snapshot it
    /// was last resolved at.
    pub fn at(&self, at: &Snapshot) -> Option<Identity> {
        self.with_at(at, |identity| identity.cloned())
    }

    /// Calls `f` with the identity in the configuration `at` (see [`at`](Self::at)).
    pub fn with_at<R>(&self, at: &Snapshot, f: impl FnOnce(Option<&Identity>) -> R) -> R {
        let cached = self.resolved.load();
        if matches!(self.source, Source::Fixed) || cached.version == Some(at.version()) {
            return f(cached.identity.as_ref());
        }
        let identity = match &self.source {
            Source::Fixed => None,
            Source::Token(credential) => at.get::<AuthConfig>().resolve(credential),
            Source::Connection(link) => link.upgrade().and_then(|link| link.identity_at(at)),
        };
        let answer = f(identity.as_ref());
        // Only ever move forward: a request still reading an older snapshot does not undo
        // what a newer one resolved, even when two requests resolve at once (compare and swap).
        let version = at.version();
        if cached.version.is_none_or(|v| v < version) {
            let newer = Arc::new(Resolved {
                version: Some(version),
                identity,
            });
            self.resolved.rcu(|current| {
                if current.version.is_none_or(|v| v < version) {
                    newer.clone()
                } else {
                    current.clone()
                }
            });
        }
        answer
    }

    /// When the identity stops resolving by itself in `at` (an API key's `expires_at`).
    pub(crate) fn expires_at(&self, at: &Snapshot) -> Option<u64> {
        match &self.source {
            Source::Token(credential) => at.get::<AuthConfig>().expires_at(credential),
            Source::Connection(link) => link
                .upgrade()
                .and_then(|link| link.auth.credential())
                .and_then(|c| at.get::<AuthConfig>().expires_at(&c)),
            Source::Fixed => None,
        }
    }
}

/// The context of one request. Cloning is cheap.
#[derive(Clone)]
pub struct CallContext {
    /// The caller's identity for this request.
    pub identity: Option<Identity>,
    /// The operation being served.
    pub operation: Arc<str>,
    config: Arc<Snapshot>,
    live: Arc<LiveIdentity>,
    cancel: CancellationToken,
    /// The child [`token`](Self::token) hands out, made on first use.
    handler: std::sync::OnceLock<CancellationToken>,
    local: Arc<dyn LocalOperations>,
    peer: Option<Peer>,
}

impl CallContext {
    pub(crate) fn new(
        config: Arc<Snapshot>,
        live: Arc<LiveIdentity>,
        operation: Arc<str>,
        cancel: CancellationToken,
        local: Arc<dyn LocalOperations>,
        peer: Option<Peer>,
    ) -> Self {
        Self {
            identity: live.at(&config),
            operation,
            config,
            live,
            cancel,
            handler: std::sync::OnceLock::new(),
            local,
            peer,
        }
    }

    /// The caller's identity as the node knows it now (see [`LiveIdentity`]); `identity` is the
    /// one the request started with. What a long-running handler checks again (a subscription's
    /// topic rules) should read this.
    pub fn live_identity(&self) -> Arc<LiveIdentity> {
        self.live.clone()
    }

    /// The node's dynamic configuration as it was when the request started: every check the
    /// request makes (its identity, its access, topic rules) reads this one snapshot, so a reload
    /// running meanwhile is seen whole or not at all.
    pub fn config(&self) -> &Arc<Snapshot> {
        &self.config
    }

    /// Resolves when the request is cancelled (caller abort, deadline, connection closed).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the request is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A token cancelled with this request (caller abort, deadline, connection closed, or the
    /// request finished); children made from it are cancelled too. It is a child of the
    /// request's own token: cancelling it stops what watches it, not the request or its answer.
    pub fn token(&self) -> &CancellationToken {
        self.handler.get_or_init(|| self.cancel.child_token())
    }

    /// The peer on the other end of the connection the request arrived on (to call it back).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// What the connection's pub/sub subscriptions may hold together (`None` for calls from
    /// inside the node).
    pub(crate) fn subscription_bytes(&self) -> Option<Arc<crate::pubsub::ByteBudget>> {
        self.peer
            .as_ref()
            .map(|p| p.link.subscription_bytes.clone())
    }

    /// Calls an operation of this node (internal ones too) as the same identity. Cancelling this
    /// request cancels the child.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        let child = self.cancel.child_token();
        let ctx = CallContext::new(
            self.config.clone(),
            self.live.clone(),
            operation.into(),
            child.clone(),
            self.local.clone(),
            self.peer.clone(),
        );
        let _guard = child.clone().drop_guard();
        tokio::select! {
            r = self.local.call_local(ctx, operation, input) => r,
            _ = child.cancelled() => Err(CallError::new(ErrorCode::Cancelled, "the parent request was cancelled")),
        }
    }

    /// Options for a remote child request: cancelled with this request.
    fn child_options(&self) -> RequestOptions {
        RequestOptions {
            cancel: Some(self.cancel.child_token()),
            ..Default::default()
        }
    }

    /// Calls an operation on another node; cancelling this request cancels it there too.
    pub async fn call_remote(
        &self,
        peer: &Peer,
        operation: &str,
        input: Value,
    ) -> Result<Value, CallError> {
        peer.call_with(operation, input, self.child_options()).await
    }

    /// Subscribes on another node; cancelling this request cancels the remote subscription.
    pub async fn subscribe_remote(
        &self,
        peer: &Peer,
        operation: &str,
        input: Value,
    ) -> Result<Subscription, CallError> {
        peer.subscribe_with(operation, input, self.child_options())
            .await
    }
}
