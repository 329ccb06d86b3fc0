//! Test operations and helpers.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_call::access::Access;
use alknet_call::{
    CallError, CallOptions, CallService, ErrorCode, Handler, OperationRegistry, OperationSpec,
    OperationType, Peer,
};
use alknet_core::config::{AuthConfig, PeerEntry};
use alknet_core::fingerprint::token_hash;
use alknet_core::{ConfigStore, Connection};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

pub const ADMIN_TOKEN: &str = "admin-token";
pub const READER_TOKEN: &str = "reader-token";

/// Observations the test handlers report.
#[derive(Clone)]
pub struct Probe {
    pub dropped: mpsc::UnboundedSender<&'static str>,
    pub release: Arc<Notify>,
    pub forward_to: Arc<OnceLock<Peer>>,
    started: mpsc::UnboundedSender<&'static str>,
    started_rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<&'static str>>>,
}

impl Probe {
    /// Waits until a handler reports it started (`hold`, `forward`).
    pub async fn wait_started(&self) -> &'static str {
        self.started_rx.lock().await.recv().await.unwrap()
    }
}

pub fn probe() -> (Probe, mpsc::UnboundedReceiver<&'static str>) {
    let (dropped, rx) = mpsc::unbounded_channel();
    let (started, started_rx) = mpsc::unbounded_channel();
    (
        Probe {
            dropped,
            release: Arc::new(Notify::new()),
            forward_to: Arc::new(OnceLock::new()),
            started,
            started_rx: Arc::new(tokio::sync::Mutex::new(started_rx)),
        },
        rx,
    )
}

struct OnDrop(mpsc::UnboundedSender<&'static str>, &'static str);
impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

pub fn any() -> Value {
    json!({})
}

