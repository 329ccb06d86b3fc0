//! Loopback benchmark of the endpoint: connection setup and bulk throughput for QUIC and TCP+TLS
//! with Ed25519 raw keys, next to plain TCP (no TLS) as the reference; with feature `iroh`, also
//! iroh direct and iroh through an in-process relay.
//!
//! ```text
//! cargo bench -p alknet-endpoint --bench endpoint                          # full run
//! cargo bench -p alknet-endpoint --features iroh --bench endpoint          # with the iroh rows
//! ALKNET_BENCH_QUICK=1 cargo bench -p alknet-endpoint --bench endpoint     # smoke run
//! ALKNET_BENCH_BULK=0 cargo bench -p alknet-endpoint --bench endpoint      # connections only
//! ALKNET_BENCH_BULK_ONLY=1 cargo bench -p alknet-endpoint --bench endpoint  # bulk column only
//! ```
//!
//! Client and server run in one process on one multi-threaded tokio runtime and talk over
//! 127.0.0.1 only. Every phase is bounded in count, and every operation in time.

#[cfg(feature = "relay")]
#[path = "../tests/support/relay.rs"]
mod relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_core::{
    Alpn, AuthConfig, AuthContext, BoxedStream, Chunks, ConfigIdentityProvider, ConfigStore,
    Connection, HandlerError, ProtocolHandler, SecretKey,
};
use alknet_endpoint::{
    Client, DialOptions, Endpoint, EndpointConfig, HandlerRegistry, TransportKind,
};
use anyhow::{ensure, Context, Result};
use async_trait::async_trait;
use bytes::{Buf, Bytes};
use std::future::poll_fn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Answers one byte per stream, then waits for the peer to finish.
const PING_ALPN: &[u8] = b"bench-ping";
/// Reads and discards a stream, then reports the byte count (u64, big-endian).
const SINK_ALPN: &[u8] = b"bench-sink";
/// Read and write buffer size, the same for every transport.
const BUF: usize = 64 * 1024;
/// Concurrent dialers in the connections/second phase.
const CONCURRENCY: usize = 16;
/// Sequential dials made (and not measured) before each measured series.
const WARMUP_DIALS: usize = 10;
/// Longest a single dial plus round trip may take.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the concurrent phase may run; it stops early and reports what it did.
const CONCURRENT_DEADLINE: Duration = Duration::from_secs(60);
/// Longest one bulk transfer may take.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Settings {
    quick: bool,
    /// Only the bulk column (`ALKNET_BENCH_BULK_ONLY=1`, for profiling and tuning runs).
    bulk_only: bool,
    sequential_dials: usize,
    concurrent_total: usize,
    bulk_bytes: u64,
    /// Whether the bulk transfers run (`ALKNET_BENCH_BULK=0` skips them, e.g. to profile
    /// handshakes alone).
    bulk: bool,
}

impl Settings {
    fn from_env() -> Self {
        let quick = std::env::var("ALKNET_BENCH_QUICK").is_ok_and(|v| v == "1");
        let bulk = std::env::var("ALKNET_BENCH_BULK").map_or(true, |v| v != "0");
        let bulk_only = std::env::var("ALKNET_BENCH_BULK_ONLY").is_ok_and(|v| v == "1");
        if quick {
            Self {
                quick,
                bulk_only,
                bulk,
                sequential_dials: 50,
                concurrent_total: 200,
                bulk_bytes: 32 << 20,
            }
        } else {
            Self {
                quick,
                bulk_only,
                bulk,
                sequential_dials: 200,
                concurrent_total: 2000,
                bulk_bytes: 512 << 20,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream roles, shared by all transports.

async fn serve_ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).await?;
    s.write_all(&byte).await?;
    s.flush().await?;
    let mut rest = [0u8; 16];
    while s.read(&mut rest).await? != 0 {}
    Ok(())
}

async fn client_ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<()> {
    s.write_all(b"?").await?;
    s.flush().await?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).await?;
    s.shutdown().await
}

async fn serve_sink<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await? {
            0 => break,
            n => total += n as u64,
        }
    }
    s.write_all(&total.to_be_bytes()).await?;
    s.shutdown().await?;
    Ok(total)
}

