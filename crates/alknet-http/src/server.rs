//! The protocol handler: HTTP/1.1 and HTTP/2 (hyper's auto builder) on the TLS stream the
//! endpoint hands over, routing to the enabled features and to the decoy.

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_call::{CallService, OperationRegistry};
use alknet_core::{
    Alpn, AuthConfig, AuthContext, Carrier, Connection, Credential, HandlerError, Identity,
    ProtocolHandler,
};
use async_trait::async_trait;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::{Feature, HttpConfig};
use crate::decoy::Decoy;
use crate::{gateway, openapi, websocket};

/// The ALPNs of HTTP; a TLS client that offers none gets HTTP/1.1 too.
pub const ALPNS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long an HTTP/1 client may take to send a request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a request knows about the connection it arrived on.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub(crate) remote: SocketAddr,
    pub(crate) auth: AuthContext,
    /// Cancelled when the node drains.
    pub(crate) drain: CancellationToken,
    /// Cancelled when the endpoint cuts the connection off (drain deadline).
    pub(crate) cut: CancellationToken,
    /// WebSocket sessions upgraded from this connection: the handler waits for them.
    pub(crate) tasks: TaskTracker,
    /// The gateway's session for this connection, opened by its first gateway request.
    pub(crate) gateway: Arc<std::sync::OnceLock<Arc<gateway::Caller>>>,
}

/// Shared by every connection.
pub(crate) struct App {
    pub(crate) config: HttpConfig,
    pub(crate) decoy: Decoy,
    pub(crate) service: Option<Arc<CallService>>,
    /// The (empty) service of the gateway's own side of each call.
    pub(crate) caller: Arc<CallService>,
}

impl App {
    /// The call service, if `feature` is on and the request may see it; `None` sends the request
    /// to the decoy.
    pub(crate) fn admit(
        &self,
        feature: Feature,
        identity: Option<&Identity>,
    ) -> Option<&Arc<CallService>> {
        let service = self.service.as_ref()?;
        (feature.enabled && (!feature.require_identity || identity.is_some())).then_some(service)
    }

    /// The identity a request carries: a valid bearer `token` (an invalid one gives none), else
    /// the TLS client key's.
    pub(crate) fn identity(&self, token: Option<&str>, info: &ConnInfo) -> Option<Identity> {
        let Some(token) = token else {
            return info.auth.identity.clone();
        };
        let identity = self.service.as_ref().and_then(|s| {
            let auth = s.config().load().get::<AuthConfig>();
            auth.resolve(&Credential::token(token.as_bytes()))
        });
        match &identity {
            Some(id) => {
                tracing::info!(target: "alknet::auth", remote = %info.remote, transport = %"http", peer = %id.id, "authentication accepted: bearer token")
            }
            None => {
                tracing::info!(target: "alknet::auth", remote = %info.remote, transport = %"http", "authentication rejected: invalid token")
            }
        }
        identity
    }
}

/// The bearer token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// Serves HTTP on the node's port: register it like the call handler.
///
/// ```no_run
/// # async fn run(service: std::sync::Arc<alknet_call::CallService>) -> Result<(), String> {
/// use alknet_http::{HttpConfig, HttpHandler, Feature};
/// let config = HttpConfig { websocket: Feature::ON, ..HttpConfig::default() };
/// let handler = HttpHandler::new(config, Some(service))?;
/// # let _ = handler; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpHandler {
    router: Router,
}

impl HttpHandler {
    /// A handler serving `config`. `service` is the node's call service; the WebSocket carrier,
    /// the gateway and the OpenAPI document need it.
    pub fn new(config: HttpConfig, service: Option<Arc<CallService>>) -> Result<Self, String> {
        config.validate()?;
        let features = [
            ("websocket", config.websocket),
            ("gateway", config.gateway),
            ("openapi", config.openapi),
        ];
        if service.is_none() {
            if let Some((name, _)) = features.iter().find(|(_, f)| f.enabled) {
                return Err(format!(
                    "http.{name} needs the call service (services.call = true)"
                ));
            }
        }
        let caller = CallService::anonymous(OperationRegistry::new()).map_err(|e| e.to_string())?;
        let app = Arc::new(App {
            decoy: Decoy::new(&config.decoy)?,
            config,
            service,
            caller,
        });
        let router = Router::new()
            .route(websocket::PATH, any(websocket_route))
            .route("/call/{*operation}", any(gateway::route))
            .route(openapi::PATH, any(openapi::route))
            .fallback(decoy_route)
            .with_state(app);
        Ok(Self { router })
    }
}

async fn decoy_route(State(app): State<Arc<App>>, req: Request) -> Response {
    app.decoy.respond(req).await
}

async fn websocket_route(State(app): State<Arc<App>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(info) = parts.extensions.get::<ConnInfo>().cloned() else {
        return app.decoy.respond(Request::from_parts(parts, body)).await;
    };
    let upgrade = if parts.method == Method::GET {
        axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .ok()
            .filter(websocket::offers_call)
    } else {
        None
    };
    let Some(upgrade) = upgrade else {
        return app.decoy.respond(Request::from_parts(parts, body)).await;
    };
    let token = websocket::offered_token(&upgrade);
    let identity = app.identity(token.as_deref(), &info);
    // The socket keeps what its identity came from (the token's hash, not the token), so that
    // its requests resolve it again after a reload.
    let bearer = token
        .filter(|_| identity.is_some())
        .map(|t| Credential::token(t.as_bytes()));
    match app.admit(app.config.websocket, identity.as_ref()) {
        Some(service) => websocket::accept(upgrade, service.clone(), identity, bearer, info),
        None => app.decoy.respond(Request::from_parts(parts, body)).await,
    }
}

#[async_trait]
impl ProtocolHandler for HttpHandler {
    fn alpns(&self) -> Vec<Alpn> {
        ALPNS
            .iter()
            .map(|p| Alpn::over(p, &[Carrier::Tcp]))
            .collect()
    }

    fn without_alpn(&self) -> &'static [Carrier] {
        &[Carrier::Tcp]
    }

    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let stream = conn.accept_bi().await?;
        let cut = CancellationToken::new();
        let _cut_on_drop = cut.clone().drop_guard();
        let info = ConnInfo {
            remote: conn.remote_addr(),
            auth,
            drain: CancellationToken::new(),
            cut,
            tasks: TaskTracker::new(),
            gateway: Arc::default(),
        };
        let router = self.router.clone();
        let per_request = info.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(per_request.clone());
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that never finishes its request head is dropped, as by any web server.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let serving = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(serving);
        let result = tokio::select! {
            r = serving.as_mut() => r,
            _ = conn.draining() => {
                info.drain.cancel();
                serving.as_mut().graceful_shutdown();
                serving.await
            }
        };
        // A client that just goes away is no handler error.
        if let Err(e) = result {
            tracing::debug!(target: "alknet::http", remote = %info.remote, error = %alknet_core::log_text::escaped(&e), "HTTP connection ended");
        }
        info.tasks.close();
        tokio::select! {
            _ = info.tasks.wait() => {}
            _ = conn.draining(), if !info.drain.is_cancelled() => {
                info.drain.cancel();
                info.tasks.wait().await;
            }
        }
        Ok(())
    }
}
