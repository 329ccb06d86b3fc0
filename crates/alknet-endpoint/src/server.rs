//! The server side: one port, QUIC and TCP+TLS, each connection routed to its ALPN's handler.

use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alknet_core::log_text::escaped;
use alknet_core::{
    AuthContext, BoxedStream, Carrier, Connection, ConnectionError, IdentityProvider, SecretKey,
    Transport,
};
use async_trait::async_trait;
use futures::FutureExt;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::Acceptor;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::connection_ids::KeyedConnectionIds;
#[cfg(feature = "iroh")]
use crate::iroh_config::{bind_iroh, IrohConfig, IrohError, Role, IROH_CLOSE_WAIT};
#[cfg(feature = "iroh")]
use crate::iroh_target::IrohTarget;
use crate::limits::{Admission, Limits, Slot, Source};
use crate::quic_tls::PerHelloQuicConfig;
use crate::quic_transport;
use crate::registry::HandlerRegistry;
use crate::tls::{ServerConfigs, ServerIdentity, ServerTls, TlsError};
use crate::transport::{QuicTransport, StreamCredit, INITIAL_STREAM_CREDIT};
use alknet_core::connection::SingleStreamTransport;

/// QUIC application close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x01;
/// QUIC application close code: a connection limit was reached (per IP, through the relay, or
/// node-wide; the reason says which).
pub const CLOSE_LIMIT: u32 = 0x02;
/// QUIC application close code: the handler failed.
pub const CLOSE_HANDLER_ERROR: u32 = 0x03;

/// Static endpoint settings (a change needs a restart).
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Where to listen: UDP for QUIC and TCP on the same port number. Port 0 picks a free one.
    pub listen: SocketAddr,
    /// The node's identity.
    pub key: SecretKey,
    /// How the server proves its identity.
    pub tls: ServerIdentity,
    /// Also accept TCP+TLS (default true).
    pub tcp: bool,
    /// Limits.
    pub limits: Limits,
    /// How long shutdown waits for in-flight handlers before cutting them off (default 10 s).
    pub drain_timeout: Duration,
    /// How long a handshake may take, QUIC or TCP+TLS, from the first packet or the accepted TCP
    /// connection (default 10 s). A client that trickles its handshake is cut off here.
    pub handshake_timeout: Duration,
    /// How long a QUIC connection may stay silent before it counts as lost (default
    /// [`IDLE_TIMEOUT`](crate::quic_transport::IDLE_TIMEOUT), 30 s): a peer that vanished
    /// without closing (killed, unplugged) is noticed then, and its requests are cancelled.
    /// Clients keep live connections busy with a keep-alive every 10 s.
    pub quic_idle_timeout: Duration,
    /// Also accept over iroh, on its own UDP socket (feature `iroh`; default off).
    #[cfg(feature = "iroh")]
    pub iroh: Option<IrohConfig>,
}

impl EndpointConfig {
    /// Defaults for a node with `key` listening on `listen`.
    pub fn new(listen: SocketAddr, key: SecretKey) -> Self {
        Self {
            listen,
            key,
            tls: ServerIdentity::RawKey,
            tcp: true,
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            quic_idle_timeout: crate::quic_transport::IDLE_TIMEOUT,
            #[cfg(feature = "iroh")]
            iroh: None,
        }
    }
}

/// The endpoint could not start.
#[derive(Debug, Error)]
pub enum EndpointError {
    /// The TLS identity could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The registry has no handlers, so no ALPN could be negotiated.
    #[error("no protocol handlers registered; register at least one ALPN")]
    NoHandlers,
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// quinn refused the configuration.
    #[error("QUIC configuration: {0}")]
    Quic(String),
    /// The iroh endpoint could not start.
    #[cfg(feature = "iroh")]
    #[error(transparent)]
    Iroh(#[from] IrohError),
    /// The iroh endpoint did not reach its relay in time.
    #[cfg(feature = "iroh")]
    #[error("iroh: not connected to a relay after {0:?}; check the relay URL, that it is reachable, and its certificate (relay_roots)")]
    IrohOffline(Duration),
}

/// What shutdown did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still being served when shutdown began.
    pub in_flight: usize,
    /// Of those, how many were cut off at the drain deadline.
    pub cut_off: usize,
}

