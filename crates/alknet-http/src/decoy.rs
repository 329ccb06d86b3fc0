//! The decoy: what everyone who is not calling an enabled feature sees. Nothing here names the
//! software behind it; its 404 is the one every unknown path gets.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
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
            Decoy::Builtin => builtin(&req),
            Decoy::Dir(dir) => match dir.clone().oneshot(req).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
            Decoy::Proxy(proxy) => proxy.forward(req).await,
        }
    }
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
