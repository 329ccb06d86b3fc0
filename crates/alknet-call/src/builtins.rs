//! The built-in operations every call service serves: `services/list`, `services/schema`,
//! `pubsub/publish`, `pubsub/publish_batch` and `pubsub/subscribe`.
//!
//! Each captures what it needs when it is registered (the catalog of operations, the broker, the
//! queue depth) instead of reaching back into the service; topic rules are read from the
//! request's configuration snapshot ([`CallContext::config`]), the one its caller's identity was
//! resolved in.

use std::sync::{Arc, Weak};

use alknet_core::Identity;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::context::CallContext;
use crate::error::{CallError, ErrorCode};
use crate::pubsub::{may_publish, may_subscribe, Broker, PubSubPolicy, QueueLimits};
use crate::registry::{Handler, OperationRegistry, OperationSpec, OperationType, RegistryError};
use crate::topic::{validate_pattern, validate_topic};

/// What the built-ins need from the service they are part of.
pub(crate) struct Captured {
    /// The service's complete registry (the built-ins included). Weak, because the registry holds
    /// the built-ins: a strong reference would be a cycle that is never freed.
    pub(crate) catalog: Weak<OperationRegistry>,
    /// The service's broker.
    pub(crate) broker: Broker,
    /// What each pub/sub subscription may queue (the connection's budget is added per request).
    pub(crate) queue: QueueLimits,
}

fn object_schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// Adds the built-ins to `r`.
pub(crate) fn register(r: &mut OperationRegistry, with: Captured) -> Result<(), RegistryError> {
    let Captured {
        catalog,
        broker,
        queue,
    } = with;
    let list_catalog = catalog.clone();
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
        Handler::unary(move |ctx: CallContext, _| {
            let catalog = list_catalog.upgrade();
            async move {
                let catalog = catalog.ok_or_else(shutting_down)?;
                Ok(list_for(&catalog, ctx.identity.as_ref()))
            }
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
        Handler::unary(move |ctx: CallContext, input: Value| {
            let catalog = catalog.upgrade();
            async move {
                let catalog = catalog.ok_or_else(shutting_down)?;
                let name = input["name"].as_str().unwrap_or_default();
                schema_for(
                    &catalog,
                    ctx.identity.as_ref(),
                    name.trim_start_matches('/'),
                )
            }
        }),
    )?;
    let publish_broker = broker.clone();
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
        Handler::unary(move |ctx: CallContext, input: Value| {
            let broker = publish_broker.clone();
            async move {
                let delivered = publish_one(&broker, &ctx, &input)?;
                Ok(json!({ "delivered": delivered }))
            }
        }),
    )?;
    let batch_broker = broker.clone();
    r.register(
        OperationSpec::new(
            "pubsub/publish_batch",
            OperationType::Mutation,
            object_schema(
                json!({ "messages": {
                    "type": "array",
                    "maxItems": MAX_BATCH,
                    "items": object_schema(
                        json!({ "topic": { "type": "string" }, "data": true }),
                        &["topic"],
                    ),
                } }),
                &["messages"],
            ),
            object_schema(
                json!({ "results": { "type": "array" } }),
                &["results"],
            ),
        )
        .describe(
            "Publishes several messages in order; one result per message: `{ delivered }` or `{ error }`.",
        ),
        Handler::unary(move |ctx: CallContext, input: Value| {
            let broker = batch_broker.clone();
            async move {
                let empty = Vec::new();
                let messages = input["messages"].as_array().unwrap_or(&empty);
                // Each message on its own: a refused one is answered with its error and the
                // others are published all the same, in the order given.
                let results: Vec<Value> = messages
                    .iter()
                    .map(|m| match publish_one(&broker, &ctx, m) {
                        Ok(delivered) => json!({ "delivered": delivered }),
                        Err(e) => json!({ "error": e }),
                    })
                    .collect();
                Ok(json!({ "results": results }))
            }
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
        Handler::Feed(Arc::new(move |ctx: CallContext, input: Value| {
            let pattern = input["topic"].as_str().unwrap_or_default().to_string();
            let checked = validate_pattern(&pattern)
                .map_err(|e| CallError::new(ErrorCode::InvalidInput, e))
                .and_then(|()| {
                    if may_subscribe(&ctx.config().get::<PubSubPolicy>(), ctx.identity.as_ref()) {
                        Ok(())
                    } else {
                        Err(denied(ctx.identity.as_ref(), "subscribe"))
                    }
                });
            match checked {
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                Ok(()) => {
                    let limits = QueueLimits {
                        items: queue.items,
                        bytes: queue.bytes,
                        connection: ctx.subscription_bytes(),
                    };
                    let sub = broker.subscribe_live(&pattern, ctx.live_identity(), limits);
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
        })),
    )?;
    Ok(())
}

/// Messages one `pubsub/publish_batch` may carry; more is `INVALID_INPUT` for the whole batch.
pub(crate) const MAX_BATCH: usize = 1024;

/// One message `{ topic, data }` of `pubsub/publish` or `pubsub/publish_batch`: the topic
/// checked, the caller's right to publish to it checked, then queued for the subscribers;
/// returns how many it was queued for.
fn publish_one(broker: &Broker, ctx: &CallContext, message: &Value) -> Result<usize, CallError> {
    let topic = message["topic"].as_str().unwrap_or_default();
    validate_topic(topic).map_err(|e| CallError::new(ErrorCode::InvalidInput, e))?;
    let config = ctx.config();
    if !may_publish(&config.get::<PubSubPolicy>(), topic, ctx.identity.as_ref()) {
        return Err(denied(ctx.identity.as_ref(), "publish to this topic"));
    }
    // Delivered under the same snapshot: each subscriber's identity is resolved in it too.
    Ok(broker.publish(config, topic, &message["data"]))
}

fn shutting_down() -> CallError {
    CallError::new(ErrorCode::Unavailable, "the service is shutting down")
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

/// `NOT_FOUND` for `name` (unknown, internal, or not callable by this caller).
pub(crate) fn not_found(name: &str) -> CallError {
    CallError::new(ErrorCode::NotFound, format!("no operation /{name}"))
}

fn callable(op: &crate::registry::Operation, identity: Option<&Identity>) -> bool {
    op.spec.visibility == crate::registry::Visibility::External
        && op.spec.access.check(identity).is_ok()
}

/// `services/list` for `identity`: the external operations it may call.
pub(crate) fn list_for(catalog: &OperationRegistry, identity: Option<&Identity>) -> Value {
    let operations: Vec<Value> = catalog
        .iter()
        .filter(|op| callable(op, identity))
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

/// `services/schema` for `identity`: the contract of `name`, or `NOT_FOUND` if it may not call it.
pub(crate) fn schema_for(
    catalog: &OperationRegistry,
    identity: Option<&Identity>,
    name: &str,
) -> Result<Value, CallError> {
    match catalog.get(name) {
        Some(op) if callable(op, identity) => {
            Ok(serde_json::to_value(&op.spec).unwrap_or(Value::Null))
        }
        _ => Err(not_found(name)),
    }
}
