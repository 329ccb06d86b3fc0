//! The SSH server: russh over any byte stream ([`SshServer::run_stream`]), as the `alknet/ssh`
//! [`ProtocolHandler`] and, opt-in, on a plain TCP port for OpenSSH clients
//! ([`SshServer::listen`]).
//!
//! Authentication is by public key only, resolved through the node's [`IdentityProvider`] from
//! the key's `ed25519:<hex>` fingerprint, so one peer list covers `alknet/call` and SSH. When the
//! TLS layer already resolved the client's key to an identity, the SSH key must resolve to the
//! same identity (the same peer entry; it may be another of that peer's keys); otherwise it is
//! refused. A TLS key that resolves to nobody does not stop a known SSH key.
//!
//! With [`SshServer::with_user_ca`], OpenSSH user certificates are taken too: signed by one of
//! the CAs, within their validity window, a user certificate whose principals include the SSH
//! user name, that user name the id of an enabled peer (whose scopes and forwarding rules then
//! apply), the `permit-port-forwarding` extension present, and no critical option but a
//! `source-address` that matches the client. The same TLS-identity rule holds.
//!
//! Channels: `direct-tcpip` (`-L`, `-D`, SOCKS), `direct-streamlocal` (`-L port:/path`),
//! `tcpip-forward` / `forwarded-tcpip` (`-R port:host:port`) and `streamlocal-forward` /
//! `forwarded-streamlocal` (`-R /path:host:port`: a Unix socket on the node, created only where
//! a `listen` rule's `sockets` allows, never over an existing file, mode `0600`, removed when
//! the forward is cancelled, the session ends or a reload no longer allows it).
//! Sessions (shell, exec, subsystems), X11 and agent forwarding are refused.
//! Every outbound connection and every `-R` bind is checked against the
//! [`ForwardingPolicy`] in force first; a connection holds at most `max_channels` channels
//! (`-R` listeners included).
//!
//! Log lines (targets `alknet::auth` and `alknet::ssh`), stable for fail2ban; they carry the
//! remote address, identity and result, never a destination, a name or a byte count:
//!
//! ```text
//! ssh authentication accepted remote=… transport=… fingerprint=… peer=…
//! ssh authentication rejected: unknown key remote=… transport=… fingerprint=…
//! ssh authentication rejected: key does not match the TLS identity remote=… transport=… fingerprint=… tls_peer=…
//! ssh authentication accepted: certificate remote=… transport=… fingerprint=SHA256:… ca=SHA256:… serial=… peer=…
//! ssh authentication rejected: certificate remote=… transport=… fingerprint=SHA256:… reason=…
//! ssh channel remote=… peer=… kind=direct-tcpip result=opened|refused|unresolved|failed|limit
//! ssh channel remote=… peer=… kind=streamlocal-forward result=opened|refused|exists|failed|limit|closed
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_core::config::ConfigStore;
use alknet_core::{
    Alpn, AuthContext, Connection, Credential, HandlerError, Identity, IdentityProvider,
    ProtocolHandler, SecretKey,
};
use async_trait::async_trait;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Certificate, HashAlg, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::keys::{fingerprint_of_ssh_key, host_key};
use crate::listen::SocketListener;
use crate::outbound;
use crate::policy::{Direction, ForwardingPolicy, Transport, Verdict};
use crate::Carrier;
use crate::ALPN;

/// The SSH service: one per node, shared by every connection.
#[derive(Clone)]
pub struct SshServer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Sessions on a plain carrier (the SSH port, a stream of unknown origin).
    config: Arc<russh::server::Config>,
    /// Sessions inside QUIC, TLS or iroh: the same, with `none` offered first (see [`Carrier`]).
    carrier_config: Arc<russh::server::Config>,
    identity: Arc<dyn IdentityProvider>,
    policy: ConfigStore<ForwardingPolicy>,
    /// SHA-256 fingerprints of the CAs trusted to sign user certificates.
    user_ca: Vec<Fingerprint>,
}