pub fn registry(probe: &Probe) -> OperationRegistry {
    let mut r = OperationRegistry::new();
    r.query(
        "test/echo",
        any(),
        any(),
        |_, input| async move { Ok(input) },
    )
    .unwrap();
    r.query(
        "math/add",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        json!({"type": "number"}),
        |_, i| async move { Ok(json!(i["a"].as_f64().unwrap_or(0.0) + i["b"].as_f64().unwrap_or(0.0))) },
    )
    .unwrap();
    let p = probe.clone();
    r.query("test/slow", any(), any(), move |_, input| {
        let release = p.release.clone();
        async move {
            release.notified().await;
            Ok(input)
        }
    })
    .unwrap();
    let p = probe.clone();
    r.query("test/gate", any(), any(), move |_, input| {
        let release = p.release.clone();
        let started = p.started.clone();
        async move {
            let _ = started.send("gate");
            release.notified().await;
            Ok(input)
        }
    })
    .unwrap();
    let p = probe.clone();
    r.query("test/spawns", any(), any(), move |ctx, input| {
        // Work the handler leaves behind: it watches the request's token.
        let token = ctx.token().clone();
        let dropped = p.dropped.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            let _ = dropped.send("spawned");
        });
        async move { Ok(input) }
    })
    .unwrap();
    r.query("test/cancels-own-token", any(), any(), |ctx, input| {
        // A handler cleaning up its own workers by cancelling the token it was given.
        ctx.token().cancel();
        async move { Ok(input) }
    })
    .unwrap();
    let p = probe.clone();
    r.query("test/hold", any(), any(), move |_, _| {
        let guard = OnDrop(p.dropped.clone(), "hold");
        let started = p.started.clone();
        async move {
            let _guard = guard;
            let _ = started.send("hold");
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    })
    .unwrap();
    let p = probe.clone();
    r.subscription(
        "test/ticks",
        json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        json!({"type": "integer"}),
        move |_, input| {
            let n = input["n"].as_i64().unwrap_or(i64::MAX);
            let guard = OnDrop(p.dropped.clone(), "ticks");
            futures::stream::unfold((0i64, guard), move |(i, guard)| async move {
                if i >= n {
                    return None;
                }
                if i >= 3 {
                    tokio::task::yield_now().await;
                }
                Some((Ok(json!(i)), (i + 1, guard)))
            })
        },
    )
    .unwrap();
    let p = probe.clone();
    r.subscription("test/items", any(), any(), move |_, input| {
        // Yields the input's `items`, then fails with `UNAVAILABLE` if `fail` is set, waits
        // forever if `hold` is set, or completes.
        let items: Vec<Value> = input["items"].as_array().cloned().unwrap_or_default();
        let fail = input["fail"].as_bool().unwrap_or(false);
        let hold = input["hold"].as_bool().unwrap_or(false);
        // Reports "items" when a held subscription's handler is dropped (cancelled).
        let guard = hold.then(|| OnDrop(p.dropped.clone(), "items"));
        let end = futures::stream::once(async move {
            let _guard = guard;
            if hold {
                std::future::pending::<()>().await;
            }
            Err(CallError::new(
                ErrorCode::Unavailable,
                "the source went away",
            ))
        })
        .filter(move |_| std::future::ready(fail || hold));
        futures::stream::iter(items.into_iter().map(Ok)).chain(end)
    })
    .unwrap();
    r.register(
        OperationSpec::new("test/fail", OperationType::Query, any(), any())
            .error("BOOM", "it went boom"),
        Handler::unary(|_, input: Value| async move {
            match input["how"].as_str() {
                Some("declared") => {
                    Err(CallError::custom("BOOM", "boom").with_details(json!({"why": "asked"})))
                }
                Some("undeclared") => Err(CallError::custom("SECRET_DB_ERROR", "password=hunter2")),
                Some("panic") => panic!("handler bug"),
                _ => Ok(Value::Null),
            }
        }),
    )
    .unwrap();
    r.query(
        "test/badoutput",
        any(),
        json!({"type": "string"}),
        |_, _| async { Ok(json!(42)) },
    )
    .unwrap();
    r.register(
        OperationSpec::new("test/admin", OperationType::Mutation, any(), any()).access(Access {
            required_scopes: vec!["admin".into()],
            ..Default::default()
        }),
        Handler::unary(|ctx: alknet_call::CallContext, _| async move {
            Ok(json!(ctx.identity.map(|i| i.id)))
        }),
    )
    .unwrap();
    r.register(
        OperationSpec::new("test/secret", OperationType::Query, any(), any()).internal(),
        Handler::unary(|_, _| async { Ok(json!("inside")) }),
    )
    .unwrap();
    r.query(
        "test/compose",
        any(),
        any(),
        |ctx: alknet_call::CallContext, _| async move {
            let inner = ctx.call("test/secret", json!({})).await?;
            Ok(json!({ "inner": inner }))
        },
    )
    .unwrap();
    r.query("test/compose-sub", any(), any(), |ctx: alknet_call::CallContext, _| async move {
        ctx.call("test/ticks", json!({"n": 1})).await
    })
    .unwrap();
    let p = probe.clone();
    r.query(
        "test/forward",
        any(),
        any(),
        move |ctx: alknet_call::CallContext, input| {
            let target = p.forward_to.clone();
            let guard = OnDrop(p.dropped.clone(), "forward");
            async move {
                let _guard = guard;
                let peer = target.get().cloned().ok_or_else(CallError::internal)?;
                ctx.call_remote(&peer, "test/hold", input).await
            }
        },
    )
    .unwrap();
    r.query(
        "test/callback",
        any(),
        any(),
        |ctx: alknet_call::CallContext, input| async move {
            let peer = ctx.peer().cloned().ok_or_else(CallError::internal)?;
            ctx.call_remote(&peer, "client/hello", input).await
        },
    )
    .unwrap();
    r
}

