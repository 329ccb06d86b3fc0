//! Subscriptions delivered into JavaScript: in batches, and only as fast as JavaScript reads.
//!
//! JavaScript grants credit (a number of items) and tops it up as its consumer takes items, so
//! the items waiting on the JavaScript side stay bounded; while there is no credit the Rust side
//! stops reading, and the session's own bounded queue decides what a too-slow consumer gets. Items
//! that are ready together cross the boundary in one listener call, as a JSON array.

use std::sync::Arc;

use alknet_call::{Peer, RequestOptions};
use futures::FutureExt;
use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Items JavaScript may hold before it asks for more.
const INITIAL_CREDIT: usize = 256;

/// What a listener receives: `(event, json)` with event `items` (a JSON array), `error` (a
/// `CallError`) or `end`.
pub type ItemEvent = (String, String);

/// A subscription's listener; weak, so it never keeps the event loop alive.
pub type Listener =
    ThreadsafeFunction<FnArgs<ItemEvent>, (), FnArgs<ItemEvent>, Status, false, true>;

/// A running subscription.
#[napi]
pub struct Subscription {
    cancel: CancellationToken,
    credit: Arc<Semaphore>,
}

#[napi]
impl Subscription {
    /// Aborts the subscription (the remote handler is cancelled: STOP_SENDING on the
    /// subscription's own QUIC stream, `call.aborted` over TCP+TLS).
    /// Nothing is delivered afterwards.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Lets `items` more items cross to JavaScript (call it as the consumer takes them).
    #[napi]
    pub fn request(&self, items: u32) {
        self.credit.add_permits(items as usize);
    }
}

/// Subscribes to `operation` on `peer` and delivers to `listener` until the end, an error, or
/// [`Subscription::cancel`].
pub(crate) fn spawn(
    peer: Peer,
    operation: String,
    input: Value,
    options: RequestOptions,
    listener: Listener,
) -> Subscription {
    let cancel = options.cancel.clone().unwrap_or_default();
    let credit = Arc::new(Semaphore::new(INITIAL_CREDIT));
    let subscription = Subscription {
        cancel: cancel.clone(),
        credit: credit.clone(),
    };
    napi::bindgen_prelude::spawn(async move {
        let emit = |event: &str, json: String| {
            if !cancel.is_cancelled() {
                listener.call(
                    (event.to_string(), json).into(),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        };
        let mut items = match peer.subscribe_with(&operation, input, options).await {
            Ok(items) => items,
            Err(e) => return emit("error", error_json(&e)),
        };
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                permit = credit.acquire() => permit,
            };
            let Ok(permit) = permit else { return };
            permit.forget();
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                next = items.next_raw() => next,
            };
            // Take whatever else is ready now and the credit allows: one crossing for all of it.
            let mut batch = String::from("[");
            let mut last = next;
            loop {
                match last {
                    Some(Ok(v)) => {
                        if batch.len() > 1 {
                            batch.push(',');
                        }
                        // The item's JSON text as it arrived: JavaScript parses the batch once.
                        batch.push_str(&v.json());
                    }
                    end => {
                        if batch.len() > 1 {
                            batch.push(']');
                            emit("items", batch);
                        }
                        match end {
                            Some(Err(e)) => emit("error", error_json(&e)),
                            _ => emit("end", String::new()),
                        }
                        return;
                    }
                }
                let Ok(permit) = credit.try_acquire() else {
                    break;
                };
                match items.next_raw().now_or_never() {
                    Some(item) => {
                        permit.forget();
                        last = item;
                    }
                    None => break,
                }
            }
            batch.push(']');
            emit("items", batch);
        }
    });
    subscription
}

fn error_json(error: &alknet_call::CallError) -> String {
    serde_json::to_string(error).unwrap_or_default()
}