/// Where an SSH session comes from, as the transport knows it.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The remote socket address.
    pub remote_addr: SocketAddr,
    /// The carrier, for per-transport forwarding rules and logs (`None`: unknown, logged as
    /// `memory`; rules that name transports do not apply).
    pub transport: Option<Transport>,
    /// The identity the TLS layer resolved from the client's key, if any.
    pub tls_identity: Option<Identity>,
}

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The SSH protocol failed (bad version line, key exchange, a broken packet).
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// A socket could not be bound.
    #[error("ssh listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl SshServer {
    /// A server whose host key is `key` (the node's Ed25519 key: OpenSSH's `known_hosts` then
    /// pins the node's own key), resolving clients through `identity` and checking forwards
    /// against `policy`.
    pub fn new(
        key: &SecretKey,
        identity: Arc<dyn IdentityProvider>,
        policy: ConfigStore<ForwardingPolicy>,
    ) -> Self {
        let host_key = PrivateKey::from(host_key(key));
        let config = |carrier| {
            let mut methods = MethodSet::empty();
            methods.push(MethodKind::PublicKey);
            Arc::new(russh::server::Config {
                methods,
                keys: vec![host_key.clone()],
                auth_rejection_time: Duration::from_millis(300),
                auth_rejection_time_initial: Some(Duration::ZERO),
                max_auth_attempts: 6,
                inactivity_timeout: Some(Duration::from_secs(3600)),
                keepalive_interval: Some(Duration::from_secs(30)),
                nodelay: true,
                preferred: crate::preferred(carrier),
                ..Default::default()
            })
        };
        Self {
            shared: Arc::new(Shared {
                config: config(Carrier::Plain),
                carrier_config: config(Carrier::Encrypted),
                identity,
                policy,
                user_ca: Vec::new(),
            }),
        }
    }

    /// The same server, also taking OpenSSH user certificates signed by one of `cas` (see
    /// [the module docs](self) for what a certificate must carry).
    pub fn with_user_ca(self, cas: &[russh::keys::PublicKey]) -> Self {
        let shared = &self.shared;
        Self {
            shared: Arc::new(Shared {
                config: shared.config.clone(),
                carrier_config: shared.carrier_config.clone(),
                identity: shared.identity.clone(),
                policy: shared.policy.clone(),
                user_ca: cas.iter().map(|k| k.fingerprint(HashAlg::Sha256)).collect(),
            }),
        }
    }

    /// Serves one SSH session over `stream` until it ends.
    pub async fn run_stream<S>(&self, stream: S, peer: PeerInfo) -> Result<(), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.run_until(stream, peer, std::future::pending()).await
    }

    /// Like [`run_stream`](Self::run_stream), disconnecting the client once `stop` resolves.
    async fn run_until<S>(
        &self,
        stream: S,
        peer: PeerInfo,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = match peer.transport {
            Some(Transport::Quic | Transport::TcpTls | Transport::Iroh) => {
                &self.shared.carrier_config
            }
            Some(Transport::Ssh) | None => &self.shared.config,
        };
        let config = config.clone();
        let handler = SessionHandler::new(self.shared.clone(), peer);
        let session = russh::server::run_stream(config, stream, handler).await?;
        let handle = session.handle();
        tokio::pin!(session);
        tokio::select! {
            result = &mut session => Ok(result?),
            () = stop => {
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, "the node is shutting down".into(), String::new())
                    .await;
                Ok(session.await?)
            }
        }
    }

    /// Accepts plain SSH (OpenSSH clients) on `addr` until the returned listener is dropped or
    /// [`close`](SshListener::close)d.
    pub async fn listen(&self, addr: SocketAddr) -> Result<SshListener, SshError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SshError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SshError::Bind { addr, source })?;
        let stop = CancellationToken::new();
        let server = self.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (socket, remote_addr) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let _ = socket.set_nodelay(true);
                let server = server.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let peer = PeerInfo {
                        remote_addr,
                        transport: Some(Transport::Ssh),
                        tls_identity: None,
                    };
                    if let Err(e) = server
                        .run_until(socket, peer, token.cancelled_owned())
                        .await
                    {
                        tracing::debug!(target: "alknet::ssh", remote = %remote_addr, error = %alknet_core::log_text::escaped(&e), "ssh session ended");
                    }
                });
            }
        });
        info!(target: "alknet::ssh", addr = %local_addr, "plain ssh listening");
        Ok(SshListener {
            local_addr,
            stop: stop.drop_guard(),
        })
    }
}

