//! The items of a subscription, as a `Stream`: of `Value`s, or of each item's JSON text as it
//! arrived ([`Subscription::next_raw`]), which a consumer deserializes into its own type or hands
//! on without building a `Value`.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::exchange::{Exchange, Output};
use crate::envelope::{RawOutput, Reply};
use crate::error::{CallError, ErrorCode};

/// The items of a subscription. Dropping it cancels the subscription on the other side.
///
/// As a `Stream` it yields each item as a `Value`; [`next_raw`](Self::next_raw) yields the JSON
/// text instead and [`next_as`](Self::next_as) deserializes it into a type of the caller's.
/// After an error nothing more follows.
pub struct Subscription {
    /// The request, while no read waits on it; `None` once the subscription has ended.
    exchange: Option<Exchange>,
    /// A read that waits for more of the stream, holding the request until it answers.
    waiting: Option<BoxFuture<'static, (Exchange, Result<(), CallError>)>>,
}

impl Subscription {
    /// Yields each output of `exchange`; ends on completion, after an error, or after the callee
    /// gave up.
    pub(crate) fn new(exchange: Exchange) -> Self {
        Self {
            exchange: Some(exchange),
            waiting: None,
        }
    }

    /// The next reply, its output read as `O`: taken from what the stream has buffered while
    /// there is some (most items, without an await), else after waiting for more.
    fn poll_reply<O: Output>(&mut self, cx: &mut Context<'_>) -> Poll<Option<Reply<O>>> {
        loop {
            if let Some(waiting) = &mut self.waiting {
                let (exchange, readable) = ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
                self.exchange = Some(exchange);
                if let Err(e) = readable {
                    return Poll::Ready(Some(Reply::Error(e)));
                }
            }
            let Some(mut exchange) = self.exchange.take() else {
                return Poll::Ready(None);
            };
            if let Some(reply) = exchange.buffered() {
                self.exchange = Some(exchange);
                return Poll::Ready(Some(reply));
            }
            self.waiting = Some(
                async move {
                    let readable = exchange.readable().await;
                    (exchange, readable)
                }
                .boxed(),
            );
        }
    }

    /// Polls for the next item, its output read as `O`.
    fn poll_item<O: Output>(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<O, CallError>>> {
        let item = match ready!(self.poll_reply(cx)) {
            Some(Reply::Output(output)) => return Poll::Ready(Some(Ok(output))),
            None | Some(Reply::Completed) => None,
            Some(Reply::Error(e)) => Some(Err(e)),
            Some(Reply::Aborted) => Some(Err(CallError::new(
                ErrorCode::Cancelled,
                "the callee ended the subscription",
            ))),
        };
        // A terminal reply finished the request: nothing follows.
        self.end();
        Poll::Ready(item)
    }

    /// Polls for the next item as the JSON text it arrived as (see [`next_raw`](Self::next_raw)).
    pub fn poll_next_raw(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RawOutput, CallError>>> {
        self.poll_item(cx)
    }

    /// The next item as the JSON text it arrived as; `None` once the subscription has ended.
    pub async fn next_raw(&mut self) -> Option<Result<RawOutput, CallError>> {
        std::future::poll_fn(|cx| self.poll_next_raw(cx)).await
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
        self.waiting = None;
        self.exchange = None;
    }
}

impl Stream for Subscription {
    type Item = Result<Value, CallError>;

    /// Each output is read straight from the frame into a `Value` (one pass); an output that is
    /// not JSON `serde_json` accepts (a number out of range) ends the subscription as a broken
    /// frame.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_item(cx)
    }
}
