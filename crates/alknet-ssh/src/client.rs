//! The client side: an SSH session to a node over any byte stream ([`SshClient::connect_stream`]),
//! and, on top of a [`Tunnel`] that redials with backoff when the connection drops, a local
//! SOCKS5 server ([`Socks5`]), local forwards ([`LocalForward`], `-L`) and remote forwards
//! ([`Tunnel::remote_forward`], `-R`, and [`Tunnel::remote_forward_socket`] for a Unix socket
//! on the node).
//!
//! Destinations travel to the node as the user gave them: a SOCKS5 domain name is resolved on the
//! node (what `curl --socks5-hostname` asks for), never locally.
//!
//! ```no_run
//! # async fn run(node: std::net::SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use alknet_ssh::client::{Socks5, Tunnel, TunnelConfig};
//!
//! let key = alknet_core::SecretKey::generate();
//! // Any dialer that yields a byte stream: here plain SSH on a TCP port.
//! let tunnel = Tunnel::new(TunnelConfig::new(key, None), move || async move {
//!     let stream = tokio::net::TcpStream::connect(node).await?;
//!     Ok(Box::new(stream) as alknet_ssh::client::BoxedDuplex)
//! });
//! let socks = Socks5::start("127.0.0.1:1080".parse()?, tunnel.clone()).await?;
//! // curl --socks5-hostname 127.0.0.1:1080 https://example.com
//! socks.close().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alknet_core::SecretKey;
use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use russh::client::{ChannelOpenHandle, Msg};
use russh::keys::PrivateKeyWithHashAlg;
use russh::{Channel, ChannelOpenFailure};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::keys::{fingerprint_of_ssh_key, private_key};
use crate::Carrier;

/// A byte stream in both directions.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream as `Any`, so that a copy loop can find a native-tunnel stream
    /// ([`BoxedStream`](alknet_core::BoxedStream)) behind it and copy chunk-wise.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Duplex for T {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// A boxed [`Duplex`].
pub type BoxedDuplex = Box<dyn Duplex>;

/// Why the client could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node refused the destination (its forwarding policy) or the `-R` bind.
    #[error("the node refused it (forwarding policy)")]
    Refused,
    /// The node could not reach the destination.
    #[error("the node could not connect to the destination")]
    ConnectFailed,
    /// The node's per-connection channel limit is reached.
    #[error("the node's per-connection channel limit is reached")]
    Limit,
    /// The node did not accept our key.
    #[error("the node did not accept this key (is its fingerprint in the node's peers?)")]
    AuthRejected,
    /// The node presented another host key than the pinned fingerprint.
    #[error("the node's SSH host key is not the pinned {0}")]
    HostKeyMismatch(String),
    /// No connection to the node (dial failed, or it dropped).
    #[error("no connection to the node: {0}")]
    Disconnected(String),
}

impl ClientError {
    fn from_ssh(e: russh::Error) -> Self {
        match e {
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited)
            | russh::Error::RequestDenied => ClientError::Refused,
            russh::Error::ChannelOpenFailure(ChannelOpenFailure::ResourceShortage) => {
                ClientError::Limit
            }
            russh::Error::ChannelOpenFailure(_) => ClientError::ConnectFailed,
            other => ClientError::Disconnected(other.to_string()),
        }
    }

    /// The SOCKS5 reply for this failure.
    fn socks_reply(&self) -> ReplyError {
        match self {
            ClientError::Refused => ReplyError::ConnectionNotAllowed,
            ClientError::ConnectFailed => ReplyError::HostUnreachable,
            _ => ReplyError::GeneralFailure,
        }
    }
}

/// Where the node listens for a remote forward: a port (bind address and the port it bound) or a
/// Unix socket path, as the channels it opens back name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeListen {
    Port(String, u32),
    Socket(String),
}

type RemoteTargets = Arc<Mutex<HashMap<NodeListen, SocketAddr>>>;

