//! Loopback benchmark of `alknet/call`, next to the two figures it is judged against:
//!
//! - **the limit**: a raw echo over one QUIC stream per request on the same endpoint (same quinn,
//!   same Ed25519 raw-key TLS), with no protocol at all: no envelopes, no JSON, no schemas;
//! - **the peer**: tonic gRPC over HTTP/2 on plaintext TCP, with a hand-written service and a JSON
//!   codec, so it does the same work per call (decode `{"n": i}`, return it, encode it).
//!
//! ```text
//! cargo run --release -p alknet-call-bench                          # full run
//! ALKNET_BENCH_QUICK=1 cargo run --release -p alknet-call-bench     # smoke run
//! ALKNET_BENCH_VARIANTS=1 cargo run --release -p alknet-call-bench  # plus diagnostic variants
//! ALKNET_BENCH_UNARY_ONLY=1 cargo run --release -p alknet-call-bench # unary rows only
//! ALKNET_BENCH_STREAM_ONLY=5 cargo run --release -p alknet-call-bench # 5 subscriptions, for perf
//!   (rate, CPU and, with `--features count-allocs`, allocations per item; ALKNET_BENCH_TCP=1:
//!   over TCP+TLS; ALKNET_BENCH_TONIC=1: tonic's stream instead)
//! ALKNET_BENCH_UNARY_PROFILE=256 cargo run --release -p alknet-call-bench # alknet/call alone, for perf
//!   (ALKNET_BENCH_RAW=1: the raw echo instead; ALKNET_BENCH_WIRE=1: the call server with a
//!   minimal client; ALKNET_BENCH_CALLS=n calls instead of 200k; `--features count-allocs`
//!   counts allocations per call; CPU time per call is the whole process's)
//! ```
//!
//! Everything runs in one process on one multi-threaded tokio runtime and talks over 127.0.0.1
//! only; client and server share the CPUs. Systems are measured in interleaved rounds and each
//! figure is the median over the rounds. Every phase is bounded in count and in time.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use alknet_call::{CallOptions, CallService, OperationRegistry, Peer};
use alknet_core::{
    Alpn, AuthContext, BoxedStream, Connection, HandlerError, LiveConfig, ProtocolHandler,
    SecretKey,
};
use alknet_endpoint::{Client, DialOptions, TransportKind};
use alknet_node::{Node, NodeConfig};
use anyhow::{anyhow, ensure, Context, Result};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Service;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Status;

/// The ALPN of the raw handler (the limit and its decomposition).
const RAW_ALPN: &[u8] = b"bench-raw";
/// gRPC method paths.
const GRPC_PING: &str = "/bench.Echo/Ping";
const GRPC_ITEMS: &str = "/bench.Echo/Items";
/// The concurrency levels measured.
const LEVELS: [usize; 3] = [1, 16, 256];
/// Longest one phase of one system may take before that system is reported as failed.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often every system gets one call while others are measured, to keep its connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Settings {
    quick: bool,
    variants: bool,
    /// Only the unary rows (latency and calls/s), no stream phase.
    unary_only: bool,
    rounds: usize,
    warmup: u64,
    latency_calls: u64,
    calls_per_level: u64,
    stream_items: u64,
}

