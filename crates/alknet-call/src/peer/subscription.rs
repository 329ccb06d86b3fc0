//! The items of a subscription, as a `Stream`: of `Value`s, or of each item's JSON text as it
//! arrived ([`Subscription::next_raw`]), which a consumer deserializes into its own type or hands
//! on without building a `Value`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::exchange::{unavailable, Exchange};
use crate::envelope::{RawOutput, Reply};
use crate::error::{CallError, ErrorCode};

/// The items of a subscription. Dropping it cancels the subscription on the other side.
///
/// As a `Stream` it yields each item as a `Value`; [`next_raw`](Self::next_raw) yields the JSON
/// text instead and [`next_as`](Self::next_as) deserializes it into a type of the caller's.
/// After an error nothing more follows.
pub struct Subscription {
    items: BoxStream<'static, Result<RawOutput, CallError>>,
}

impl Subscription {
    /// Yields each output of `exchange`; ends on completion, after an error, or after the callee
    /// gave up.
    pub(crate) fn new(exchange: Exchange) -> Self {
        let items = futures::stream::unfold(Some(exchange), |state| async move {
            let mut exchange = state?;
            match exchange.next_as::<RawOutput>().await {
                Reply::Output(v) => Some((Ok(v), Some(exchange))),
                Reply::Completed => None,
                Reply::Error(e) => Some((Err(e), None)),
                Reply::Aborted => Some((
                    Err(CallError::new(
                        ErrorCode::Cancelled,
                        "the callee ended the subscription",
                    )),
                    None,
                )),
            }
        })
        .boxed();
        Self { items }
    }

    /// The next item as the JSON text it arrived as; `None` once the subscription has ended.
    pub async fn next_raw(&mut self) -> Option<Result<RawOutput, CallError>> {
        self.items.next().await
    }

    /// Polls for the next item as the JSON text it arrived as (see [`next_raw`](Self::next_raw)).
    pub fn poll_next_raw(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RawOutput, CallError>>> {
        self.items.poll_next_unpin(cx)
    }

    /// The next item deserialized into `T`. An item that does not deserialize (it does not fit
    /// `T`) ends the subscription, which is cancelled, with an `INTERNAL` error naming why.
    pub async fn next_as<T: DeserializeOwned>(&mut self) -> Option<Result<T, CallError>> {
        let item = self.next_raw().await?;
        Some(item.and_then(|raw| {
            raw.deserialize().map_err(|e| {
                self.end();
                CallError::new(
                    ErrorCode::Internal,
                    format!(
                        "a subscription item does not deserialize into the requested type: {e}"
                    ),
                )
            })
        }))
    }

    /// Ends the subscription here: the exchange is dropped, which cancels it on the other side.
    fn end(&mut self) {
        self.items = futures::stream::empty().boxed();
    }
}

impl Stream for Subscription {
    type Item = Result<Value, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.items.poll_next_unpin(cx));
        Poll::Ready(item.map(|item| {
            item.and_then(|raw| {
                // JSON that passed the frame's syntax check but that `serde_json` refuses as a
                // `Value` (a number out of range): the peer broke the protocol, as before.
                raw.into_value().map_err(|e| {
                    self.end();
                    unavailable(&format!("peer sent an invalid frame: {e}"))
                })
            })
        }))
    }
}