impl ClientHandler {
    /// Connects a channel the node opened for the remote forward `at` to its target here, or
    /// refuses it when no forward of ours is there.
    fn connect_back(&self, at: NodeListen, channel: Channel<Msg>, reply: ChannelOpenHandle) {
        let target = self.remote.lock().ok().and_then(|m| m.get(&at).copied());
        tokio::spawn(async move {
            let Some(target) = target else {
                return reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
            };
            match TcpStream::connect(target).await {
                Ok(mut socket) => {
                    let _ = socket.set_nodelay(true);
                    reply.accept().await;
                    let mut stream = channel.into_stream();
                    let _ = crate::pipe(&mut stream, &mut socket).await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
    }
}

struct ClientHandler {
    pinned: Option<String>,
    remote: RemoteTargets,
    /// Cancels the session's `ended` token when russh drops the handler: the session task has
    /// ended, after shutting down its write half of the stream.
    _ended: tokio_util::sync::DropGuard,
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        Ok(match &self.pinned {
            Some(pinned) => fingerprint_of_ssh_key(key).as_deref() == Some(pinned.as_str()),
            // Unpinned: the transport under SSH (TLS with a pinned key) already proved the node.
            None => true,
        })
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let at = NodeListen::Port(connected_address.to_owned(), connected_port);
        self.connect_back(at, channel, reply);
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        self.connect_back(NodeListen::Socket(socket_path.to_owned()), channel, reply);
        Ok(())
    }
}

/// One SSH session to a node.
pub struct SshClient {
    handle: russh::client::Handle<ClientHandler>,
    remote: RemoteTargets,
    ended: CancellationToken,
}

impl SshClient {
    /// Runs SSH over `stream` and authenticates with `key`. With `pinned` (`ed25519:<hex>`) the
    /// node's host key must have that fingerprint; without, the transport must have proved the
    /// node already (TLS with a pinned key does). `carrier` says what `stream` is: only on an
    /// [`Carrier::Encrypted`] one does the client offer SSH's `none` cipher.
    pub async fn connect_stream<S: Duplex>(
        stream: S,
        key: &SecretKey,
        pinned: Option<&str>,
        carrier: Carrier,
    ) -> Result<Self, ClientError> {
        let config = russh::client::Config {
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(30)),
            preferred: crate::preferred(carrier),
            ..Default::default()
        };
        let remote = RemoteTargets::default();
        let ended = CancellationToken::new();
        let handler = ClientHandler {
            pinned: pinned.map(str::to_owned),
            remote: remote.clone(),
            _ended: ended.clone().drop_guard(),
        };
        let mut handle = russh::client::connect_stream(Arc::new(config), stream, handler)
            .await
            .map_err(|e| match (e, pinned) {
                (russh::Error::UnknownKey, Some(p)) => ClientError::HostKeyMismatch(p.to_owned()),
                (e, _) => ClientError::Disconnected(e.to_string()),
            })?;
        let key = PrivateKeyWithHashAlg::new(Arc::new(private_key(key)), None);
        let auth = handle
            .authenticate_publickey("alknet", key)
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        if !auth.success() {
            return Err(ClientError::AuthRejected);
        }
        Ok(Self {
            handle,
            remote,
            ended,
        })
    }

    /// Opens a `direct-tcpip` channel: the node connects to `host:port` (resolving a name itself).
    pub async fn open(&self, host: &str, port: u16) -> Result<BoxedDuplex, ClientError> {
        let channel = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(ClientError::from_ssh)?;
        Ok(Box::new(channel.into_stream()))
    }

    /// Opens a `direct-streamlocal` channel (`ssh -L port:/path`): the node connects to the Unix
    /// socket at `path`, if one of its policy's `sockets` rules allows it.
    pub async fn open_socket(&self, path: &str) -> Result<BoxedDuplex, ClientError> {
        let channel = self
            .handle
            .channel_open_direct_streamlocal(path)
            .await
            .map_err(ClientError::from_ssh)?;
        Ok(Box::new(channel.into_stream()))
    }

    /// Asks the node to listen on `bind:port` (`port` 0: any) and hand each connection back to
    /// be connected to `to` here; returns the port the node bound.
    pub async fn remote_forward(
        &self,
        bind: &str,
        port: u16,
        to: SocketAddr,
    ) -> Result<u16, ClientError> {
        match self
            .listen(NodeListen::Port(bind.to_owned(), u32::from(port)), to)
            .await?
        {
            NodeListen::Port(_, bound) => Ok(bound as u16),
            NodeListen::Socket(_) => unreachable!("a port forward binds a port"),
        }
    }

    /// Asks the node to listen on a new Unix socket at `path` (`ssh -R /path:host:port`) and
    /// hand each connection back to be connected to `to` here. The node's policy must allow the
    /// path by a `listen` rule's `sockets`, and no file may be there yet
    /// ([`ClientError::Refused`] otherwise); it removes the socket when the forward ends.
    pub async fn remote_forward_socket(
        &self,
        path: &str,
        to: SocketAddr,
    ) -> Result<(), ClientError> {
        self.listen(NodeListen::Socket(path.to_owned()), to)
            .await
            .map(drop)
    }

    /// Asks the node to stop the `-R` listener on `bind:port` (the port it bound) and the
    /// connections it forwarded. [`ClientError::Refused`] when the node has no such listener (never
    /// asked for, already cancelled, or closed by a reload that took the permission away).
    pub async fn cancel_remote_forward(&self, bind: &str, port: u16) -> Result<(), ClientError> {
        self.unlisten(NodeListen::Port(bind.to_owned(), u32::from(port)))
            .await
    }

    /// Asks the node to stop the `-R` listener on the Unix socket at `path`, remove the socket and
    /// end the connections it forwarded; [`ClientError::Refused`] when the node has no such
    /// listener.
    pub async fn cancel_remote_forward_socket(&self, path: &str) -> Result<(), ClientError> {
        self.unlisten(NodeListen::Socket(path.to_owned())).await
    }

    /// Asks the node to listen `at`; returns where it listens (the port it bound for port 0).
    async fn listen(&self, at: NodeListen, to: SocketAddr) -> Result<NodeListen, ClientError> {
        // The node accepts before it answers, so a connection can arrive ahead of the answer:
        // where the name is known already (a socket, a fixed port) it is registered first, and
        // taken out again if the node refuses.
        let known = !matches!(at, NodeListen::Port(_, 0));
        if known {
            self.remember(at.clone(), to);
        }
        let asked = match &at {
            NodeListen::Port(bind, port) => self
                .handle
                .tcpip_forward(bind.as_str(), *port)
                .await
                .map(|bound| {
                    NodeListen::Port(bind.clone(), if *port == 0 { bound } else { *port })
                }),
            NodeListen::Socket(path) => self
                .handle
                .streamlocal_forward(path.as_str())
                .await
                .map(|()| at.clone()),
        };
        match asked {
            Ok(bound) => {
                if !known {
                    self.remember(bound.clone(), to);
                }
                Ok(bound)
            }
            Err(e) => {
                if known {
                    if let Ok(mut m) = self.remote.lock() {
                        m.remove(&at);
                    }
                }
                Err(ClientError::from_ssh(e))
            }
        }
    }

    /// Where connections the node forwards from `at` go.
    fn remember(&self, at: NodeListen, to: SocketAddr) {
        if let Ok(mut m) = self.remote.lock() {
            m.insert(at, to);
        }
    }

    async fn unlisten(&self, at: NodeListen) -> Result<(), ClientError> {
        if let Ok(mut m) = self.remote.lock() {
            m.remove(&at);
        }
        match at {
            NodeListen::Port(bind, port) => self.handle.cancel_tcpip_forward(bind, port).await,
            NodeListen::Socket(path) => self.handle.cancel_streamlocal_forward(path).await,
        }
        .map_err(ClientError::from_ssh)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Ends the session.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        // The disconnect is only queued; wait (bounded, for a node that stopped reading) until
        // the session has written it and shut its stream down, so a process that exits next
        // still tells the node.
        let _ = tokio::time::timeout(CLOSE_WAIT, self.ended.cancelled()).await;
    }
}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<BoxedDuplex>> + Send>>;
type Dialer = Arc<dyn Fn() -> DialFuture + Send + Sync>;

/// How a [`Tunnel`] authenticates and backs off.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The client's key.
    pub key: SecretKey,
    /// The node's fingerprint, checked against its SSH host key (`None`: the dialer's transport
    /// pins the node).
    pub pinned: Option<String>,
    /// First wait before redialing after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between redials.
    pub max_backoff: Duration,
    /// What the dialer's streams are ([`Carrier::Plain`] unless it dials QUIC, TLS or iroh).
    pub carrier: Carrier,
}

impl TunnelConfig {
    /// Backoff from 100 ms to 10 s, on a [`Carrier::Plain`] carrier.
    pub fn new(key: SecretKey, pinned: Option<String>) -> Self {
        Self {
            key,
            pinned,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            carrier: Carrier::Plain,
        }
    }
}

struct TunnelState {
    session: Option<Arc<SshClient>>,
    failures: u32,
}

/// An SSH session to a node that is redialed when it drops: each [`open`](Self::open) uses the
/// live session or dials a new one (waiting out a backoff that doubles per consecutive failure),
/// and remote forwards are asked for again on the new session.
pub struct Tunnel {
    config: TunnelConfig,
    dial: Dialer,
    state: tokio::sync::Mutex<TunnelState>,
    remote_forwards: Arc<Mutex<Vec<(NodeListen, SocketAddr)>>>,
    on_close: Mutex<Option<Arc<CloseHook>>>,
}

type CloseHook = dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// How long [`SshClient::close`] waits for the session to end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Tunnel {
    /// A tunnel that reaches the node through `dial` (a QUIC or TCP+TLS connection with ALPN
    /// `alknet/ssh`, a TCP socket to a plain SSH port, …). Nothing is dialed until first use.
    pub fn new<F, Fut>(config: TunnelConfig, dial: F) -> Arc<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedDuplex>> + Send + 'static,
    {
        Arc::new(Self {
            config,
            dial: Arc::new(move || Box::pin(dial())),
            state: tokio::sync::Mutex::new(TunnelState {
                session: None,
                failures: 0,
            }),
            remote_forwards: Arc::default(),
            on_close: Mutex::default(),
        })
    }

