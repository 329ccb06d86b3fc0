//! A real node (endpoint, TLS, the call handler and the HTTP handler on one port) and real clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_call::{
    Access, CallHandler, CallOptions, CallService, Handler, OperationRegistry, OperationSpec,
    OperationType,
};
use alknet_core::config::{ApiKeyEntry, AuthConfig, PeerEntry};
use alknet_core::{ConfigIdentityProvider, ConfigStore, ProtocolHandler, SecretKey};
use alknet_endpoint::{Endpoint, EndpointConfig, HandlerRegistry, ServerIdentity};
use alknet_http::{HttpConfig, HttpHandler};
use futures::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

/// The bearer token of the peer `alice` (scope `todo:write`).
pub const ALICE_TOKEN: &str = "alice-secret-token";
/// The bearer token of the peer `bob` (no scopes).
pub const BOB_TOKEN: &str = "bob-secret-token";
/// The API key `alk_ws_…` (scope `todo:write`).
pub const KEY_TOKEN: &str = "alk_ws_0123456789abcdef";

pub struct TestNode {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    /// Receives one message each time `slow/ticks` is cancelled.
    pub cancelled: mpsc::UnboundedReceiver<()>,
    /// The node's peers and API keys.
    pub auth: ConfigStore<AuthConfig>,
    pub service: Arc<CallService>,
}

impl TestNode {
    /// Reloads the peers and API keys as `edit` changes them, as a node's reload does.
    pub fn reload_auth(&self, edit: impl FnOnce(&mut AuthConfig)) {
        let mut auth = AuthConfig::clone(&self.auth.load());
        edit(&mut auth);
        self.auth.reload(auth).unwrap();
        self.service.identities_changed();
    }
}

/// `math/add` (open), `todo/secret` (needs scope `todo:write`), `slow/ticks` (a subscription
/// that reports its cancellation).
fn operations(cancelled: mpsc::UnboundedSender<()>) -> OperationRegistry {
    let mut ops = OperationRegistry::new();
    ops.query(
        "math/add",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
        json!({"type": "number"}),
        |_ctx, input| async move { Ok(json!(input["a"].as_f64().unwrap_or(0.0) + input["b"].as_f64().unwrap_or(0.0))) },
    )
    .unwrap();
    let secret = OperationSpec::new(
        "todo/secret",
        OperationType::Query,
        json!({}),
        json!({"type": "string"}),
    )
    .access(Access {
        required_scopes: vec!["todo:write".into()],
        ..Access::default()
    });
    ops.register(
        secret,
        Handler::unary(|ctx, _input| async move {
            Ok(json!(ctx.identity.map(|i| i.id).unwrap_or_default()))
        }),
    )
    .unwrap();
    let ticks = OperationSpec::new(
        "slow/ticks",
        OperationType::Subscription,
        json!({}),
        json!({"type": "integer"}),
    );
    ops.register(
        ticks,
        Handler::stream(move |ctx, _input| {
            let cancelled = cancelled.clone();
            async_stream(ctx, cancelled)
        }),
    )
    .unwrap();
    ops
}

/// Yields 0, 1, 2, … one per 20 ms until cancelled, and reports the cancellation.
fn async_stream(
    ctx: alknet_call::CallContext,
    cancelled: mpsc::UnboundedSender<()>,
) -> futures::stream::BoxStream<'static, Result<Value, alknet_call::CallError>> {
    tokio::spawn(async move {
        ctx.cancelled().await;
        let _ = cancelled.send(());
    });
    futures::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Some((Ok(json!(n)), n + 1))
    })
    .boxed()
}

pub async fn node(http: HttpConfig) -> TestNode {
    node_with(http, CallOptions::default()).await
}

pub async fn node_with(http: HttpConfig, options: CallOptions) -> TestNode {
    let (tx, cancelled) = mpsc::unbounded_channel();
    let token_hash = |t: &str| alknet_core::fingerprint::token_hash(t.as_bytes());
    let mut bob = PeerEntry::new("bob", []);
    bob.token_hash = Some(token_hash(BOB_TOKEN));
    let auth = AuthConfig {
        peers: vec![
            PeerEntry {
                id: "alice".into(),
                fingerprints: vec![],
                token_hash: Some(token_hash(ALICE_TOKEN)),
                scopes: vec!["todo:write".into()],
                resources: Default::default(),
                enabled: true,
            },
            bob,
        ],
        api_keys: vec![ApiKeyEntry {
            prefix: "ws".into(),
            hash: token_hash(KEY_TOKEN),
            scopes: vec!["todo:write".into()],
            resources: Default::default(),
            expires_at: None,
        }],
    };
    let store = ConfigStore::new(auth).unwrap();
    let identity = Arc::new(ConfigIdentityProvider::new(store.clone()));
    let service = CallService::new(operations(tx), store.live().clone(), options).unwrap();
    let handlers: Vec<Arc<dyn ProtocolHandler>> = vec![
        Arc::new(CallHandler::new(service.clone())),
        Arc::new(HttpHandler::new(http, Some(service.clone())).unwrap()),
    ];
    let mut config = EndpointConfig::new("127.0.0.1:0".parse().unwrap(), SecretKey::generate());
    config.tls = ServerIdentity::SelfSigned { names: vec![] };
    let endpoint = Endpoint::bind(config, HandlerRegistry::new(handlers).unwrap(), identity)
        .await
        .unwrap();
    let addr = endpoint.local_addr();
    TestNode {
        endpoint,
        addr,
        cancelled,
        auth: store,
        service,
    }
}

/// Accepts any server certificate but still checks the handshake signature (tests only: the
/// node's certificate is self-signed and made at start).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to the node offering `alpn` (none if empty).
pub async fn tls(addr: SocketAddr, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Runs `curl` with `args` (plus `-sk`), returning (exit status, stdout, stderr).
pub async fn curl(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(tool("curl"))
        .arg("-sk")
        .args(args)
        .output()
        .await
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The path of a system tool the test needs; installs it with apt-get where it is missing (as
/// root, as in CI), else panics naming it.
pub fn tool(name: &str) -> &'static str {
    static CHECKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap();
    if !checked.iter().any(|c| c == name) {
        let present = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let installed = std::process::Command::new("sh")
                .args(["-c", &format!("apt-get install -y {name} >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y {name} >/dev/null 2>&1)")])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                installed,
                "this test needs `{name}` (Debian package {name}); install it"
            );
        }
        checked.push(name.to_owned());
    }
    match name {
        "curl" => "curl",
        "openssl" => "openssl",
        "python3" => "python3",
        other => panic!("unknown tool {other}"),
    }
}