/// A plain SSH listener; dropping it stops accepting and disconnects its sessions.
pub struct SshListener {
    local_addr: SocketAddr,
    stop: tokio_util::sync::DropGuard,
}

impl SshListener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and disconnects its sessions.
    pub fn close(self) {
        drop(self.stop);
    }
}

#[async_trait]
impl ProtocolHandler for SshServer {
    fn alpns(&self) -> Vec<Alpn> {
        vec![Alpn::everywhere(ALPN)]
    }

    async fn handle(&self, conn: Connection, auth: AuthContext) -> Result<(), HandlerError> {
        let stream = conn.accept_bi().await?;
        let peer = PeerInfo {
            remote_addr: auth.remote_addr,
            transport: conn.carrier().map(Transport::from),
            tls_identity: auth.identity,
        };
        let draining = conn.clone();
        match self
            .run_until(stream, peer, async move { draining.draining().await })
            .await
        {
            // A client that goes away mid-session is how SSH sessions usually end.
            Ok(()) | Err(SshError::Ssh(russh::Error::IO(_) | russh::Error::Disconnect)) => Ok(()),
            Err(e) => Err(HandlerError::Other(Box::new(e))),
        }
    }
}

/// Counts a connection's open channels and `-R` listeners.
#[derive(Clone, Default)]
pub(crate) struct Slots(Arc<AtomicUsize>);

/// One open channel or listener; frees its slot when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub(crate) fn take(&self, max: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.0.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One client's session state.
struct SessionHandler {
    shared: Arc<Shared>,
    peer: PeerInfo,
    identity: Option<Identity>,
    /// What `identity` was resolved from: each channel resolves it again.
    credential: Option<Credential>,
    slots: Slots,
    /// `-R` listeners by (address, port) or socket path as the client named them.
    forwards: ForwardTable,
    /// Cancelled when the session ends: stops its listeners and pipes.
    ended: CancellationToken,
}

impl Drop for SessionHandler {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

fn log_channel(peer: &PeerInfo, identity: &str, kind: &str, result: &str) {
    info!(target: "alknet::ssh", remote = %peer.remote_addr, peer = %identity, kind = %kind, result = %result, "ssh channel");
}

/// The bind address of a `tcpip-forward` request, as OpenSSH sends it.
fn bind_address(address: &str) -> Option<IpAddr> {
    match address {
        "" | "*" | "0.0.0.0" => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "::" => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok(),
    }
}

/// Whether the client's address is in a certificate's `source-address` list (comma-separated
/// addresses and CIDRs); a list that does not parse matches nothing.
fn source_address_matches(list: &str, peer: &PeerInfo) -> bool {
    let ip = peer.remote_addr.ip().to_canonical();
    let nets: Option<Vec<ipnet::IpNet>> = list
        .split(',')
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| entry.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect();
    nets.is_some_and(|nets| nets.iter().any(|net| net.contains(&ip)))
}

impl SessionHandler {
    fn new(shared: Arc<Shared>, peer: PeerInfo) -> Self {
        Self {
            shared,
            peer,
            identity: None,
            credential: None,
            slots: Slots::default(),
            forwards: ForwardTable::default(),
            ended: CancellationToken::new(),
        }
    }

    fn identity_id(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.id.as_str())
    }

