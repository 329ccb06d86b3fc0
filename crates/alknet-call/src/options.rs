//! The limits and defaults of a call service ([`CallOptions`]).

use std::time::Duration;

use crate::framing::DEFAULT_MAX_FRAME;

/// Limits and defaults of a call service.
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Largest frame accepted (default 16 MiB, at most 64 MiB).
    pub max_frame: usize,
    /// Largest frame accepted on a connection without an identity of its own (its TLS key is
    /// not a known peer; default 1 MiB): what an unauthenticated party can make the node buffer.
    pub anonymous_max_frame: usize,
    /// Bytes of partly received frames one identified connection may have buffered, over all its
    /// streams (default 64 MiB); beyond it, reading waits and the peer's flow control holds the
    /// rest.
    pub connection_input_bytes: usize,
    /// The same, shared by every connection without an identity (default 64 MiB).
    pub anonymous_input_bytes: usize,
    /// How long a frame may take to arrive once its first byte has (default 60 s); a slower one
    /// is a protocol violation.
    pub frame_deadline: Duration,
    /// Concurrent requests per connection, subscriptions included (default 1024).
    pub max_concurrent: usize,
    /// Queue depth of each pub/sub subscription (default 1024).
    pub subscription_queue: usize,
    /// Bytes of published items one subscription may hold until they are written to its
    /// transport (default 8 MiB; one item of any size is always taken). Over it, the
    /// subscription ends with `OVERLOADED`.
    pub subscription_bytes: usize,
    /// The same, summed over one connection's subscriptions (default 64 MiB).
    pub connection_subscription_bytes: usize,
    /// Deadline of queries and mutations that ask for none (default 30 s).
    pub default_timeout: Duration,
    /// Cap on any requested deadline (default 10 min).
    pub max_timeout: Duration,
    /// Validate handler outputs against their schema (default on).
    pub validate_output: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            anonymous_max_frame: 1 << 20,
            connection_input_bytes: 64 << 20,
            anonymous_input_bytes: 64 << 20,
            frame_deadline: Duration::from_secs(60),
            max_concurrent: 1024,
            subscription_queue: 1024,
            subscription_bytes: 8 << 20,
            connection_subscription_bytes: 64 << 20,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(600),
            validate_output: true,
        }
    }
}
