//! A call service: the operations a node serves, the identity provider requests resolve through,
//! the pub/sub broker, and limits. One service serves every connection of its node.

use std::sync::Arc;
use std::time::Duration;

use alknet_core::{
    Alpn, AuthContext, ConfigStore, Connection, HandlerError, Identity, IdentityProvider,
    ProtocolHandler,
};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::access::Access;
use crate::context::CallContext;
use crate::envelope::CallRequest;
use crate::error::{CallError, ErrorCode};
use crate::framing::DEFAULT_MAX_FRAME;
use crate::pubsub::{may_publish, may_subscribe, Broker, PubSubPolicy};
use crate::registry::{
    Handler, Operation, OperationRegistry, OperationSpec, OperationType, RegistryError, Visibility,
};
use crate::session::Session;
use crate::topic::{validate_pattern, validate_topic};

/// The ALPN of the call protocol.
pub const ALPN: &[u8] = b"alknet/call";

/// Limits and defaults of a call service.
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Largest frame accepted (default 16 MiB, at most 64 MiB).
    pub max_frame: usize,
    /// Concurrent requests per connection, subscriptions included (default 1024).
    pub max_concurrent: usize,
    /// Queue depth of each pub/sub subscription (default 1024).
    pub subscription_queue: usize,
    /// Deadline of queries and mutations that ask for none (default 30 s).
    pub default_timeout: Duration,
    /// Cap on any requested deadline (default 10 min).
    pub max_timeout: Duration,
    /// Validate handler outputs against their schema (default on).
    pub validate_output: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_concurrent: 1024,
            subscription_queue: 1024,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(600),
            validate_output: true,
        }
    }
}

/// Operations, identity, pub/sub and limits for every connection of a node.
pub struct CallService {
    registry: OperationRegistry,
    identity: Arc<dyn IdentityProvider>,
    pubsub: ConfigStore<PubSubPolicy>,
    broker: Broker,
    options: CallOptions,
}

/// Resolves nobody: for clients that serve callbacks without a peer list.
pub struct NoIdentities;

impl IdentityProvider for NoIdentities {
    fn resolve_from_fingerprint(&self, _: &str) -> Option<Identity> {
        None
    }
    fn resolve_from_token(&self, _: &[u8]) -> Option<Identity> {
        None
    }
}

fn object_schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

fn builtins() -> Result<OperationRegistry, RegistryError> {
    let mut r = OperationRegistry::new();
    r.register(
        OperationSpec::new(
            "services/list",
            OperationType::Query,
            json!({ "type": ["object", "null"] }),
            object_schema(
                json!({ "operations": { "type": "array" } }),
                &["operations"],
            ),
        )
        .describe("The operations this caller may call."),
        Handler::unary(|ctx: CallContext, _| async move {
            Ok(ctx.service().list_for(ctx.identity.as_ref()))
        }),
    )?;
    r.register(
        OperationSpec::new(
            "services/schema",
            OperationType::Query,
            object_schema(json!({ "name": { "type": "string" } }), &["name"]),
            json!({ "type": "object" }),
        )
        .describe("The full contract of one operation."),
        Handler::unary(|ctx: CallContext, input: Value| async move {
            let name = input["name"].as_str().unwrap_or_default();
            ctx.service()
                .schema_for(ctx.identity.as_ref(), name.trim_start_matches('/'))
        }),
    )?;
    r.register(
        OperationSpec::new(
            "pubsub/publish",
            OperationType::Mutation,
            object_schema(
                json!({ "topic": { "type": "string" }, "data": true }),
                &["topic"],
            ),
            object_schema(
                json!({ "delivered": { "type": "integer", "minimum": 0 } }),
                &["delivered"],
            ),
        )
        .describe("Publishes data to a topic."),
        Handler::unary(|ctx: CallContext, input: Value| async move {
            let topic = input["topic"].as_str().unwrap_or_default();
            validate_topic(topic).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
            let policy = ctx.service().pubsub_policy();
            if !may_publish(&policy, topic, ctx.identity.as_ref()) {
                return Err(denied(ctx.identity.as_ref(), "publish to this topic"));
            }
            let delivered = ctx
                .service()
                .broker()
                .publish(&policy, topic, &input["data"]);
            Ok(json!({ "delivered": delivered }))
        }),
    )?;
    r.register(
        OperationSpec::new(
            "pubsub/subscribe",
            OperationType::Subscription,
            object_schema(json!({ "topic": { "type": "string" } }), &["topic"]),
            object_schema(json!({ "topic": { "type": "string" }, "data": true }), &["topic"]),
        )
        .describe("Receives what is published to topics matching a pattern (`*` one segment, `>` the rest)."),
        Handler::stream(|ctx: CallContext, input: Value| {
            let pattern = input["topic"].as_str().unwrap_or_default().to_string();
            let service = ctx.service().clone();
            let checked = validate_pattern(&pattern)
                .map_err(|e| CallError::new(ErrorCode::InvalidInput, e))
                .and_then(|()| {
                    if may_subscribe(&service.pubsub_policy(), ctx.identity.as_ref()) {
                        Ok(())
                    } else {
                        Err(denied(ctx.identity.as_ref(), "subscribe"))
                    }
                });
            match checked {
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                Ok(()) => {
                    let sub = service.broker().subscribe(
                        &pattern,
                        ctx.identity.clone(),
                        service.options.subscription_queue,
                    );
                    futures::stream::unfold(Some(sub), |state| async move {
                        let mut sub = state?;
                        tokio::select! {
                            biased;
                            _ = sub.overflow.cancelled() => Some((Err(overloaded()), None)),
                            item = sub.items.recv() => item.map(|v| (Ok(v), Some(sub))),
                        }
                    })
                    .boxed()
                }
            }
        }),
    )?;
    Ok(r)
}

