//! `connect`: calls, subscriptions and pub/sub on a remote node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_call::{CallService, OperationRegistry, RequestOptions, ALPN};
use alknet_endpoint::{Client, DialOptions, TransportKind};
use futures::StreamExt;
use napi::bindgen_prelude::{FnArgs, PromiseRaw};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::errors::{call_error, parse_json, plain};
use crate::keypair::Keypair;

/// Where and how to dial.
#[napi(object)]
pub struct ConnectOptions {
    /// `host:port` of the node.
    pub address: String,
    /// The node's fingerprint (`ed25519:…` or `SHA256:…`), pinned exactly.
    pub fingerprint: String,
    /// A bearer token (peer token or `alk_…` API key) sent with every request.
    pub token: Option<String>,
    /// `quic` (default) or `tcp` (TCP+TLS).
    pub transport: Option<String>,
}

/// Per-request options (JSON): `{ timeoutMs?, cancelId?, token? }`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallOptionsJson {
    timeout_ms: Option<u64>,
    cancel_id: Option<i64>,
    token: Option<String>,
}

/// What a subscription's listener receives: `(event, json)` with event `item`, `error` or `end`.
pub type ItemEvent = (String, String);
type Listener = ThreadsafeFunction<FnArgs<ItemEvent>, (), FnArgs<ItemEvent>, Status, false, true>;

/// Cancellation tokens of in-flight calls, by the id JavaScript chose.
#[derive(Default)]
struct Cancels {
    tokens: Mutex<HashMap<i64, CancellationToken>>,
}

impl Cancels {
    fn register(&self, id: i64, token: CancellationToken) {
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(id, token);
        }
    }
    fn remove(&self, id: i64) -> Option<CancellationToken> {
        self.tokens.lock().ok().and_then(|mut t| t.remove(&id))
    }
}

/// A connection to a remote node.
#[napi]
pub struct Peer {
    peer: alknet_call::Peer,
    client: Client,
    token: Option<String>,
    cancels: Arc<Cancels>,
    closed: CancellationToken,
}

/// A running subscription; [`cancel`](Subscription::cancel) aborts it on the remote node.
#[napi]
pub struct Subscription {
    cancel: CancellationToken,
}

#[napi]
impl Subscription {
    /// Aborts the subscription (`call.aborted` is sent; the remote handler is cancelled).
    #[napi]
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Dials `options.address` with `key`, pinning `options.fingerprint`.
#[napi(ts_return_type = "Promise<Peer>")]
pub fn connect<'env>(
    env: &'env Env,
    options: ConnectOptions,
    key: &Keypair,
) -> napi::Result<PromiseRaw<'env, Peer>> {
    let address: SocketAddr = options.address.parse().map_err(|e| {
        plain(format!(
            "address {:?} is not host:port: {e}",
            options.address
        ))
    })?;
    let transport = match options.transport.as_deref() {
        None | Some("quic") => TransportKind::Quic,
        Some("tcp") => TransportKind::Tcp,
        Some(other) => {
            return Err(plain(format!(
                "transport {other:?} is unknown; use \"quic\" or \"tcp\""
            )))
        }
    };
    let key = key.key.clone();
    env.spawn_future(async move {
        let client = Client::new(key).map_err(plain)?;
        let dial = DialOptions::pinned(ALPN, options.fingerprint.clone()).over(transport);
        let conn = client.dial(address, &dial).await.map_err(plain)?;
        let service = CallService::anonymous(OperationRegistry::new()).map_err(plain)?;
        let peer = alknet_call::Peer::connect(conn, service, Some(options.fingerprint));
        Ok(Peer {
            peer,
            client,
            token: options.token,
            cancels: Arc::default(),
            closed: CancellationToken::new(),
        })
    })
}

