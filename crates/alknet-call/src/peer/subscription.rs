//! The items of a subscription, as a `Stream`.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::exchange::Exchange;
use crate::envelope::Reply;
use crate::error::{CallError, ErrorCode};

/// The items of a subscription. Dropping it cancels the subscription on the other side.
pub struct Subscription {
    items: BoxStream<'static, Result<Value, CallError>>,
}

impl Subscription {
    /// Yields each output of `exchange`; ends on completion, after an error, or after the callee
    /// gave up.
    pub(crate) fn new(exchange: Exchange) -> Self {
        let items = futures::stream::unfold(Some(exchange), |state| async move {
            let mut exchange = state?;
            match exchange.next().await {
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
}

impl Stream for Subscription {
    type Item = Result<Value, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_next_unpin(cx)
    }
}