    /// Resolves `key` and checks it against the TLS identity; logs only when `log`.
    fn authenticate(&self, key: &russh::keys::PublicKey, log: bool) -> Option<Identity> {
        let peer = &self.peer;
        let Some(fingerprint) = fingerprint_of_ssh_key(key) else {
            if log {
                info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %Transport::name(peer.transport), fingerprint = %"none", "ssh authentication rejected: not an Ed25519 key");
            }
            return None;
        };
        let Some(identity) = self.shared.identity.resolve_from_fingerprint(&fingerprint) else {
            if log {
                info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %Transport::name(peer.transport), fingerprint = %fingerprint, "ssh authentication rejected: unknown key");
            }
            return None;
        };
        if let Some(tls) = &peer.tls_identity {
            if tls.id != identity.id {
                if log {
                    info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %Transport::name(peer.transport), fingerprint = %fingerprint, tls_peer = %tls.id, "ssh authentication rejected: key does not match the TLS identity");
                }
                return None;
            }
        }
        if log {
            info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %Transport::name(peer.transport), fingerprint = %fingerprint, peer = %identity.id, "ssh authentication accepted");
        }
        Some(identity)
    }

    /// Checks an OpenSSH user certificate whose signature by its key russh has verified: signed
    /// by a configured CA, within its validity window, for `user` as a principal, no critical
    /// option but `source-address` (which must match), port forwarding permitted, `user` an
    /// enabled peer, and the same peer as the TLS identity. Logs the outcome.
    fn authenticate_certificate(&self, user: &str, cert: &Certificate) -> Option<Identity> {
        let peer = &self.peer;
        let transport = Transport::name(peer.transport);
        let fingerprint = cert.public_key().fingerprint(HashAlg::Sha256);
        let reject = |reason: &str| -> Option<Identity> {
            info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %transport, fingerprint = %fingerprint, reason = %reason, "ssh authentication rejected: certificate");
            None
        };
        let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
        if !self.shared.user_ca.contains(&ca) {
            return reject("unknown CA");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now < cert.valid_after() || now >= cert.valid_before() {
            return reject("expired or not yet valid");
        }
        if cert.validate_at(now, [&ca]).is_err() {
            return reject("bad CA signature");
        }
        if cert.cert_type() != CertType::User {
            return reject("not a user certificate");
        }
        if !cert.valid_principals().iter().any(|p| p == user) {
            return reject("the user name is not a principal of the certificate");
        }
        for (name, value) in cert.critical_options().iter() {
            let allowed = name == "source-address" && source_address_matches(value, peer);
            if !allowed {
                return reject("unsupported or unmet critical option");
            }
        }
        if !cert.extensions().contains_key("permit-port-forwarding") {
            return reject("the certificate does not permit port forwarding");
        }
        let Some(identity) = self.shared.identity.resolve_from_id(user) else {
            return reject("the principal is not an enabled peer");
        };
        if let Some(tls) = &peer.tls_identity {
            if tls.id != identity.id {
                info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %transport, fingerprint = %fingerprint, tls_peer = %tls.id, "ssh authentication rejected: certificate does not match the TLS identity");
                return None;
            }
        }
        info!(target: "alknet::auth", remote = %peer.remote_addr, transport = %transport, fingerprint = %fingerprint, ca = %ca, serial = cert.serial(), peer = %identity.id, "ssh authentication accepted: certificate");
        Some(identity)
    }

    /// The session's identity and the forwarding policy, from one configuration snapshot: the
    /// identity is resolved again there (a peer disabled or renamed by a reload opens no more
    /// channels under its old name), and the policy is that of the same reload.
    fn current(&self) -> Option<(Identity, Arc<ForwardingPolicy>)> {
        let config = self.shared.policy.snapshot();
        let identity = self
            .shared
            .identity
            .resolve_at(&config, self.credential.as_ref()?)?;
        Some((identity, config.get::<ForwardingPolicy>()))
    }

    /// The checks every channel to a destination starts with: a peer the current configuration
    /// still resolves, `allowed` by its policy, and a free channel slot. `None` once it has
    /// refused the channel (and logged it).
    fn begin_channel(
        &self,
        kind: &str,
        reply: ChannelOpenHandle,
        allowed: impl FnOnce(&Identity, &ForwardingPolicy) -> bool,
    ) -> Option<(Identity, Arc<ForwardingPolicy>, Slot, ChannelOpenHandle)> {
        let Some((identity, policy)) = self
            .current()
            .filter(|(identity, policy)| allowed(identity, policy))
        else {
            self.refuse(kind, reply);
            return None;
        };
        let Some(slot) = self.slots.take(policy.max_channels()) else {
            log_channel(&self.peer, &identity.id, kind, "limit");
            tokio::spawn(reply.reject(ChannelOpenFailure::ResourceShortage));
            return None;
        };
        Some((identity, policy, slot, reply))
    }

    /// Runs `connect` off the session loop, so a slow destination holds up no one; the client
    /// learns the outcome as the channel's confirmation or failure, and then the channel and the
    /// destination are piped until either ends or the session does.
    fn connect_channel<T, F>(
        &self,
        kind: &'static str,
        identity: Identity,
        slot: Slot,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        connect: F,
    ) where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: std::future::Future<Output = Result<T, outbound::OutboundError>> + Send + 'static,
    {
        let peer = self.peer.clone();
        let ended = self.ended.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match connect.await {
                Ok(mut target) => {
                    log_channel(&peer, &identity.id, kind, "opened");
                    reply.accept().await;
                    let mut stream = channel.into_stream();
                    tokio::select! {
                        _ = crate::pipe(&mut stream, &mut target) => {}
                        () = ended.cancelled() => {}
                    }
                }
                Err(e) => {
                    log_channel(&peer, &identity.id, kind, e.result());
                    let reason = match e {
                        outbound::OutboundError::Refused => {
                            ChannelOpenFailure::AdministrativelyProhibited
                        }
                        _ => ChannelOpenFailure::ConnectFailed,
                    };
                    reply.reject(reason).await;
                }
            }
        });
    }

    /// Runs a `-R` listener the client asked for as `key` until the client cancels it, the
    /// session ends, or a reload after which the policy no longer lets this peer listen there
    /// (checked on every reload and every accepted connection); connections it already
    /// forwarded go on after such a reload, as -L channels opened before a reload do.
    fn serve_forward(
        &self,
        key: ForwardKey,
        listener: RemoteListener,
        identity: Identity,
        slot: Slot,
        session: &Session,
    ) {
        let kind = key.kind();
        let stop = self.ended.child_token();
        let closed = CancellationToken::new();
        let entry = self
            .forwards
            .insert(key.clone(), stop.clone(), closed.clone());
        let forwards = self.forwards.clone();
        log_channel(&self.peer, &identity.id, kind, "opened");
        let ctx = ForwardContext {
            handle: session.handle(),
            key,
            peer: self.peer.clone(),
            identity: identity.id,
            slots: self.slots.clone(),
            shared: self.shared.clone(),
        };
        let credential = self.credential.clone();
        let mut changes = self.shared.policy.live().changes();
        changes.mark_changed();
        tokio::spawn(async move {
            // Declared first, dropped last: a cancel returns once the listener is closed (and a
            // socket file removed).
            let _closed = closed.drop_guard();
            let (_slot, listener) = (slot, listener);
            let mut watching = true;
            let mut pause = ACCEPT_PAUSE_MIN;
            loop {
                let accepted = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    changed = changes.changed(), if watching => {
                        watching = changed.is_ok();
                        None
                    }
                    accepted = listener.accept() => Some(accepted),
                };
                if let Some(Err(_)) = accepted {
                    // Out of file descriptors, say: wait before the next accept instead of
                    // spinning (and re-checking the policy) on the error.
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    continue;
                }
                pause = ACCEPT_PAUSE_MIN;
                // On every reload, and on every accepted connection (a reload the watch has not
                // reported yet still counts).
                if !ctx.may_listen(credential.as_ref(), &listener).await {
                    // The bind is free again: a cancel for it is refused, and a new -R may take it.
                    forwards.forget(&ctx.key, entry);
                    log_channel(&ctx.peer, &ctx.identity, kind, "closed");
                    return;
                }
                if let Some(Ok((stream, from))) = accepted {
                    ctx.forward(stream, from, stop.clone());
                }
            }
        });
    }

    fn refuse(&self, kind: &str, reply: ChannelOpenHandle) {
        log_channel(&self.peer, self.identity_id(), kind, "refused");
        tokio::spawn(reply.reject(ChannelOpenFailure::AdministrativelyProhibited));
    }
}

