//! Operations: their contract (name, type, schemas, declared errors, access, visibility) and
//! their handlers. Schemas are compiled once, at registration.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::access::Access;
use crate::context::CallContext;
use crate::error::{CallError, ErrorCode};
use crate::pubsub::Queued;

/// What kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    /// Reads; one answer.
    Query,
    /// Changes; one answer.
    Mutation,
    /// Many answers, then completion.
    Subscription,
}

/// Who can see the operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Callable over the wire.
    #[default]
    External,
    /// Callable only by composition inside the node; `NOT_FOUND` on the wire.
    Internal,
}

/// An error code an operation declares it may fail with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDecl {
    /// The code, e.g. `DIVISION_BY_ZERO`.
    pub code: String,
    /// What it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the error's `details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// The contract of an operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationSpec {
    /// `namespace/op`, lowercase, slash separated.
    pub name: String,
    /// Query, mutation or subscription.
    #[serde(rename = "type")]
    pub kind: OperationType,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema 2020-12 of the input.
    pub input_schema: Value,
    /// JSON Schema 2020-12 of each output.
    pub output_schema: Value,
    /// Declared error codes.
    #[serde(default)]
    pub errors: Vec<ErrorDecl>,
    /// Who may call it.
    #[serde(default)]
    pub access: Access,
    /// External or internal.
    #[serde(default)]
    pub visibility: Visibility,
}

impl OperationSpec {
    /// A spec with open access, external visibility, no declared errors.
    pub fn new(name: &str, kind: OperationType, input_schema: Value, output_schema: Value) -> Self {
        Self {
            name: name.to_string(),
            kind,
            description: None,
            input_schema,
            output_schema,
            errors: Vec::new(),
            access: Access::default(),
            visibility: Visibility::External,
        }
    }

    /// With a description.
    pub fn describe(mut self, description: &str) -> Self {
        self.description = Some(description.to_string());
        self
    }

    /// With access rules.
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Declares an error code.
    pub fn error(mut self, code: &str, description: &str) -> Self {
        self.errors.push(ErrorDecl {
            code: code.to_string(),
            description: Some(description.to_string()),
            schema: None,
        });
        self
    }

    /// Makes it internal (composition only).
    pub fn internal(mut self) -> Self {
        self.visibility = Visibility::Internal;
        self
    }
}

/// A query or mutation handler.
pub type UnaryFn =
    Arc<dyn Fn(CallContext, Value) -> BoxFuture<'static, Result<Value, CallError>> + Send + Sync>;
/// A subscription handler: a stream of outputs; dropping it is cancellation.
pub type StreamFn =
    Arc<dyn Fn(CallContext, Value) -> BoxStream<'static, Result<Value, CallError>> + Send + Sync>;

/// A subscription handler whose items are pub/sub items queued by a
/// [`Broker`](crate::pubsub::Broker): already encoded, shared between subscribers, and written
/// without being encoded again.
pub type FeedFn =
    Arc<dyn Fn(CallContext, Value) -> BoxStream<'static, Result<Queued, CallError>> + Send + Sync>;

/// The code behind an operation.
#[derive(Clone)]
pub enum Handler {
    /// For queries and mutations.
    Unary(UnaryFn),
    /// For subscriptions.
    Stream(StreamFn),
    /// For subscriptions to a broker's topics (`pubsub/subscribe`).
    Feed(FeedFn),
}

impl Handler {
    /// A unary handler from an async function.
    pub fn unary<F, Fut>(f: F) -> Self
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, CallError>> + Send + 'static,
    {
        Handler::Unary(Arc::new(move |ctx, input| f(ctx, input).boxed()))
    }

    /// A subscription handler from a function returning a stream.
    pub fn stream<F, S>(f: F) -> Self
    where
        F: Fn(CallContext, Value) -> S + Send + Sync + 'static,
        S: futures::Stream<Item = Result<Value, CallError>> + Send + 'static,
    {
        Handler::Stream(Arc::new(move |ctx, input| f(ctx, input).boxed()))
    }
}

/// A registered operation with its compiled schemas.
pub struct Operation {
    /// The contract.
    pub spec: OperationSpec,
    /// `spec.name`, shared by the contexts of its requests.
    pub(crate) name: Arc<str>,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    /// The code.
    pub handler: Handler,
}

impl Operation {
    /// Validates an input; `INVALID_INPUT` lists each error's path and message in `details`.
    pub fn validate_input(&self, input: &Value) -> Result<(), CallError> {
        check(&self.input, input).map_err(|errors| {
            CallError::new(
                ErrorCode::InvalidInput,
                "input does not match the operation's schema",
            )
            .with_details(serde_json::json!({ "errors": errors }))
        })
    }