/// What an endpoint holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointLoad {
    /// Handshakes in flight.
    pub handshakes: usize,
    /// Open connections (TCP ones from their accepted socket on).
    pub connections: usize,
}

struct Shared {
    registry: HandlerRegistry,
    identity: Arc<dyn IdentityProvider>,
    admission: Admission,
    handshake_timeout: Duration,
    draining: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    active: AtomicUsize,
    /// `Limits::streams_per_connection`: what each connection's stream credit may grow to.
    stream_limit: u32,
}

/// A running node endpoint.
pub struct Endpoint {
    shared: Arc<Shared>,
    quic: quinn::Endpoint,
    local_addr: SocketAddr,
    fingerprint: String,
    key_fingerprint: String,
    tcp: bool,
    drain_timeout: Duration,
    accept_loops: Vec<JoinHandle<()>>,
    #[cfg(feature = "iroh")]
    iroh: Option<(::iroh::Endpoint, JoinHandle<()>)>,
}

fn bind_same_port(
    config: &EndpointConfig,
) -> Result<(UdpSocket, Option<StdTcpListener>), EndpointError> {
    let bind_err = |addr, source| EndpointError::Bind { addr, source };
    // With port 0 the UDP port is chosen first; the TCP port may be taken, so retry a few times.
    let attempts = if config.listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(config.listen).map_err(|e| bind_err(config.listen, e))?;
        quic_transport::size_socket_buffers(&udp);
        let addr = udp.local_addr().map_err(|e| bind_err(config.listen, e))?;
        if !config.tcp {
            return Ok((udp, None));
        }
        match StdTcpListener::bind(addr) {
            Ok(tcp) => return Ok((udp, Some(tcp))),
            Err(e) => last = Some(bind_err(addr, e)),
        }
    }
    Err(last.unwrap_or_else(|| bind_err(config.listen, std::io::ErrorKind::AddrInUse.into())))
}

/// The QUIC crypto config: the raw-key config, or both configs chosen per ClientHello.
fn quic_server_crypto(
    tls: &ServerConfigs,
) -> Result<Arc<dyn quinn::crypto::ServerConfig>, EndpointError> {
    let quic = |config: &Arc<rustls::ServerConfig>| {
        QuicServerConfig::try_from(config.clone())
            .map(Arc::new)
            .map_err(|e| EndpointError::Quic(e.to_string()))
    };
    let raw = quic(tls.raw())?;
    Ok(match tls.certificate() {
        Some(certificate) => Arc::new(PerHelloQuicConfig::new(raw, quic(certificate)?)),
        None => raw,
    })
}

/// The key QUIC stateless resets are made with, derived from the node's key (a deterministic
/// Ed25519 signature of a fixed label, so only the key's holder can compute it). A node restarted
/// with the same key answers packets of connections it no longer knows with resets their peers
/// accept, so they notice at once instead of at their idle timeout; a random key per start (quinn's
/// default) would make those resets unrecognisable.
fn stateless_reset_key(key: &SecretKey) -> Arc<dyn quinn::crypto::HmacKey> {
    let seed = key.sign(b"alknet/quic-stateless-reset-key/v1");
    Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seed))
}

/// The endpoint's QUIC config: stateless resets and connection ids keyed by the node's key. quinn
/// drops packets whose connection id fails the generator's check before it would answer them
/// with a reset; with a random key per start (its default) a restarted node dropped its old
/// connections' packets silently, so their peers noticed only at the idle timeout. With ids
/// keyed by the node's key the restarted node recognises them and resets. The ids carry 64
/// random bits (see [`KeyedConnectionIds`] for why quinn's 24 were not enough).
fn quic_endpoint_config(key: &SecretKey) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::new(stateless_reset_key(key));
    let ids = KeyedConnectionIds::new(key);
    config.cid_generator(move || Box::new(ids.clone()));
    quic_transport::accept_mtu_ceiling(&mut config);
    config
}

