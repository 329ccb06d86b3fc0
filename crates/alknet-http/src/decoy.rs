//! The decoy: what everyone who is not calling an enabled feature sees. Nothing here names the
//! software behind it; its 404 is the one every unknown path gets.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::config::Decoy as DecoyConfig;
use crate::proxy::Proxy;

const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Welcome</title></head>\n<body><h1>Welcome</h1><p>Nothing to see here yet.</p></body></html>\n";
const NOT_ALLOWED: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>405 Method Not Allowed</title></head>\n<body><h1>Method Not Allowed</h1></body></html>\n";
const NOT_FOUND: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>404 Not Found</title></head>\n<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n";

/// The decoy, ready to answer.
#[derive(Clone)]
pub(crate) enum Decoy {
    Builtin,
    Dir(ServeDir<NotFoundService>),
    Proxy(Proxy),
}

type NotFoundFuture = std::future::Ready<Result<Response, Infallible>>;
type NotFoundService = tower::util::ServiceFn<fn(Request) -> NotFoundFuture>;

fn html(status: StatusCode, page: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

/// The plain 404 page.
pub(crate) fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, NOT_FOUND)
}

fn not_found_service(_: Request) -> NotFoundFuture {
    std::future::ready(Ok(not_found()))
}

impl Decoy {
    pub(crate) fn new(config: &DecoyConfig) -> Result<Self, String> {
        Ok(match config {
            DecoyConfig::Builtin => Decoy::Builtin,
            DecoyConfig::Dir(dir) => Decoy::Dir(
                ServeDir::new(dir)
                    .append_index_html_on_directories(true)
                    .fallback(tower::service_fn(
                        not_found_service as fn(Request) -> NotFoundFuture,
                    )),
            ),
            DecoyConfig::Proxy(url) => Decoy::Proxy(Proxy::new(url)?),
        })
    }

    /// Answers `req`.
    pub(crate) async fn respond(&self, req: Request) -> Response {
        match self {
            Decoy::Builtin => builtin(&drained(req).await),
            Decoy::Dir(dir) => match dir.clone().oneshot(drained(req).await).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
            Decoy::Proxy(proxy) => proxy.forward(req).await,
        }
    }
}

/// A request body the decoy reads (and drops) before answering, at most.
const DRAIN_LIMIT: usize = 64 * 1024;
/// How long the decoy waits for that body, at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// `req` with its body read to the end (up to [`DRAIN_LIMIT`], for at most [`DRAIN_TIME`]) and
/// dropped. An HTTP/2 answer sent before the request's body has ended is followed by a stream
/// reset (RFC 9113 §8.1 allows it), and some clients (curl 7.88) then report a failed request
/// instead of the answer; any web server reading what it was sent shows none of that. A larger
/// or slower body is cut off by the reset as before.
async fn drained(req: Request) -> Request {
    let (parts, mut body) = req.into_parts();
    // Frames are counted and dropped as they come, so a drain holds one frame at a time.
    let discard = async {
        let mut seen = 0;
        while seen <= DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
    Request::from_parts(parts, Body::empty())
}

fn builtin(req: &Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = html(StatusCode::METHOD_NOT_ALLOWED, NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match req.uri().path() {
        "/" | "/index.html" => html(StatusCode::OK, PAGE),
        _ => not_found(),
    }
}
