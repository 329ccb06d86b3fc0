//! Local tunnel listeners a [`Peer`](crate::Peer) starts: a SOCKS5 server or a local forward whose
//! connections leave from the node, over SSH (`alknet/ssh`) or the native tunnel (`alknet/tunnel`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use alknet_core::SecretKey;
use alknet_node::DialTarget;
use alknet_ssh::client::{Listener, LocalForward, Opener, Socks5, Tunnel};
use napi_derive::napi;

use crate::errors::plain;

/// A running listener: local (SOCKS5, `-L`), or on the node (`-R`, a port or a Unix socket);
/// `close()` stops it and ends the connections it carries.
#[napi]
pub struct TunnelListener {
    address: String,
    listener: Mutex<Option<Held>>,
}

/// What a [`TunnelListener`] keeps running.
enum Held {
    /// A local port.
    Local(Listener),
    /// The SSH session that asked the node to listen, and where it listens.
    Remote(Arc<Tunnel>, NodeListen),
}

/// Where the node listens for a remote forward.
enum NodeListen {
    /// A port at a bind address.
    Port(String, u16),
    /// A Unix socket path.
    Socket(String),
}

#[napi]
impl TunnelListener {
    /// The bound `ip:port` (for a remote forward on a Unix socket: its path on the node).
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops accepting and ends the connections it carries; resolves once the port is closed.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        match listener {
            Some(Held::Local(listener)) => listener.close().await,
            Some(Held::Remote(tunnel, at)) => {
                // Cancelled first: the node answers once its listener is closed (and a socket
                // removed). Ending the session would close it too, but without telling when.
                let _ = match at {
                    NodeListen::Port(bind, port) => tunnel.cancel_remote_forward(&bind, port).await,
                    NodeListen::Socket(path) => tunnel.cancel_remote_forward_socket(&path).await,
                };
                tunnel.close().await
            }
            None => {}
        }
        Ok(())
    }
}

/// What carries the forwarded connections: `ssh` (default) or `tunnel`.
pub(crate) fn opener(
    key: SecretKey,
    target: DialTarget,
    via: Option<&str>,
) -> napi::Result<Arc<dyn Opener>> {
    match via.unwrap_or("ssh") {
        "ssh" => Ok(alknet_node::ssh_tunnel(key, target)),
        "tunnel" => Ok(alknet_node::native_tunnel(key, target)),
        other => Err(plain(format!(
            "via must be \"ssh\" or \"tunnel\", not {other:?}"
        ))),
    }
}

fn listen_address(listen: &str) -> napi::Result<SocketAddr> {
    listen
        .parse()
        .map_err(|e| plain(format!("listen {listen:?} is not ip:port: {e}")))
}

/// Starts a SOCKS5 server on `listen` whose CONNECTs leave from the node.
pub(crate) async fn socks5(listen: &str, opener: Arc<dyn Opener>) -> napi::Result<TunnelListener> {
    let listener = Socks5::start(listen_address(listen)?, opener)
        .await
        .map_err(|e| plain(format!("listen {listen}: {e}")))?;
    Ok(wrap(listener))
}

/// Starts a local forward on `listen` to `host:port` from the node.
pub(crate) async fn forward(
    listen: &str,
    opener: Arc<dyn Opener>,
    host: String,
    port: u16,
) -> napi::Result<TunnelListener> {
    let listener = LocalForward::start(listen_address(listen)?, opener, host, port)
        .await
        .map_err(|e| plain(format!("listen {listen}: {e}")))?;
    Ok(wrap(listener))
}

/// Starts a local forward on `listen` to the Unix socket at `path` on the node, over SSH.
pub(crate) async fn forward_socket(
    key: SecretKey,
    target: DialTarget,
    listen: &str,
    path: String,
) -> napi::Result<TunnelListener> {
    let tunnel = alknet_node::ssh_tunnel(key, target);
    let listener = LocalForward::start_socket(listen_address(listen)?, tunnel, path)
        .await
        .map_err(|e| plain(format!("listen {listen}: {e}")))?;
    Ok(wrap(listener))
}

/// Asks the node to listen on `listen` over SSH: `bind:port` (port 0 picks one), or an absolute
/// path for a new Unix socket on the node; each connection it accepts is carried back to
/// `host:port` as this machine resolves it (`ssh -R`).
pub(crate) async fn remote_forward(
    key: SecretKey,
    target: DialTarget,
    listen: &str,
    host: &str,
    port: u16,
) -> napi::Result<TunnelListener> {
    let at = if listen.starts_with('/') {
        NodeListen::Socket(listen.to_owned())
    } else {
        listen
            .rsplit_once(':')
            .and_then(|(b, p)| {
                Some(NodeListen::Port(
                    b.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p.parse().ok()?,
                ))
            })
            .ok_or_else(|| {
                plain(format!(
                    "listen {listen:?} is not bind:port or /socket/path"
                ))
            })?
    };
    let to = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| plain(format!("{host}:{port} does not resolve here")))?;
    let tunnel = alknet_node::ssh_tunnel(key, target);
    let asked = match &at {
        NodeListen::Port(bind, node_port) => tunnel
            .remote_forward(bind, *node_port, to)
            .await
            .map(|bound| NodeListen::Port(bind.clone(), bound)),
        NodeListen::Socket(path) => tunnel
            .remote_forward_socket(path, to)
            .await
            .map(|()| NodeListen::Socket(path.clone())),
    };
    let at = match asked {
        Ok(at) => at,
        Err(e) => {
            tunnel.close().await;
            // The path is the caller's own; the message goes back to it, not to a log.
            return Err(plain(format!("remote forward on {listen}: {e}")));
        }
    };
    let address = match &at {
        NodeListen::Port(bind, bound) if bind.contains(':') => format!("[{bind}]:{bound}"),
        NodeListen::Port(bind, bound) => format!("{bind}:{bound}"),
        NodeListen::Socket(path) => path.clone(),
    };
    Ok(TunnelListener {
        address,
        listener: Mutex::new(Some(Held::Remote(tunnel, at))),
    })
}

fn wrap(listener: Listener) -> TunnelListener {
    TunnelListener {
        address: listener.local_addr().to_string(),
        listener: Mutex::new(Some(Held::Local(listener))),
    }
}
