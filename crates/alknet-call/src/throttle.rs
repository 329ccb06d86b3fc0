//! Throttling of invalid `auth_token`s per source address, with the fail2ban line for each.
//!
//! Each address (an IPv6 address counts by its /64) may present [`FAILURES`] tokens that do not
//! resolve per [`WINDOW`]; after that, every token from it is refused without being looked up
//! until the window ends. The first failures are logged one line each, the throttling once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alknet_core::address::counting_key as key;
use tracing::{info, warn};

/// Invalid tokens one address may present per window.
pub const FAILURES: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered before expired windows are swept.
const SWEEP_ABOVE: usize = 4096;

/// Invalid-token failures per address.
#[derive(Default)]
pub(crate) struct TokenThrottle {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl TokenThrottle {
    /// Whether tokens from `remote` are refused unread for now.
    pub(crate) fn throttled(&self, remote: SocketAddr) -> bool {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .get(&key(remote.ip()))
            .is_some_and(|(start, n)| *n >= FAILURES && start.elapsed() < WINDOW)
    }

    /// Counts a token from `remote` that did not resolve, and logs it.
    pub(crate) fn failed(&self, remote: SocketAddr, alpn: &str) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(key(remote.ip())).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 < FAILURES {
            info!(target: "alknet::auth", remote = %remote, alpn = %alpn, "authentication rejected: invalid token");
        } else if entry.1 == FAILURES {
            warn!(target: "alknet::auth", remote = %remote, alpn = %alpn, window_s = WINDOW.as_secs(), "authentication rejected: invalid token; throttling this address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_failures_and_others_are_not() {
        let throttle = TokenThrottle::default();
        let bad: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let other: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        for _ in 0..FAILURES {
            assert!(!throttle.throttled(bad));
            throttle.failed(bad, "alknet/call");
        }
        assert!(throttle.throttled(bad));
        assert!(throttle.throttled("192.0.2.1:2000".parse().unwrap()));
        assert!(!throttle.throttled(other));
    }
}
