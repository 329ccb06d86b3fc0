//! Operations answered by JavaScript.
//!
//! Every request gets a numeric id and is announced to JavaScript as an event
//! `[event, id, operation, input, identityJson]` (`input` as JSON, `identityJson` as a string).
//! Events wait in one buffer; the first event into an empty buffer wakes JavaScript through the
//! node's one ThreadsafeFunction, and JavaScript takes everything waiting as one JSON array
//! ([`Bridge::take_events`]): requests that arrive together cost one wake-up and one parse.
//!
//! | event | meaning | JavaScript answers |
//! |---|---|---|
//! | `call` | run a query or mutation | `resolve(id, outputJson)` or `reject(id, errorJson)` |
//! | `subscribe` | start a subscription; produce up to [`INITIAL_CREDIT`] items | `push(id, itemsJsonArray)`, then `end(id)` or `reject(id, errorJson)` |
//! | `credit` | the subscriber took items: `input` is how many more may be pushed | more `push`es |
//! | `cancel` | the request is gone (caller abort, deadline, connection closed) | nothing; abort `ctx.signal` |
//!
//! Answers may also cross together: [`Bridge::answer_many`] takes a JSON array of
//! `[kind, id, payload]` (kinds in [`Answer`]), so a tick's answers cost one call.
//!
//! A subscription's items cross in batches (a JSON array per `push`), and JavaScript runs ahead
//! of its subscriber by at most the credit it holds, so a generator runs only as fast as its
//! subscriber reads and the items waiting in between stay bounded. The Rust side waits on a
//! channel keyed by the id; when its future or stream is dropped before JavaScript answered, the
//! [`Pending`] guard sends `cancel`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use alknet_call::{CallContext, CallError, ErrorCode, Handler};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The node's dispatcher, called with no arguments when events wait to be taken; weak, so it
/// never keeps the event loop alive by itself.
pub type Dispatch = ThreadsafeFunction<(), (), (), Status, false, true>;

/// The kinds of [`Bridge::answer_many`]'s entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "u8")]
pub enum Answer {
    /// `[0, id, output]`: answers a `call`.
    Resolve,
    /// `[1, id, { code, message, retryable?, details? }]`: fails a call or subscription.
    Reject,
    /// `[2, id, [items…]]`: items of a subscription.
    Push,
    /// `[3, id, null]`: ends a subscription.
    End,
}

impl TryFrom<u8> for Answer {
    type Error = String;

    fn try_from(kind: u8) -> Result<Self, String> {
        Ok(match kind {
            0 => Self::Resolve,
            1 => Self::Reject,
            2 => Self::Push,
            3 => Self::End,
            other => return Err(format!("unknown answer kind {other}")),
        })
    }
}

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
    /// Events not yet taken by JavaScript: array elements, comma-separated, without brackets.
    events: Mutex<String>,
    /// Set once JavaScript could not be woken: nothing more is queued.
    closed: AtomicBool,
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
            self.bridge.send("cancel", self.id, "", "null", "null");
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
fn error_from(value: Value) -> CallError {
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

/// Appends `value` to `out` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    match serde_json::to_string(value) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn unknown(id: i64) -> napi::Error {
    Refused::NotOpen(id).into()
}

/// Why an answer was not taken.
enum Refused {
    /// The request is no longer open: answered already, or cancelled meanwhile (a race, not a
    /// fault of the handler).
    NotOpen(i64),
    /// The answer does not fit the request: the wrong kind, or items beyond the credit.
    Misuse(String),
}

impl From<Refused> for napi::Error {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NotOpen(id) => napi::Error::from_reason(format!(
                "request {id} is not open (already answered, or cancelled by the caller)"
            )),
            Refused::Misuse(why) => napi::Error::from_reason(why),
        }
    }
}