impl Endpoint {
    /// Binds the port and starts accepting. Must be called inside a tokio runtime.
    pub async fn bind(
        config: EndpointConfig,
        registry: HandlerRegistry,
        identity: Arc<dyn IdentityProvider>,
    ) -> Result<Self, EndpointError> {
        if registry.is_empty() {
            return Err(EndpointError::NoHandlers);
        }
        let tls = ServerTls::new(&config.key, &config.tls)?;
        let quic_tls = tls.configs(&registry.alpns(Carrier::Quic))?;
        let tcp_tls = tls.configs(&registry.alpns(Carrier::Tcp))?;
        let mut quic_config = quinn::ServerConfig::with_crypto(quic_server_crypto(&quic_tls)?);
        let mut transport = quic_transport::transport(None, config.quic_idle_timeout);
        transport
            .max_concurrent_bidi_streams(
                INITIAL_STREAM_CREDIT
                    .min(config.limits.streams_per_connection)
                    .into(),
            )
            .max_concurrent_uni_streams(0u8.into());
        quic_config.transport_config(Arc::new(transport));

        let (udp, tcp) = bind_same_port(&config)?;
        let local_addr = udp.local_addr().map_err(|e| EndpointError::Bind {
            addr: config.listen,
            source: e,
        })?;
        let quic = quinn::Endpoint::new(
            quic_endpoint_config(&config.key),
            Some(quic_config),
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| EndpointError::Bind {
            addr: local_addr,
            source: e,
        })?;

        let shared = Arc::new(Shared {
            registry,
            identity,
            admission: Admission::new(&config.limits),
            handshake_timeout: config.handshake_timeout,
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            active: AtomicUsize::new(0),
            stream_limit: config.limits.streams_per_connection,
        });
        let mut accept_loops = vec![tokio::spawn(quic_accept_loop(shared.clone(), quic.clone()))];
        if let Some(tcp) = tcp {
            tcp.set_nonblocking(true).map_err(|e| EndpointError::Bind {
                addr: local_addr,
                source: e,
            })?;
            let listener = TcpListener::from_std(tcp).map_err(|e| EndpointError::Bind {
                addr: local_addr,
                source: e,
            })?;
            accept_loops.push(tokio::spawn(tcp_accept_loop(
                shared.clone(),
                listener,
                tcp_tls,
            )));
        }
        #[cfg(feature = "iroh")]
        let iroh = match &config.iroh {
            Some(iroh_config) => {
                let endpoint = bind_iroh(
                    &config.key,
                    iroh_config,
                    Role::Listen,
                    shared.registry.alpns(Carrier::Iroh),
                    config.limits.streams_per_connection,
                    Some(local_addr),
                )
                .await?;
                info!(target: "alknet::endpoint", node_id = %endpoint.id(), addrs = ?endpoint.bound_sockets(), "iroh listening");
                let task = tokio::spawn(iroh_accept_loop(shared.clone(), endpoint.clone()));
                Some((endpoint, task))
            }
            None => None,
        };
        let fingerprint = tls.fingerprint().to_string();
        info!(target: "alknet::endpoint", addr = %local_addr, fingerprint = %fingerprint, "listening");
        Ok(Self {
            shared,
            quic,
            local_addr,
            fingerprint,
            key_fingerprint: tls.key_fingerprint().to_string(),
            tcp: config.tcp,
            drain_timeout: config.drain_timeout,
            accept_loops,
            #[cfg(feature = "iroh")]
            iroh,
        })
    }

    /// The bound address (UDP and TCP share its port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether TCP+TLS is accepted on the same port number.
    pub fn tcp_enabled(&self) -> bool {
        self.tcp
    }

    /// The fingerprint of the configured identity, which clients pin over QUIC: `ed25519:…` for a
    /// raw key, `SHA256:…` for a certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The node key's `ed25519:…` fingerprint. Raw-key peers pin it over TCP+TLS whatever the
    /// configured identity (the same as [`fingerprint`](Self::fingerprint) for a raw-key node).
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    /// The iroh node id: the node's public key (`None` without iroh). Its hex digits are those of
    /// [`fingerprint`](Self::fingerprint) for a raw-key node.
    #[cfg(feature = "iroh")]
    pub fn iroh_node_id(&self) -> Option<alknet_core::PublicKey> {
        let (endpoint, _) = self.iroh.as_ref()?;
        alknet_core::PublicKey::from_bytes(endpoint.id().as_bytes()).ok()
    }