/// Sends `bytes` bytes, then waits for the sink's count; returns that count.
async fn client_push<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: u64,
) -> std::io::Result<u64> {
    let buf = vec![0xa5u8; BUF];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    Ok(u64::from_be_bytes(count))
}

/// [`serve_sink`] for an endpoint stream, taking what arrives as chunks (no copy out of QUIC's
/// receive buffers; TCP+TLS reads into a chunk as before).
async fn serve_sink_chunks(s: &mut BoxedStream) -> std::io::Result<u64> {
    let mut chunks = Chunks::new();
    let mut total = 0u64;
    loop {
        match poll_fn(|cx| s.poll_read_chunks(cx, &mut chunks, BUF)).await? {
            0 => break,
            n => total += n as u64,
        }
        chunks.advance(chunks.remaining());
    }
    s.write_all(&total.to_be_bytes()).await?;
    s.shutdown().await?;
    Ok(total)
}

/// [`client_push`] for an endpoint stream: hands it chunks of one shared buffer (QUIC keeps the
/// chunk, not a copy; TCP+TLS encrypts from it as before).
async fn client_push_chunks(s: &mut BoxedStream, bytes: u64) -> std::io::Result<u64> {
    let buf = Bytes::from(vec![0xa5u8; BUF]);
    let mut chunks = Chunks::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        chunks.push(buf.slice(..n));
        while !chunks.is_empty() {
            poll_fn(|cx| s.poll_write_chunks(cx, &mut chunks)).await?;
        }
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    Ok(u64::from_be_bytes(count))
}

// ---------------------------------------------------------------------------------------------
// Servers.

/// The endpoint's handler for both roles: serves each stream inline until the connection ends
/// (a QUIC connection closes; a TCP+TLS connection ends with its one stream).
struct BenchHandler {
    alpn: &'static [u8],
}

#[async_trait]
impl ProtocolHandler for BenchHandler {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(self.alpn)]
    }

    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        while let Ok(mut stream) = conn.accept_bi().await {
            if self.alpn == SINK_ALPN {
                let _ = serve_sink_chunks(&mut stream).await;
            } else {
                let _ = serve_ping(&mut stream).await;
            }
        }
        Ok(())
    }
}

/// Plain TCP servers for the reference rows; the tasks are aborted on drop.
struct PlainServers {
    ping: SocketAddr,
    sink: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PlainServers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn plain_listener(sink: bool) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                if sink {
                    let _ = serve_sink(&mut stream).await;
                } else {
                    let _ = serve_ping(&mut stream).await;
                }
            });
        }
    });
    Ok((addr, task))
}

async fn plain_servers() -> Result<PlainServers> {
    let (ping, ping_task) = plain_listener(false).await?;
    let (sink, sink_task) = plain_listener(true).await?;
    Ok(PlainServers {
        ping,
        sink,
        tasks: vec![ping_task, sink_task],
    })
}

async fn endpoint(edit: impl FnOnce(&mut EndpointConfig)) -> Result<Endpoint> {
    let mut config = EndpointConfig::new("127.0.0.1:0".parse()?, SecretKey::generate());
    edit(&mut config);
    let registry = HandlerRegistry::new([
        Arc::new(BenchHandler { alpn: PING_ALPN }) as Arc<dyn ProtocolHandler>,
        Arc::new(BenchHandler { alpn: SINK_ALPN }),
    ])?;
    let identity = Arc::new(ConfigIdentityProvider::new(ConfigStore::new(
        AuthConfig::default(),
    )?));
    Ok(Endpoint::bind(config, registry, identity).await?)
}

// ---------------------------------------------------------------------------------------------
// Clients.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Quic,
    QuicResumed,
    /// Bulk only, on a node and client made after MTU discovery's ceiling was raised to 65 527
    /// (loopback's limit): issue 15's "figure with discovery on".
    QuicDiscovery,
    Tls,
    TlsResumed,
    Plain,
    #[cfg(feature = "relay")]
    IrohDirect,
    #[cfg(feature = "relay")]
    IrohRelay,
}

