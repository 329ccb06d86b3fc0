//! Shared test handlers and node setup.
#![allow(dead_code)]

#[cfg(feature = "relay")]
pub mod relay;

use std::path::PathBuf;
use std::sync::Arc;

use alknet_core::config::{AuthConfig, ConfigStore, PeerEntry};
use alknet_core::{
    Alpn, AuthContext, Carrier, ConfigIdentityProvider, Connection, HandlerError, ProtocolHandler,
    SecretKey,
};
use alknet_endpoint::{Endpoint, EndpointConfig, HandlerRegistry, ServerIdentity};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

/// Echoes every stream back, prefixed with the ALPN it was reached on; offered on every carrier.
pub struct Echo(pub &'static [u8]);

#[async_trait]
impl ProtocolHandler for Echo {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(self.0)]
    }
    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        echo(conn).await
    }
}

/// Like [`Echo`], offered on the given carriers only.
pub struct EchoOver(pub &'static [u8], pub &'static [Carrier]);

#[async_trait]
impl ProtocolHandler for EchoOver {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::over(self.0, self.1)]
    }
    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        echo(conn).await
    }
}

async fn echo(conn: Connection) -> Result<(), HandlerError> {
    let prefix = conn.alpn().to_vec();
    loop {
        let Ok(mut stream) = conn.accept_bi().await else {
            return Ok(());
        };
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = stream.write_all(&prefix).await;
            let _ = stream.write_all(b":").await;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stream.shutdown().await;
        });
        if conn.is_single_stream() {
            conn.closed().await;
            return Ok(());
        }
    }
}

/// Writes the resolved identity (or `-`) on the first stream, then waits for the peer to close.
pub struct WhoAmI;

#[async_trait]
impl ProtocolHandler for WhoAmI {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(b"whoami")]
    }
    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let mut stream = conn.accept_bi().await?;
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte).await;
        let name = auth.identity.map(|i| i.id).unwrap_or_else(|| "-".into());
        stream
            .write_all(name.as_bytes())
            .await
            .map_err(|e| HandlerError::Protocol(e.to_string()))?;
        stream
            .shutdown()
            .await
            .map_err(|e| HandlerError::Protocol(e.to_string()))?;
        let _ = stream.read(&mut byte).await;
        Ok(())
    }
}

/// Fails (error or panic) as soon as a stream arrives.
pub struct Failing {
    pub panic: bool,
}

#[async_trait]
impl ProtocolHandler for Failing {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(if self.panic {
            b"panics"
        } else {
            b"errors"
        })]
    }
    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        let _stream = conn.accept_bi().await?;
        if self.panic {
            panic!("handler bug");
        }
        Err(HandlerError::Protocol("deliberate failure".into()))
    }
}

/// What a [`Held`] connection waits for before it finishes.
pub enum Release {
    /// A notification from the test.
    Notified(Arc<Notify>),
    /// The node beginning to drain ([`Connection::draining`]).
    Draining,
}

/// Reports each connection, then holds its stream until released; then writes `done` and returns
/// once the peer has closed.
pub struct Held {
    pub started: mpsc::UnboundedSender<()>,
    pub release: Release,
}

#[async_trait]
impl ProtocolHandler for Held {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(b"held")]
    }
    async fn handle(&self, conn: Connection, _auth: AuthContext) -> Result<(), HandlerError> {
        let mut stream = conn.accept_bi().await?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| HandlerError::Protocol(e.to_string()))?;
        let _ = self.started.send(());
        match &self.release {
            Release::Notified(notify) => notify.notified().await,
            Release::Draining => conn.draining().await,
        }
        stream
            .write_all(b"done")
            .await
            .map_err(|e| HandlerError::Protocol(e.to_string()))?;
        stream
            .shutdown()
            .await
            .map_err(|e| HandlerError::Protocol(e.to_string()))?;
        let _ = stream.read(&mut byte).await;
        Ok(())
    }
}

/// A test CA and a `localhost` certificate it signed (its own ECDSA key, not the node's), written
/// as PEM files to a temporary directory that lives as long as this value.
pub struct TestPki {
    pub roots: rustls::RootCertStore,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> Self {
        Self::with_names(&["localhost"])
    }