    /// Runs `hook` at the end of [`close`](Self::close), after the session ended: the dialer's
    /// chance to close its carrier and wait until the node was told (QUIC's CONNECTION_CLOSE
    /// sent), before a process that exits next takes the socket with it.
    pub fn on_close<F, Fut>(&self, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook: Arc<CloseHook> = Arc::new(move || Box::pin(hook()));
        *self.on_close.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The live session, dialing (after the backoff due) when there is none.
    pub async fn session(&self) -> Result<Arc<SshClient>, ClientError> {
        let mut state = self.state.lock().await;
        if let Some(session) = &state.session {
            if !session.is_closed() {
                return Ok(session.clone());
            }
        }
        state.session = None;
        if state.failures > 0 {
            let backoff = self
                .config
                .min_backoff
                .saturating_mul(1 << state.failures.min(16))
                .min(self.config.max_backoff);
            tokio::time::sleep(backoff).await;
        }
        let dialed = async {
            let stream = (self.dial)()
                .await
                .map_err(|e| ClientError::Disconnected(e.to_string()))?;
            let config = &self.config;
            SshClient::connect_stream(
                stream,
                &config.key,
                config.pinned.as_deref(),
                config.carrier,
            )
            .await
        };
        match dialed.await {
            Ok(session) => {
                let session = Arc::new(session);
                let forwards = self
                    .remote_forwards
                    .lock()
                    .map(|f| f.clone())
                    .unwrap_or_default();
                for (at, to) in forwards {
                    match session.listen(at.clone(), to).await {
                        Ok(_) => {}
                        // The node does not grant it now (its policy changed, or the old session
                        // still holds the port): the session serves everything else, and the
                        // forward is asked for again with backoff until the node grants it.
                        Err(ClientError::Refused) => {
                            warn!(target: "alknet::ssh", "a remote forward was refused on reconnect; asking again with backoff");
                            self.ask_again(session.clone(), at, to);
                        }
                        Err(e) => {
                            state.failures = state.failures.saturating_add(1);
                            return Err(e);
                        }
                    }
                }
                state.failures = 0;
                state.session = Some(session.clone());
                Ok(session)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                Err(e)
            }
        }
    }

    /// Opens a stream to `host:port` from the node.
    pub async fn open(&self, host: &str, port: u16) -> Result<BoxedDuplex, ClientError> {
        self.session().await?.open(host, port).await
    }

    /// Opens a stream to the Unix socket at `path` on the node (see [`SshClient::open_socket`]).
    pub async fn open_socket(&self, path: &str) -> Result<BoxedDuplex, ClientError> {
        self.session().await?.open_socket(path).await
    }

    /// `-R`: the node listens on `bind:port` and each connection is connected to `to` here;
    /// returns the port the node bound. Asked for again (same port) after a reconnect.
    pub async fn remote_forward(
        &self,
        bind: &str,
        port: u16,
        to: SocketAddr,
    ) -> Result<u16, ClientError> {
        let bound = self.session().await?.remote_forward(bind, port, to).await?;
        self.remember(NodeListen::Port(bind.to_owned(), u32::from(bound)), to);
        Ok(bound)
    }

    /// `-R /path:host:port`: the node listens on a new Unix socket at `path` (see
    /// [`SshClient::remote_forward_socket`]) and each connection is connected to `to` here.
    /// Asked for again after a reconnect.
    pub async fn remote_forward_socket(
        &self,
        path: &str,
        to: SocketAddr,
    ) -> Result<(), ClientError> {
        self.session()
            .await?
            .remote_forward_socket(path, to)
            .await?;
        self.remember(NodeListen::Socket(path.to_owned()), to);
        Ok(())
    }

    /// Stops the `-R` listener on `bind:port` (the port [`remote_forward`](Self::remote_forward)
    /// returned): the node closes it and the connections it forwarded, and it is not asked for
    /// again after a reconnect. [`ClientError::Refused`] when the node has no such listener.
    pub async fn cancel_remote_forward(&self, bind: &str, port: u16) -> Result<(), ClientError> {
        self.cancel(NodeListen::Port(bind.to_owned(), u32::from(port)))
            .await
    }

    /// Stops the `-R` listener on the Unix socket at `path`: the node removes the socket and ends
    /// the connections it forwarded, and it is not asked for again after a reconnect.
    /// [`ClientError::Refused`] when the node has no such listener.
    pub async fn cancel_remote_forward_socket(&self, path: &str) -> Result<(), ClientError> {
        self.cancel(NodeListen::Socket(path.to_owned())).await
    }

    fn remember(&self, at: NodeListen, to: SocketAddr) {
        if let Ok(mut f) = self.remote_forwards.lock() {
            f.push((at, to));
        }
    }

    async fn cancel(&self, at: NodeListen) -> Result<(), ClientError> {
        if let Ok(mut f) = self.remote_forwards.lock() {
            f.retain(|(a, _)| *a != at);
        }
        let live = self.state.lock().await.session.clone();
        match live {
            Some(session) if !session.is_closed() => session.unlisten(at).await,
            // No session: the node has no listener of ours.
            _ => Err(ClientError::Refused),
        }
    }

    /// Asks `session` for a refused remote forward again, waiting `min_backoff` and doubling up
    /// to `max_backoff`, until the node grants it, the session ends (a new one asks for it
    /// itself) or it is cancelled.
    fn ask_again(&self, session: Arc<SshClient>, at: NodeListen, to: SocketAddr) {
        let wanted = self.remote_forwards.clone();
        let still_wanted =
            move |at: &NodeListen| wanted.lock().is_ok_and(|f| f.iter().any(|(a, _)| a == at));
        let (mut backoff, max) = (self.config.min_backoff, self.config.max_backoff);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(backoff).await;
                if !still_wanted(&at) || session.is_closed() {
                    return;
                }
                match session.listen(at.clone(), to).await {
                    // Cancelled while it was being asked for: take it back.
                    Ok(_) if !still_wanted(&at) => {
                        let _ = session.unlisten(at).await;
                        return;
                    }
                    Ok(_) => return,
                    Err(ClientError::Refused) => backoff = backoff.saturating_mul(2).min(max),
                    Err(_) => return,
                }
            }
        });
    }

    /// Ends the current session (the next use dials again).
    pub async fn close(&self) {
        // Taken out under the lock, closed without it: a `session()` meanwhile dials anew
        // instead of waiting out the close.
        let session = self.state.lock().await.session.take();
        if let Some(session) = session {
            session.close().await;
        }
        let hook = self
            .on_close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook().await;
        }
    }
}