impl Kind {
    const ALL: &[Kind] = &[
        Kind::Quic,
        Kind::QuicResumed,
        #[cfg(feature = "relay")]
        Kind::IrohDirect,
        #[cfg(feature = "relay")]
        Kind::IrohRelay,
        Kind::Tls,
        Kind::TlsResumed,
        Kind::Plain,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Quic => "QUIC, raw key",
            Kind::QuicDiscovery => "QUIC, MTU up to 65 527",
            Kind::QuicResumed => "QUIC, raw key, resumed",
            Kind::Tls => "TCP+TLS, raw key",
            Kind::TlsResumed => "TCP+TLS, raw key, resumed",
            Kind::Plain => "plain TCP (reference)",
            #[cfg(feature = "relay")]
            Kind::IrohDirect => "iroh, direct",
            #[cfg(feature = "relay")]
            Kind::IrohRelay => "iroh, via relay",
        }
    }

    /// Whether the client resumes TLS sessions: only the `resumed` rows do, so the others measure
    /// full handshakes (both signatures checked), as before resumption existed.
    fn resumes(self) -> bool {
        matches!(self, Kind::QuicResumed | Kind::TlsResumed)
    }
}

/// Where the servers are.
#[derive(Clone)]
struct Targets {
    endpoint: SocketAddr,
    fingerprint: String,
    plain_ping: SocketAddr,
    plain_sink: SocketAddr,
    /// The endpoint over iroh, at its direct address.
    #[cfg(feature = "relay")]
    iroh_direct: alknet_endpoint::IrohTarget,
    /// A relay-only endpoint, by node id and relay URL.
    #[cfg(feature = "relay")]
    iroh_relay: alknet_endpoint::IrohTarget,
    /// The dialers' iroh settings (trusting the relay's certificate).
    #[cfg(feature = "relay")]
    iroh_config: alknet_endpoint::IrohConfig,
}

impl Targets {
    /// A client for `kind` with its own key (and, with iroh, its own iroh endpoint).
    fn client(&self, kind: Kind) -> Result<Client> {
        #[cfg(feature = "relay")]
        let mut client = Client::with_iroh(SecretKey::generate(), self.iroh_config.clone())?;
        #[cfg(not(feature = "relay"))]
        let mut client = Client::new(SecretKey::generate())?;
        client.set_resumption(kind.resumes());
        Ok(client)
    }
}

enum Dialed {
    Endpoint(Connection),
    Plain(TcpStream),
}

async fn dial(client: &Client, targets: &Targets, kind: Kind, alpn: &[u8]) -> Result<Dialed> {
    let transport = match kind {
        Kind::Quic | Kind::QuicResumed | Kind::QuicDiscovery => TransportKind::Quic,
        Kind::Tls | Kind::TlsResumed => TransportKind::Tcp,
        #[cfg(feature = "relay")]
        Kind::IrohDirect => {
            return Ok(Dialed::Endpoint(
                client.dial_iroh(&targets.iroh_direct, alpn).await?,
            ))
        }
        #[cfg(feature = "relay")]
        Kind::IrohRelay => {
            return Ok(Dialed::Endpoint(
                client.dial_iroh(&targets.iroh_relay, alpn).await?,
            ))
        }
        Kind::Plain => {
            let addr = if alpn == SINK_ALPN {
                targets.plain_sink
            } else {
                targets.plain_ping
            };
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            return Ok(Dialed::Plain(stream));
        }
    };
    let options = DialOptions::pinned(alpn, targets.fingerprint.as_str()).over(transport);
    Ok(Dialed::Endpoint(
        client.dial(targets.endpoint, &options).await?,
    ))
}

/// The connection's stream: QUIC opens one; TCP+TLS hands out its only stream.
async fn stream_of(conn: &Connection) -> Result<BoxedStream> {
    Ok(if conn.is_single_stream() {
        conn.accept_bi().await?
    } else {
        conn.open_bi().await?
    })
}

