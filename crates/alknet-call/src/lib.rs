//! `alknet/call`: a symmetric RPC protocol — typed operations (query, mutation, subscription)
//! with JSON Schema, scope-based access control, cancellation, composition and pub/sub.
//!
//! The wire contract is `docs/CALL-PROTOCOL.md`. The pure core ([`framing`], [`envelope`],
//! [`access`], [`topic`], [`error`]) is testable without sockets; [`session`] drives it over any
//! [`alknet_core::Connection`].
//!
//! # Modules and their dependencies
//!
//! Each module uses only those above it (no cycles; `grep -rn "use crate::" src` shows it):
//!
//! | module | what | uses |
//! |---|---|---|
//! | [`error`], [`framing`], [`topic`] | error codes; length-prefixed frames; topic patterns | — |
//! | [`throttle`] | invalid-token throttling per address, with its log line | — |
//! | [`access`] | access rules | error |
//! | [`envelope`] | envelopes, payloads, the reply decoder | error, framing |
//! | [`options`] | [`CallOptions`] | framing |
//! | [`pubsub`] | broker (shared encodings, byte budgets, backplane hook) and topic rules | topic |
//! | [`carrier`] | envelope sources and frame sinks (byte streams), the stream writer | envelope, framing, pubsub |
//! | [`peer`] | the caller side: [`Peer`], requests, subscriptions, the connection link | carrier, envelope, error, options, pubsub |
//! | [`context`] | [`CallContext`] given to handlers | error, peer, pubsub |
//! | [`registry`] | operations, handlers, schemas, output and error vetting | access, context, error, pubsub |
//! | `builtins` | `services/*` and `pubsub/*`, capturing what they need | context, error, pubsub, registry, topic |
//! | [`service`] | [`CallService`]: registry, identity, broker, limits; composition | access, builtins, context, envelope, error, options, pubsub, registry, throttle, topic |
//! | [`session`] | the dispatcher serving a connection; [`Session`], `Peer::connect` | carrier, context, envelope, error, peer, registry, service |
//! | [`handler`] | [`CallHandler`], the endpoint's protocol handler | peer, service, session |
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use alknet_call::{CallService, OperationRegistry, Peer};
//! use serde_json::json;
//!
//! let mut ops = OperationRegistry::new();
//! ops.query("math/add",
//!     json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
//!     json!({"type": "number"}),
//!     |_ctx, input| async move { Ok(json!(input["a"].as_f64().unwrap_or(0.0) + input["b"].as_f64().unwrap_or(0.0))) },
//! ).unwrap();
//! let server = CallService::anonymous(ops).unwrap();
//!
//! // Any connection works; here an in-memory pair stands in for QUIC.
//! let (a, b) = alknet_core::connection::memory::pair(alknet_call::ALPN);
//! let _serving = Peer::connect(a, server, None);
//! let client = Peer::connect(b, CallService::anonymous(OperationRegistry::new()).unwrap(), None);
//! assert_eq!(client.call("math/add", json!({"a": 1, "b": 2})).await.unwrap(), json!(3.0));
//! # }
//! ```

pub mod access;
mod builtins;
pub mod carrier;
pub mod context;
pub mod envelope;
pub mod error;
pub mod framing;
pub mod handler;
pub mod options;
pub mod peer;
pub mod pubsub;
pub mod registry;
pub mod service;
pub mod session;
pub mod throttle;
pub mod topic;

pub use access::Access;
pub use context::{CallContext, LiveIdentity};
pub use envelope::RawOutput;
pub use error::{CallError, ErrorCode};
pub use handler::CallHandler;
pub use options::CallOptions;
pub use peer::{CallClient, Peer, RequestOptions, Subscription};
pub use pubsub::{PubSubPolicy, TopicRule};
pub use registry::{Handler, OperationRegistry, OperationSpec, OperationType, Visibility};
pub use service::{CallService, ALPN};
pub use session::Session;