    /// Validates an output; the errors are for the log, never for the caller.
    pub fn validate_output(&self, output: &Value) -> Result<(), Vec<Value>> {
        check(&self.output, output)
    }

    /// Whether a handler failure with `code` may reach the caller as is.
    pub fn may_fail_with(&self, code: &str) -> bool {
        self.spec.errors.iter().any(|e| e.code == code)
            || ErrorCode::parse(code).is_some_and(|c| c != ErrorCode::Internal)
    }

    /// A handler failure as the caller may see it: declared or standard codes pass, others become
    /// `INTERNAL` (logged, details withheld).
    pub fn vet_error(&self, error: CallError) -> CallError {
        if self.may_fail_with(&error.code) {
            error
        } else if error.code == ErrorCode::Internal.as_str() {
            // The handler chose INTERNAL itself (and reported why); only its details are withheld.
            CallError::internal()
        } else {
            tracing::warn!(target: "alknet::call", operation = %self.spec.name, code = %alknet_core::log_text::escaped(&error.code), "handler failed with an undeclared error; answering INTERNAL");
            CallError::internal()
        }
    }

    /// Checks a handler output against the output schema when `validate` is on (the service's
    /// [`validate_output`](crate::CallOptions::validate_output)); a mismatch is `INTERNAL`, and
    /// logged by path only.
    pub fn vet_output(&self, output: &Value, validate: bool) -> Result<(), CallError> {
        if !validate {
            return Ok(());
        }
        self.validate_output(output).map_err(|errors| {
            // Paths only: the validator's messages quote the output, and payloads are never logged.
            let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
            tracing::error!(target: "alknet::call", operation = %self.spec.name, paths = ?paths, "handler output does not match its schema; answering INTERNAL");
            CallError::internal()
        })
    }
}