impl russh::server::Handler for SessionHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.authenticate(offer.public_key, false) {
            Some(_) => Auth::Accept,
            // The offer does not say whether the key came in a certificate; with a CA configured,
            // that is decided once the signature is verified.
            None if !self.shared.user_ca.is_empty() => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.authenticate_certificate(user, certificate) {
            Some(identity) => {
                self.identity = Some(identity);
                self.credential = Some(Credential::Peer(user.to_owned()));
                Auth::Accept
            }
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.authenticate(key.public_key, true) {
            Some(identity) => {
                self.identity = Some(identity);
                self.credential = fingerprint_of_ssh_key(key.public_key).map(Credential::Key);
                Auth::Accept
            }
            None => Auth::reject(),
        })
    }

    /// Watches the configuration for the rest of the session: a reload after which its
    /// credential no longer resolves to an enabled peer (disabled, removed, key or principal
    /// gone) ends the session, with its channels and `-R` listeners.
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(credential) = self.credential.clone() else {
            return Ok(());
        };
        let (shared, peer, ended) = (self.shared.clone(), self.peer.clone(), self.ended.clone());
        let id = self.identity_id().to_owned();
        let handle = session.handle();
        let mut changes = shared.policy.live().changes();
        // A reload between the authentication and this subscription is checked at once.
        changes.mark_changed();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ended.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let config = shared.policy.snapshot();
                if shared.identity.resolve_at(&config, &credential).is_none() {
                    info!(target: "alknet::auth", remote = %peer.remote_addr, peer = %id, "ssh session ended: identity revoked");
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "identity revoked".into(),
                            String::new(),
                        )
                        .await;
                    return;
                }
            }
        });
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("session", reply);
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("x11", reply);
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = "direct-streamlocal";
        let transport = self.peer.transport;
        let Some((identity, policy, slot, reply)) =
            self.begin_channel(kind, reply, |identity, policy| {
                policy.check_socket(transport, &identity.id, socket_path) == Verdict::Allow
            })
        else {
            return Ok(());
        };
        // Where the path's symbolic links lead is checked off the session loop.
        let connect =
            outbound::connect_socket(policy, transport, identity.id.clone(), socket_path.into());
        self.connect_channel(kind, identity, slot, channel, reply, connect);
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse("forwarded-tcpip", reply);
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = "direct-tcpip";
        let Ok(port) = u16::try_from(port_to_connect) else {
            self.refuse(kind, reply);
            return Ok(());
        };
        // The policy is checked against the addresses the name resolves to, off the session loop.
        let Some((identity, policy, slot, reply)) = self.begin_channel(kind, reply, |_, _| true)
        else {
            return Ok(());
        };
        let host = host_to_connect.to_owned();
        let transport = self.peer.transport;
        let id = identity.id.clone();
        self.connect_channel(kind, identity, slot, channel, reply, async move {
            outbound::connect(&policy, transport, &id, &host, port).await
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let kind = "tcpip-forward";
        let Some((identity, policy)) = self.current() else {
            log_channel(&self.peer, self.identity_id(), kind, "refused");
            return Ok(false);
        };
        let (Some(ip), Ok(wanted)) = (bind_address(address), u16::try_from(*port)) else {
            log_channel(&self.peer, &identity.id, kind, "refused");
            return Ok(false);
        };
        let bind = SocketAddr::new(ip, wanted);
        let verdict = policy.check_on(
            self.peer.transport,
            &identity.id,
            Direction::Listen,
            None,
            bind,
        );
        if verdict != Verdict::Allow {
            log_channel(&self.peer, &identity.id, kind, "refused");
            return Ok(false);
        }
        let Some(slot) = self.slots.take(policy.max_channels()) else {
            log_channel(&self.peer, &identity.id, kind, "limit");
            return Ok(false);
        };
        let listener = match TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(_) => {
                log_channel(&self.peer, &identity.id, kind, "failed");
                return Ok(false);
            }
        };
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(wanted);
        if *port == 0 {
            *port = u32::from(bound);
        }
        let key = ForwardKey::Port(address.to_owned(), *port);
        self.serve_forward(
            key,
            RemoteListener::Tcp(listener, bind),
            identity,
            slot,
            session,
        );
        Ok(true)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let kind = "streamlocal-forward";
        let Some((identity, policy)) = self.current() else {
            log_channel(&self.peer, self.identity_id(), kind, "refused");
            return Ok(false);
        };
        let Some(slot) = self.slots.take(policy.max_channels()) else {
            log_channel(&self.peer, &identity.id, kind, "limit");
            return Ok(false);
        };
        // The policy check resolves the directory on the file system: off the async threads.
        let (transport, id, path) = (
            self.peer.transport,
            identity.id.clone(),
            socket_path.to_owned(),
        );
        let bound = tokio::task::spawn_blocking(move || {
            SocketListener::bind(&policy, transport, &id, &path)
        })
        .await;
        let listener = match bound {
            Ok(Ok(listener)) => listener,
            Ok(Err(e)) => {
                log_channel(&self.peer, &identity.id, kind, e.result());
                return Ok(false);
            }
            Err(_) => {
                log_channel(&self.peer, &identity.id, kind, "failed");
                return Ok(false);
            }
        };
        let key = ForwardKey::Socket(socket_path.to_owned());
        self.serve_forward(key, RemoteListener::Unix(listener), identity, slot, session);
        Ok(true)
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .forwards
            .cancel(&ForwardKey::Socket(socket_path.to_owned()))
            .await)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .forwards
            .cancel(&ForwardKey::Port(address.to_owned(), port))
            .await)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

