//! The caller side of a connection: [`Peer`] calls, subscribes to and publishes on the other end.
//!
//! Outgoing requests are exchanges (`exchange`); the connection state they share with the dispatcher that
//! serves the same connection is the `Link` (`link`). A `Peer` is made by
//! [`Peer::connect`] or [`Session::start`](crate::session::Session::start) (both in
//! [`crate::session`], which depends on this module, not the other way round).

use std::sync::Arc;

use alknet_core::AuthContext;
use serde_json::Value;

pub(crate) mod exchange;
pub(crate) mod link;
mod publisher;
mod subscription;

pub use exchange::RequestOptions;
pub use subscription::Subscription;

use crate::envelope::{RawOutput, Reply};
use crate::error::{CallError, ErrorCode};
use exchange::{Exchange, DEADLINE_GRACE};
use link::Link;

/// A handle to the other end of a call connection: call its operations, subscribe, publish.
/// Cheap to clone; the connection stays open until [`close`](Peer::close) or the peer leaves.
#[derive(Clone)]
pub struct Peer {
    pub(crate) link: Arc<Link>,
}

/// The client side of `alknet/call`: a [`Peer`] made from a dialed connection.
pub type CallClient = Peer;

impl Peer {
    /// Calls a query or mutation.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, CallError> {
        self.call_with(operation, input, RequestOptions::default())
            .await
    }

    /// Calls a query or mutation with per-request options.
    pub async fn call_with(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<Value, CallError> {
        self.call_as(operation, input, options).await
    }

    /// Calls a query or mutation and keeps its output as the JSON text it arrived as (no
    /// `Value` is built): for callers that hand the text on, such as the Node binding.
    pub async fn call_raw_with(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<RawOutput, CallError> {
        self.call_as(operation, input, options).await
    }

    async fn call_as<O: exchange::Output>(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<O, CallError> {
        let local = self.link.options.default_timeout + DEADLINE_GRACE;
        let mut exchange =
            Exchange::open(&self.link, operation, input, options, Some(local)).await?;
        match exchange.next_as::<O>().await {
            Reply::Output(v) => {
                exchange.finish();
                Ok(v)
            }
            Reply::Error(e) => Err(e),
            Reply::Completed => Err(CallError::new(
                ErrorCode::InvalidOperationType,
                format!("{operation} is a subscription; use subscribe"),
            )),
            Reply::Aborted => Err(CallError::new(
                ErrorCode::Cancelled,
                "the callee gave up on the request",
            )),
        }
    }

    /// Subscribes; the stream yields outputs and ends on completion. Dropping it cancels.
    pub async fn subscribe(
        &self,
        operation: &str,
        input: Value,
    ) -> Result<Subscription, CallError> {
        self.subscribe_with(operation, input, RequestOptions::default())
            .await
    }

    /// Subscribes with per-request options.
    pub async fn subscribe_with(
        &self,
        operation: &str,
        input: Value,
        options: RequestOptions,
    ) -> Result<Subscription, CallError> {
        let exchange = Exchange::open(&self.link, operation, input, options, None).await?;
        Ok(Subscription::new(exchange))
    }

    /// Publishes to a topic on the remote node; returns how many subscriptions it reached.
    /// Publishes made while an earlier one is in flight go together as one
    /// `pubsub/publish_batch` request (in the order they were made), each with its own answer;
    /// against a node without that operation each is its own `pubsub/publish`. Dropping the
    /// returned future does not withdraw a publish once it is queued: it is still published.
    pub async fn publish(&self, topic: &str, data: Value) -> Result<u64, CallError> {
        self.publish_with(topic, data, RequestOptions::default())
            .await
    }

    /// Publishes with per-request options (an `auth_token` to publish as, a deadline). Only
    /// publishes without a deadline or cancellation token are batched (see
    /// [`publish`](Self::publish)), those with the same `auth_token` together.
    pub async fn publish_with(
        &self,
        topic: &str,
        data: Value,
        options: RequestOptions,
    ) -> Result<u64, CallError> {
        if options.timeout.is_none() && options.cancel.is_none() {
            return self
                .link
                .publisher
                .publish(self, options.auth_token, topic, data)
                .await;
        }
        let out = self
            .call_with(
                "pubsub/publish",
                serde_json::json!({ "topic": topic, "data": data }),
                options,
            )
            .await?;
        Ok(out["delivered"].as_u64().unwrap_or(0))
    }

    /// How many of our requests on a single-stream connection still wait for answers: each
    /// finished, failed or abandoned request withdraws its entry (a diagnostic; 0 on a
    /// multi-stream connection, whose requests have streams of their own).
    pub fn pending_requests(&self) -> usize {
        self.link.pending_len()
    }

    /// Subscribes to a topic pattern on the remote node; items are `{ topic, data }`.
    pub async fn topic(&self, pattern: &str) -> Result<Subscription, CallError> {
        self.subscribe("pubsub/subscribe", serde_json::json!({ "topic": pattern }))
            .await
    }

    /// What the endpoint knew about this connection (remote address, fingerprint, identity).
    pub fn auth(&self) -> &AuthContext {
        &self.link.auth
    }

    /// Closes the connection; pending requests on both sides fail with `UNAVAILABLE`.
    pub fn close(&self) {
        self.link.conn.close(0, "closed");
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        self.link.closed.cancelled().await
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.link.closed.is_cancelled()
    }
}