fn check(validator: &jsonschema::Validator, value: &Value) -> Result<(), Vec<Value>> {
    // The yes/no answer is much cheaper than collecting errors; those are for the invalid case.
    if validator.is_valid(value) {
        return Ok(());
    }
    let errors: Vec<Value> = validator
        .iter_errors(value)
        .take(16)
        .map(|e| serde_json::json!({ "path": e.instance_path().to_string(), "message": e.to_string() }))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// An operation that could not be registered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The name is not `namespace/op` in lowercase.
    #[error("operation name {0:?} must be lowercase `namespace/op` segments (a-z, 0-9, -, _)")]
    InvalidName(String),
    /// The name is taken.
    #[error("operation {0:?} is already registered")]
    Duplicate(String),
    /// A schema does not compile.
    #[error("operation {name:?}: {which} schema is invalid: {reason}")]
    InvalidSchema {
        /// The operation.
        name: String,
        /// `input` or `output`.
        which: &'static str,
        /// The compiler's message.
        reason: String,
    },
    /// A subscription needs a stream handler and vice versa.
    #[error(
        "operation {0:?}: a subscription needs a stream handler, a query or mutation a unary one"
    )]
    HandlerMismatch(String),
    /// The access rule is inconsistent.
    #[error("operation {name:?}: {reason}")]
    InvalidAccess {
        /// The operation.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

fn valid_name(name: &str) -> bool {
    let segments: Vec<&str> = name.split('/').collect();
    segments.len() >= 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

fn compile(
    name: &str,
    which: &'static str,
    schema: &Value,
) -> Result<jsonschema::Validator, RegistryError> {
    jsonschema::draft202012::new(schema).map_err(|e| RegistryError::InvalidSchema {
        name: name.to_string(),
        which,
        reason: e.to_string(),
    })
}

/// The operations a node serves.
#[derive(Default)]
pub struct OperationRegistry {
    operations: BTreeMap<String, Arc<Operation>>,
}

impl OperationRegistry {
    /// An empty registry (the built-ins are added by the service).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operation, compiling its schemas.
    pub fn register(&mut self, spec: OperationSpec, handler: Handler) -> Result<(), RegistryError> {
        if !valid_name(&spec.name) {
            return Err(RegistryError::InvalidName(spec.name));
        }
        if self.operations.contains_key(&spec.name) {
            return Err(RegistryError::Duplicate(spec.name));
        }
        let streams = spec.kind == OperationType::Subscription;
        if streams == matches!(handler, Handler::Unary(_)) {
            return Err(RegistryError::HandlerMismatch(spec.name));
        }
        spec.access
            .validate()
            .map_err(|reason| RegistryError::InvalidAccess {
                name: spec.name.clone(),
                reason,
            })?;
        let input = compile(&spec.name, "input", &spec.input_schema)?;
        let output = compile(&spec.name, "output", &spec.output_schema)?;
        self.operations.insert(
            spec.name.clone(),
            Arc::new(Operation {
                name: spec.name.as_str().into(),
                spec,
                input,
                output,
                handler,
            }),
        );
        Ok(())
    }

    /// Registers a query.
    pub fn query<F, Fut>(
        &mut self,
        name: &str,
        input: Value,
        output: Value,
        f: F,
    ) -> Result<(), RegistryError>
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, CallError>> + Send + 'static,
    {
        self.register(
            OperationSpec::new(name, OperationType::Query, input, output),
            Handler::unary(f),
        )
    }

    /// Registers a mutation.
    pub fn mutation<F, Fut>(
        &mut self,
        name: &str,
        input: Value,
        output: Value,
        f: F,
    ) -> Result<(), RegistryError>
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, CallError>> + Send + 'static,
    {
        self.register(
            OperationSpec::new(name, OperationType::Mutation, input, output),
            Handler::unary(f),
        )
    }

    /// Registers a subscription.
    pub fn subscription<F, S>(
        &mut self,
        name: &str,
        input: Value,
        output: Value,
        f: F,
    ) -> Result<(), RegistryError>
    where
        F: Fn(CallContext, Value) -> S + Send + Sync + 'static,
        S: futures::Stream<Item = Result<Value, CallError>> + Send + 'static,
    {
        self.register(
            OperationSpec::new(name, OperationType::Subscription, input, output),
            Handler::stream(f),
        )
    }

    /// The operation called `name`, whatever its visibility.
    pub fn get(&self, name: &str) -> Option<&Arc<Operation>> {
        self.operations.get(name)
    }

    /// All operations, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Operation>> {
        self.operations.values()
    }

    /// Whether it holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.operations.contains_key(name)
    }

    /// Moves every operation of `other` into this registry.
    pub fn merge(&mut self, other: OperationRegistry) -> Result<(), RegistryError> {
        for (name, op) in other.operations {
            if self.operations.contains_key(&name) {
                return Err(RegistryError::Duplicate(name));
            }
            self.operations.insert(name, op);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn noop() -> Handler {
        Handler::unary(|_, _| async { Ok(Value::Null) })
    }

    #[test]
    fn names_must_be_lowercase_namespaced() {
        let mut r = OperationRegistry::new();
        for bad in ["add", "Math/add", "math//add", "/math/add", "math/add/"] {
            let spec = OperationSpec::new(bad, OperationType::Query, json!({}), json!({}));
            assert_eq!(
                r.register(spec, noop()),
                Err(RegistryError::InvalidName(bad.into()))
            );
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut r = OperationRegistry::new();
        r.query("a/b", json!({}), json!({}), |_, _| async {
            Ok(Value::Null)
        })
        .unwrap();
        let err = r.query("a/b", json!({}), json!({}), |_, _| async {
            Ok(Value::Null)
        });
        assert_eq!(err, Err(RegistryError::Duplicate("a/b".into())));
    }

    #[test]
    fn invalid_schema_is_refused_at_registration() {
        let mut r = OperationRegistry::new();
        let err = r
            .query("a/b", json!({"type": 12}), json!({}), |_, _| async {
                Ok(Value::Null)
            })
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidSchema { which: "input", .. }),
            "{err}"
        );
    }

    #[test]
    fn subscription_needs_a_stream_handler() {
        let mut r = OperationRegistry::new();
        let spec = OperationSpec::new("a/s", OperationType::Subscription, json!({}), json!({}));
        assert!(matches!(
            r.register(spec, noop()),
            Err(RegistryError::HandlerMismatch(_))
        ));
    }

    #[test]
    fn input_errors_carry_path_and_message() {
        let mut r = OperationRegistry::new();
        r.query(
            "m/add",
            json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}),
            json!({"type": "number"}),
            |_, _| async { Ok(json!(1)) },
        )
        .unwrap();
        let op = r.get("m/add").unwrap();
        assert!(op.validate_input(&json!({"a": 1})).is_ok());
        let err = op.validate_input(&json!({"a": "x"})).unwrap_err();
        assert!(err.is(ErrorCode::InvalidInput));
        assert_eq!(err.details.unwrap()["errors"][0]["path"], "/a");
    }
}