/// The pause after a failed accept on a `-R` listener, doubling up to the maximum while accepts
/// keep failing.
const ACCEPT_PAUSE_MIN: std::time::Duration = std::time::Duration::from_millis(50);
const ACCEPT_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// A `-R` forward as the client named it: (address, port) or a socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ForwardKey {
    Port(String, u32),
    Socket(String),
}

impl ForwardKey {
    /// The request's name in log lines.
    fn kind(&self) -> &'static str {
        match self {
            ForwardKey::Port(..) => "tcpip-forward",
            ForwardKey::Socket(_) => "streamlocal-forward",
        }
    }
}

/// What a `-R` forward listens on.
enum RemoteListener {
    /// A TCP port, bound at the address.
    Tcp(TcpListener, SocketAddr),
    /// A Unix socket the node created.
    Unix(SocketListener),
}

impl RemoteListener {
    /// The next connection, and where it came from (a TCP peer).
    async fn accept(&self) -> std::io::Result<(crate::client::BoxedDuplex, Option<SocketAddr>)> {
        match self {
            RemoteListener::Tcp(listener, _) => {
                let (socket, from) = listener.accept().await?;
                let _ = socket.set_nodelay(true);
                Ok((Box::new(socket), Some(from)))
            }
            RemoteListener::Unix(listener) => Ok((listener.accept().await?, None)),
        }
    }
}

