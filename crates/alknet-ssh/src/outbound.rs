//! Outbound connections on a client's behalf: resolve on the node, check every resolved address
//! against the [`ForwardingPolicy`], connect only to an address that passed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

#[cfg(unix)]
use crate::opened::Opened;
use crate::policy::{Direction, ForwardingPolicy, Transport, Verdict};

/// How long resolving and connecting may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an outbound connection was not made. The messages name no destination (they reach logs).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The policy refused every address the destination resolved to.
    #[error("refused by the forwarding policy")]
    Refused,
    /// The name did not resolve.
    #[error("the name did not resolve")]
    Unresolved,
    /// Connecting failed (refused, unreachable, timed out).
    #[error("connect failed: {0}")]
    Connect(io::ErrorKind),
}

impl OutboundError {
    /// A short stable word for logs: `refused`, `unresolved`, `failed`.
    pub fn result(&self) -> &'static str {
        match self {
            OutboundError::Refused => "refused",
            OutboundError::Unresolved => "unresolved",
            OutboundError::Connect(_) => "failed",
        }
    }
}

/// Resolves `host` (a name or an address) on the node and connects `identity`, whose connection
/// came on `transport`, to the first address the policy allows and that answers.
pub async fn connect(
    policy: &ForwardingPolicy,
    transport: Option<Transport>,
    identity: &str,
    host: &str,
    port: u16,
) -> Result<TcpStream, OutboundError> {
    let attempt = async {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (name, addrs): (Option<&str>, Vec<SocketAddr>) = match host.parse::<IpAddr>() {
            Ok(ip) => (None, vec![SocketAddr::new(ip, port)]),
            Err(_) => {
                let addrs = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|_| OutboundError::Unresolved)?
                    .collect::<Vec<_>>();
                if addrs.is_empty() {
                    return Err(OutboundError::Unresolved);
                }
                (Some(host), addrs)
            }
        };
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| {
                policy.check_on(transport, identity, Direction::Connect, name, *a) == Verdict::Allow
            })
            .collect();
        if allowed.is_empty() {
            return Err(OutboundError::Refused);
        }
        let mut last = io::ErrorKind::NotConnected;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e.kind(),
            }
        }
        Err(OutboundError::Connect(last))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(OutboundError::Connect(io::ErrorKind::TimedOut)))
}

/// Connects `identity`, whose connection came on `transport`, to the Unix socket at `path` on
/// the node, if the policy allows both the path and where its symbolic links lead (see
/// [`ForwardingPolicy::check_socket_resolved`]). On Linux the socket file is opened first and the
/// path of what was opened is checked, then connected to through that open file, so a link
/// swapped in between cannot redirect the connection.
#[cfg(unix)]
pub async fn connect_socket(
    policy: std::sync::Arc<ForwardingPolicy>,
    transport: Option<Transport>,
    identity: String,
    path: String,
) -> Result<tokio::net::UnixStream, OutboundError> {
    let attempt = async {
        let (connect_path, opened) = tokio::task::spawn_blocking(move || {
            let opened = open_socket(&path).map_err(|e| OutboundError::Connect(e.kind()))?;
            let real = opened.real_path().ok_or(OutboundError::Refused)?;
            match policy.check_socket_resolved(transport, &identity, &path, &real) {
                Verdict::Allow => Ok((opened.path(), opened)),
                Verdict::Deny => Err(OutboundError::Refused),
            }
        })
        .await
        .map_err(|_| OutboundError::Connect(io::ErrorKind::Other))??;
        let stream = tokio::net::UnixStream::connect(connect_path)
            .await
            .map_err(|e| OutboundError::Connect(e.kind()));
        // Held open until connected: the path above names it.
        drop(opened);
        stream
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(OutboundError::Connect(io::ErrorKind::TimedOut)))
}

/// Without Unix sockets: always [`OutboundError::Connect`] with [`io::ErrorKind::Unsupported`].
#[cfg(not(unix))]
pub async fn connect_socket(
    _policy: std::sync::Arc<ForwardingPolicy>,
    _transport: Option<Transport>,
    _identity: String,
    _path: String,
) -> Result<crate::client::BoxedDuplex, OutboundError> {
    Err(OutboundError::Connect(io::ErrorKind::Unsupported))
}

/// Opens the socket file at `path` (see [`Opened`]); anything but a socket is refused.
#[cfg(unix)]
fn open_socket(path: &str) -> io::Result<Opened> {
    use std::os::unix::fs::FileTypeExt;
    let opened = Opened::open(path, false)?;
    if !std::fs::metadata(opened.path())?.file_type().is_socket() {
        return Err(io::ErrorKind::ConnectionRefused.into());
    }
    Ok(opened)
}
