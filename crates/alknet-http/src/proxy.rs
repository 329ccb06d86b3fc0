//! The decoy as a reverse proxy: every request the node does not claim goes to an upstream site.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Forwards requests to `base`.
#[derive(Clone)]
pub(crate) struct Proxy {
    client: reqwest::Client,
    base: reqwest::Url,
}

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in &HOP_BY_HOP {
        out.remove(name);
    }
    out
}

impl Proxy {
    pub(crate) fn new(base: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| format!("http.decoy.proxy: {base:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "http.decoy.proxy: {base:?} is not an http:// or https:// URL"
            ));
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("http.decoy.proxy: {e}"))?;
        Ok(Self { client, base: url })
    }

    fn target(&self, req: &Request) -> reqwest::Url {
        let mut url = self.base.clone();
        let base_path = self.base.path().trim_end_matches('/');
        url.set_path(&format!("{base_path}{}", req.uri().path()));
        url.set_query(req.uri().query());
        url
    }

    pub(crate) async fn forward(&self, req: Request) -> Response {
        let url = self.target(&req);
        let (parts, body) = req.into_parts();
        let upstream = self
            .client
            .request(parts.method, url)
            .headers(forwardable(&parts.headers))
            .body(reqwest::Body::wrap_stream(body.into_data_stream()))
            .send()
            .await;
        match upstream {
            Ok(resp) => {
                let status = resp.status();
                let headers = forwardable(resp.headers());
                let mut response = Response::new(Body::from_stream(resp.bytes_stream()));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
            }
            Err(e) => {
                tracing::debug!(target: "alknet::http", error = %alknet_core::log_text::escaped(&e), "decoy upstream failed");
                (StatusCode::BAD_GATEWAY, "Bad Gateway").into_response()
            }
        }
    }
}