/// A session's `-R` listeners by [`ForwardKey`], each with the token that stops it and the
/// connections it forwarded, and one cancelled once it has closed. A listener that closes by
/// itself (a reload took the permission away) takes its entry out: a later cancel for it is
/// refused, and a new `-R` for it gets an entry of its own.
#[derive(Clone, Default)]
struct ForwardTable(Arc<std::sync::Mutex<ForwardEntries>>);

#[derive(Default)]
struct ForwardEntries {
    next: u64,
    by_bind: HashMap<ForwardKey, (u64, CancellationToken, CancellationToken)>,
}

impl ForwardTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, ForwardEntries> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a listener stopped by `stop` that cancels `closed` once closed; returns its entry's
    /// number for [`forget`](Self::forget).
    fn insert(&self, key: ForwardKey, stop: CancellationToken, closed: CancellationToken) -> u64 {
        let mut entries = self.lock();
        entries.next += 1;
        let entry = entries.next;
        // The same socket path again (its file was removed behind the old listener's back, so
        // the new bind worked): the old listener stops rather than living on unreachable.
        if let Some((_, old, _)) = entries.by_bind.insert(key, (entry, stop, closed)) {
            old.cancel();
        }
        entry
    }

    /// Stops the listener at `key` and the connections it forwarded; resolves once it has
    /// closed. `false` when there is none.
    async fn cancel(&self, key: &ForwardKey) -> bool {
        let Some((_, stop, closed)) = self.lock().by_bind.remove(key) else {
            return false;
        };
        stop.cancel();
        closed.cancelled().await;
        true
    }

    /// Takes out `key` if it is still the entry numbered `entry`.
    fn forget(&self, key: &ForwardKey, entry: u64) {
        let mut entries = self.lock();
        if entries.by_bind.get(key).is_some_and(|(e, ..)| *e == entry) {
            entries.by_bind.remove(key);
        }
    }
}

