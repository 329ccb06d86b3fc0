//! The HTTP gateway: `POST /call/<operation>` with a JSON body answers the output as JSON; a
//! subscription answers Server-Sent Events. Each request runs through the call crate's one
//! dispatcher (a [`Session`] over an in-memory connection, as the identity the request resolves
//! to), so access checks, input validation, deadlines and limits are those of every other carrier.
//! The `Authorization: Bearer` token travels as the request's `auth_token`: an invalid one is
//! `UNAUTHENTICATED`, as the contract says.

use std::convert::Infallible;
use std::sync::Arc;

use alknet_call::{
    CallError, ErrorCode, OperationType, Peer, RequestOptions, Session, Visibility, ALPN,
};
use alknet_core::connection::memory;
use alknet_core::AuthContext;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::server::{bearer, App, ConnInfo};

/// The HTTP status of an error code (the table in `docs/http.md`).
pub fn status_of(error: &CallError) -> StatusCode {
    match error.code() {
        Some(ErrorCode::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorCode::Unauthenticated) => StatusCode::UNAUTHORIZED,
        Some(ErrorCode::Forbidden) => StatusCode::FORBIDDEN,
        Some(ErrorCode::InvalidInput) => StatusCode::BAD_REQUEST,
        Some(ErrorCode::InvalidOperationType) => StatusCode::BAD_REQUEST,
        Some(ErrorCode::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(ErrorCode::Cancelled) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorCode::Overloaded) => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorCode::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorCode::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        // A code the operation declared: the request was understood and refused.
        None => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// `{"error": {code, message, retryable, details?}}` with the code's status.
pub(crate) fn error_response(error: &CallError) -> Response {
    let mut response = (
        status_of(error),
        axum::Json(serde_json::json!({ "error": error })),
    )
        .into_response();
    if error.is(ErrorCode::Unauthenticated) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// A connection into the node's dispatcher for the gateway requests of one HTTP connection, as
/// the TLS layer resolved it (each request's bearer token is its `auth_token`). One per HTTP
/// connection, so its requests share one session's limits, like those of one call connection.
/// Dropping it (the HTTP connection and its last response are gone) ends the session and
/// cancels what still runs.
pub(crate) struct Caller(Peer);

impl Drop for Caller {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn open(app: &App, service: &Arc<alknet_call::CallService>, info: &ConnInfo) -> Arc<Caller> {
    let (served, calling) = memory::pair(ALPN);
    let auth = AuthContext {
        identity: info.auth.identity.clone(),
        alpn: ALPN.to_vec(),
        remote_addr: info.remote,
        tls_fingerprint: info.auth.tls_fingerprint.clone(),
        bearer: info.auth.bearer.clone(),
    };
    Session::start(served, service.clone(), auth);
    Arc::new(Caller(Peer::connect(calling, app.caller.clone(), None)))
}

pub(crate) async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let info = req.extensions().get::<ConnInfo>().cloned();
    let token = bearer(req.headers());
    let identity = info
        .as_ref()
        .and_then(|info| app.identity(token.as_deref(), info));
    let admitted = info
        .as_ref()
        .and_then(|_| app.admit(app.config.gateway, identity.as_ref()).cloned());
    let (Some(info), Some(service), true) = (info, admitted, req.method() == Method::POST) else {
        return app.decoy.respond(req).await;
    };
    let operation = req
        .uri()
        .path()
        .strip_prefix("/call/")
        .unwrap_or_default()
        .to_owned();
    let max = service.max_frame_for(identity.as_ref());
    let input = match Limited::new(req.into_body(), max).collect().await {
        Err(_) => {
            return error_response(&CallError::new(
                ErrorCode::InvalidInput,
                format!("the body is not readable or larger than {max} bytes"),
            ))
        }
        Ok(body) => {
            let bytes = body.to_bytes();
            if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        return error_response(&CallError::new(
                            ErrorCode::InvalidInput,
                            format!("the body is not JSON: {e}"),
                        ))
                    }
                }
            }
        }
    };
    let options = RequestOptions {
        auth_token: token,
        ..RequestOptions::default()
    };
    let subscription = service.registry().get(&operation).is_some_and(|op| {
        op.spec.kind == OperationType::Subscription && op.spec.visibility == Visibility::External
    });
    let caller = info
        .gateway
        .get_or_init(|| open(&app, &service, &info))
        .clone();
    if !subscription {
        return match caller.0.call_with(&operation, input, options).await {
            Ok(output) => axum::Json(output).into_response(),
            Err(e) => error_response(&e),
        };
    }
    let items = match caller.0.subscribe_with(&operation, input, options).await {
        Ok(items) => items,
        Err(e) => return error_response(&e),
    };
    // Each item is a `data:` event; the end is an `event: completed`, a failure an `event:
    // error`. When the client goes away the body is dropped, and with it the subscription
    // (cancelled on the node) and the caller.
    let events = items
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .scan(false, |failed, item| {
            let event = match item {
                _ if *failed => None,
                Some(Ok(output)) => Some(Event::default().json_data(output)),
                Some(Err(e)) => {
                    *failed = true;
                    Some(Event::default().event("error").json_data(e))
                }
                None => Some(Ok(Event::default().event("completed").data("{}"))),
            };
            futures::future::ready(event)
        })
        .map(move |event| {
            let _hold = &caller;
            Ok::<_, Infallible>(
                event.unwrap_or_else(|_| Event::default().event("error").data("{}")),
            )
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
        .map(Body::new)
}