/// A running local listener ([`Socks5`] or [`LocalForward`]); dropping it stops it.
pub struct Listener {
    local_addr: SocketAddr,
    stop: CancellationToken,
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and ends the connections it carries; resolves once the port is closed
    /// (a connection attempt after it is refused).
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve<F, Fut>(listen: SocketAddr, each: F) -> io::Result<Listener>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let accepting = tokio::spawn(async move {
        loop {
            let socket = tokio::select! {
                () = token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
            };
            let _ = socket.set_nodelay(true);
            let token = token.clone();
            let work = each(socket);
            tokio::spawn(async move {
                tokio::select! {
                    () = work => {}
                    () = token.cancelled() => {}
                }
            });
        }
    });
    Ok(Listener {
        local_addr,
        stop,
        accepting: Some(accepting),
    })
}

/// Anything that opens streams to `host:port` from the node: an SSH [`Tunnel`], or the native
/// QUIC tunnel.
pub trait Opener: Send + Sync + 'static {
    /// Opens a stream to `host:port` from the node.
    fn open(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<BoxedDuplex, ClientError>> + Send + '_>>;
}

impl Opener for Tunnel {
    fn open(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = Result<BoxedDuplex, ClientError>> + Send + '_>> {
        Box::pin(async move { Tunnel::open(self, &host, port).await })
    }
}