/// What a `-R` listener needs to hand each accepted connection to the client.
struct ForwardContext {
    handle: russh::server::Handle,
    key: ForwardKey,
    peer: PeerInfo,
    identity: String,
    slots: Slots,
    shared: Arc<Shared>,
}

impl ForwardContext {
    /// Whether the current configuration still lets the session's peer listen on `listener`.
    async fn may_listen(&self, credential: Option<&Credential>, listener: &RemoteListener) -> bool {
        let config = self.shared.policy.snapshot();
        let Some(identity) = credential.and_then(|c| self.shared.identity.resolve_at(&config, c))
        else {
            return false;
        };
        let policy = config.get::<ForwardingPolicy>();
        let transport = self.peer.transport;
        match listener {
            RemoteListener::Tcp(_, bind) => {
                policy.check_on(transport, &identity.id, Direction::Listen, None, *bind)
                    == Verdict::Allow
            }
            RemoteListener::Unix(socket) => socket.allowed(policy, transport, identity.id).await,
        }
    }

    fn forward(
        &self,
        mut stream: crate::client::BoxedDuplex,
        from: Option<SocketAddr>,
        stop: CancellationToken,
    ) {
        let kind = match self.key {
            ForwardKey::Port(..) => "forwarded-tcpip",
            ForwardKey::Socket(_) => "forwarded-streamlocal",
        };
        let max = self.shared.policy.load().max_channels();
        let Some(slot) = self.slots.take(max) else {
            log_channel(&self.peer, &self.identity, kind, "limit");
            return;
        };
        let handle = self.handle.clone();
        let key = self.key.clone();
        let (peer, identity) = (self.peer.clone(), self.identity.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let channel = match key {
                ForwardKey::Port(address, port) => {
                    let from = from.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
                    handle
                        .channel_open_forwarded_tcpip(
                            address,
                            port,
                            from.ip().to_string(),
                            u32::from(from.port()),
                        )
                        .await
                }
                ForwardKey::Socket(path) => handle.channel_open_forwarded_streamlocal(path).await,
            };
            match channel {
                Ok(channel) => {
                    log_channel(&peer, &identity, kind, "opened");
                    let mut channel = channel.into_stream();
                    tokio::select! {
                        _ = crate::pipe(&mut channel, &mut stream) => {}
                        () = stop.cancelled() => {}
                    }
                }
                Err(_) => log_channel(&peer, &identity, kind, "failed"),
            }
        });
    }
}
