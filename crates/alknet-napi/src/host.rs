//! [`Host`]: the JavaScript side's operations, as a node serves them (`serve`) or as a connecting
//! peer offers them to the node it dials (`connect` with operations, for calls back).
//!
//! JavaScript answers the [`Bridge`]'s events through it, and a handler calls other operations
//! on behalf of its request: of this node ([`Host::call_local`]) or of the peer at the other
//! end of the request's connection ([`Host::call_peer`], [`Host::subscribe_peer`]). Those child
//! requests are cancelled with their parent.

use std::sync::Arc;

use alknet_call::{
    CallError, ErrorCode, OperationRegistry, OperationSpec, OperationType, Peer, RawOutput,
};
use napi_derive::napi;
use serde_json::Value;

use crate::bridge::{Bridge, Dispatch};
use crate::errors::{call_error, parse_json, plain};
use crate::request::{complete, Cancels, CompletionQueue, Completions};
use crate::subscription::{self, Listener, Subscription};

/// Operations answered by JavaScript, and the calls their handlers make.
#[napi]
pub struct Host {
    pub(crate) bridge: Arc<Bridge>,
    cancels: Cancels,
    completions: Arc<Completions>,
}

impl Host {
    /// A registry of `operations_json` (a JSON array of operation specs) answered through this host.
    pub(crate) fn registry(&self, operations_json: &str) -> napi::Result<OperationRegistry> {
        let specs: Vec<OperationSpec> = parse_json(operations_json, "operations")?;
        let mut registry = OperationRegistry::new();
        for spec in specs {
            let handler = match spec.kind {
                OperationType::Subscription => self.bridge.stream(),
                OperationType::Query | OperationType::Mutation => self.bridge.unary(),
            };
            registry.register(spec, handler).map_err(plain)?;
        }
        Ok(registry)
    }

    fn caller(&self, request_id: i64) -> napi::Result<(alknet_call::CallContext, Peer)> {
        let ctx = self.bridge.context(request_id)?;
        let peer = ctx.peer().cloned().ok_or_else(|| {
            call_error(CallError::new(
                ErrorCode::Unavailable,
                "this request did not arrive over a connection; there is no peer to call back",
            ))
        })?;
        Ok((ctx, peer))
    }
}

#[napi]
impl Host {
    /// A host announcing requests through `wake` (called when events wait for
    /// [`Host::take_events`]; see [`crate::bridge`] for the events); the calls its handlers make
    /// finish through `completions`.
    #[napi(
        constructor,
        ts_args_type = "wake: () => void, completions: CompletionQueue"
    )]
    pub fn new(dispatch: Dispatch, completions: &CompletionQueue) -> Self {
        Self {
            bridge: Bridge::new(dispatch),
            cancels: Cancels::default(),
            completions: completions.inner.clone(),
        }
    }

    /// The events waiting, as one JSON array of `[event, requestId, operation, input,
    /// identityJson]` (see [`crate::bridge`]); `[]` when none.
    #[napi]
    pub fn take_events(&self) -> String {
        self.bridge.take_events()
    }

    /// Several answers in one call: a JSON array of `[kind, requestId, payload]`, kind 0 resolve
    /// (payload: the output), 1 reject (the error), 2 push (the items), 3 end (null). Answers to
    /// requests no longer open are dropped.
    #[napi]
    pub fn answer_many(&self, answers_json: String) -> napi::Result<()> {
        self.bridge.answer_many(&answers_json)
    }

    /// Answers a `call` event.
    #[napi]
    pub fn resolve(&self, request_id: i64, output_json: String) -> napi::Result<()> {
        self.bridge.resolve(request_id, &output_json)
    }

    /// Fails a `call` or subscription with `{ code, message, details? }` (JSON).
    #[napi]
    pub fn reject(&self, request_id: i64, error_json: String) -> napi::Result<()> {
        self.bridge.reject(request_id, &error_json)
    }

    /// Items of a subscription, as a JSON array, within the credit granted (`INITIAL_CREDIT`
    /// at `subscribe`, topped up by `credit` events).
    #[napi]
    pub fn push(&self, request_id: i64, items_json: String) -> napi::Result<()> {
        self.bridge.push(request_id, &items_json)
    }

    /// Ends a subscription (after its last `push`).
    #[napi]
    pub fn end(&self, request_id: i64) -> napi::Result<()> {
        self.bridge.end(request_id)
    }

    /// Calls `operation` of this node (internal ones too) on behalf of request `requestId`, as its
    /// caller's identity; the outcome reaches the completion queue under `callId`.
    #[napi]
    pub fn call_local(
        &self,
        call_id: i64,
        request_id: i64,
        operation: String,
        input_json: String,
    ) -> napi::Result<()> {
        let ctx = self.bridge.context(request_id)?;
        let input: Value = parse_json(&input_json, "input")?;
        let request = self.cancels.request(None, ctx.token(), None)?;
        complete(&self.completions, call_id, request, async move {
            ctx.call(&operation, input).await.map(RawOutput::from)
        });
        Ok(())
    }

    /// Calls `operation` on the peer at the other end of request `requestId`'s connection; the
    /// outcome reaches the completion queue under `callId`. Options as for `Peer.call`; the call is
    /// cancelled with its parent request.
    #[napi]
    pub fn call_peer(
        &self,
        call_id: i64,
        request_id: i64,
        operation: String,
        input_json: String,
        options_json: Option<String>,
    ) -> napi::Result<()> {
        let (ctx, peer) = self.caller(request_id)?;
        let input: Value = parse_json(&input_json, "input")?;
        let request = self
            .cancels
            .request(options_json.as_deref(), ctx.token(), None)?;
        let options = request.options.clone();
        complete(&self.completions, call_id, request, async move {
            peer.call_raw_with(&operation, input, options).await
        });
        Ok(())
    }

    /// Subscribes to `operation` on the peer at the other end of request `requestId`'s
    /// connection; delivered as for `Peer.subscribe`, cancelled with its parent request.
    #[napi(
        ts_args_type = "requestId: number, operation: string, inputJson: string, optionsJson: string | undefined | null, listener: (event: string, json: string) => void"
    )]
    pub fn subscribe_peer(
        &self,
        request_id: i64,
        operation: String,
        input_json: String,
        options_json: Option<String>,
        listener: Listener,
    ) -> napi::Result<Subscription> {
        let (ctx, peer) = self.caller(request_id)?;
        let input: Value = parse_json(&input_json, "input")?;
        let request = self
            .cancels
            .request(options_json.as_deref(), ctx.token(), None)?;
        let options = request.options.clone();
        Ok(subscription::spawn(
            peer, operation, input, options, listener,
        ))
    }

    /// Cancels a `callPeer` started with `{ cancelId }`; it rejects with `CANCELLED`.
    #[napi]
    pub fn cancel(&self, cancel_id: i64) {
        self.cancels.cancel(cancel_id);
    }
}