    /// Where this node can be dialed over iroh right now: node id, home relay (once chosen) and
    /// direct addresses. `to_string()` gives the ticket to paste (see [`IrohTarget`]).
    #[cfg(feature = "iroh")]
    pub fn iroh_target(&self) -> Option<IrohTarget> {
        let (endpoint, _) = self.iroh.as_ref()?;
        let mut target = IrohTarget::from_endpoint_addr(&endpoint.addr())?;
        // Sockets bound to one specific IP are direct addresses from the start.
        for addr in endpoint.bound_sockets() {
            if !addr.ip().is_unspecified() && !target.direct_addrs.contains(&addr) {
                target.direct_addrs.push(addr);
            }
        }
        Some(target)
    }

    /// Waits until the iroh endpoint is registered with its home relay, so that dialing through
    /// the relay works, then returns [`iroh_target`](Self::iroh_target). Fails after `timeout`,
    /// and at once without iroh or without relays.
    #[cfg(feature = "iroh")]
    pub async fn iroh_online(&self, timeout: Duration) -> Result<IrohTarget, EndpointError> {
        let Some((endpoint, _)) = self.iroh.as_ref() else {
            return Err(EndpointError::IrohOffline(Duration::ZERO));
        };
        tokio::time::timeout(timeout, endpoint.online())
            .await
            .map_err(|_| EndpointError::IrohOffline(timeout))?;
        self.iroh_target()
            .ok_or(EndpointError::IrohOffline(timeout))
    }

    /// Handshakes in flight and open connections, as the limits count them.
    pub fn load(&self) -> EndpointLoad {
        EndpointLoad {
            handshakes: self.shared.admission.handshakes.held(),
            connections: self.shared.admission.connections.held(),
        }
    }

    /// Stops accepting new connections and new streams at once; [`shutdown`](Self::shutdown) does
    /// this first, then drains.
    pub fn stop_accepting(&self) {
        self.shared.draining.cancel();
    }

    /// Stops accepting at once, lets in-flight handlers finish until the drain timeout, then
    /// closes what remains.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.stop_accepting();
        let shared = &self.shared;
        let mut accept_loops = std::mem::take(&mut self.accept_loops).into_iter();
        // The QUIC loop refuses newcomers until the endpoint closes; the TCP loop ends now.
        let quic_loop = accept_loops.next();
        for task in accept_loops {
            let _ = task.await;
        }
        let in_flight = shared.active.load(Ordering::SeqCst);
        shared.tracker.close();
        let mut cut_off = 0;
        if tokio::time::timeout(self.drain_timeout, shared.tracker.wait())
            .await
            .is_err()
        {
            cut_off = shared.active.load(Ordering::SeqCst);
            warn!(target: "alknet::endpoint", cut_off, "drain deadline passed; closing remaining connections");
            shared.hard_stop.cancel();
            shared.tracker.wait().await;
        }
        self.quic
            .close(CLOSE_SHUTDOWN.into(), b"node shutting down");
        #[cfg(feature = "iroh")]
        let iroh = self.iroh.take().map(|(endpoint, task)| {
            // iroh's close waits for peers to acknowledge; bounded below, and left to finish
            // in the background if it takes longer.
            let closing = tokio::spawn(async move { endpoint.close().await });
            (closing, task)
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), self.quic.wait_idle()).await;
        if let Some(task) = quic_loop {
            let _ = task.await;
        }
        #[cfg(feature = "iroh")]
        if let Some((closing, task)) = iroh {
            let _ = tokio::time::timeout(IROH_CLOSE_WAIT, closing).await;
            // The loop ends once the endpoint is closed; it holds nothing worth waiting for.
            task.abort();
            let _ = task.await;
        }
        info!(target: "alknet::endpoint", in_flight, cut_off, "shut down");
        ShutdownReport { in_flight, cut_off }
    }
}

