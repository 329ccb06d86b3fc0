//! The Rust shapes and constants the TypeScript layer mirrors (see `alknet_node::wire`).

use napi_derive::napi;

/// One fully populated sample of each shared configuration and contract type, as JSON with the
/// snake_case keys of `alknet.toml`. The TypeScript tests check their mapping against it.
#[napi]
pub fn wire_samples() -> String {
    alknet_node::wire::samples().to_string()
}

/// The protocol's constants as JSON: error codes (with `retryable`) and frame limits.
#[napi]
pub fn protocol_constants() -> String {
    alknet_node::wire::constants().to_string()
}