impl Bridge {
    /// A bridge announcing requests through `dispatch`.
    pub fn new(dispatch: Dispatch) -> Arc<Self> {
        Arc::new(Self {
            dispatch,
            events: Mutex::default(),
            closed: AtomicBool::new(false),
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

    /// Queues an event (`input` and `identity` are JSON texts) and wakes JavaScript when it is
    /// the first one waiting; `false` if JavaScript can no longer be woken (the node is closing).
    fn send(&self, event: &str, id: i64, operation: &str, input: &str, identity: &str) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut events) = self.events.lock() else {
            return false;
        };
        let first = events.is_empty();
        if !first {
            events.push(',');
        }
        events.push_str("[\"");
        events.push_str(event);
        events.push_str("\",");
        let _ = write!(events, "{id},");
        push_json_string(&mut events, operation);
        events.push(',');
        events.push_str(input);
        events.push(',');
        push_json_string(&mut events, identity);
        events.push(']');
        if !first {
            return true;
        }
        let status = self
            .dispatch
            .call((), ThreadsafeFunctionCallMode::NonBlocking);
        if status == Status::Ok {
            return true;
        }
        // Nobody will take what waits: drop it and refuse what follows.
        events.clear();
        self.closed.store(true, Ordering::Release);
        tracing::debug!(target: "alknet::napi", ?status, "dispatcher unavailable");
        false
    }

    /// The events waiting, as one JSON array (`[]` when none), and the buffer emptied.
    pub fn take_events(&self) -> String {
        crate::request::take_array(&self.events)
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
        if !self.send(event, id, &ctx.operation, &input.to_string(), &identity) {
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
                            pending.bridge.send("credit", pending.id, "", &step, "null");
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
        Ok(self.answer(id, Answer::Resolve, parse_answer(output_json))?)
    }

    /// JavaScript's failure of a call or subscription.
    pub fn reject(&self, id: i64, error_json: &str) -> napi::Result<()> {
        let error = serde_json::from_str(error_json).unwrap_or(Value::Null);
        Ok(self.answer(id, Answer::Reject, Ok(error))?)
    }

    /// Items of a subscription (a JSON array), within the credit granted: more items than
    /// the credit left are refused whole (an error, nothing is delivered).
    pub fn push(&self, id: i64, items_json: &str) -> napi::Result<()> {
        let items = serde_json::from_str(items_json).map_err(|_| CallError::internal());
        Ok(self.answer(id, Answer::Push, items)?)
    }

    /// The end of a subscription.
    pub fn end(&self, id: i64) -> napi::Result<()> {
        Ok(self.answer(id, Answer::End, Ok(Value::Null))?)
    }

    /// A batch of answers, `[[kind, id, payload], …]` (see [`Answer`]), each delivered as the
    /// single-answer calls would. Answers to requests no longer open (cancelled meanwhile) are
    /// dropped; any other refusal (e.g. items beyond the credit) is the error returned, after
    /// the rest of the batch was delivered.
    pub fn answer_many(&self, answers_json: &str) -> napi::Result<()> {
        let answers: Vec<(Answer, i64, Value)> =
            serde_json::from_str(answers_json).map_err(|e| {
                napi::Error::from_reason(format!(
                    "answers are not [kind, id, payload] entries: {e}"
                ))
            })?;
        let mut misuse = None;
        for (kind, id, payload) in answers {
            if let Err(Refused::Misuse(why)) = self.answer(id, kind, Ok(payload)) {
                misuse.get_or_insert(why);
            }
        }
        match misuse {
            Some(why) => Err(napi::Error::from_reason(why)),
            None => Ok(()),
        }
    }

    /// Delivers one answer to request `id`'s waiter; `payload` is `Err` when JavaScript's JSON was
    /// unreadable (the caller sees INTERNAL).
    fn answer(
        &self,
        id: i64,
        kind: Answer,
        payload: Result<Value, CallError>,
    ) -> Result<(), Refused> {
        if kind == Answer::Push {
            return self.push_items(id, payload);
        }
        let waiter = self.take(id).ok_or(Refused::NotOpen(id))?;
        match (kind, waiter) {
            (Answer::Resolve, Waiter::Unary(tx)) => {
                let _ = tx.send(payload);
            }
            (Answer::Resolve, Waiter::Stream(tx, _)) => {
                let _ = tx.send(Pulled::Failed(CallError::internal()));
                return Err(Refused::Misuse(format!(
                    "request {id} is a subscription; use push/end"
                )));
            }
            (Answer::Reject, waiter) => {
                let error = payload.map_or_else(|e| e, error_from);
                match waiter {
                    Waiter::Unary(tx) => {
                        let _ = tx.send(Err(error));
                    }
                    Waiter::Stream(tx, _) => {
                        let _ = tx.send(Pulled::Failed(error));
                    }
                }
            }
            (_, Waiter::Stream(tx, _)) => {
                let _ = tx.send(Pulled::End);
            }
            (_, Waiter::Unary(tx)) => {
                let _ = tx.send(Ok(Value::Null));
            }
        }
        Ok(())
    }

    fn push_items(&self, id: i64, items: Result<Value, CallError>) -> Result<(), Refused> {
        let waiters = self.waiters.lock().map_err(|_| Refused::NotOpen(id))?;
        match waiters.get(&id).map(|open| &open.waiter) {
            Some(Waiter::Stream(tx, credit)) => {
                match items {
                    Ok(Value::Array(items)) => {
                        let n = items.len();
                        if let Err(left) =
                            credit.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                c.checked_sub(n)
                            })
                        {
                            return Err(Refused::Misuse(format!(
                                "request {id}: {n} items pushed with a credit of {left}; wait for a `credit` event"
                            )));
                        }
                        for item in items {
                            let _ = tx.send(Pulled::Item(item));
                        }
                    }
                    _ => {
                        tracing::error!(target: "alknet::napi", "handler pushed items that are not a JSON array; answering INTERNAL");
                        let _ = tx.send(Pulled::Failed(CallError::internal()));
                    }
                }
                Ok(())
            }
            Some(Waiter::Unary(_)) => Err(Refused::Misuse(format!(
                "request {id} is a query or mutation; use resolve/reject"
            ))),
            None => Err(Refused::NotOpen(id)),
        }
    }

    /// Fails every open request (the node is closing) and tells JavaScript to stop them.
    pub fn close(&self) {
        let open: Vec<i64> = match self.waiters.lock() {
            Ok(mut waiters) => waiters.drain().map(|(id, _)| id).collect(),
            Err(_) => Vec::new(),
        };
        for id in open {
            self.send("cancel", id, "", "null", "null");
        }
    }
}