impl Drop for Endpoint {
    /// Dropping without [`shutdown`](Endpoint::shutdown) closes everything at once.
    fn drop(&mut self) {
        self.shared.draining.cancel();
        self.shared.hard_stop.cancel();
        self.quic
            .close(CLOSE_SHUTDOWN.into(), b"node shutting down");
        for task in &self.accept_loops {
            task.abort();
        }
        #[cfg(feature = "iroh")]
        if let Some((endpoint, task)) = self.iroh.take() {
            task.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { endpoint.close().await });
            }
        }
    }
}

async fn quic_accept_loop(shared: Arc<Shared>, quic: quinn::Endpoint) {
    // Runs until the endpoint closes; once draining, every new connection is refused at once
    // (CONNECTION_REFUSED) instead of being left to time out. Admission is decided here, in
    // arrival order, before anything is spawned.
    while let Some(incoming) = quic.accept().await {
        if shared.draining.is_cancelled() {
            incoming.refuse();
            continue;
        }
        let remote = incoming.remote_address();
        let source = Source::ip(remote.ip());
        let validated = incoming.remote_address_validated();
        // An unvalidated Initial may come from a spoofed address: a Retry (stateless) makes the
        // client prove it receives packets there before it costs a handshake slot.
        if !validated && shared.admission.wants_retry(source) {
            let _ = incoming.retry();
            continue;
        }
        let handshake = match shared.admission.handshakes.try_acquire(source) {
            Ok(slot) => slot,
            Err(full) => {
                refused(remote, "quic", "handshake", full);
                match validated {
                    false => drop(incoming.retry()),
                    true => incoming.refuse(),
                }
                continue;
            }
        };
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            let connecting = match incoming.accept() {
                Ok(connecting) => connecting,
                Err(e) => return handshake_failed(remote, "quic", &e),
            };
            let conn = match tokio::time::timeout(task_shared.handshake_timeout, connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return handshake_failed(remote, "quic", &e),
                Err(_) => return handshake_failed(remote, "quic", &"handshake timed out"),
            };
            drop(handshake);
            let slot = match task_shared.admission.connections.try_acquire(source) {
                Ok(slot) => slot,
                Err(full) => {
                    refused(remote, "quic", "connection", full);
                    conn.close(
                        CLOSE_LIMIT.into(),
                        Admission::refusal(source, full).as_bytes(),
                    );
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol)
                .unwrap_or_default();
            let presented = conn
                .peer_identity()
                .and_then(|p| {
                    p.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
            let credit = StreamCredit::new(INITIAL_STREAM_CREDIT, task_shared.stream_limit);
            let transport = QuicTransport::with_credit(conn, credit);
            serve(
                &task_shared,
                transport,
                Carrier::Quic,
                "quic",
                alpn,
                remote,
                presented,
                slot,
            )
            .await;
        });
    }
}

/// Logs a connection or handshake refused by a limit.
fn refused(remote: SocketAddr, transport: &str, what: &str, full: crate::limits::Full) {
    let limit = match full {
        crate::limits::Full::Source(_) => "per-source",
        crate::limits::Full::Total(_) => "node-wide",
    };
    warn!(target: "alknet::conn", remote = %remote, transport = %transport, limit, "{what} refused: limit reached");
}

#[cfg(feature = "iroh")]
async fn iroh_accept_loop(shared: Arc<Shared>, endpoint: ::iroh::Endpoint) {
    use ::iroh::endpoint::IncomingAddr;
    // Like the QUIC loop: runs until the endpoint closes, refusing newcomers once draining.
    while let Some(incoming) = endpoint.accept().await {
        if shared.draining.is_cancelled() {
            incoming.refuse();
            continue;
        }
        // A relayed connection has no remote IP (it is shown as 0.0.0.0:0); all of them share
        // the relay's limit (the relay sees the IP, we only see the node id).
        let (remote, kind, source) = match incoming.remote_addr() {
            IncomingAddr::Ip(addr) => (addr, "iroh", Source::ip(addr.ip())),
            _ => (
                SocketAddr::from(([0, 0, 0, 0], 0)),
                "iroh-relay",
                Source::Relay,
            ),
        };
        let validated = incoming.remote_addr_validated();
        if kind == "iroh" && !validated && shared.admission.wants_retry(source) {
            let _ = incoming.retry();
            continue;
        }
        let handshake = match shared.admission.handshakes.try_acquire(source) {
            Ok(slot) => slot,
            Err(full) => {
                refused(remote, kind, "handshake", full);
                incoming.refuse();
                continue;
            }
        };
        let task_shared = shared.clone();
        shared.tracker.spawn(async move {
            let accepting = match incoming.accept() {
                Ok(accepting) => accepting,
                Err(e) => return handshake_failed(remote, kind, &e),
            };
            let conn = match tokio::time::timeout(task_shared.handshake_timeout, accepting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return handshake_failed(remote, kind, &e),
                Err(_) => return handshake_failed(remote, kind, &"handshake timed out"),
            };
            drop(handshake);
            let slot = match task_shared.admission.connections.try_acquire(source) {
                Ok(slot) => slot,
                Err(full) => {
                    refused(remote, kind, "connection", full);
                    conn.close(
                        CLOSE_LIMIT.into(),
                        Admission::refusal(source, full).as_bytes(),
                    );
                    return;
                }
            };
            let alpn = conn.alpn().to_vec();
            // iroh's handshake proved the remote holds the secret of this key (raw-key TLS 1.3,
            // signature verified); present it as the same SPKI a quinn client would.
            let presented = alknet_core::PublicKey::from_bytes(conn.remote_id().as_bytes())
                .ok()
                .map(|key| key.to_spki_der());
            let credit = StreamCredit::new(INITIAL_STREAM_CREDIT, task_shared.stream_limit);
            let transport = crate::transport::IrohTransport::with_credit(conn, credit);
            serve(
                &task_shared,
                transport,
                Carrier::Iroh,
                kind,
                alpn,
                remote,
                presented,
                slot,
            )
            .await;
        });
    }
}

async fn tcp_accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: ServerConfigs) {
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = shared.draining.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE; back off briefly rather than spin.
                    warn!(target: "alknet::endpoint", error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // TCP's own handshake proved the address, so the connection counts from here on; a
        // refused one is closed before TLS starts.
        let source = Source::ip(remote.ip());
        let admitted = shared
            .admission
            .connections
            .try_acquire(source)
            .and_then(|slot| {
                let handshake = shared.admission.handshakes.try_acquire(source)?;
                Ok((slot, handshake))
            });
        let (slot, handshake) = match admitted {
            Ok(slots) => slots,
            Err(full) => {
                refused(remote, "tcp", "connection", full);
                continue;
            }
        };
        let task_shared = shared.clone();
        let tls = tls.clone();
        shared.tracker.spawn(async move {
            crate::tcp::configure(&stream);
            // One deadline for reading the ClientHello and for the rest of the handshake, so a
            // client trickling bytes (slowloris) is cut off at it too.
            let handshaking = async {
                let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
                let config = tls.for_client_hello(&start.client_hello());
                start.into_stream(config).await
            };
            let tls = match tokio::time::timeout(task_shared.handshake_timeout, handshaking).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return handshake_failed(remote, "tcp", &e),
                Err(_) => return handshake_failed(remote, "tcp", &"handshake timed out"),
            };
            drop(handshake);
            let (_, session) = tls.get_ref();
            let alpn = session
                .alpn_protocol()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let presented = session
                .peer_certificates()
                .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
            let transport = SingleStreamTransport::new(tls);
            serve(
                &task_shared,
                transport,
                Carrier::Tcp,
                "tcp",
                alpn,
                remote,
                presented,
                slot,
            )
            .await;
        });
    }
}