    /// The same, with a leaf certificate for `names`.
    pub fn with_names(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alknet test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("node.crt");
        let key = dir.path().join("node.key");
        std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
        // A private key file must be readable by its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Self {
            roots,
            cert,
            key,
            _dir: dir,
        }
    }

    /// The node identity that presents this certificate.
    pub fn identity(&self) -> ServerIdentity {
        ServerIdentity::X509 {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

pub struct Node {
    pub endpoint: Endpoint,
    pub store: ConfigStore<AuthConfig>,
    pub key: SecretKey,
}

pub fn peers_config(peers: Vec<PeerEntry>) -> AuthConfig {
    AuthConfig {
        peers,
        ..Default::default()
    }
}

pub async fn node_with(
    handlers: Vec<Arc<dyn ProtocolHandler>>,
    config: AuthConfig,
    edit: impl FnOnce(&mut EndpointConfig),
) -> Node {
    let key = SecretKey::generate();
    let mut endpoint_config = EndpointConfig::new("127.0.0.1:0".parse().unwrap(), key.clone());
    edit(&mut endpoint_config);
    let store = ConfigStore::new(config).unwrap();
    let provider = Arc::new(ConfigIdentityProvider::new(store.clone()));
    let endpoint = Endpoint::bind(
        endpoint_config,
        HandlerRegistry::new(handlers).unwrap(),
        provider,
    )
    .await
    .unwrap();
    Node {
        endpoint,
        store,
        key,
    }
}

/// A WhoAmI node that knows one peer, `name`, by `key`.
pub async fn whoami_node(name: &str, key: &SecretKey) -> Node {
    node_with(
        vec![Arc::new(WhoAmI)],
        peers_config(vec![PeerEntry::new(name, [key.public().fingerprint()])]),
        |_| {},
    )
    .await
}

pub async fn echo_node() -> Node {
    node_with(
        vec![Arc::new(Echo(b"echo")), Arc::new(WhoAmI)],
        AuthConfig::default(),
        |_| {},
    )
    .await
}

/// Sends `msg` on a new stream and returns what came back.
pub async fn round_trip(conn: &Connection, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = if conn.is_single_stream() {
        conn.accept_bi().await
    } else {
        conn.open_bi().await
    }
    .map_err(std::io::Error::other)?;
    stream.write_all(msg).await?;
    stream.shutdown().await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(out)
}

/// Like [`round_trip`], through the stream's chunk I/O (`poll_write_chunks` /
/// `poll_read_chunks`, zero-copy on QUIC and iroh), both directions in one task.
pub async fn chunk_round_trip(conn: &Connection, msg: bytes::Bytes) -> std::io::Result<Vec<u8>> {
    use std::task::Poll;
    let mut stream = conn.open_bi().await.map_err(std::io::Error::other)?;
    let mut outgoing = alknet_core::Chunks::new();
    // 64 KiB pieces, so that a write takes several and a partial write splits one.
    for start in (0..msg.len()).step_by(64 * 1024) {
        outgoing.push(msg.slice(start..msg.len().min(start + 64 * 1024)));
    }
    let mut incoming = alknet_core::Chunks::new();
    let mut finished = false;
    std::future::poll_fn(|cx| {
        while !outgoing.is_empty() {
            match stream.poll_write_chunks(cx, &mut outgoing) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if outgoing.is_empty() && !finished {
            match tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut stream), cx) {
                Poll::Ready(Ok(())) => finished = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        loop {
            match stream.poll_read_chunks(cx, &mut incoming, 1 << 20) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await?;
    Ok(incoming
        .as_mut_slice()
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect())
}

/// Asks a WhoAmI handler who we are.
pub async fn whoami(conn: &Connection) -> std::io::Result<String> {
    let mut stream = if conn.is_single_stream() {
        conn.accept_bi().await
    } else {
        conn.open_bi().await
    }
    .map_err(std::io::Error::other)?;
    stream.write_all(b"?").await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
