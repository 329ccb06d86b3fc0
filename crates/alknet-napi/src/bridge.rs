//! Operations answered by JavaScript.
//!
//! Every request gets a numeric id and is announced to JavaScript through the node's one
//! ThreadsafeFunction as `(event, id, operation, inputJson, identityJson)`:
//!
//! | event | meaning | JavaScript answers |
//! |---|---|---|
//! | `call` | run a query or mutation | `resolve(id, outputJson)` or `reject(id, errorJson)` |
//! | `subscribe` | start a subscription; produce up to [`INITIAL_CREDIT`] items | `push(id, itemsJsonArray)`, then `end(id)` or `reject(id, errorJson)` |
//! | `credit` | the subscriber took items: `inputJson` is how many more may be pushed | more `push`es |
//! | `cancel` | the request is gone (caller abort, deadline, connection closed) | nothing; abort `ctx.signal` |
//!
//! A subscription's items cross in batches (a JSON array per `push`), and JavaScript runs ahead
//! of its subscriber by at most the credit it holds, so a generator runs only as fast as its
//! subscriber reads and the items waiting in between stay bounded. The Rust side waits on a
//! channel keyed by the id; when its future or stream is dropped before JavaScript answered, the
//! [`Pending`] guard sends `cancel`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alknet_call::{CallContext, CallError, ErrorCode, Handler};
use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// What the dispatcher receives: `(event, requestId, operation, inputJson, identityJson)`.
pub type HandlerEvent = (String, i64, String, String, String);

/// The node's dispatcher: weak, so it never keeps the event loop alive by itself.
pub type Dispatch =
    ThreadsafeFunction<FnArgs<HandlerEvent>, (), FnArgs<HandlerEvent>, Status, false, true>;

/// Items a JavaScript subscription handler may push before the subscriber took any.
pub const INITIAL_CREDIT: usize = 128;

/// Items taken by the subscriber before the credit is topped up by that many.
const CREDIT_STEP: usize = 64;

/// One answer to a subscription's pull.
enum Pulled {
    Item(Value),
    End,
    Failed(CallError),
}

enum Waiter {
    Unary(oneshot::Sender<Result<Value, CallError>>),
    /// A subscription and the items JavaScript may still push (kept here, not trusted to it).
    Stream(mpsc::UnboundedSender<Pulled>, Arc<AtomicUsize>),
}

/// A request JavaScript is working on: where its answer goes, and its context (for calls the
/// handler makes on its behalf).
struct Open {
    waiter: Waiter,
    ctx: CallContext,
}

/// The requests JavaScript is working on, and the way to announce new ones.
pub struct Bridge {
    dispatch: Dispatch,
    waiters: Mutex<HashMap<i64, Open>>,
    next_id: AtomicI64,
}

/// Withdraws a request when its Rust side goes away; tells JavaScript if it was still running.
struct Pending {
    bridge: Arc<Bridge>,
    id: i64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.bridge.take(self.id).is_some() {
            self.bridge
                .send("cancel", self.id, "", String::new(), String::new());
        }
    }
}

/// JavaScript sent something that is not JSON: the handler is at fault, the caller sees INTERNAL.
fn parse_answer(json: &str) -> Result<Value, CallError> {
    serde_json::from_str(json).map_err(|e| {
        tracing::error!(target: "alknet::napi", error = %e, "handler answered with invalid JSON; answering INTERNAL");
        CallError::internal()
    })
}

/// A JavaScript failure `{ code, message, retryable?, details? }`; anything else is INTERNAL.
fn parse_error(json: &str) -> CallError {
    let value: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let Some(code) = value["code"].as_str() else {
        return CallError::internal();
    };
    let message = value["message"].as_str().unwrap_or_default();
    let mut error = match ErrorCode::parse(code) {
        Some(code) => CallError::new(code, message),
        None => CallError::custom(code, message),
    };
    if let Some(retryable) = value["retryable"].as_bool() {
        error.retryable = retryable;
    }
    if !value["details"].is_null() {
        error.details = Some(value["details"].clone());
    }
    error
}