fn overloaded() -> CallError {
    CallError::new(
        ErrorCode::Overloaded,
        "subscriber fell too far behind; the subscription was ended (resubscribe and read faster)",
    )
}

fn denied(identity: Option<&Identity>, what: &str) -> CallError {
    match identity {
        None => CallError::new(
            ErrorCode::Unauthenticated,
            format!("an identity is needed to {what}"),
        ),
        Some(_) => CallError::new(ErrorCode::Forbidden, format!("not allowed to {what}")),
    }
}

impl CallService {
    /// A service serving `registry` plus the built-ins (`services/*`, `pubsub/*`). `pubsub`
    /// supplies the live pub/sub rules (`ConfigStore::default()` for the defaults).
    pub fn new(
        registry: OperationRegistry,
        identity: Arc<dyn IdentityProvider>,
        pubsub: ConfigStore<PubSubPolicy>,
        options: CallOptions,
    ) -> Result<Arc<Self>, RegistryError> {
        let mut all = builtins()?;
        all.merge(registry)?;
        Ok(Arc::new(Self {
            registry: all,
            identity,
            pubsub,
            broker: Broker::new(),
            options,
        }))
    }

    /// A service that serves `registry` with no identities (for clients offering callbacks).
    pub fn anonymous(registry: OperationRegistry) -> Result<Arc<Self>, RegistryError> {
        Self::new(
            registry,
            Arc::new(NoIdentities),
            ConfigStore::default(),
            CallOptions::default(),
        )
    }

    /// The registry, built-ins included.
    pub fn registry(&self) -> &OperationRegistry {
        &self.registry
    }

    /// The identity provider.
    pub fn identity(&self) -> &Arc<dyn IdentityProvider> {
        &self.identity
    }

    /// The limits.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The pub/sub rules in force now.
    pub fn pubsub_policy(&self) -> Arc<PubSubPolicy> {
        self.pubsub.load()
    }

    /// Publishes as the node itself (no topic rules apply to the node); returns the deliveries.
    pub fn publish(&self, topic: &str, data: &Value) -> Result<usize, CallError> {
        validate_topic(topic).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
        Ok(self.broker.publish(&self.pubsub_policy(), topic, data))
    }

    /// Serves one connection until it closes. `auth` is what the endpoint resolved.
    pub async fn serve(self: &Arc<Self>, conn: Connection, auth: AuthContext) {
        Session::start(conn, self.clone(), auth).closed().await;
    }

    fn callable(&self, op: &Operation, identity: Option<&Identity>) -> bool {
        op.spec.visibility == Visibility::External && op.spec.access.check(identity).is_ok()
    }

    /// `services/list` for `identity`.
    pub fn list_for(&self, identity: Option<&Identity>) -> Value {
        let operations: Vec<Value> = self
            .registry
            .iter()
            .filter(|op| self.callable(op, identity))
            .map(|op| {
                let mut entry = json!({ "name": op.spec.name, "type": op.spec.kind });
                if let Some(d) = &op.spec.description {
                    entry["description"] = json!(d);
                }
                entry
            })
            .collect();
        json!({ "operations": operations })
    }

