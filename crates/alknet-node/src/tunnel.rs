//! Tunnels through a node. [`native_tunnel`] opens `alknet/tunnel` streams over QUIC or iroh
//! (or a TLS connection per stream over TCP+TLS).
//! SSH: [`ssh_tunnel`] dials the node's `alknet/ssh` (QUIC, TCP+TLS or
//! iroh, as [`DialTarget`] says, the node pinned by TLS) and hands the stream to
//! [`alknet_ssh::client::Tunnel`], which redials with backoff when it drops. Put a
//! [`Socks5`](alknet_ssh::client::Socks5) or [`LocalForward`](alknet_ssh::client::LocalForward)
//! in front of it, or ask it for remote forwards.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use alknet_core::{BoxedStream, Connection, ConnectionError, SecretKey};
use alknet_endpoint::Client;
use alknet_ssh::client::{BoxedDuplex, Tunnel, TunnelConfig};
use alknet_ssh::tunnel::{Dialed as TunnelDialed, TunnelClient};
use alknet_ssh::Carrier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connect::{dial_with, dialer, DialTarget};

/// How long closing a tunnel waits for the node to be told.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A tunnel to the node at `target`, authenticating with `key` (which must be in the node's
/// peers). Nothing is dialed until first use; redials go through the same dialer, so they resume
/// the TLS session.
pub fn ssh_tunnel(key: SecretKey, target: DialTarget) -> Arc<Tunnel> {
    let config = TunnelConfig {
        carrier: Carrier::Encrypted,
        ..TunnelConfig::new(key.clone(), None)
    };
    let dialer = SharedDialer::new(key, target);
    let shared = dialer.client.clone();
    let tunnel = Tunnel::new(config, move || {
        let dialer = dialer.clone();
        async move {
            let (client, conn) = dialer.dial(alknet_ssh::ALPN).await?;
            let stream = open_stream(&conn)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?;
            Ok(Box::new(Dialed {
                stream,
                _client: client,
            }) as BoxedDuplex)
        }
    });
    // Closing the tunnel closes the dialer's connections and waits until the node was told, so
    // a process that exits right after (`alknet connect` on SIGTERM) does not leave the node
    // to find out at its idle timeout; the next use dials a new one.
    tunnel.on_close(move || {
        let client = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            if let Some(client) = client {
                client.0.close_and_wait(CLOSE_WAIT).await;
            }
        }
    });
    tunnel
}

/// A native tunnel (`alknet/tunnel`) to the node at `target`, authenticating with `key` in TLS
/// (it must be in the node's peers): one QUIC stream per forwarded connection over QUIC or iroh,
/// redialed when the connection is gone, or one TLS connection per forwarded connection when
/// the dial lands on TCP+TLS. One dialer serves every dial, so redials and TCP+TLS connections
/// resume the TLS session. Nothing is dialed until first use.
pub fn native_tunnel(key: SecretKey, target: DialTarget) -> Arc<TunnelClient> {
    let dialer = SharedDialer::new(key, target);
    TunnelClient::new(move || {
        let dialer = dialer.clone();
        async move {
            let (client, conn) = dialer.dial(alknet_ssh::TUNNEL_ALPN).await?;
            Ok(TunnelDialed {
                conn,
                keep: Box::new(client),
            })
        }
    })
}

/// One dialer for every (re)dial of a tunnel: made on first use (a dialer needs the runtime),
/// made anew after a failed dial (its socket or iroh endpoint may be what failed), closed when
/// the tunnel and every connection dialed through it are gone.
#[derive(Clone)]
struct SharedDialer {
    key: SecretKey,
    target: DialTarget,
    client: Arc<std::sync::Mutex<Option<Arc<ClosesOnDrop>>>>,
}

impl SharedDialer {
    fn new(key: SecretKey, target: DialTarget) -> Self {
        Self {
            key,
            target,
            client: Arc::default(),
        }
    }

    /// Dials the target for `alpn`: the dialer (keep it with the connection) and the connection.
    async fn dial(&self, alpn: &[u8]) -> io::Result<(Arc<ClosesOnDrop>, Connection)> {
        let refused = |e: crate::ConnectError| {
            io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())
        };
        let client = {
            let mut shared = self.client.lock().unwrap_or_else(|e| e.into_inner());
            match shared.as_ref() {
                Some(client) => client.clone(),
                None => {
                    let client = dialer(self.key.clone(), &self.target)
                        .map(|c| Arc::new(ClosesOnDrop(c)))
                        .map_err(refused)?;
                    *shared = Some(client.clone());
                    client
                }
            }
        };
        match dial_with(&client.0, self.target.clone(), alpn).await {
            Ok((conn, _)) => Ok((client, conn)),
            Err(e) => {
                let mut shared = self.client.lock().unwrap_or_else(|e| e.into_inner());
                if shared.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    *shared = None;
                }
                Err(refused(e))
            }
        }
    }
}

/// Closes a dialer when the connection it carries is dropped.
struct ClosesOnDrop(Client);

impl Drop for ClosesOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The stream a client talks on: a new one on QUIC and iroh, the connection's only one on
/// TCP+TLS.
pub async fn open_stream(conn: &Connection) -> Result<BoxedStream, ConnectionError> {
    if conn.is_single_stream() {
        conn.accept_bi().await
    } else {
        conn.open_bi().await
    }
}

/// The stream of a dialed connection, owning the dialer whose socket carries it.
struct Dialed {
    stream: BoxedStream,
    _client: Arc<ClosesOnDrop>,
}

impl AsyncRead for Dialed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Dialed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