impl Settings {
    fn from_env() -> Self {
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
        let quick = flag("ALKNET_BENCH_QUICK");
        let variants = flag("ALKNET_BENCH_VARIANTS");
        let unary_only = flag("ALKNET_BENCH_UNARY_ONLY");
        if quick {
            Self {
                quick,
                variants,
                unary_only,
                rounds: 1,
                warmup: 200,
                latency_calls: 1_000,
                calls_per_level: 2_000,
                stream_items: 20_000,
            }
        } else {
            Self {
                quick,
                variants,
                unary_only,
                rounds: 3,
                warmup: 2_000,
                latency_calls: 10_000,
                calls_per_level: 20_000,
                stream_items: 200_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What is measured: one request/response with `{"n": i}`, and a stream of `count` small items.

#[async_trait]
trait System: Send + Sync + 'static {
    /// Sends `{"n": n}` and checks that it comes back.
    async fn ping(&self, n: u64) -> Result<()>;
    /// Asks for `count` items and returns how many arrived; `None` if the system has no streams.
    async fn items(&self, count: u64) -> Option<Result<u64>>;
}

// ---------------------------------------------------------------------------------------------
// alknet/call.

fn call_registry(schemas: bool) -> Result<OperationRegistry> {
    let (ping_in, ping_out, items_in) = if schemas {
        let n = json!({
            "type": "object",
            "properties": { "n": { "type": "integer", "minimum": 0 } },
            "required": ["n"],
        });
        let count = json!({
            "type": "object",
            "properties": { "count": { "type": "integer", "minimum": 0 } },
            "required": ["count"],
        });
        (n.clone(), n, count)
    } else {
        (json!(true), json!(true), json!(true))
    };
    let mut ops = OperationRegistry::new();
    ops.query(
        "echo/ping",
        ping_in,
        ping_out.clone(),
        |_ctx, input| async move { Ok(input) },
    )?;
    ops.subscription("echo/items", items_in, ping_out, |_ctx, input: Value| {
        let count = input["count"].as_u64().unwrap_or(0);
        stream::iter((0..count).map(|i| Ok(json!({ "n": i }))))
    })?;
    Ok(ops)
}

/// The `Peer` client; with several peers, calls go round-robin over them.
struct CallSystem {
    peers: Vec<Peer>,
    next: AtomicU64,
}

impl CallSystem {
    fn new(peers: Vec<Peer>) -> Self {
        Self {
            peers,
            next: AtomicU64::new(0),
        }
    }

    fn peer(&self) -> &Peer {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        &self.peers[i % self.peers.len()]
    }
}

#[async_trait]
impl System for CallSystem {
    async fn ping(&self, n: u64) -> Result<()> {
        let out = self.peer().call("echo/ping", json!({ "n": n })).await?;
        ensure!(out["n"].as_u64() == Some(n), "echo/ping answered {out}");
        Ok(())
    }

    async fn items(&self, count: u64) -> Option<Result<u64>> {
        Some(
            async {
                let mut sub = self
                    .peer()
                    .subscribe("echo/items", json!({ "count": count }))
                    .await?;
                let mut got = 0;
                while let Some(item) = sub.next().await {
                    let item = item?;
                    ensure!(item["n"].as_u64() == Some(got), "item {got} was {item}");
                    got += 1;
                }
                Ok(got)
            }
            .await,
        )
    }
}

/// The call *server* with a minimal client: pre-formatted `call.requested` frames, answers counted
/// by their length prefix, no `Peer`, no JSON parsing. Isolates the server side's cost.
struct CallWireSystem {
    conn: Connection,
    /// Request ids must be unique among the connection's open requests.
    next_id: AtomicU64,
}

impl CallWireSystem {
    fn frame(&self, operation: &str, input: &str) -> Result<Vec<u8>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        call_frame(id, operation, input)
    }
}

fn call_frame(id: u64, operation: &str, input: &str) -> Result<Vec<u8>> {
    let mut frame = vec![0; 4];
    write!(
        frame,
        r#"{{"type":"call.requested","id":"{id}","payload":{{"operationId":"/{operation}","input":{input}}}}}"#
    )?;
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[async_trait]
impl System for CallWireSystem {
    async fn ping(&self, n: u64) -> Result<()> {
        let request = self.frame("echo/ping", &format!(r#"{{"n":{n}}}"#))?;
        let mut stream = self.conn.open_bi().await?;
        stream.write_all(&request).await?;
        stream.shutdown().await?;
        let mut answer = Vec::with_capacity(128);
        stream.read_to_end(&mut answer).await?;
        ensure!(
            contains(&answer, b"call.responded") && contains(&answer, format!(":{n}}}").as_bytes()),
            "echo/ping answered {}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    }

    async fn items(&self, count: u64) -> Option<Result<u64>> {
        Some(
            async {
                let request = self.frame("echo/items", &format!(r#"{{"count":{count}}}"#))?;
                let mut stream = self.conn.open_bi().await?;
                stream.write_all(&request).await?;
                stream.shutdown().await?;
                let (frames, last) = count_frames(&mut stream).await?;
                ensure!(
                    contains(&last, b"call.completed"),
                    "the last frame was {}",
                    String::from_utf8_lossy(&last)
                );
                Ok(frames - 1)
            }
            .await,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The limit: raw bytes over one QUIC stream per request, and its decomposition towards what the
// call protocol does. The first byte of a request says what to do:
//
// - `E` echo: the request (with its FIN) is echoed back, then FIN. The limit.
// - `K` call-like stream lifecycle: a length-prefixed frame without FIN; the answer frame without
//   FIN; the client then finishes its side from a spawned task and the server finishes on EOF.
// - `J` the same, but the server finishes right after its answer (answer and FIN together).
// - `H` the `K` lifecycle plus call's server task structure: a reader task, a task per request,
//   and a writer task fed through a channel.
// - `S` + count: `count` items (u32 BE length + `{"n":i}`) written in 32 KiB batches. The limit.
// - `U` + count: the same, one write per item.
// - `W` + count: the items go one by one through a channel to a writer task that batches
//   whatever is queued (call's writer), produced by a separate task.

struct RawHandler;

#[async_trait]
impl ProtocolHandler for RawHandler {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(RAW_ALPN)]
    }

    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        while let Ok(stream) = conn.accept_bi().await {
            tokio::spawn(serve_raw(stream));
        }
        Ok(())
    }
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(read: &mut R) -> std::io::Result<Vec<u8>> {
    let len = read.read_u32().await? as usize;
    let mut body = vec![0; len];
    read.read_exact(&mut body).await?;
    Ok(body)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

fn item(i: u64, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    let _ = write!(out.writer(), "{{\"n\":{i}}}");
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

async fn serve_raw(mut stream: BoxedStream) -> std::io::Result<()> {
    let kind = stream.read_u8().await?;
    match kind {
        b'E' => {
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await?;
            stream.write_all(&request).await?;
        }
        b'K' => {
            let body = read_frame(&mut stream).await?;
            stream.write_all(&framed(&body)).await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
        }
        b'J' => {
            let body = read_frame(&mut stream).await?;
            stream.write_all(&framed(&body)).await?;
            stream.shutdown().await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            return Ok(());
        }
        b'H' => {
            let (mut read, mut write) = tokio::io::split(stream);
            let (tx, mut rx) = mpsc::channel::<Bytes>(256);
            let writer = tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    write.write_all(&frame).await?;
                    write.flush().await?;
                }
                write.shutdown().await
            });
            let body = read_frame(&mut read).await?;
            let request_tx = tx.clone();
            tokio::spawn(async move {
                let _ = request_tx.send(Bytes::from(framed(&body))).await;
            });
            drop(tx);
            let mut rest = Vec::new();
            read.read_to_end(&mut rest).await?;
            return writer.await.map_err(std::io::Error::other)?;
        }
        b'S' | b'U' | b'W' => {
            let count = stream.read_u64().await?;
            match kind {
                b'S' => {
                    let mut buf = BytesMut::with_capacity(64 * 1024);
                    for i in 0..count {
                        item(i, &mut buf);
                        if buf.len() >= 32 * 1024 {
                            stream.write_all(&buf).await?;
                            buf.clear();
                        }
                    }
                    stream.write_all(&buf).await?;
                }
                b'U' => {
                    let mut buf = BytesMut::with_capacity(64);
                    for i in 0..count {
                        item(i, &mut buf);
                        stream.write_all(&buf).await?;
                        buf.clear();
                    }
                }
                _ => {
                    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
                    tokio::spawn(async move {
                        for i in 0..count {
                            let mut buf = BytesMut::new();
                            item(i, &mut buf);
                            if tx.send(buf.freeze()).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut buf = BytesMut::new();
                    while let Some(first) = rx.recv().await {
                        let mut next = Some(first);
                        while let Some(frame) = next.take() {
                            buf.extend_from_slice(&frame);
                            if buf.len() < 256 * 1024 {
                                next = rx.try_recv().ok();
                            }
                        }
                        stream.write_all(&buf).await?;
                        buf.clear();
                        stream.flush().await?;
                    }
                }
            }
        }
        _ => {}
    }
    stream.shutdown().await
}

/// Counts length-prefixed frames until EOF; returns the count and the last frame.
async fn count_frames(stream: &mut BoxedStream) -> Result<(u64, Vec<u8>)> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut got = 0;
    let mut last = Vec::new();
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            if buf.len() - (4 + len) < 4 {
                last.clear();
                last.extend_from_slice(&buf[4..4 + len]);
            }
            buf.advance(4 + len);
            got += 1;
        }
        buf.reserve(64 * 1024);
        if stream.read_buf(&mut buf).await? == 0 {
            ensure!(buf.is_empty(), "the stream ended inside a frame");
            return Ok((got, last));
        }
    }
}

struct RawSystem {
    conn: Connection,
    /// `E`, `K`, `J` or `H`.
    ping: u8,
    /// `S`, `U` or `W`; `None` for no streams.
    items: Option<u8>,
}

#[async_trait]
impl System for RawSystem {
    async fn ping(&self, n: u64) -> Result<()> {
        let mut stream = self.conn.open_bi().await?;
        let mut body = Vec::with_capacity(32);
        write!(body, "{{\"n\":{n}}}")?;
        if self.ping == b'E' {
            let mut request = vec![b'E'];
            request.extend_from_slice(&body);
            stream.write_all(&request).await?;
            stream.shutdown().await?;
            let mut answer = Vec::with_capacity(32);
            stream.read_to_end(&mut answer).await?;
            ensure!(answer == body, "raw echo answered {answer:?}");
        } else {
            let mut request = vec![self.ping];
            request.extend_from_slice(&framed(&body));
            stream.write_all(&request).await?;
            let answer = read_frame(&mut stream).await?;
            ensure!(answer == body, "raw echo answered {answer:?}");
            // As alknet/call's client does once it has its answer.
            tokio::spawn(async move {
                let _ = stream.shutdown().await;
            });
        }
        Ok(())
    }

    async fn items(&self, count: u64) -> Option<Result<u64>> {
        let kind = self.items?;
        Some(
            async {
                let mut stream = self.conn.open_bi().await?;
                let mut request = vec![kind];
                request.extend_from_slice(&count.to_be_bytes());
                stream.write_all(&request).await?;
                stream.shutdown().await?;
                Ok(count_frames(&mut stream).await?.0)
            }
            .await,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The peer: tonic gRPC with a hand-written service and a JSON codec (no protoc).

#[derive(Clone, Copy, Default)]
struct JsonCodec;

impl Codec for JsonCodec {
    type Encode = Value;
    type Decode = Value;
    type Encoder = JsonCodec;
    type Decoder = JsonCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for JsonCodec {
    type Item = Value;
    type Error = Status;

    fn encode(&mut self, item: Value, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        serde_json::to_writer(dst.writer(), &item).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for JsonCodec {
    type Item = Value;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Value>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

struct GrpcPing;

impl UnaryService<Value> for GrpcPing {
    type Response = Value;
    type Future = Ready<Result<tonic::Response<Value>, Status>>;

    fn call(&mut self, request: tonic::Request<Value>) -> Self::Future {
        ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

struct GrpcItems;

impl ServerStreamingService<Value> for GrpcItems {
    type Response = Value;
    type ResponseStream = BoxStream<'static, Result<Value, Status>>;
    type Future = Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Value>) -> Self::Future {
        let count = request.get_ref()["count"].as_u64().unwrap_or(0);
        let items = stream::iter((0..count).map(|i| Ok(json!({ "n": i })))).boxed();
        ready(Ok(tonic::Response::new(items)))
    }
}

/// Routes the two methods, as tonic-build's generated server would.
#[derive(Clone)]
struct GrpcRouter;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<http::Request<Body>> for GrpcRouter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            GRPC_PING => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(JsonCodec);
                Ok(grpc.unary(GrpcPing, request).await)
            }),
            GRPC_ITEMS => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(JsonCodec);
                Ok(grpc.server_streaming(GrpcItems, request).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

struct TonicSystem {
    grpc: tonic::client::Grpc<Channel>,
}

#[async_trait]
impl System for TonicSystem {
    async fn ping(&self, n: u64) -> Result<()> {
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let out = grpc
            .unary(
                tonic::Request::new(json!({ "n": n })),
                PathAndQuery::from_static(GRPC_PING),
                JsonCodec,
            )
            .await?
            .into_inner();
        ensure!(out["n"].as_u64() == Some(n), "Ping answered {out}");
        Ok(())
    }

    async fn items(&self, count: u64) -> Option<Result<u64>> {
        Some(
            async {
                let mut grpc = self.grpc.clone();
                grpc.ready().await?;
                let mut items = grpc
                    .server_streaming(
                        tonic::Request::new(json!({ "count": count })),
                        PathAndQuery::from_static(GRPC_ITEMS),
                        JsonCodec,
                    )
                    .await?
                    .into_inner();
                let mut got = 0;
                while let Some(item) = items.message().await? {
                    ensure!(item["n"].as_u64() == Some(got), "item {got} was {item}");
                    got += 1;
                }
                Ok(got)
            }
            .await,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// The figures of one system. `items`: `None` when it has no streams, `Err` when they failed.
#[derive(Clone)]
struct Figures {
    p50: Duration,
    p99: Duration,
    rates: [f64; LEVELS.len()],
    items: Option<Result<f64, String>>,
}

async fn bounded<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(PHASE_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow!("{what} took longer than {PHASE_TIMEOUT:?}"))?
        .with_context(|| format!("{what} failed"))
}

/// Sequential calls, each timed: (p50, p99).
async fn latency(system: &Arc<dyn System>, calls: u64) -> Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(calls as usize);
    for n in 0..calls {
        let started = Instant::now();
        system.ping(n).await?;
        samples.push(started.elapsed());
    }
    ensure!(!samples.is_empty(), "no latency samples");
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.50), at(0.99)))
}

/// `total` calls made by `concurrency` tasks: calls per second.
async fn throughput(system: &Arc<dyn System>, concurrency: usize, total: u64) -> Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let system = system.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    system.ping(n).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// One stream of `count` items: items per second (`None` if the system has no streams).
async fn streaming(system: &Arc<dyn System>, count: u64) -> Option<Result<f64, String>> {
    let started = Instant::now();
    let got = tokio::time::timeout(PHASE_TIMEOUT, system.items(count))
        .await
        .unwrap_or_else(|_| Some(Err(anyhow!("took longer than {PHASE_TIMEOUT:?}"))))?;
    Some(match got {
        Ok(got) if got == count => Ok(count as f64 / started.elapsed().as_secs_f64()),
        Ok(got) => Err(format!("asked for {count} items, got {got}")),
        Err(e) => Err(format!("{e:#}")),
    })
}

async fn warm_up(name: String, system: Arc<dyn System>, s: Settings) -> Result<()> {
    bounded(&format!("{name}: warm-up"), async {
        for n in 0..s.warmup {
            system.ping(n).await?;
        }
        Ok(())
    })
    .await?;
    if s.unary_only {
        return Ok(());
    }
    // A failing stream is reported by the measured round.
    let _ = tokio::time::timeout(PHASE_TIMEOUT, system.items(s.stream_items / 10)).await;
    Ok(())
}

async fn round(name: String, system: Arc<dyn System>, s: Settings) -> Result<Figures> {
    let (p50, p99) = bounded(
        &format!("{name}: latency"),
        latency(&system, s.latency_calls),
    )
    .await?;
    let mut rates = [0.0; LEVELS.len()];
    for (rate, &c) in rates.iter_mut().zip(&LEVELS) {
        *rate = bounded(
            &format!("{name}: concurrency {c}"),
            throughput(&system, c, s.calls_per_level),
        )
        .await?;
    }
    let items = if s.unary_only {
        None
    } else {
        streaming(&system, s.stream_items).await
    };
    Ok(Figures {
        p50,
        p99,
        rates,
        items,
    })
}

/// Runs `f` on a worker thread, like the server's tasks (the main task of `#[tokio::main]` runs
/// outside the worker pool, so every wake-up would cross threads).
async fn on_worker<T: Send + 'static>(
    name: &str,
    f: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T, String> {
    match tokio::spawn(f).await {
        Ok(result) => result.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("{name}: the measuring task failed: {e}")),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of each figure over the rounds.
fn combine(rounds: &[Figures]) -> Figures {
    let of = |get: &dyn Fn(&Figures) -> f64| median(rounds.iter().map(get).collect());
    let mut rates = [0.0; LEVELS.len()];
    for (i, rate) in rates.iter_mut().enumerate() {
        *rate = of(&|f| f.rates[i]);
    }
    let items = match rounds.iter().find_map(|f| f.items.as_ref()?.as_ref().err()) {
        Some(e) => Some(Err(e.clone())),
        None if rounds.iter().all(|f| f.items.is_some()) => Some(Ok(of(&|f| {
            f.items
                .as_ref()
                .and_then(|i| i.as_ref().ok())
                .copied()
                .unwrap_or(0.0)
        }))),
        None => None,
    };
    Figures {
        p50: Duration::from_secs_f64(of(&|f| f.p50.as_secs_f64())),
        p99: Duration::from_secs_f64(of(&|f| f.p99.as_secs_f64())),
        rates,
        items,
    }
}

/// A system to measure, with its column heading.
struct Entry {
    name: &'static str,
    note: &'static str,
    system: Arc<dyn System>,
}

/// Warms every system up, then measures them in interleaved rounds; a system that fails is
/// reported as such and the others go on.
async fn measure(entries: &[Entry], s: &Settings) -> Vec<Result<Figures, String>> {
    // QUIC connections close after 30 s without traffic (quinn's default idle timeout; neither
    // side sends keep-alives), and a system may wait that long while the others are measured.
    let systems: Vec<SystemRef> = entries.iter().map(|e| e.system.clone()).collect();
    let keep_alive = tokio::spawn(async move {
        loop {
            tokio::time::sleep(KEEP_ALIVE).await;
            for system in &systems {
                let _ = tokio::time::timeout(KEEP_ALIVE, system.ping(0)).await;
            }
        }
    });
    let mut results: Vec<Result<Vec<Figures>, String>> = Vec::new();
    for e in entries {
        eprintln!("warming up {} …", e.name);
        let warm = on_worker(e.name, warm_up(e.name.into(), e.system.clone(), s.clone())).await;
        results.push(warm.map(|()| Vec::new()));
    }
    for r in 0..s.rounds {
        for (e, result) in entries.iter().zip(&mut results) {
            let Ok(rounds) = result else { continue };
            eprintln!("round {}/{}: {} …", r + 1, s.rounds, e.name);
            let started = Instant::now();
            match on_worker(e.name, round(e.name.into(), e.system.clone(), s.clone())).await {
                Ok(figures) => rounds.push(figures),
                Err(err) => *result = Err(err),
            }
            eprintln!("  … {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    keep_alive.abort();
    results
        .into_iter()
        .map(|r| r.map(|rounds| combine(&rounds)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Setup.

struct AlknetNode {
    endpoint: Node,
    /// The dialers, kept so their QUIC sockets stay open while their connections are used.
    clients: Mutex<Vec<Client>>,
}

async fn alknet_node(options: CallOptions, schemas: bool) -> Result<AlknetNode> {
    let endpoint = Node::builder(NodeConfig::new("127.0.0.1:0".parse()?))
        .key(SecretKey::generate())
        .operations(call_registry(schemas)?)
        .call_options(options)
        .handler(Arc::new(RawHandler))
        .start()
        .await?;
    Ok(AlknetNode {
        endpoint,
        clients: Mutex::default(),
    })
}

impl AlknetNode {
    async fn dial(&self, alpn: &[u8], transport: TransportKind) -> Result<Connection> {
        let client = Client::new(SecretKey::generate())?;
        let options = DialOptions::pinned(alpn, self.endpoint.fingerprint()).over(transport);
        let conn = client.dial(self.endpoint.local_addr(), &options).await?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.push(client);
        }
        Ok(conn)
    }

    async fn call_peer(&self, transport: TransportKind) -> Result<Peer> {
        Ok(Peer::connect(
            self.dial(alknet_call::ALPN, transport).await?,
            CallService::anonymous(OperationRegistry::new())?,
            Some(self.endpoint.fingerprint().to_string()),
        ))
    }

    async fn call_system(&self, connections: usize, transport: TransportKind) -> Result<SystemRef> {
        let mut peers = Vec::new();
        for _ in 0..connections {
            peers.push(self.call_peer(transport).await?);
        }
        Ok(Arc::new(CallSystem::new(peers)))
    }

    async fn raw_system(&self, ping: u8, items: Option<u8>) -> Result<SystemRef> {
        Ok(Arc::new(RawSystem {
            conn: self.dial(RAW_ALPN, TransportKind::Quic).await?,
            ping,
            items,
        }))
    }
}

type SystemRef = Arc<dyn System>;

async fn tonic_system() -> Result<(SystemRef, tokio::task::JoinHandle<()>)> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
    let addr: SocketAddr = incoming.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(e) = Server::builder()
            .serve_with_incoming(GrpcRouter, incoming)
            .await
        {
            eprintln!("tonic server failed: {e}");
        }
    });
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let system = TonicSystem {
        grpc: tonic::client::Grpc::new(channel),
    };
    Ok((Arc::new(system), server))
}

// ---------------------------------------------------------------------------------------------
// Report.

fn micros(d: f64) -> String {
    format!("{:.1} µs", d * 1e6)
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.1} k/s", r / 1e3)
    }
}

/// What a row shows: a figure (`None`: not measured, `Some(Err)`: failed) and its format.
type Getter = fn(&Figures) -> Option<Result<f64, ()>>;
/// A table row: its label, its figure, and how the figure is shown.
type Row = (String, Getter, fn(f64) -> String);

/// One table: a row per figure, a column per system; with `base`, then `base` ÷ each other.
fn print_table(
    entries: &[Entry],
    figures: &[Result<Figures, String>],
    base: Option<usize>,
    s: &Settings,
) {
    const LABEL: usize = 26;
    const CELL: usize = 16;
    let mut header = format!("{:<LABEL$}", "");
    let mut sub = format!("{:<LABEL$}", "");
    for e in entries {
        header.push_str(&format!("{:>CELL$}", e.name));
        sub.push_str(&format!("{:>CELL$}", e.note));
    }
    if let Some(b) = base {
        for (_, e) in entries.iter().enumerate().filter(|(i, _)| *i != b) {
            header.push_str(&format!("{:>CELL$}", format!("{} ÷", entries[b].name)));
            sub.push_str(&format!("{:>CELL$}", e.name));
        }
    }
    println!("{header}\n{sub}");
    let level = |i: usize| -> Getter {
        match i {
            0 => |f| Some(Ok(f.rates[0])),
            1 => |f| Some(Ok(f.rates[1])),
            _ => |f| Some(Ok(f.rates[2])),
        }
    };
    let mut rows: Vec<Row> = vec![
        (
            "latency p50 (sequential)".into(),
            |f| Some(Ok(f.p50.as_secs_f64())),
            micros,
        ),
        (
            "latency p99 (sequential)".into(),
            |f| Some(Ok(f.p99.as_secs_f64())),
            micros,
        ),
    ];
    for (i, c) in LEVELS.iter().enumerate() {
        rows.push((format!("calls/s, concurrency {c}"), level(i), rate));
    }
    rows.push((
        format!("stream items/s ({}k)", s.stream_items / 1000),
        |f| f.items.as_ref().map(|r| r.as_ref().copied().map_err(drop)),
        rate,
    ));
    let value = |figures: &Result<Figures, String>, get: Getter| match figures {
        Ok(f) => get(f),
        Err(_) => Some(Err(())),
    };
    for (label, get, show) in rows {
        let mut line = format!("{label:<LABEL$}");
        for f in figures {
            let cell = match value(f, get) {
                Some(Ok(v)) => show(v),
                Some(Err(())) => "failed".into(),
                None => "n/a".into(),
            };
            line.push_str(&format!("{cell:>CELL$}"));
        }
        if let Some(b) = base {
            for (_, f) in figures.iter().enumerate().filter(|(i, _)| *i != b) {
                let cell = match (value(&figures[b], get), value(f, get)) {
                    (Some(Ok(x)), Some(Ok(y))) => format!("{:.2}x", x / y),
                    _ => "-".into(),
                };
                line.push_str(&format!("{cell:>CELL$}"));
            }
        }
        println!("{line}");
    }
    for (e, f) in entries.iter().zip(figures) {
        match f {
            Err(err) => println!("  {} failed: {err}", e.name),
            Ok(Figures {
                items: Some(Err(err)),
                ..
            }) => println!("  {} stream failed: {err}", e.name),
            Ok(_) => {}
        }
    }
}

fn failures(figures: &[Result<Figures, String>]) -> usize {
    figures.iter().filter(|f| f.is_err()).count()
}

const MAIN_NOTES: &str = "\
raw QUIC echo = THE LIMIT: the same endpoint, quinn and Ed25519 raw-key TLS, one stream per
  request, bytes echoed with no envelope, JSON or schema; stream: length-prefixed items written
  in 32 KiB batches.
alknet/call   = Rust→Rust over QUIC: echo/ping query with JSON Schema on input and output,
  echo/items subscription; one QUIC stream per call (the protocol's design).
tonic gRPC    = THE PEER: tonic 0.14, HTTP/2 over plaintext TCP (no TLS), hand-written service
  with a JSON codec (the same decode/encode work per call), server streaming.
alknet/call ÷ X: above 1 is slower for latency, below 1 is slower for rates.
";

const CALL_NOTES: &str = "\
no-out-check: CallOptions::validate_output = false. schema-true: every schema is `true`.
4-conns: calls round-robin over 4 QUIC connections. tcp+tls: the single-stream carrier.
in-memory: alknet_core's in-memory connection pair (no network, no TLS).
server-only: the call server with a minimal client (pre-formatted requests sent with FIN,
  answers counted by their length prefix; no Peer, no JSON parsing).
";

const RAW_NOTES: &str = "\
E: echo; request and answer each end with FIN (the limit).
K: call's stream lifecycle: framed request and answer without FIN; the client finishes its side
  from a spawned task afterwards, the server on EOF.
J: K, but the server sends its FIN with the answer.
H: K plus call's server tasks: a reader, a task per request, a writer task behind a channel.
S: items in 32 KiB writes (the limit). U: one write per item. W: items one by one through a
  channel from a producer task to a writer task that batches what is queued (call's writer).
";

// ---------------------------------------------------------------------------------------------

/// User plus system CPU time of the whole process so far, in seconds (`/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Counts heap allocations (`--features count-allocs`), for the profiling modes.
mod counting {
    /// Whether allocations are counted in this build.
    pub const ENABLED: bool = cfg!(feature = "count-allocs");

    #[cfg(feature = "count-allocs")]
    mod imp {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::sync::atomic::{AtomicU64, Ordering};

        pub static COUNT: AtomicU64 = AtomicU64::new(0);

        struct Counting;

        // SAFETY: forwards to the system allocator unchanged; only counts.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                COUNT.fetch_add(1, Ordering::Relaxed);
                System.alloc(layout)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                System.dealloc(ptr, layout)
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                COUNT.fetch_add(1, Ordering::Relaxed);
                System.alloc_zeroed(layout)
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                COUNT.fetch_add(1, Ordering::Relaxed);
                System.realloc(ptr, layout, new_size)
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;
    }

    /// Allocations (and reallocations) so far; 0 without the feature.
    pub fn allocations() -> u64 {
        #[cfg(feature = "count-allocs")]
        return imp::COUNT.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(feature = "count-allocs"))]
        0
    }
}

/// `ALKNET_BENCH_STREAM_ONLY=n`: one warm-up stream, then `n` streams of `items` items, on a
/// worker like the full run's rounds; prints the median rate, CPU time and allocations per item.
async fn stream_profile(system: SystemRef, what: &str, n: u32, items: u64) -> Result<()> {
    let warm = system.clone();
    on_worker("warm-up", async move {
        streaming(&warm, items / 10).await;
        Ok(())
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let (allocs, cpu) = (counting::allocations(), cpu_seconds());
    let rates = on_worker("stream", async move {
        let mut rates = Vec::new();
        for _ in 0..n {
            match streaming(&system, items).await {
                Some(Ok(rate)) => rates.push(rate),
                Some(Err(e)) => return Err(anyhow!(e)),
                None => return Err(anyhow!("the system has no streams")),
            }
        }
        Ok(rates)
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let (allocs, cpu) = (counting::allocations() - allocs, cpu_seconds() - cpu);
    let total = items as f64 * f64::from(n);
    eprintln!(
        "{what}: {n} × {items} items, median {}, {:.3} µs CPU per item{}",
        rate(median(rates)),
        cpu * 1e6 / total,
        match counting::ENABLED {
            true => format!(", {:.2} allocations per item", allocs as f64 / total),
            false => String::new(),
        }
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let s = Settings::from_env();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let node = alknet_node(CallOptions::default(), true).await?;
    // For a profiler: only alknet/call's stream, this many times, then one line of figures.
    if let Some(n) = std::env::var("ALKNET_BENCH_STREAM_ONLY")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let env = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
        let (system, what): (SystemRef, _) = if env("ALKNET_BENCH_TONIC") {
            (tonic_system().await?.0, "tonic gRPC")
        } else if env("ALKNET_BENCH_TCP") {
            (
                node.call_system(1, TransportKind::Tcp).await?,
                "alknet/call over TCP+TLS",
            )
        } else {
            (
                node.call_system(1, TransportKind::Quic).await?,
                "alknet/call over QUIC",
            )
        };
        return stream_profile(system, what, n, s.stream_items).await;
    }
    // For a profiler: only alknet/call's unary calls at this concurrency, 200k calls (the raw
    // echo instead with ALKNET_BENCH_RAW=1), and nothing printed.
    if let Some(c) = std::env::var("ALKNET_BENCH_UNARY_PROFILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let system: SystemRef = if std::env::var("ALKNET_BENCH_RAW").is_ok_and(|v| v == "1") {
            node.raw_system(b'E', None).await?
        } else if std::env::var("ALKNET_BENCH_WIRE").is_ok_and(|v| v == "1") {
            Arc::new(CallWireSystem {
                conn: node.dial(alknet_call::ALPN, TransportKind::Quic).await?,
                next_id: AtomicU64::new(1),
            })
        } else {
            node.call_system(1, TransportKind::Quic).await?
        };
        let calls = std::env::var("ALKNET_BENCH_CALLS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(200_000);
        // Warm up (connection windows, buffers, the allocator) outside the counted part.
        throughput(&system, c, calls.min(2_000) / 2).await?;
        let (allocs, cpu) = (counting::allocations(), cpu_seconds());
        let started = Instant::now();
        let rate = on_worker(
            "profile",
            async move { throughput(&system, c, calls).await },
        )
        .await;
        let (allocs, cpu) = (counting::allocations() - allocs, cpu_seconds() - cpu);
        eprintln!(
            "{calls} calls at concurrency {c}: {:.1} s, {:?} calls/s, {:.1} µs CPU per call{}",
            started.elapsed().as_secs_f64(),
            rate.map(|r| r.round()),
            cpu * 1e6 / calls as f64,
            match counting::ENABLED {
                true => format!(", {:.1} allocations per call", allocs as f64 / calls as f64),
                false => String::new(),
            }
        );
        return Ok(());
    }
    let (tonic, tonic_server) = tonic_system().await?;
    let entries = [
        Entry {
            name: "raw QUIC echo",
            note: "(the limit)",
            system: node.raw_system(b'E', Some(b'S')).await?,
        },
        Entry {
            name: "alknet/call",
            note: "(QUIC)",
            system: node.call_system(1, TransportKind::Quic).await?,
        },
        Entry {
            name: "tonic gRPC",
            note: "(the peer)",
            system: tonic,
        },
    ];
    let figures = measure(&entries, &s).await;

    println!();
    println!(
        "alknet/call benchmark: 127.0.0.1, one process, tokio multi-thread runtime, {cpus} CPUs \
         (client and server share them){}",
        if s.quick { ", QUICK run" } else { "" }
    );
    println!(
        "per system and round: {} sequential calls for latency, {} calls per concurrency level, \
         one stream of {} items; {} warm-up calls; median of {} interleaved round(s)",
        s.latency_calls, s.calls_per_level, s.stream_items, s.warmup, s.rounds
    );
    println!(
        "work: {{\"n\": i}} → the same back as JSON, one connection per system; stream items {{\"n\": i}}"
    );
    println!();
    print_table(&entries, &figures, Some(1), &s);
    println!();
    print!("{MAIN_NOTES}");
    let mut failed = failures(&figures);

    if s.variants {
        failed += variants(&s).await?;
    }

    tonic_server.abort();
    drop(entries);
    node.endpoint.shutdown().await;
    ensure!(failed == 0, "{failed} system(s) failed");
    Ok(())
}

/// Diagnostic variants (ALKNET_BENCH_VARIANTS=1); returns how many failed.
async fn variants(s: &Settings) -> Result<usize> {
    let node = alknet_node(CallOptions::default(), true).await?;
    let unchecked = alknet_node(
        CallOptions {
            validate_output: false,
            ..CallOptions::default()
        },
        true,
    )
    .await?;
    let schemaless = alknet_node(CallOptions::default(), false).await?;
    let (a, b) = alknet_core::connection::memory::pair(alknet_call::ALPN);
    let server = CallService::new(
        call_registry(true)?,
        LiveConfig::default(),
        CallOptions::default(),
    )?;
    let _serving = Peer::connect(a, server, None);
    let in_memory = Peer::connect(b, CallService::anonymous(OperationRegistry::new())?, None);

    let call_entries = [
        Entry {
            name: "default",
            note: "(as above)",
            system: node.call_system(1, TransportKind::Quic).await?,
        },
        Entry {
            name: "no-out-check",
            note: "(output unchecked)",
            system: unchecked.call_system(1, TransportKind::Quic).await?,
        },
        Entry {
            name: "schema-true",
            note: "(schemas `true`)",
            system: schemaless.call_system(1, TransportKind::Quic).await?,
        },
        Entry {
            name: "4-conns",
            note: "(4 QUIC conns)",
            system: node.call_system(4, TransportKind::Quic).await?,
        },
        Entry {
            name: "tcp+tls",
            note: "(one stream)",
            system: node.call_system(1, TransportKind::Tcp).await?,
        },
        Entry {
            name: "in-memory",
            note: "(no transport)",
            system: Arc::new(CallSystem::new(vec![in_memory])),
        },
        Entry {
            name: "server-only",
            note: "(wire client)",
            system: Arc::new(CallWireSystem {
                conn: node.dial(alknet_call::ALPN, TransportKind::Quic).await?,
                next_id: AtomicU64::new(1),
            }),
        },
    ];
    let call_figures = measure(&call_entries, s).await;

    let raw_entries = [
        Entry {
            name: "E / S",
            note: "(the limit)",
            system: node.raw_system(b'E', Some(b'S')).await?,
        },
        Entry {
            name: "K / U",
            note: "(lifecycle/unbat.)",
            system: node.raw_system(b'K', Some(b'U')).await?,
        },
        Entry {
            name: "J / -",
            note: "(answer+FIN)",
            system: node.raw_system(b'J', None).await?,
        },
        Entry {
            name: "H / W",
            note: "(+tasks/writer)",
            system: node.raw_system(b'H', Some(b'W')).await?,
        },
    ];
    let raw_figures = measure(&raw_entries, s).await;

    println!();
    println!("alknet/call variants (ALKNET_BENCH_VARIANTS=1), default ÷ variant:");
    println!();
    print_table(&call_entries, &call_figures, Some(0), s);
    println!();
    print!("{CALL_NOTES}");
    println!();
    println!("raw QUIC decomposition (calls / streams), the limit ÷ variant:");
    println!();
    print_table(&raw_entries, &raw_figures, Some(0), s);
    println!();
    print!("{RAW_NOTES}");

    drop(call_entries);
    drop(raw_entries);
    for n in [node, unchecked, schemaless] {
        n.endpoint.shutdown().await;
    }
    Ok(failures(&call_figures) + failures(&raw_figures))
}
