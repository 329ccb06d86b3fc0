//! A call service: the operations a node serves, the identity provider requests resolve through,
//! the pub/sub broker, and limits. One service serves every connection of its node.

use std::sync::Arc;

use alknet_core::config::{LiveConfig, Snapshot};
use alknet_core::{AuthConfig, AuthContext, Credential, Identity};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::access::Access;
use crate::builtins::{self, not_found, Captured};
use crate::carrier::byte_stream::InputGuard;
use crate::context::{CallContext, LiveIdentity, LocalOperations};
use crate::envelope::CallRequest;
use crate::error::{CallError, ErrorCode};
use crate::peer::link::Link;
use crate::pubsub::{Broker, Published, QueueLimits};
use crate::registry::{Handler, Operation, OperationRegistry, RegistryError, Visibility};
use crate::throttle::TokenThrottle;
use crate::topic::validate_topic;
use tokio::sync::{watch, Semaphore};

pub use crate::options::CallOptions;

/// The ALPN of the call protocol.
pub const ALPN: &[u8] = b"alknet/call";

/// Operations, identity, pub/sub and limits for every connection of a node.
pub struct CallService {
    registry: Arc<OperationRegistry>,
    config: LiveConfig,
    broker: Broker,
    options: CallOptions,
    tokens: TokenThrottle,
    /// Bytes of partly received frames all connections without an identity may buffer.
    anonymous_input: Arc<Semaphore>,
    /// Counts the changes of the identities' source: open requests re-resolve theirs on each.
    identities: watch::Sender<u64>,
}

