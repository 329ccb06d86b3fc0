//! Connection limits: what one address, the iroh relay and everyone together may hold, for
//! handshakes in flight and for open connections.
//!
//! Addresses are counted by [`counting_key`] (an IPv6 address by its /64). Connections that
//! arrive through the iroh relay carry no IP of their own (they all share the relay's), so they
//! are counted together under their own limit. A QUIC connection counts as open only once its
//! handshake is done, which proves its address; until then it holds a handshake slot, and an
//! Initial whose address is not yet validated is sent a Retry first whenever its address already
//! has a handshake in flight or half the handshake slots are taken (see `server.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use alknet_core::address::counting_key;

/// Per-connection, per-address and node-wide limits, with defaults suited to a small public node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections allowed from one IP address, an IPv6 /64 counting as one (default 64).
    pub connections_per_ip: usize,
    /// Concurrent bidirectional QUIC streams the peer may open on one connection (default 1024).
    /// A connection is credited 128 at first and more while it uses them, up to this limit, since
    /// QUIC keeps state for every credited stream.
    pub streams_per_connection: u32,
    /// Open connections allowed in total, every carrier together (default 4096).
    pub connections: usize,
    /// Handshakes in flight from one IP address (IPv6: /64) (default 32).
    pub handshakes_per_ip: usize,
    /// Handshakes in flight in total (default 256).
    pub handshakes: usize,
    /// Open connections arriving through the iroh relay, together (default 256).
    pub relay_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_ip: 64,
            streams_per_connection: 1024,
            connections: 4096,
            handshakes_per_ip: 32,
            handshakes: 256,
            relay_connections: 256,
        }
    }
}

/// Where a connection comes from, as limits count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// A direct connection, by [`counting_key`] of its IP.
    Ip(IpAddr),
    /// Through the iroh relay.
    #[cfg_attr(not(feature = "iroh"), allow(dead_code))]
    Relay,
}

impl Source {
    pub(crate) fn ip(ip: IpAddr) -> Self {
        Source::Ip(counting_key(ip))
    }
}

/// Which limit refused a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The source's own limit.
    Source(usize),
    /// The node-wide limit.
    Total(usize),
}

#[derive(Debug, Default)]
struct Counts {
    per_source: HashMap<Source, usize>,
    total: usize,
}

/// Slots counted per source and in total.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    counts: Arc<Mutex<Counts>>,
    per_ip: usize,
    relay: usize,
    total: usize,
}

/// Holds one slot of a [`Pool`] until dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

impl Pool {
    fn new(per_ip: usize, relay: usize, total: usize) -> Self {
        Self {
            counts: Arc::default(),
            per_ip,
            relay,
            total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `source`, or which limit is reached.
    pub(crate) fn try_acquire(&self, source: Source) -> Result<Slot, Full> {
        let mut counts = self.lock();
        if counts.total >= self.total {
            return Err(Full::Total(self.total));
        }
        let cap = match source {
            Source::Ip(_) => self.per_ip,
            Source::Relay => self.relay,
        };
        let count = counts.per_source.entry(source).or_insert(0);
        if *count >= cap {
            return Err(Full::Source(cap));
        }
        *count += 1;
        counts.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            source,
        })
    }

    /// Slots `source` holds now.
    pub(crate) fn held_by(&self, source: Source) -> usize {
        self.lock().per_source.get(&source).copied().unwrap_or(0)
    }

    /// Slots held now, in total.
    pub(crate) fn held(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

/// The endpoint's two pools: handshakes in flight and open connections.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    pub(crate) handshakes: Pool,
    pub(crate) connections: Pool,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            // Relayed handshakes are bounded by the total only: the relay is one "address" for
            // everyone behind it, so a per-address cap would let one of them block the rest.
            handshakes: Pool::new(
                limits.handshakes_per_ip,
                limits.handshakes,
                limits.handshakes,
            ),
            connections: Pool::new(
                limits.connections_per_ip,
                limits.relay_connections,
                limits.connections,
            ),
        }
    }

    /// Whether a QUIC Initial from `source` whose address is not validated gets a Retry before
    /// it may take a handshake slot: when its address already has a handshake in flight (what a
    /// flood of spoofed Initials would build up) or half the handshake slots are taken. A lone
    /// client on a quiet node is not retried, so it does not pay the extra round trip.
    pub(crate) fn wants_retry(&self, source: Source) -> bool {
        self.handshakes.held_by(source) > 0 || self.handshakes.held() * 2 >= self.handshakes.total
    }

    /// The reason a refused connection is told.
    pub(crate) fn refusal(source: Source, full: Full) -> String {
        match (full, source) {
            (Full::Total(n), _) => {
                format!("the node is at its connection limit ({n}); retry later")
            }
            (Full::Source(n), Source::Relay) => format!(
                "too many connections through the relay (limit {n}); retry later or connect directly"
            ),
            (Full::Source(n), Source::Ip(_)) => format!(
                "too many connections from your address (limit {n}); close some and retry"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Source {
        Source::ip(s.parse().unwrap())
    }

    #[test]
    fn slots_are_counted_per_address_and_released_on_drop() {
        let pool = Pool::new(1, 1, 10);
        let slot = pool.try_acquire(ip("127.0.0.1")).unwrap();
        assert_eq!(
            pool.try_acquire(ip("127.0.0.1")).unwrap_err(),
            Full::Source(1)
        );
        assert!(pool.try_acquire(ip("127.0.0.2")).is_ok());
        drop(slot);
        assert!(pool.try_acquire(ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn an_ipv6_64_shares_one_count() {
        let pool = Pool::new(1, 1, 10);
        let _slot = pool.try_acquire(ip("2001:db8::1")).unwrap();
        assert!(pool.try_acquire(ip("2001:db8::2:3")).is_err());
        assert!(pool.try_acquire(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn the_total_and_the_relay_have_limits_of_their_own() {
        let pool = Pool::new(5, 1, 2);
        let _relayed = pool.try_acquire(Source::Relay).unwrap();
        assert_eq!(
            pool.try_acquire(Source::Relay).unwrap_err(),
            Full::Source(1)
        );
        let _direct = pool.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            pool.try_acquire(ip("10.0.0.2")).unwrap_err(),
            Full::Total(2)
        );
        assert_eq!(pool.held(), 2);
    }

    #[test]
    fn retry_is_asked_of_a_busy_address_or_a_busy_node() {
        let limits = Limits {
            handshakes: 4,
            ..Limits::default()
        };
        let admission = Admission::new(&limits);
        assert!(!admission.wants_retry(ip("10.0.0.1")));
        let _first = admission.handshakes.try_acquire(ip("10.0.0.1")).unwrap();
        assert!(admission.wants_retry(ip("10.0.0.1")));
        assert!(!admission.wants_retry(ip("10.0.0.2")));
        let _second = admission.handshakes.try_acquire(ip("10.0.0.3")).unwrap();
        assert!(admission.wants_retry(ip("10.0.0.2")));
    }
}