/// The copy loop between a local `socket` and a stream an [`Opener`] opened: chunk-wise
/// ([`alknet_core::pipe`]) when it is a native-tunnel stream, else [`crate::pipe`].
async fn pipe_opened(socket: &mut TcpStream, stream: &mut BoxedDuplex) -> io::Result<()> {
    match (**stream)
        .as_any_mut()
        .downcast_mut::<alknet_core::BoxedStream>()
    {
        Some(stream) => alknet_core::pipe(&mut **stream, socket).await.map(drop),
        None => crate::pipe(socket, stream).await.map(drop),
    }
}

/// A local SOCKS5 server (no authentication: bind it to loopback) whose CONNECTs become streams
/// from the node. Other commands (BIND, UDP ASSOCIATE) are refused with "command not supported".
pub struct Socks5;

impl Socks5 {
    /// Listens on `listen` and serves until the returned [`Listener`] is dropped or closed.
    pub async fn start(listen: SocketAddr, opener: Arc<dyn Opener>) -> io::Result<Listener> {
        serve(listen, move |socket| {
            let opener = opener.clone();
            async move {
                let _ = socks_connect(socket, opener).await;
            }
        })
        .await
    }
}

async fn socks_connect(
    socket: TcpStream,
    opener: Arc<dyn Opener>,
) -> Result<(), fast_socks5::server::SocksServerError> {
    let (proto, cmd, target) = Socks5ServerProtocol::accept_no_auth(socket)
        .await?
        .read_command()
        .await?;
    if cmd != Socks5Command::TCPConnect {
        return proto.reply_error(&ReplyError::CommandNotSupported).await;
    }
    let (host, port) = match target {
        TargetAddr::Ip(addr) => (addr.ip().to_string(), addr.port()),
        TargetAddr::Domain(name, port) => (name, port),
    };
    match opener.open(host, port).await {
        Ok(mut stream) => {
            let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
            let mut socket = proto.reply_success(unspecified).await?;
            let _ = pipe_opened(&mut socket, &mut stream).await;
            Ok(())
        }
        Err(e) => proto.reply_error(&e.socks_reply()).await,
    }
}