impl Peer {
    fn request_options(&self, json: Option<&str>) -> napi::Result<(RequestOptions, Option<i64>)> {
        let parsed: CallOptionsJson = match json {
            Some(j) if !j.is_empty() => parse_json(j, "options")?,
            _ => CallOptionsJson::default(),
        };
        let cancel = self.closed.child_token();
        if let Some(id) = parsed.cancel_id {
            self.cancels.register(id, cancel.clone());
        }
        Ok((
            RequestOptions {
                auth_token: parsed.token.or_else(|| self.token.clone()),
                timeout: parsed.timeout_ms.map(Duration::from_millis),
                cancel: Some(cancel),
            },
            parsed.cancel_id,
        ))
    }
}

#[napi]
impl Peer {
    /// Calls a query or mutation; resolves with the output as JSON. A failure rejects with an
    /// `Error` whose message is the JSON-encoded `CallError`.
    #[napi]
    pub async fn call(
        &self,
        operation: String,
        input_json: String,
        options_json: Option<String>,
    ) -> napi::Result<String> {
        let input: Value = parse_json(&input_json, "input")?;
        let (options, cancel_id) = self.request_options(options_json.as_deref())?;
        let result = self.peer.call_with(&operation, input, options).await;
        if let Some(id) = cancel_id {
            self.cancels.remove(id);
        }
        result.map(|v| v.to_string()).map_err(call_error)
    }

    /// Cancels the in-flight call started with `{ cancelId }`; it rejects with `CANCELLED`.
    #[napi]
    pub fn cancel(&self, cancel_id: i64) {
        if let Some(token) = self.cancels.remove(cancel_id) {
            token.cancel();
        }
    }

    /// Subscribes; `listener` receives `('item', json)` per item, then `('end', '')` or
    /// `('error', callErrorJson)`. Nothing is delivered after `cancel()`.
    #[napi(
        ts_args_type = "operation: string, inputJson: string, optionsJson: string | undefined | null, listener: (event: string, json: string) => void"
    )]
    pub fn subscribe(
        &self,
        operation: String,
        input_json: String,
        options_json: Option<String>,
        listener: Listener,
    ) -> napi::Result<Subscription> {
        let input: Value = parse_json(&input_json, "input")?;
        let (options, _) = self.request_options(options_json.as_deref())?;
        let cancel = options.cancel.clone().unwrap_or_default();
        let peer = self.peer.clone();
        let stop = cancel.clone();
        napi::bindgen_prelude::spawn(async move {
            let emit = |event: &str, json: String| {
                if !stop.is_cancelled() {
                    listener.call(
                        (event.to_string(), json).into(),
                        ThreadsafeFunctionCallMode::NonBlocking,
                    );
                }
            };
            let mut items = match peer.subscribe_with(&operation, input, options).await {
                Ok(items) => items,
                Err(e) => {
                    emit("error", serde_json::to_string(&e).unwrap_or_default());
                    return;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = items.next() => next,
                };
                match next {
                    Some(Ok(v)) => emit("item", v.to_string()),
                    Some(Err(e)) => {
                        emit("error", serde_json::to_string(&e).unwrap_or_default());
                        return;
                    }
                    None => {
                        emit("end", String::new());
                        return;
                    }
                }
            }
        });
        Ok(Subscription { cancel })
    }

    /// Publishes `dataJson` to `topic` on the remote node; resolves with the delivery count.
    #[napi]
    pub async fn publish(&self, topic: String, data_json: String) -> napi::Result<u32> {
        let data: Value = parse_json(&data_json, "data")?;
        let delivered = self.peer.publish(&topic, data).await.map_err(call_error)?;
        Ok(u32::try_from(delivered).unwrap_or(u32::MAX))
    }

    /// The remote node's fingerprint as pinned.
    #[napi(getter)]
    pub fn fingerprint(&self) -> Option<String> {
        self.peer.auth().tls_fingerprint.clone()
    }

    /// Closes the connection: in-flight calls and subscriptions end with `UNAVAILABLE`/`CANCELLED`.
    #[napi]
    pub fn close(&self) {
        self.closed.cancel();
        self.peer.close();
        self.client.close();
    }
}
