//! Socket options of every TCP+TLS connection, accepted or dialed.
//!
//! The call protocol has no keep-alive of its own over TCP, and an idle subscriber is legitimate,
//! so the node does not cut quiet connections; it lets the kernel find the dead ones. A peer that
//! vanished without a FIN or RST (power cut, NAT entry dropped) is noticed by keep-alive probes
//! when nothing is being sent ([`KEEPALIVE_IDLE`], then [`KEEPALIVE_PROBES`] probes
//! [`KEEPALIVE_INTERVAL`] apart: about 60 s), and by [`USER_TIMEOUT`] when data sent to it stays
//! unacknowledged. Either way the connection then ends as lost (contract: a lost connection
//! counts as closed), freeing its per-address slot and memory.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Quiet time before the first keep-alive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered keep-alive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection is dropped.
pub const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dropped.
pub const USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets no-delay, keep-alive and the user timeout on `stream`. Best effort: a platform without an
/// option keeps its default.
pub(crate) fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_user_timeout(Some(USER_TIMEOUT));
}
