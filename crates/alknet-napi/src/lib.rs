//! The Node.js binding of alknet: a thin napi-rs layer that converts types and nothing else.
//!
//! Everything crosses the boundary as strings (JSON), numbers and callbacks; the typed surface
//! (`Registry`, `serve`, `connect`, `CallError`) lives in TypeScript (`src-ts/`). The pieces:
//!
//! - [`Keypair`]: a node's Ed25519 identity.
//! - [`serve`] → [`Node`]: an endpoint whose operations are answered by JavaScript. One
//!   ThreadsafeFunction per node delivers `call` / `subscribe` / `next` / `cancel` events; the
//!   JavaScript side answers with [`Node::resolve`], [`Node::reject`], [`Node::push`] and
//!   [`Node::end`] (see [`bridge`]).
//! - [`connect`] → [`Peer`]: calls, subscriptions and pub/sub on a remote node. Failures reject
//!   with a JSON-encoded `CallError` as the message, so TypeScript can rebuild it.
//!
//! The ThreadsafeFunctions are weak: they never keep the Node.js event loop alive. The
//! TypeScript layer holds one timer per open node or peer instead, and clears it on `close()`.
//!
//! ```js
//! const { Keypair, serve } = require('./index.js')
//! const key = Keypair.generate()
//! const node = await serve({ listen: '127.0.0.1:0', operations: '[]' }, key, (event, id, op, input, identity) => {})
//! await node.close()
//! ```

pub mod bridge;
mod errors;
mod keypair;
mod node;
mod peer;

pub use keypair::Keypair;
pub use node::{serve, Node, ServeOptions};
pub use peer::{connect, ConnectOptions, Peer, Subscription};
