//! `alknet/tunnel`: the native tunnel. Each forwarded TCP connection is its own QUIC stream
//! (over QUIC or iroh) or its own TLS connection (over TCP+TLS, for networks that block UDP),
//! that starts with a small header naming the destination; the node answers with one status
//! byte and then carries raw bytes both ways. No SSH framing, no second layer of encryption:
//! TLS authenticated the client's key, which must resolve to a known peer, and the same
//! [`ForwardingPolicy`] and log rules as SSH apply. The contract is in `docs/tunnel.md`.
//!
//! ```text
//! client → node   u8 version (1) | u8 host length N (1–255) | N bytes host | u16 port (big-endian)
//! node → client   u8 status: 0 connected, 1 refused, 2 unresolved, 3 connect failed,
//!                            4 channel limit, 5 bad header
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_core::config::ConfigStore;
use alknet_core::{
    Alpn, AuthContext, BoxedStream, Carrier, Connection, HandlerError, ProtocolHandler,
};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use crate::client::{BoxedDuplex, ClientError, Opener};
use crate::outbound::{self, OutboundError};
use crate::policy::{ForwardingPolicy, Transport};
use crate::server::Slots;

/// The ALPN of the native tunnel.
pub const TUNNEL_ALPN: &[u8] = b"alknet/tunnel";
/// The header version this node speaks.
pub const VERSION: u8 = 1;
/// How long a client has to send a stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The status byte the node answers a header with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Connected; raw bytes follow.
    Connected = 0,
    /// The forwarding policy refused the destination.
    Refused = 1,
    /// The name did not resolve on the node.
    Unresolved = 2,
    /// The node could not connect.
    ConnectFailed = 3,
    /// The connection holds `max_channels` streams already.
    Limit = 4,
    /// The header was malformed (or of another version).
    BadHeader = 5,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Connected => "opened",
            Status::Refused => "refused",
            Status::Unresolved => "unresolved",
            Status::ConnectFailed => "failed",
            Status::Limit => "limit",
            Status::BadHeader => "bad-header",
        }
    }
}

/// Encodes a stream header; `None` when the host is empty or longer than 255 bytes.
pub fn encode_header(host: &str, port: u16) -> Option<Vec<u8>> {
    let len = u8::try_from(host.len()).ok().filter(|n| *n > 0)?;
    let mut header = Vec::with_capacity(4 + host.len());
    header.extend_from_slice(&[VERSION, len]);
    header.extend_from_slice(host.as_bytes());
    header.extend_from_slice(&port.to_be_bytes());
    Some(header)
}

/// Reads a stream header: the destination, or `None` when it is malformed.
async fn read_header(stream: &mut BoxedStream) -> Option<(String, u16)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.ok()?;
    if head[0] != VERSION || head[1] == 0 {
        return None;
    }
    let mut host = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut host).await.ok()?;
    let port = stream.read_u16().await.ok()?;
    let host = String::from_utf8(host).ok()?;
    Some((host, port))
}

/// The tunnel service: one per node.
#[derive(Clone)]
pub struct TunnelServer {
    policy: ConfigStore<ForwardingPolicy>,
}

impl TunnelServer {
    /// A tunnel server checking destinations against `policy`.
    pub fn new(policy: ConfigStore<ForwardingPolicy>) -> Self {
        Self { policy }
    }
}

fn log_stream(auth: &AuthContext, transport: Option<Transport>, identity: &str, result: &str) {
    info!(target: "alknet::tunnel", remote = %auth.remote_addr, transport = %Transport::name(transport), peer = %identity, result = %result, "tunnel stream");
}