pub fn config() -> AuthConfig {
    let mut admin = PeerEntry::new("root", []).with_scopes(["admin"]);
    admin.token_hash = Some(token_hash(ADMIN_TOKEN.as_bytes()));
    let mut reader = PeerEntry::new("reader", []).with_scopes(["read"]);
    reader.token_hash = Some(token_hash(READER_TOKEN.as_bytes()));
    AuthConfig {
        peers: vec![admin, reader],
        ..Default::default()
    }
}

/// The live sections a test may reload.
pub struct Stores {
    pub auth: ConfigStore<AuthConfig>,
    pub pubsub: ConfigStore<alknet_call::PubSubPolicy>,
}

pub fn service_with(probe: &Probe, options: CallOptions) -> (Arc<CallService>, Stores) {
    let auth = ConfigStore::new(config()).unwrap();
    let stores = Stores {
        pubsub: auth.live().section(),
        auth,
    };
    let service = CallService::new(registry(probe), stores.auth.live().clone(), options);
    (service.unwrap(), stores)
}

pub fn client_service() -> Arc<CallService> {
    let mut r = OperationRegistry::new();
    r.query("client/hello", any(), any(), |_, input| async move {
        Ok(json!({ "hello": input }))
    })
    .unwrap();
    CallService::anonymous(r).unwrap()
}

/// A served node and a client peer over an in-memory QUIC-like pair.
pub struct Pair {
    pub client: Peer,
    pub server: Peer,
    pub server_conn: Connection,
    pub client_conn: Connection,
    pub service: Arc<CallService>,
    pub store: Stores,
}

pub fn pair_with(probe: &Probe, options: CallOptions, single_stream: bool) -> Pair {
    let (s, c) = if single_stream {
        alknet_core::connection::memory::single_stream_pair(alknet_call::ALPN)
    } else {
        alknet_core::connection::memory::pair(alknet_call::ALPN)
    };
    let (service, store) = service_with(probe, options);
    let server = Peer::connect(s.clone(), service.clone(), None);
    let client = Peer::connect(c.clone(), client_service(), None);
    Pair {
        client,
        server,
        server_conn: s,
        client_conn: c,
        service,
        store,
    }
}

pub fn pair(probe: &Probe) -> Pair {
    pair_with(probe, CallOptions::default(), false)
}

/// Writes one frame of raw JSON text.
pub async fn send_raw<S: AsyncWriteExt + Unpin>(stream: &mut S, json: &str) {
    let mut buf = BytesMut::new();
    alknet_call::framing::encode_frame(json.as_bytes(), &mut buf);
    stream.write_all(&buf).await.unwrap();
}

/// Reads one frame as JSON; `None` when the stream ended or was reset.
pub async fn recv_raw<S: AsyncReadExt + Unpin>(stream: &mut S) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.ok()?;
    serde_json::from_slice(&body).ok()
}

pub fn request(id: &str, op: &str, input: Value) -> String {
    json!({"type": "call.requested", "id": id, "payload": {"operationId": op, "input": input}})
        .to_string()
}

/// Asks `math/add` on a stream of its own, finishes the sending side at once (protocol v1.1),
/// and checks that the answer still arrives.
pub async fn half_closed_request_gets_its_answer<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    stream: &mut S,
) {
    send_raw(stream, &request("1", "/math/add", json!({"a": 1, "b": 2}))).await;
    stream.shutdown().await.unwrap();
    let answer = recv_raw(stream).await.unwrap();
    assert_eq!(answer["type"], "call.responded");
    assert_eq!(answer["payload"]["output"], json!(3.0));
}

/// A request for `test/hold` that asks for an hour's deadline, so that within a test only a
/// cancel (never the default 30 s deadline) can end it.
pub fn held_request(id: &str) -> String {
    json!({"type": "call.requested", "id": id, "payload": {
        "operationId": "/test/hold", "input": {}, "timeout_ms": 3_600_000u64,
    }})
    .to_string()
}

pub const NO_WAIT: Duration = Duration::from_secs(0);
