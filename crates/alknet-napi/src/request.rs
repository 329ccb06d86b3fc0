//! Per-request options as JavaScript sends them, and the cancellation of requests by an id
//! JavaScript chose (an `AbortSignal` on the TypeScript side).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::{CallError, RawOutput, RequestOptions};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::errors::parse_json;

/// Per-request options (JSON): `{ timeoutMs?, cancelId?, token? }`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OptionsJson {
    timeout_ms: Option<u64>,
    cancel_id: Option<i64>,
    token: Option<String>,
}

/// Cancellation tokens of in-flight requests, by the id JavaScript chose.
#[derive(Clone, Default)]
pub(crate) struct Cancels {
    tokens: Arc<Mutex<HashMap<i64, CancellationToken>>>,
}

/// A request's options and the id it can be cancelled by; the id is withdrawn when dropped.
pub(crate) struct Request {
    pub options: RequestOptions,
    cancels: Cancels,
    cancel_id: Option<i64>,
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(id) = self.cancel_id {
            self.cancels.remove(id);
        }
    }
}

impl Cancels {
    /// Parses `json` into options whose cancel token is a child of `parent`, registered under the
    /// `cancelId` it names; `token` is used when the request names none.
    pub fn request(
        &self,
        json: Option<&str>,
        parent: &CancellationToken,
        token: Option<&str>,
    ) -> napi::Result<Request> {
        let parsed: OptionsJson = match json {
            Some(j) if !j.is_empty() => parse_json(j, "options")?,
            _ => OptionsJson::default(),
        };
        let cancel = parent.child_token();
        if let (Some(id), Ok(mut tokens)) = (parsed.cancel_id, self.tokens.lock()) {
            tokens.insert(id, cancel.clone());
        }
        Ok(Request {
            options: RequestOptions {
                auth_token: parsed.token.or_else(|| token.map(str::to_string)),
                timeout: parsed.timeout_ms.map(Duration::from_millis),
                cancel: Some(cancel),
            },
            cancels: self.clone(),
            cancel_id: parsed.cancel_id,
        })
    }

    fn remove(&self, id: i64) -> Option<CancellationToken> {
        self.tokens.lock().ok().and_then(|mut t| t.remove(&id))
    }

    /// Cancels the request registered under `id`, if it is still in flight.
    pub fn cancel(&self, id: i64) {
        if let Some(token) = self.remove(id) {
            token.cancel();
        }
    }
}

/// Finished calls waiting for JavaScript. The first one into an empty queue wakes JavaScript
/// (weakly: it never keeps the event loop alive), which takes everything waiting as one JSON
/// array with [`CompletionQueue::take`]: calls that finish together cost one wake-up, one
/// crossing and one `JSON.parse`, and no call creates a promise or a threadsafe function of its
/// own on the native side. One queue serves every call of a peer (across reconnects) or host.
#[napi]
pub struct CompletionQueue {
    pub(crate) inner: Arc<Completions>,
}

/// The queue's shared state (see [`CompletionQueue`]).
pub(crate) struct Completions {
    wake: Wake,
    /// `[callId, ok, json]` entries, comma-separated, without the brackets; `json` is the
    /// output, or the `CallError` when `ok` is false.
    waiting: Mutex<String>,
}

/// Called with no arguments when completions wait; weak.
pub type Wake = ThreadsafeFunction<(), (), (), Status, false, true>;

impl Completions {
    /// Queues a call's outcome; `json` is valid JSON text.
    fn push(&self, call_id: i64, ok: bool, json: &str) {
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        let first = waiting.is_empty();
        if !first {
            waiting.push(',');
        }
        let _ = write!(waiting, "[{call_id},{ok},");
        waiting.push_str(json);
        waiting.push(']');
        drop(waiting);
        if first {
            self.wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

#[napi]
impl CompletionQueue {
    /// A queue that calls `wake` when finished calls wait to be taken.
    #[napi(constructor, ts_args_type = "wake: () => void")]
    pub fn new(wake: Wake) -> Self {
        Self {
            inner: Arc::new(Completions {
                wake,
                waiting: Mutex::default(),
            }),
        }
    }

    /// The finished calls waiting, as one JSON array of `[callId, ok, outputOrError]` (`[]` when
    /// none); the queue is emptied.
    #[napi]
    pub fn take(&self) -> String {
        take_array(&self.inner.waiting)
    }
}

/// The comma-separated JSON elements in `buffer` as one JSON array (`[]` when none); the buffer
/// is emptied (and shrunk after a burst).
pub(crate) fn take_array(buffer: &Mutex<String>) -> String {
    let Ok(mut waiting) = buffer.lock() else {
        return "[]".into();
    };
    let mut out = String::with_capacity(waiting.len() + 2);
    out.push('[');
    out.push_str(&waiting);
    out.push(']');
    waiting.clear();
    if waiting.capacity() > 1 << 20 {
        waiting.shrink_to(4096);
    }
    out
}

/// Runs `call` on the runtime and queues its outcome (the output's JSON text, or the error) on
/// `completions` under `call_id`.
pub(crate) fn complete(
    completions: &Arc<Completions>,
    call_id: i64,
    request: Request,
    call: impl Future<Output = Result<RawOutput, CallError>> + Send + 'static,
) {
    let completions = completions.clone();
    napi::bindgen_prelude::spawn(async move {
        let outcome = call.await;
        drop(request);
        match outcome {
            Ok(output) => completions.push(call_id, true, &output.json()),
            Err(e) => {
                let json = serde_json::to_string(&e).unwrap_or_else(|_| "null".into());
                completions.push(call_id, false, &json);
            }
        }
    });
}
