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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connect::{dial, dial_with, dialer, DialTarget};

/// A tunnel to the node at `target`, authenticating with `key` (which must be in the node's
/// peers). Nothing is dialed until first use.
pub fn ssh_tunnel(key: SecretKey, target: DialTarget) -> Arc<Tunnel> {
    let config = TunnelConfig::new(key.clone(), None);
    Tunnel::new(config, move || {
        let (key, target) = (key.clone(), target.clone());
        async move {
            let (client, conn, _) = dial(key, target, alknet_ssh::ALPN)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))?;
            match open_stream(&conn).await {
                Ok(stream) => Ok(Box::new(Dialed {
                    stream,
                    _client: ClosesOnDrop(client),
                }) as BoxedDuplex),
                Err(e) => {
                    client.close();
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        e.to_string(),
                    ))
                }
            }
        }
    })
}

/// A native tunnel (`alknet/tunnel`) to the node at `target`, authenticating with `key` in TLS
/// (it must be in the node's peers): one QUIC stream per forwarded connection over QUIC or iroh,
/// redialed when the connection is gone, or one TLS connection per forwarded connection when
/// the dial lands on TCP+TLS. One dialer serves every dial, so redials and TCP+TLS connections
/// resume the TLS session. Nothing is dialed until first use.
pub fn native_tunnel(key: SecretKey, target: DialTarget) -> Arc<TunnelClient> {
    // Made on first use (a dialer needs the runtime), closed when the tunnel and every
    // connection dialed through it are gone.
    let shared: Arc<tokio::sync::OnceCell<Arc<ClosesOnDrop>>> = Arc::default();
    TunnelClient::new(move || {
        let (key, target, shared) = (key.clone(), target.clone(), shared.clone());
        async move {
            let refused = |e: crate::ConnectError| {
                io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())
            };
            let client = shared
                .get_or_try_init(|| async {
                    dialer(key, &target).map(|c| Arc::new(ClosesOnDrop(c)))
                })
                .await
                .map_err(refused)?
                .clone();
            let (conn, _) = dial_with(&client.0, target, alknet_ssh::TUNNEL_ALPN)
                .await
                .map_err(refused)?;
            Ok(TunnelDialed {
                conn,
                keep: Box::new(client),
            })
        }
    })
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
    _client: ClosesOnDrop,
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