fn handshake_failed(remote: SocketAddr, transport: &str, error: &dyn std::fmt::Display) {
    // A failed signature check lands here; fail2ban can match this line.
    info!(target: "alknet::auth", remote = %remote, transport = %transport, reason = %escaped(error), "authentication rejected: handshake failed");
}

/// Refuses new streams on multi-stream carriers once the node drains, so a handler that loops on
/// `accept_bi` stops taking work even if it never looks at `Connection::draining`. A
/// single-stream connection still hands out its one stream (it was accepted before the drain);
/// there the handler learns of the drain from `Connection::draining` only.
struct DrainAware<T> {
    inner: T,
    draining: CancellationToken,
}

#[async_trait]
impl<T: Transport> Transport for DrainAware<T> {
    async fn accept_bi(&self) -> Result<BoxedStream, ConnectionError> {
        if self.inner.is_single_stream() {
            return self.inner.accept_bi().await;
        }
        tokio::select! {
            _ = self.draining.cancelled() => Err(ConnectionError::Closed("node shutting down".into())),
            s = self.inner.accept_bi() => s,
        }
    }
    async fn open_bi(&self) -> Result<BoxedStream, ConnectionError> {
        self.inner.open_bi().await
    }
    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason)
    }
    async fn closed(&self) {
        self.inner.closed().await
    }
    fn is_single_stream(&self) -> bool {
        self.inner.is_single_stream()
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Shared,
    transport: impl Transport,
    carrier: Carrier,
    kind: &'static str,
    alpn: Vec<u8>,
    remote: SocketAddr,
    presented: Option<Vec<u8>>,
    _slot: Slot,
) {
    let started = Instant::now();
    let alpn_shown = escaped(String::from_utf8_lossy(&alpn)).to_string();
    let Some(handler) = shared.registry.get(&alpn, carrier).cloned() else {
        // Cannot happen: only registered ALPNs are advertised.
        warn!(target: "alknet::conn", remote = %remote, alpn = %alpn_shown, "no handler for negotiated ALPN");
        transport.close(CLOSE_HANDLER_ERROR, "no handler");
        return;
    };
    let candidates = presented
        .as_deref()
        .map(crate::verifier::candidate_fingerprints)
        .unwrap_or_default();
    let resolved = candidates.iter().find_map(|fp| {
        let fp = fp.to_string();
        shared
            .identity
            .resolve_from_fingerprint(&fp)
            .map(|id| (fp, id))
    });
    let (fingerprint, identity) = match resolved {
        Some((fp, id)) => (Some(fp), Some(id)),
        None => (candidates.first().map(|fp| fp.to_string()), None),
    };
    match (&fingerprint, &identity) {
        (Some(fp), Some(id)) => {
            info!(target: "alknet::auth", remote = %remote, alpn = %alpn_shown, fingerprint = %fp, peer = %id.id, "authentication accepted")
        }
        (fp, _) => {
            info!(target: "alknet::auth", remote = %remote, alpn = %alpn_shown, fingerprint = %fp.as_deref().unwrap_or("none"), "authentication rejected: unknown key")
        }
    }
    info!(target: "alknet::conn", remote = %remote, alpn = %alpn_shown, transport = %kind, "connection opened");
    let conn = Connection::new(
        DrainAware {
            inner: transport,
            draining: shared.draining.clone(),
        },
        &alpn,
        remote,
    )
    .with_drain(shared.draining.clone())
    .with_carrier(carrier);
    let auth = AuthContext {
        identity,
        alpn: alpn.clone(),
        remote_addr: remote,
        tls_fingerprint: fingerprint,
        bearer: None,
    };
    shared.active.fetch_add(1, Ordering::SeqCst);
    let outcome = tokio::select! {
        r = AssertUnwindSafe(handler.handle(conn.clone(), auth)).catch_unwind() => match r {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => {
                warn!(target: "alknet::conn", remote = %remote, alpn = %alpn_shown, error = %escaped(&e), "handler failed");
                conn.close(CLOSE_HANDLER_ERROR, "handler error");
                "handler error".to_string()
            }
            Err(_) => {
                warn!(target: "alknet::conn", remote = %remote, alpn = %alpn_shown, "handler panicked");
                conn.close(CLOSE_HANDLER_ERROR, "handler error");
                "handler panicked".to_string()
            }
        },
        _ = shared.hard_stop.cancelled() => {
            conn.close(CLOSE_SHUTDOWN, "node shutting down");
            "cut off at drain deadline".to_string()
        }
    };
    shared.active.fetch_sub(1, Ordering::SeqCst);
    conn.close(0, "done");
    info!(target: "alknet::conn", remote = %remote, alpn = %alpn_shown, transport = %kind, outcome = %outcome, duration_ms = started.elapsed().as_millis() as u64, "connection closed");
}
