//! HTTP on an alknet node's port: HTTP/1.1 and HTTP/2 over the TCP+TLS carrier (ALPN `h2`,
//! `http/1.1`, or none), served by one [`HttpHandler`]:
//!
//! - the **decoy** ([`Decoy`]): a built-in plain page, a static directory or a reverse proxy,
//!   for every path nothing else claims; nothing in it names the software;
//! - the **WebSocket carrier** of `alknet/call` at `/alknet/call` (one binary message = one
//!   envelope), authenticated by a bearer token offered as the subprotocol `alknet.bearer.<token>`
//!   next to `alknet.call`;
//! - the **gateway**: `POST /call/<operation>` (JSON in, JSON or Server-Sent Events out);
//! - **`GET /openapi.json`**: an OpenAPI 3.1 document of the gateway for the caller.
//!
//! Each is off unless [`HttpConfig`] turns it on, except the decoy. Every call goes through the
//! call crate's one dispatcher, with its access checks and limits.

mod config;
mod decoy;
pub mod gateway;
pub mod openapi;
mod proxy;
mod server;
pub mod websocket;

pub use config::{Decoy, Feature, HttpConfig};
pub use server::{HttpHandler, ALPNS};
