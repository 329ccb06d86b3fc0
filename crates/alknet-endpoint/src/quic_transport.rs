//! The QUIC transport settings of every alknet endpoint and client: a small set, sized for a fast
//! real path (one stream at 1 Gbit/s up to ≈ 65 ms round trip) and a 1 500-byte path MTU.
//! Everything else is quinn's default (GSO/GRO on, CUBIC with pacing, ack frequency off).
//!
//! Memory: the windows are credit, not allocations. quinn buffers only what arrives (receive) or
//! what the application wrote and the peer has not acknowledged (send), so an idle connection
//! costs the same whatever the windows; a connection whose application stops reading holds at
//! most [`CONNECTION_RECEIVE_WINDOW`] of received data.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// How much one stream may receive ahead of the application reading it (8 MiB: 1 Gbit/s × 64 ms;
/// quinn's default, 1.25 MB, caps one stream at 100 Mbit/s on a 100 ms path).
pub const STREAM_RECEIVE_WINDOW: u32 = 8 << 20;
/// How much all streams of one connection together may receive ahead of the application (16 MiB;
/// quinn's default is unlimited, leaving only the per-stream windows × the stream limit).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 16 << 20;
/// How much a connection may have written and not yet acknowledged (16 MiB).
pub const SEND_WINDOW: u64 = 16 << 20;
/// The largest UDP payload MTU discovery probes for: 1 452 bytes, what fits a 1 500-byte path
/// over IPv6 (quinn's default). Discovery starts at QUIC's minimum of 1 200. Not configurable (only a benchmark raises it, for the "discovery on" figure).
/// A higher ceiling would cost a 1 500-byte path only a few lost probes (quinn tracks probes
/// apart from data, and falls back to 1 200 for a minute only after four loss bursts of
/// full-size data packets), but it buys nothing measurable either: on loopback (both ends also
/// accepting larger datagrams) 4 096 ran one stream at ≈ 1.8× the 1 452 figure, while 8 952,
/// 16 384 and 65 527 ran at or below it (BENCHMARKS.md), and real paths rarely carry more than
/// 1 500 bytes.
pub const MAX_UDP_PAYLOAD: u16 = 1452;

/// The ceiling of endpoints and clients made from now on: [`MAX_UDP_PAYLOAD`] unless a benchmark
/// raised it.
static MTU_CEILING: AtomicU16 = AtomicU16::new(MAX_UDP_PAYLOAD);

/// For benchmarks only (issue 15 asks for the bulk figure "with discovery on"): QUIC endpoints
/// and clients made after this call probe up to `ceiling` bytes of UDP payload and accept
/// datagrams that large. Real paths keep [`MAX_UDP_PAYLOAD`].
#[doc(hidden)]
pub fn set_mtu_ceiling_for_benchmarks(ceiling: u16) {
    // QUIC's minimum up to the largest UDP payload quinn accepts.
    MTU_CEILING.store(ceiling.clamp(1200, 65_527), Ordering::Relaxed);
}

/// A quinn endpoint config that accepts datagrams up to the current ceiling (quinn's default,
/// 1 472, already covers [`MAX_UDP_PAYLOAD`]; the peer never probes above what it accepts).
pub(crate) fn accept_mtu_ceiling(config: &mut quinn::EndpointConfig) {
    let ceiling = MTU_CEILING.load(Ordering::Relaxed);
    if ceiling > MAX_UDP_PAYLOAD {
        let _ = config.max_udp_payload_size(ceiling);
    }
}

/// How long a QUIC connection may stay silent before the node counts it lost (30 s). A peer that
/// vanishes without closing (killed, unplugged) is noticed at this timeout: the connection's
/// requests are then cancelled. Clients send a keep-alive every
/// [`KEEP_ALIVE`](crate::client::KEEP_ALIVE) (10 s), so an idle but live connection never reaches
/// it. QUIC applies the smaller of the two ends' timeouts.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The kernel receive and send buffer asked for on every QUIC UDP socket (4 MiB; Linux caps it
/// at `net.core.rmem_max`/`wmem_max`). The default, about 208 KiB, overflows during a fast
/// transfer and the drops read as congestion. One per socket, not per connection.
pub const UDP_SOCKET_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_SOCKET_BUFFER`] on `socket`; the kernel may grant less, which only costs speed.
pub(crate) fn size_socket_buffers(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(UDP_SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(UDP_SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::debug!(%e, "could not size the UDP {what} buffer");
        }
    }
}

/// The quinn transport config of every QUIC connection, plus `keep_alive` when given, counting a
/// connection lost after `idle` of silence.
pub(crate) fn transport(keep_alive: Option<Duration>, idle: Duration) -> quinn::TransportConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_CEILING.load(Ordering::Relaxed));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .mtu_discovery_config(Some(mtu))
        .keep_alive_interval(keep_alive)
        // At most 2^62 ms: any real timeout fits.
        .max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    transport
}
