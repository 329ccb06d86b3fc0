//! Per-request options as JavaScript sends them, and the cancellation of requests by an id
//! JavaScript chose (an `AbortSignal` on the TypeScript side).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use alknet_call::RequestOptions;
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
#[derive(Default)]
pub(crate) struct Cancels {
    tokens: Mutex<HashMap<i64, CancellationToken>>,
}

/// A request's options and the id it can be cancelled by; the id is withdrawn when dropped.
pub(crate) struct Request<'a> {
    pub options: RequestOptions,
    cancels: &'a Cancels,
    cancel_id: Option<i64>,
}

impl Drop for Request<'_> {
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
    ) -> napi::Result<Request<'_>> {
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
            cancels: self,
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
