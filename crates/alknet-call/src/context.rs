//! What a handler gets besides its input: who is calling, a cancellation signal, and the means
//! to call other operations (composition) here or on another node.

use std::sync::Arc;

use alknet_core::Identity;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{CallError, ErrorCode};
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

/// A caller's identity as the node knows it now: set when the request starts, replaced when a
/// reload changes it (new scopes) while the request is open. A request whose identity stops
/// resolving is ended instead.
pub type LiveIdentity = Arc<ArcSwap<Option<Identity>>>;

/// The context of one request. Cloning is cheap.
#[derive(Clone)]
pub struct CallContext {
    /// The caller's identity for this request.
    pub identity: Option<Identity>,
    /// The operation being served.
    pub operation: Arc<str>,
    live: LiveIdentity,
    cancel: CancellationToken,
    local: Arc<dyn LocalOperations>,
    peer: Option<Peer>,
}

impl CallContext {
    pub(crate) fn new(
        live: LiveIdentity,
        operation: Arc<str>,
        cancel: CancellationToken,
        local: Arc<dyn LocalOperations>,
        peer: Option<Peer>,
    ) -> Self {
        Self {
            identity: Option::clone(&live.load()),
            operation,
            live,
            cancel,
            local,
            peer,
        }
    }

    /// The caller's identity as the node knows it now (see [`LiveIdentity`]); `identity` is the
    /// one the request started with. What a long-running handler checks again (a subscription's
    /// topic rules) should read this.
    pub fn live_identity(&self) -> LiveIdentity {
        self.live.clone()
    }

    /// Resolves when the request is cancelled (caller abort, deadline, connection closed).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the request is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A token cancelled with this request; children made from it are cancelled too.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
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
