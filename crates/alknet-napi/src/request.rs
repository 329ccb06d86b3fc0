//! Per-request options as JavaScript sends them, and the cancellation of requests by an id
//! JavaScript chose (an `AbortSignal` on the TypeScript side).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::{CallError, RequestOptions};
use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use serde::Deserialize;
use serde_json::Value;
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

/// How a finished call reaches JavaScript: `(callId, ok, json)`, where `json` is the output, or
/// the `CallError` when `ok` is false. One listener serves every call of a peer or host, so
/// completions that finish together are delivered in one wake-up of the event loop, and no
/// call creates a promise or a threadsafe function of its own on the native side.
pub type Completion = (i64, bool, String);

/// The completion listener; weak, so it never keeps the event loop alive.
pub type Completer =
    ThreadsafeFunction<FnArgs<Completion>, (), FnArgs<Completion>, Status, false, true>;

/// Runs `call` on the runtime and delivers its outcome to `completer` under `call_id`.
pub(crate) fn complete(
    completer: &Arc<Completer>,
    call_id: i64,
    request: Request,
    call: impl Future<Output = Result<Value, CallError>> + Send + 'static,
) {
    let completer = completer.clone();
    napi::bindgen_prelude::spawn(async move {
        let outcome = call.await;
        drop(request);
        let completion = match outcome {
            Ok(v) => (call_id, true, v.to_string()),
            Err(e) => (
                call_id,
                false,
                serde_json::to_string(&e).unwrap_or_default(),
            ),
        };
        completer.call(completion.into(), ThreadsafeFunctionCallMode::NonBlocking);
    });
}
