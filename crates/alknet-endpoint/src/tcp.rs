//! Socket options of every TCP+TLS connection, accepted or dialed.
//!
//! The call protocol has no keep-alive of its own over TCP, and an idle subscriber is legitimate,
//! so the node does not cut quiet connections; it lets the kernel find the dead ones. A peer that
//! vanished without a FIN or RST (power cut, NAT entry dropped) is noticed by keep-alive probes
//! when nothing is being sent ([`KEEPALIVE_IDLE`], then [`KEEPALIVE_PROBES`] probes
//! [`KEEPALIVE_INTERVAL`] apart: about 60 s); with data in flight to it, by the kernel's
//! retransmission limit (`tcp_retries2`, about 15 minutes by default). Either way the connection
//! then ends as lost (contract: a lost connection counts as closed), freeing its per-address slot
//! and memory. There is no `TCP_USER_TIMEOUT`: on Linux it also ends a live peer that keeps its
//! receive window closed (a paused reader) once it expires.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Quiet time before the first keep-alive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered keep-alive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection is dropped.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Sets no-delay and keep-alive on `stream`. Best effort: a platform without an option keeps its
/// default.
pub(crate) fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
}