    /// `services/schema` for `identity`.
    pub fn schema_for(&self, identity: Option<&Identity>, name: &str) -> Result<Value, CallError> {
        match self.registry.get(name) {
            Some(op) if self.callable(op, identity) => {
                Ok(serde_json::to_value(&op.spec).unwrap_or(Value::Null))
            }
            _ => Err(not_found(name)),
        }
    }

    /// Steps 1–4 of the contract: identity, lookup, access, input. Returns the operation and the
    /// identity the request runs as.
    pub(crate) fn admit(
        &self,
        request: &CallRequest,
        connection_identity: Option<&Identity>,
    ) -> Result<(Arc<Operation>, Option<Identity>), CallError> {
        let identity = match &request.auth_token {
            Some(token) => Some(
                self.identity
                    .resolve_from_token(token.as_bytes())
                    .ok_or_else(|| {
                        CallError::new(
                            ErrorCode::Unauthenticated,
                            "auth_token is not valid (unknown, disabled or expired)",
                        )
                    })?,
            ),
            None => connection_identity.cloned(),
        };
        let op = self
            .registry
            .get(&request.operation)
            .filter(|op| op.spec.visibility == Visibility::External)
            .ok_or_else(|| not_found(&request.operation))?;
        op.spec.access.check(identity.as_ref())?;
        op.validate_input(&request.input)?;
        Ok((op.clone(), identity))
    }

    /// Composition: calls a unary operation of this node, internal ones included.
    pub(crate) async fn call_local(
        self: &Arc<Self>,
        ctx: CallContext,
        operation: &str,
        input: Value,
    ) -> Result<Value, CallError> {
        let op = self
            .registry
            .get(operation)
            .ok_or_else(|| not_found(operation))?
            .clone();
        op.spec.access.check(ctx.identity.as_ref())?;
        op.validate_input(&input)?;
        match &op.handler {
            Handler::Unary(f) => {
                let output = f(ctx, input).await.map_err(|e| vet_error(&op, e))?;
                vet_output(self, &op, &output)?;
                Ok(output)
            }
            Handler::Stream(_) => Err(CallError::new(
                ErrorCode::InvalidOperationType,
                format!("{operation} is a subscription; subscribe to it instead of calling it"),
            )),
        }
    }
}

pub(crate) fn not_found(name: &str) -> CallError {
    CallError::new(ErrorCode::NotFound, format!("no operation /{name}"))
}

/// A handler failure as the caller may see it: declared or standard codes pass, others become
/// `INTERNAL` (logged, details withheld).
pub(crate) fn vet_error(op: &Operation, error: CallError) -> CallError {
    if op.may_fail_with(&error.code) {
        error
    } else if error.code == ErrorCode::Internal.as_str() {
        // The handler chose INTERNAL itself (and reported why); only its details are withheld.
        CallError::internal()
    } else {
        tracing::warn!(target: "alknet::call", operation = %op.spec.name, code = %error.code, "handler failed with an undeclared error; answering INTERNAL");
        CallError::internal()
    }
}

/// Checks an output against the schema (when enabled); a failure is `INTERNAL` and logged.
pub(crate) fn vet_output(
    service: &CallService,
    op: &Operation,
    output: &Value,
) -> Result<(), CallError> {
    if !service.options.validate_output {
        return Ok(());
    }
    op.validate_output(output).map_err(|errors| {
        // Paths only: the validator's messages quote the output, and payloads are never logged.
        let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
        tracing::error!(target: "alknet::call", operation = %op.spec.name, paths = ?paths, "handler output does not match its schema; answering INTERNAL");
        CallError::internal()
    })
}

/// The endpoint-facing handler for the `alknet/call` ALPN.
#[derive(Clone)]
pub struct CallHandler {
    service: Arc<CallService>,
    on_session: Option<Arc<dyn Fn(crate::session::Peer) + Send + Sync>>,
}

impl CallHandler {
    /// Serves `service`.
    pub fn new(service: Arc<CallService>) -> Self {
        Self {
            service,
            on_session: None,
        }
    }

    /// Calls `hook` with each new connection's peer handle (to call connected clients back).
    pub fn on_session(
        mut self,
        hook: impl Fn(crate::session::Peer) + Send + Sync + 'static,
    ) -> Self {
        self.on_session = Some(Arc::new(hook));
        self
    }
}

#[async_trait]
impl ProtocolHandler for CallHandler {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(ALPN)]
    }

    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let peer = Session::start(conn, self.service.clone(), auth);
        if let Some(hook) = &self.on_session {
            hook(peer.clone());
        }
        peer.closed().await;
        Ok(())
    }
}

/// Access rules: re-exported for convenience.
pub type AccessRules = Access;