/// One byte there and back through the server, then close.
async fn ping(dialed: Dialed) -> Result<()> {
    match dialed {
        Dialed::Plain(mut stream) => client_ping(&mut stream).await?,
        Dialed::Endpoint(conn) => {
            let mut stream = stream_of(&conn).await?;
            client_ping(&mut stream).await?;
            drop(stream);
            conn.close(0, "done");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measurements.

struct Row {
    kind: Kind,
    setup_p50: Duration,
    setup_p99: Duration,
    sequential_rate: f64,
    concurrent_rate: f64,
    concurrent_done: usize,
    concurrent_failed: usize,
    /// Process CPU time (client and server together) per completed concurrent cycle: unlike the
    /// rates, it barely moves when other processes share the cores.
    concurrent_cpu: Option<Duration>,
    bulk_mb_s: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `n` sequential dial + ping + close cycles; returns the sorted dial times and the wall time.
async fn sequential(
    client: &Client,
    targets: &Targets,
    kind: Kind,
    n: usize,
) -> Result<(Vec<Duration>, Duration)> {
    for _ in 0..WARMUP_DIALS {
        let dialed = timeout(OP_TIMEOUT, dial(client, targets, kind, PING_ALPN)).await??;
        timeout(OP_TIMEOUT, ping(dialed)).await??;
    }
    let mut setups = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let dialed = timeout(OP_TIMEOUT, dial(client, targets, kind, PING_ALPN))
            .await
            .with_context(|| format!("{kind:?} dial {i} timed out"))?
            .with_context(|| format!("{kind:?} dial {i}"))?;
        setups.push(t0.elapsed());
        timeout(OP_TIMEOUT, ping(dialed))
            .await
            .with_context(|| format!("{kind:?} ping {i} timed out"))?
            .with_context(|| format!("{kind:?} ping {i}"))?;
    }
    let wall = started.elapsed();
    setups.sort();
    Ok((setups, wall))
}

/// CPU time this process used so far (user + system, both ends of every connection), from
/// `/proc/self/stat` in clock ticks of 10 ms; `None` where that file does not exist.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// `CONCURRENCY` dialers, each with its own client key and socket, sharing `total` dial + ping +
/// close cycles; returns (completed, failed, wall time).
async fn concurrent(
    targets: Arc<Targets>,
    kind: Kind,
    total: usize,
) -> Result<(usize, usize, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + CONCURRENT_DEADLINE;
    let mut dialers = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        let client = targets.client(kind)?;
        let targets = targets.clone();
        let next = next.clone();
        dialers.push(tokio::spawn(async move {
            let (mut done, mut failed) = (0usize, 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let cycle = async {
                    let dialed = dial(&client, &targets, kind, PING_ALPN).await?;
                    ping(dialed).await
                };
                match timeout(OP_TIMEOUT, cycle).await {
                    Ok(Ok(())) => done += 1,
                    Ok(Err(e)) => {
                        failed += 1;
                        if failed <= 3 {
                            eprintln!("  {kind:?} concurrent cycle failed: {e:#}");
                        }
                    }
                    Err(_) => {
                        failed += 1;
                        if failed <= 3 {
                            eprintln!("  {kind:?} concurrent cycle timed out");
                        }
                    }
                }
            }
            client.close();
            (done, failed)
        }));
    }
    let (mut done, mut failed) = (0, 0);
    for dialer in dialers {
        let (d, f) = dialer.await?;
        done += d;
        failed += f;
    }
    Ok((done, failed, started.elapsed()))
}

/// Sends `bytes` over one stream; the clock runs from opening the stream until the sink's byte
/// count came back.
async fn bulk(client: &Client, targets: &Targets, kind: Kind, bytes: u64) -> Result<Duration> {
    let dialed = timeout(OP_TIMEOUT, dial(client, targets, kind, SINK_ALPN)).await??;
    let transfer = async {
        let started = Instant::now();
        let (received, conn) = match dialed {
            Dialed::Plain(mut stream) => (client_push(&mut stream, bytes).await?, None),
            Dialed::Endpoint(conn) => {
                let mut stream = stream_of(&conn).await?;
                (client_push_chunks(&mut stream, bytes).await?, Some(conn))
            }
        };
        let elapsed = started.elapsed();
        if let Some(conn) = conn {
            conn.close(0, "done");
        }
        ensure!(received == bytes, "sink got {received} of {bytes} bytes");
        Ok(elapsed)
    };
    timeout(BULK_TIMEOUT, transfer)
        .await
        .with_context(|| format!("{kind:?} bulk transfer timed out"))?
}

async fn measure(targets: &Arc<Targets>, kind: Kind, settings: &Settings) -> Result<Row> {
    let client = &targets.client(kind)?;
    let (setups, wall, done, failed, concurrent_wall, concurrent_cpu) = if settings.bulk_only {
        let none = Duration::from_secs(1);
        (vec![Duration::ZERO], none, 0, 0, none, None)
    } else {
        eprintln!("{}: sequential dials", kind.label());
        let (setups, wall) = sequential(client, targets, kind, settings.sequential_dials).await?;
        eprintln!("{}: {CONCURRENCY} concurrent dialers", kind.label());
        let cpu_before = process_cpu();
        let (done, failed, concurrent_wall) =
            concurrent(targets.clone(), kind, settings.concurrent_total).await?;
        let concurrent_cpu = match (cpu_before, process_cpu()) {
            (Some(before), Some(after)) if done > 0 => Some((after - before) / done as u32),
            _ => None,
        };
        (setups, wall, done, failed, concurrent_wall, concurrent_cpu)
    };
    // Resumption changes the handshake only: its rows skip the bulk transfer.
    let bulk_mb_s = if settings.bulk && !kind.resumes() {
        eprintln!("{}: bulk transfer", kind.label());
        // A short warm-up transfer, then the measured one.
        bulk(client, targets, kind, (4 << 20).min(settings.bulk_bytes)).await?;
        let elapsed = bulk(client, targets, kind, settings.bulk_bytes).await?;
        settings.bulk_bytes as f64 / elapsed.as_secs_f64() / 1e6
    } else {
        f64::NAN
    };
    client.close();
    Ok(Row {
        kind,
        setup_p50: percentile(&setups, 0.50),
        setup_p99: percentile(&setups, 0.99),
        sequential_rate: setups.len() as f64 / wall.as_secs_f64(),
        concurrent_rate: done as f64 / concurrent_wall.as_secs_f64(),
        concurrent_done: done,
        concurrent_failed: failed,
        concurrent_cpu,
        bulk_mb_s,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn print_table(settings: &Settings, workers: usize, rows: &[Row]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "alknet-endpoint loopback benchmark ({} mode)",
        if settings.quick { "quick" } else { "full" }
    );
    println!(
        "CPUs: {cpus} ({} {}); tokio multi-thread runtime, {workers} workers shared by client and server",
        std::env::consts::OS,
        std::env::consts::ARCH,
    );
    println!(
        "setup: {} sequential dials after {WARMUP_DIALS} warm-up; concurrent: {CONCURRENCY} dialers, {} connections; bulk: {} MiB over one stream, {} KiB buffers",
        settings.sequential_dials,
        settings.concurrent_total,
        settings.bulk_bytes >> 20,
        BUF >> 10,
    );
    println!();
    println!(
        "| {:<26} | {:>12} | {:>12} | {:>10} | {:>14} | {:>12} | {:>10} |",
        "transport",
        "setup p50",
        "setup p99",
        "conn/s seq",
        "conn/s 16 conc",
        "CPU per conn",
        "bulk MB/s"
    );
    println!(
        "|{:-<28}|{:->13}:|{:->13}:|{:->11}:|{:->15}:|{:->13}:|{:->11}:|",
        "", "", "", "", "", "", ""
    );
    for row in rows {
        let concurrent = if row.concurrent_failed > 0 {
            format!(
                "{:.0} ({} failed)",
                row.concurrent_rate, row.concurrent_failed
            )
        } else {
            format!("{:.0}", row.concurrent_rate)
        };
        let bulk = if row.bulk_mb_s.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0}", row.bulk_mb_s)
        };
        let dials = |text: String| {
            if settings.bulk_only || row.kind == Kind::QuicDiscovery {
                "-".to_string()
            } else {
                text
            }
        };
        println!(
            "| {:<26} | {:>12} | {:>12} | {:>10} | {:>14} | {:>12} | {:>10} |",
            row.kind.label(),
            dials(ms(row.setup_p50)),
            dials(ms(row.setup_p99)),
            dials(format!("{:.0}", row.sequential_rate)),
            dials(concurrent),
            row.concurrent_cpu.map_or("-".to_string(), |cpu| format!(
                "{:.0} µs",
                cpu.as_secs_f64() * 1e6
            )),
            bulk,
        );
    }
    println!();
    println!("setup = time for Client::dial (iroh: Client::dial_iroh) to return (plain TCP: TcpStream::connect).");
    #[cfg(feature = "relay")]
    println!(
        "iroh, direct: node id + 127.0.0.1 address, no relay; iroh, via relay: node id + relay URL only, to a relay-only node (in-process relay on 127.0.0.1, HTTPS)."
    );
    println!(
        "conn/s = full cycles per second: dial, 1-byte round trip through the server handler, close."
    );
    println!(
        "CPU per conn = this process's CPU time (client and server, user + system) per concurrent cycle; it moves little when other work shares the cores, unlike the rates."
    );
    println!(
        "raw key rows: full TLS 1.3 handshakes (resumption off); resumed: the same with TLS session resumption on, so every dial after a client's first resumes (bulk not repeated)."
    );
    println!(
        "bulk = bytes / time from opening the stream until the sink reported the byte count; MB = 10^6 bytes."
    );
    println!(
        "QUIC rows probe the path MTU up to 1 452 bytes of UDP payload (a 1 500-byte path); \"QUIC, MTU up to 65 527\" lets discovery climb to loopback's limit (bulk only)."
    );
    let short: Vec<String> = rows
        .iter()
        .filter(|r| {
            !settings.bulk_only
                && r.kind != Kind::QuicDiscovery
                && r.concurrent_done + r.concurrent_failed < settings.concurrent_total
        })
        .map(|r| format!("{} ({} done)", r.kind.label(), r.concurrent_done))
        .collect();
    if !short.is_empty() {
        println!(
            "concurrent phase hit its {} s cap for: {}",
            CONCURRENT_DEADLINE.as_secs(),
            short.join(", ")
        );
    }
}

async fn run(settings: Settings, workers: usize) -> Result<()> {
    #[cfg(feature = "relay")]
    let relay = relay::TestRelay::start().await?;
    #[cfg(feature = "relay")]
    let direct = alknet_endpoint::IrohConfig {
        bind: Some("127.0.0.1:0".parse()?),
        ..alknet_endpoint::IrohConfig::default()
    };
    let node = endpoint(|_c| {
        #[cfg(feature = "relay")]
        {
            _c.iroh = Some(direct.clone());
        }
    })
    .await?;
    // Relay-only: no direct path exists, so every byte goes through the relay.
    #[cfg(feature = "relay")]
    let relayed = endpoint(|c| {
        c.iroh = Some(alknet_endpoint::IrohConfig {
            direct: false,
            ..relay.config()
        })
    })
    .await?;
    #[cfg(feature = "relay")]
    let relayed_target = relayed.iroh_online(Duration::from_secs(30)).await?;
    let plain = plain_servers().await?;
    let targets = Arc::new(Targets {
        endpoint: node.local_addr(),
        fingerprint: node.fingerprint().to_string(),
        plain_ping: plain.ping,
        plain_sink: plain.sink,
        #[cfg(feature = "relay")]
        iroh_direct: node.iroh_target().context("the node has no iroh address")?,
        #[cfg(feature = "relay")]
        iroh_relay: relayed_target,
        #[cfg(feature = "relay")]
        iroh_config: relay.trusting(),
    });
    let mut rows = Vec::new();
    for &kind in Kind::ALL {
        rows.push(measure(&targets, kind, &settings).await?);
    }
    // The same bulk transfer with MTU discovery free to climb to loopback's limit (both ends
    // made after the ceiling was raised accept datagrams that large).
    let discovery = if settings.bulk {
        alknet_endpoint::quic_transport::set_mtu_ceiling_for_benchmarks(65_527);
        let jumbo = endpoint(|_| {}).await?;
        let targets = Arc::new(Targets {
            endpoint: jumbo.local_addr(),
            fingerprint: jumbo.fingerprint().to_string(),
            ..(*targets).clone()
        });
        let bulk_only = Settings {
            bulk_only: true,
            ..settings.clone()
        };
        rows.push(measure(&targets, Kind::QuicDiscovery, &bulk_only).await?);
        alknet_endpoint::quic_transport::set_mtu_ceiling_for_benchmarks(
            alknet_endpoint::quic_transport::MAX_UDP_PAYLOAD,
        );
        Some(jumbo)
    } else {
        None
    };
    print_table(&settings, workers, &rows);
    if let Some(jumbo) = discovery {
        let _ = timeout(Duration::from_secs(15), jumbo.shutdown()).await;
    }
    drop(plain);
    let _ = timeout(Duration::from_secs(15), node.shutdown()).await;
    #[cfg(feature = "relay")]
    let _ = timeout(Duration::from_secs(15), relayed.shutdown()).await;
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let settings = Settings::from_env();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(run(settings, workers))
}