fn unknown(id: i64) -> napi::Error {
    napi::Error::from_reason(format!(
        "request {id} is not open (already answered, or cancelled by the caller)"
    ))
}

impl Bridge {
    /// A bridge announcing requests through `dispatch`.
    pub fn new(dispatch: Dispatch) -> Arc<Self> {
        Arc::new(Self {
            dispatch,
            waiters: Mutex::default(),
            next_id: AtomicI64::new(1),
        })
    }

    fn take(&self, id: i64) -> Option<Waiter> {
        self.waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&id))
            .map(|open| open.waiter)
    }

    /// The context of open request `id`: a handler calls other operations through it.
    pub fn context(&self, id: i64) -> napi::Result<CallContext> {
        self.waiters
            .lock()
            .ok()
            .and_then(|w| w.get(&id).map(|open| open.ctx.clone()))
            .ok_or_else(|| unknown(id))
    }

    /// Announces an event to JavaScript; `false` if it could not be queued.
    fn send(&self, event: &str, id: i64, operation: &str, input: String, identity: String) -> bool {
        let status = self.dispatch.call(
            (
                event.to_string(),
                id,
                operation.to_string(),
                input,
                identity,
            )
                .into(),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
        if status != Status::Ok {
            tracing::debug!(target: "alknet::napi", %event, id, ?status, "dispatcher unavailable");
        }
        status == Status::Ok
    }

    /// How many requests JavaScript is working on (answers still awaited).
    pub fn open_requests(&self) -> usize {
        self.waiters.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Registers a waiter and announces the request; the guard withdraws it when dropped. When
    /// the announcement fails the waiter is withdrawn at once and fails with `UNAVAILABLE`.
    fn open(
        self: &Arc<Self>,
        waiter: Waiter,
        event: &str,
        ctx: &CallContext,
        input: &Value,
    ) -> Pending {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut waiters) = self.waiters.lock() {
            let ctx = ctx.clone();
            waiters.insert(id, Open { waiter, ctx });
        }
        let identity = serde_json::to_string(&ctx.identity).unwrap_or_else(|_| "null".into());
        if !self.send(event, id, &ctx.operation, input.to_string(), identity) {
            let unavailable = CallError::new(
                ErrorCode::Unavailable,
                "the JavaScript side is not taking requests (closing); retry on another node",
            );
            match self.take(id) {
                Some(Waiter::Unary(tx)) => {
                    let _ = tx.send(Err(unavailable));
                }
                Some(Waiter::Stream(tx, _)) => {
                    let _ = tx.send(Pulled::Failed(unavailable));
                }
                None => {}
            }
        }
        Pending {
            bridge: self.clone(),
            id,
        }
    }

    /// A query or mutation handler answered by JavaScript.
    pub fn unary(self: &Arc<Self>) -> Handler {
        let bridge = self.clone();
        Handler::unary(move |ctx: CallContext, input: Value| {
            let bridge = bridge.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                let _pending = bridge.open(Waiter::Unary(tx), "call", &ctx, &input);
                rx.await.unwrap_or_else(|_| {
                    Err(CallError::new(
                        ErrorCode::Unavailable,
                        "the node is closing; retry on another node",
                    ))
                })
            }
        })
    }

    /// A subscription handler whose items JavaScript pushes within the credit it was granted.
    pub fn stream(self: &Arc<Self>) -> Handler {
        let bridge = self.clone();
        Handler::stream(move |ctx: CallContext, input: Value| {
            let (tx, rx) = mpsc::unbounded_channel();
            let credit = Arc::new(AtomicUsize::new(INITIAL_CREDIT));
            let waiter = Waiter::Stream(tx, credit.clone());
            let pending = bridge.open(waiter, "subscribe", &ctx, &input);
            futures::stream::unfold(Some((pending, rx, 0usize, credit)), |state| async move {
                let (pending, mut rx, mut taken, credit) = state?;
                match rx.recv().await {
                    Some(Pulled::Item(v)) => {
                        taken += 1;
                        if taken == CREDIT_STEP {
                            // Granted here before JavaScript hears of it, so a push it makes
                            // with the new credit always finds it.
                            credit.fetch_add(CREDIT_STEP, Ordering::SeqCst);
                            let step = CREDIT_STEP.to_string();
                            pending
                                .bridge
                                .send("credit", pending.id, "", step, String::new());
                            taken = 0;
                        }
                        Some((Ok(v), Some((pending, rx, taken, credit))))
                    }
                    Some(Pulled::Failed(e)) => Some((Err(e), None)),
                    Some(Pulled::End) | None => None,
                }
            })
        })
    }

    /// JavaScript's answer to `call`.
    pub fn resolve(&self, id: i64, output_json: &str) -> napi::Result<()> {
        match self.take(id) {
            Some(Waiter::Unary(tx)) => {
                let _ = tx.send(parse_answer(output_json));
                Ok(())
            }
            Some(Waiter::Stream(tx, _)) => {
                let _ = tx.send(Pulled::Failed(CallError::internal()));
                Err(napi::Error::from_reason(format!(
                    "request {id} is a subscription; use push/end"
                )))
            }
            None => Err(unknown(id)),
        }
    }

    /// JavaScript's failure of a call or subscription.
    pub fn reject(&self, id: i64, error_json: &str) -> napi::Result<()> {
        let error = parse_error(error_json);
        match self.take(id) {
            Some(Waiter::Unary(tx)) => {
                let _ = tx.send(Err(error));
                Ok(())
            }
            Some(Waiter::Stream(tx, _)) => {
                let _ = tx.send(Pulled::Failed(error));
                Ok(())
            }
            None => Err(unknown(id)),
        }
    }

    /// Items of a subscription (a JSON array), within the credit granted: more items than
    /// the credit left are refused whole (an error, nothing is delivered).
    pub fn push(&self, id: i64, items_json: &str) -> napi::Result<()> {
        let waiters = self.waiters.lock().map_err(|_| unknown(id))?;
        match waiters.get(&id).map(|open| &open.waiter) {
            Some(Waiter::Stream(tx, credit)) => {
                match serde_json::from_str::<Vec<Value>>(items_json) {
                    Ok(items) => {
                        let n = items.len();
                        if let Err(left) =
                            credit.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                c.checked_sub(n)
                            })
                        {
                            return Err(napi::Error::from_reason(format!(
                                "request {id}: {n} items pushed with a credit of {left}; wait for a `credit` event"
                            )));
                        }
                        for item in items {
                            let _ = tx.send(Pulled::Item(item));
                        }
                    }
                    Err(e) => {
                        tracing::error!(target: "alknet::napi", error = %e, "handler pushed items that are not a JSON array; answering INTERNAL");
                        let _ = tx.send(Pulled::Failed(CallError::internal()));
                    }
                }
                Ok(())
            }
            Some(Waiter::Unary(_)) => Err(napi::Error::from_reason(format!(
                "request {id} is a query or mutation; use resolve/reject"
            ))),
            None => Err(unknown(id)),
        }
    }

    /// The end of a subscription.
    pub fn end(&self, id: i64) -> napi::Result<()> {
        match self.take(id) {
            Some(Waiter::Stream(tx, _)) => {
                let _ = tx.send(Pulled::End);
                Ok(())
            }
            Some(Waiter::Unary(tx)) => {
                let _ = tx.send(Ok(Value::Null));
                Ok(())
            }
            None => Err(unknown(id)),
        }
    }

    /// Fails every open request (the node is closing) and tells JavaScript to stop them.
    pub fn close(&self) {
        let open: Vec<i64> = match self.waiters.lock() {
            Ok(mut waiters) => waiters.drain().map(|(id, _)| id).collect(),
            Err(_) => Vec::new(),
        };
        for id in open {
            self.send("cancel", id, "", String::new(), String::new());
        }
    }
}