#[async_trait]
impl ProtocolHandler for TunnelServer {
    fn alpns(&self) -> Vec<Alpn> {
        // Over TCP+TLS a connection carries one forwarded connection: its only stream.
        vec![Alpn::over(
            TUNNEL_ALPN,
            &[Carrier::Quic, Carrier::Iroh, Carrier::Tcp],
        )]
    }

    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let Some(identity) = auth.identity.clone() else {
            info!(target: "alknet::tunnel", remote = %auth.remote_addr, "tunnel refused: the client key is not a known peer");
            conn.close(1, "the tunnel needs a known peer key");
            return Ok(());
        };
        let slots = Slots::default();
        let transport = conn.carrier().map(Transport::from);
        // A reload after which the client's key no longer resolves to an enabled peer ends the
        // connection, and with it every open stream.
        let mut changes = self.policy.live().changes();
        // A reload between the handshake and this subscription is checked at once.
        changes.mark_changed();
        let mut watching = true;
        loop {
            let mut stream = tokio::select! {
                () = conn.draining() => return Ok(()),
                changed = changes.changed(), if watching => {
                    watching = changed.is_ok();
                    if watching && auth.identity_at(&self.policy.snapshot()).is_none() {
                        info!(target: "alknet::auth", remote = %auth.remote_addr, peer = %identity.id, "tunnel connection ended: identity revoked");
                        conn.close(1, "identity revoked");
                        return Ok(());
                    }
                    continue;
                }
                accepted = conn.accept_bi() => match accepted {
                    Ok(s) => s,
                    Err(_) => return Ok(()),
                },
            };
            // The peer and the policy of one reload: the peer resolved again (one disabled or
            // renamed by a reload opens no more streams under its old name).
            let config = self.policy.snapshot();
            let policy = config.get::<ForwardingPolicy>();
            let slot = slots.take(policy.max_channels());
            let now = auth.identity_at(&config);
            let (auth, id) = (auth.clone(), identity.id.clone());
            tokio::spawn(async move {
                let Some(id) = now.map(|now| now.id) else {
                    log_stream(&auth, transport, &id, Status::Refused.word());
                    let _ = stream.write_all(&[Status::Refused as u8]).await;
                    let _ = stream.shutdown().await;
                    return;
                };
                let Some(_slot) = slot else {
                    log_stream(&auth, transport, &id, Status::Limit.word());
                    let _ = stream.write_all(&[Status::Limit as u8]).await;
                    let _ = stream.shutdown().await;
                    return;
                };
                let header = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await;
                let Ok(Some((host, port))) = header else {
                    log_stream(&auth, transport, &id, Status::BadHeader.word());
                    let _ = stream.write_all(&[Status::BadHeader as u8]).await;
                    let _ = stream.shutdown().await;
                    return;
                };
                match outbound::connect(&policy, transport, &id, &host, port).await {
                    Ok(mut target) => {
                        log_stream(&auth, transport, &id, Status::Connected.word());
                        if stream.write_all(&[Status::Connected as u8]).await.is_ok() {
                            let _ = alknet_core::pipe(&mut *stream, &mut target).await;
                        }
                    }
                    Err(e) => {
                        let status = match e {
                            OutboundError::Refused => Status::Refused,
                            OutboundError::Unresolved => Status::Unresolved,
                            OutboundError::Connect(_) => Status::ConnectFailed,
                        };
                        log_stream(&auth, transport, &id, status.word());
                        let _ = stream.write_all(&[status as u8]).await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    }
}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<Dialed>> + Send>>;

/// A connection to a node's `alknet/tunnel`, and whatever must live as long as it (the dialer
/// whose socket carries it).
pub struct Dialed {
    /// The connection.
    pub conn: Connection,
    /// Kept alive with the connection, dropped when it is replaced.
    pub keep: Box<dyn Send + Sync>,
}

/// The client side: an [`Opener`] that opens one QUIC stream per forwarded connection, redialing
/// (through `dial`) when the connection is gone, or, when `dial` lands on TCP+TLS, one
/// connection per forwarded connection. Put a [`Socks5`](crate::client::Socks5) or
/// [`LocalForward`](crate::client::LocalForward) in front of it.
pub struct TunnelClient {
    dial: Box<dyn Fn() -> DialFuture + Send + Sync>,
    /// The multi-stream connection streams are opened on.
    current: tokio::sync::Mutex<Option<Arc<Dialed>>>,
    /// Whether the last dial landed on a single-stream carrier (TCP+TLS): then every forwarded
    /// connection dials its own, without waiting for the others' dials.
    single: AtomicBool,
    /// Bounds the dials of single-stream connections in flight at once
    /// ([`SINGLE_DIALS`]), so a burst of forwarded connections (a browser opening dozens) stays
    /// within the node's handshakes per address.
    dials: tokio::sync::Semaphore,
}

/// Dials of single-stream (TCP+TLS) tunnel connections one client runs at once: half the node's
/// default `limits.handshakes_per_ip` (32).
const SINGLE_DIALS: usize = 16;

impl TunnelClient {
    /// A client that reaches the node through `dial`; nothing is dialed until first use.
    pub fn new<F, Fut>(dial: F) -> Arc<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<Dialed>> + Send + 'static,
    {
        Arc::new(Self {
            dial: Box::new(move || Box::pin(dial())),
            current: tokio::sync::Mutex::new(None),
            single: AtomicBool::new(false),
            dials: tokio::sync::Semaphore::new(SINGLE_DIALS),
        })
    }

    async fn dial(&self) -> Result<Dialed, ClientError> {
        (self.dial)()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }

    async fn stream(&self) -> Result<BoxedStream, ClientError> {
        if self.single.load(Ordering::Relaxed) {
            let dialed = {
                // Never closed, so acquiring cannot fail.
                let _permit = self.dials.acquire().await.ok();
                self.dial().await?
            };
            if dialed.conn.is_single_stream() {
                return self.only_stream(dialed).await;
            }
            // The carrier changed (UDP got through): streams share the new connection again.
            let mut current = self.current.lock().await;
            return self.share(&mut current, dialed).await;
        }
        let mut current = self.current.lock().await;
        if let Some(dialed) = current.as_ref() {
            if let Ok(stream) = dialed.conn.open_bi().await {
                return Ok(stream);
            }
        }
        *current = None;
        let dialed = self.dial().await?;
        if dialed.conn.is_single_stream() {
            drop(current);
            return self.only_stream(dialed).await;
        }
        self.share(&mut current, dialed).await
    }

    /// A stream on `dialed`, a multi-stream connection kept for the streams after it.
    async fn share(
        &self,
        current: &mut Option<Arc<Dialed>>,
        dialed: Dialed,
    ) -> Result<BoxedStream, ClientError> {
        self.single.store(false, Ordering::Relaxed);
        let stream = dialed
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        *current = Some(Arc::new(dialed));
        Ok(stream)
    }

    /// The one stream of a single-stream connection (TCP+TLS): it owns the socket, so the
    /// connection's handle is not kept.
    async fn only_stream(&self, dialed: Dialed) -> Result<BoxedStream, ClientError> {
        self.single.store(true, Ordering::Relaxed);
        dialed
            .conn
            .accept_bi()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }

    /// Opens a stream to `host:port` from the node.
    pub async fn open(&self, host: &str, port: u16) -> Result<BoxedDuplex, ClientError> {
        let header = encode_header(host, port).ok_or(ClientError::ConnectFailed)?;
        let mut stream = self.stream().await?;
        let lost = |e: io::Error| ClientError::Disconnected(e.to_string());
        stream.write_all(&header).await.map_err(lost)?;
        let status = stream.read_u8().await.map_err(lost)?;
        match status {
            0 => Ok(Box::new(stream)),
            1 => Err(ClientError::Refused),
            4 => Err(ClientError::Limit),
            _ => Err(ClientError::ConnectFailed),
        }
    }
}

impl Opener for TunnelClient {
    fn open(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<BoxedDuplex, ClientError>> + Send + '_>> {
        Box::pin(async move { TunnelClient::open(self, &host, port).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_version_length_host_port() {
        assert_eq!(
            encode_header("a.b", 443).unwrap(),
            [1, 3, b'a', b'.', b'b', 0x01, 0xbb]
        );
        assert!(encode_header("", 1).is_none());
        assert!(encode_header(&"x".repeat(256), 1).is_none());
    }
}