/// `-L`: a local port whose connections become streams to one destination from the node.
pub struct LocalForward;

impl LocalForward {
    /// Listens on `listen`; each connection is carried to `host:port` (resolved on the node).
    pub async fn start(
        listen: SocketAddr,
        opener: Arc<dyn Opener>,
        host: String,
        port: u16,
    ) -> io::Result<Listener> {
        forward_each(listen, move || {
            let (opener, host) = (opener.clone(), host.clone());
            async move { opener.open(host, port).await }
        })
        .await
    }

    /// Listens on `listen`; each connection is carried to the Unix socket at `path` on the node
    /// (`ssh -L port:/path`), which the node's policy must allow by a `sockets` rule.
    pub async fn start_socket(
        listen: SocketAddr,
        tunnel: Arc<Tunnel>,
        path: String,
    ) -> io::Result<Listener> {
        forward_each(listen, move || {
            let (tunnel, path) = (tunnel.clone(), path.clone());
            async move { tunnel.open_socket(&path).await }
        })
        .await
    }
}

/// Listens on `listen` and pipes each connection to the stream `open` makes for it.
async fn forward_each<F, Fut>(listen: SocketAddr, open: F) -> io::Result<Listener>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<BoxedDuplex, ClientError>> + Send + 'static,
{
    serve(listen, move |mut socket| {
        let opened = open();
        async move {
            if let Ok(mut stream) = opened.await {
                let _ = pipe_opened(&mut socket, &mut stream).await;
            }
        }
    })
    .await
}
