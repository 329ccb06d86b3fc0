//! Connection limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Per-connection and per-address limits, with defaults suited to a small public node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections allowed from one IP address (default 64).
    pub connections_per_ip: usize,
    /// Concurrent bidirectional QUIC streams the peer may open on one connection (default 1024).
    pub streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_ip: 64,
            streams_per_connection: 1024,
        }
    }
}

/// Counts open connections per IP.
#[derive(Clone, Debug)]
pub(crate) struct IpLimiter {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// Holds one connection slot for an address until dropped.
pub(crate) struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpLimiter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            counts: Arc::default(),
            max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for `ip`, or `None` if the address is at its limit.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock() {
            if let Some(count) = counts.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_released_on_drop() {
        let limiter = IpLimiter::new(1);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let slot = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none());
        assert!(limiter.try_acquire(b).is_some());
        drop(slot);
        assert!(limiter.try_acquire(a).is_some());
    }
}
