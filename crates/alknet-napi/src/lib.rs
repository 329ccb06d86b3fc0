//! The Node.js binding of alknet: a thin napi-rs layer that converts types and nothing else.
//!
//! Everything crosses the boundary as strings (JSON), numbers and callbacks; the typed surface
//! (`Registry`, `serve`, `connect`, `CallError`) lives in TypeScript (`src-ts/`). The pieces:
//!
//! - [`Keypair`]: a node's Ed25519 identity.
//! - [`Host`]: operations answered by JavaScript. One ThreadsafeFunction per host delivers
//!   `call` / `subscribe` / `next` / `cancel` events; the JavaScript side answers with
//!   [`Host::resolve`], [`Host::reject`], [`Host::push`] and [`Host::end`] (see [`bridge`]), and
//!   its handlers call other operations through the host on behalf of their request.
//! - [`serve`] → [`Node`]: an endpoint serving a host's operations.
//! - [`run_cli`]: the `alknet` command (`npx @alkdev/alknet …`), the same entry point as the binary.
//! - [`connect`] → [`Peer`]: calls, subscriptions and pub/sub on a remote node, optionally
//!   serving a host's operations back to it. Calls finish into a [`CompletionQueue`] (one per
//!   peer or host): outcomes that arrive together reach JavaScript as one JSON array per
//!   wake-up, failures as JSON-encoded `CallError`s, so TypeScript can rebuild them. Subscriptions deliver items in batches, within
//!   the credit JavaScript grants ([`Subscription`]). A peer also starts local SOCKS5 servers
//!   and forwards whose connections leave from the node ([`TunnelListener`]).
//!
//! The ThreadsafeFunctions are weak: they never keep the Node.js event loop alive. The
//! TypeScript layer holds one timer per open node or peer instead, and clears it on `close()`.
//!
//! ```js
//! const { CompletionQueue, Host, Keypair, serve } = require('./index.js')
//! const host = new Host(() => host.takeEvents(), new CompletionQueue(() => {}))
//! const node = await serve('{"listen":"127.0.0.1:0"}', '[]', Keypair.generate(), host)
//! await node.close()
//! ```

pub mod bridge;
mod cli;
mod errors;
mod host;
mod keypair;
mod node;
mod peer;
mod request;
mod subscription;
mod tunnel;
mod wire;

pub use cli::{cli_signal, run_cli};
pub use host::Host;
pub use keypair::Keypair;
pub use node::{serve, Node};
pub use peer::{connect, ConnectOptions, Peer};
pub use request::CompletionQueue;
pub use subscription::Subscription;
pub use tunnel::TunnelListener;
pub use wire::{protocol_constants, wire_samples};

/// The node's log lines (warnings and errors by default: a handler's output failing its schema,
/// refused connections) go to stderr; `ALKNET_LOG` takes a `tracing` filter (`info`, `debug`,
/// `alknet::call=debug`, `off`). Log lines never carry payloads, tokens or keys.
///
/// `ALKNET_WORKER_THREADS` sets the number of the binding's Tokio worker threads (default: one
/// per CPU, Tokio's default).
#[napi_derive::module_init]
fn init_logging() {
    let workers = std::env::var("ALKNET_WORKER_THREADS").ok().and_then(|v| {
        let n = v.parse::<usize>().ok().filter(|n| *n > 0);
        if n.is_none() {
            eprintln!(
                "alknet: ALKNET_WORKER_THREADS={v:?} is not a positive number; using the default"
            );
        }
        n
    });
    if let Some(workers) = workers {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
        {
            Ok(runtime) => napi::bindgen_prelude::create_custom_tokio_runtime(runtime),
            Err(e) => eprintln!(
                "alknet: ALKNET_WORKER_THREADS={workers}: no runtime ({e}); using the default"
            ),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(alknet_cli::log_filter("warn"))
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