impl CallService {
    /// A service serving `registry` plus the built-ins (`services/*`, `pubsub/*`). `config` is
    /// the node's live dynamic configuration: callers are resolved from its `auth` section
    /// ([`AuthConfig`]), topic rules come from its `pubsub` section, and each request reads both
    /// from one snapshot.
    pub fn new(
        registry: OperationRegistry,
        config: LiveConfig,
        options: CallOptions,
    ) -> Result<Arc<Self>, RegistryError> {
        let broker = Broker::new();
        let mut failed = None;
        // The built-ins list the complete registry, themselves included, so they get a weak
        // reference to the registry being built.
        let all = Arc::new_cyclic(|catalog| {
            let mut all = OperationRegistry::new();
            let captured = Captured {
                catalog: catalog.clone(),
                broker: broker.clone(),
                queue: QueueLimits {
                    items: options.subscription_queue,
                    bytes: options.subscription_bytes,
                    connection: None,
                },
            };
            if let Err(e) =
                builtins::register(&mut all, captured).and_then(|()| all.merge(registry))
            {
                failed = Some(e);
            }
            all
        });
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Arc::new(Self {
            registry: all,
            config,
            broker,
            anonymous_input: Arc::new(Semaphore::new(options.anonymous_input_bytes)),
            options,
            tokens: TokenThrottle::default(),
            identities: watch::Sender::new(0),
        }))
    }

    /// A service that serves `registry` with no identities (for clients offering callbacks).
    pub fn anonymous(registry: OperationRegistry) -> Result<Arc<Self>, RegistryError> {
        Self::new(registry, LiveConfig::default(), CallOptions::default())
    }

    /// The registry, built-ins included.
    pub fn registry(&self) -> &OperationRegistry {
        &self.registry
    }

    /// The live dynamic configuration the service reads.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The limits.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The largest frame or message accepted from a caller with `identity`: callers without one
    /// get the lower `anonymous_max_frame`, on every carrier.
    pub fn max_frame_for(&self, identity: Option<&Identity>) -> usize {
        match identity {
            Some(_) => self.options.max_frame,
            None => self.options.max_frame.min(self.options.anonymous_max_frame),
        }
    }

    /// What the streams of a connection with `identity` may buffer and how large their frames
    /// may be: a connection without an identity of its own gets the lower frame ceiling and
    /// draws on the budget shared by all such connections.
    pub(crate) fn input_guard(
        &self,
        identity: Option<&Identity>,
        own: &Arc<Semaphore>,
    ) -> (usize, InputGuard) {
        let o = &self.options;
        let (budget, size) = match identity {
            Some(_) => (own.clone(), o.connection_input_bytes),
            None => (self.anonymous_input.clone(), o.anonymous_input_bytes),
        };
        let guard = InputGuard::new(budget, size, o.frame_deadline);
        (self.max_frame_for(identity), guard)
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes as the node itself (no topic rules apply to the node, but each subscriber's
    /// do); returns the deliveries.
    pub fn publish(&self, topic: &str, data: &Value) -> Result<usize, CallError> {
        validate_topic(topic).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
        Ok(self.broker.publish(&self.config.load(), topic, data))
    }

    /// [`publish`](Self::publish) with `data` already encoded as JSON: it is checked (as a
    /// subscriber will decode it: no lone surrogate escapes, nesting within 128 levels) and
    /// passed on as it is, with no `Value` built and written again.
    pub fn publish_raw(&self, topic: &str, data: &RawValue) -> Result<usize, CallError> {
        validate_topic(topic).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
        crate::pubsub::check_data(data).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
        let item = Published::raw(topic, data);
        Ok(self.broker.publish_item(&self.config.load(), item))
    }

    /// Publishes items decoded by [`Published::decode_many`] as the node itself, in order, under
    /// one configuration snapshot; returns how many subscriptions each was queued for.
    pub fn publish_items(&self, items: &[Published]) -> Vec<usize> {
        self.broker.publish_items(&self.config.load(), items)
    }

    /// `services/list` for `identity`.
    pub fn list_for(&self, identity: Option<&Identity>) -> Value {
        builtins::list_for(&self.registry, identity)
    }

    /// `services/schema` for `identity`.
    pub fn schema_for(&self, identity: Option<&Identity>, name: &str) -> Result<Value, CallError> {
        builtins::schema_for(&self.registry, identity, name)
    }

    /// Tells open requests and connections that the identities may have changed (peers, API
    /// keys): each re-resolves its own, and a request whose identity no longer resolves, or no
    /// longer may call its operation, ends (`UNAUTHENTICATED` / `FORBIDDEN`). Call it after
    /// reloading the configuration the identity provider reads.
    pub fn identities_changed(&self) {
        self.identities.send_modify(|n| *n += 1);
    }

    /// Changes announced by [`identities_changed`](Self::identities_changed).
    pub(crate) fn identity_changes(&self) -> watch::Receiver<u64> {
        self.identities.subscribe()
    }

    /// Steps 1–4 of the contract: identity, lookup, access, input, all in the configuration
    /// `at`. Returns the operation and the identity the request runs as.
    pub(crate) fn admit(
        &self,
        request: &CallRequest,
        link: &Arc<Link>,
        at: &Snapshot,
    ) -> Result<(Arc<Operation>, Arc<LiveIdentity>), CallError> {
        let live = match &request.auth_token {
            Some(token) => {
                let credential = Credential::token(token.as_bytes());
                let identity = self.resolve_token(&credential, &link.auth, at)?;
                LiveIdentity::of_token(credential, at, identity)
            }
            None => LiveIdentity::of_connection(link),
        };
        let op = self
            .registry
            .get(&request.operation)
            .filter(|op| op.spec.visibility == Visibility::External)
            .ok_or_else(|| not_found(&request.operation))?;
        live.with_at(at, |identity| op.spec.access.check(identity))?;
        op.validate_input(&request.input)?;
        Ok((op.clone(), live))
    }
}

impl CallService {
    /// The identity of a request's `auth_token`; an invalid one is logged (never its text) and
    /// counted against the source address, which is throttled after too many.
    fn resolve_token(
        &self,
        token: &Credential,
        connection: &AuthContext,
        at: &Snapshot,
    ) -> Result<Identity, CallError> {
        let remote = connection.remote_addr;
        if self.tokens.throttled(remote) {
            return Err(CallError::new(
                ErrorCode::Unauthenticated,
                "too many invalid auth_tokens from this address; wait a minute before retrying",
            ));
        }
        at.get::<AuthConfig>().resolve(token).ok_or_else(|| {
            let alpn = String::from_utf8_lossy(&connection.alpn);
            self.tokens.failed(remote, &alpn);
            CallError::new(
                ErrorCode::Unauthenticated,
                "auth_token is not valid (unknown, disabled or expired)",
            )
        })
    }
}

impl LocalOperations for CallService {
    /// Composition: runs a unary operation of this node, internal ones included.
    fn call_local(
        &self,
        ctx: CallContext,
        operation: &str,
        input: Value,
    ) -> BoxFuture<'static, Result<Value, CallError>> {
        let op = self.registry.get(operation).cloned();
        let validate = self.options.validate_output;
        let operation = operation.to_owned();
        async move {
            let op = op.ok_or_else(|| not_found(&operation))?;
            op.spec.access.check(ctx.identity.as_ref())?;
            op.validate_input(&input)?;
            match &op.handler {
                Handler::Unary(f) => {
                    let output = f(ctx, input).await.map_err(|e| op.vet_error(e))?;
                    op.vet_output(&output, validate)?;
                    Ok(output)
                }
                Handler::Stream(_) | Handler::Feed(_) => Err(CallError::new(
                    ErrorCode::InvalidOperationType,
                    format!("{operation} is a subscription; subscribe to it instead of calling it"),
                )),
            }
        }
        .boxed()
    }
}

/// Access rules: re-exported for convenience.
pub type AccessRules = Access;
