//! Unix sockets the node listens on for a client's `ssh -R /path:host:port`
//! (`streamlocal-forward@openssh.com`).
//!
//! - Created only where a `listen` rule of the [`ForwardingPolicy`] names the path or a directory
//!   above it, checked by text and by the real path of the directory it goes in (the socket does
//!   not exist yet): a parent directory that is a link out of the allowed directory opens nothing.
//!   On Linux the directory is opened first and the socket created through that open directory,
//!   so a link swapped in after the check cannot move it.
//! - Never over an existing file, socket or not: as OpenSSH's `StreamLocalBindUnlink` (default
//!   `no`), a stale socket left at the path is not replaced; the request is refused.
//! - Mode `0600` (OpenSSH's `StreamLocalBindMask` default `0177`): the node's own user only, as
//!   the connections lead into the client's side. Set on the socket before it is bound, so the
//!   file never exists with a wider mode.
//! - Removed when the listener is dropped (the forward cancelled, the session ended, a reload
//!   that no longer allows it), if the file at the path is still the socket it created.

use std::io;

#[cfg(unix)]
use tokio::net::UnixListener;

use crate::client::BoxedDuplex;
#[cfg(unix)]
use crate::opened::Opened;
#[cfg(unix)]
use crate::policy::Verdict;
use crate::policy::{ForwardingPolicy, Transport};

/// Why the node did not listen. The messages name no path (they reach logs).
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum ListenError {
    /// The policy does not allow a socket there.
    #[error("refused by the forwarding policy")]
    Refused,
    /// A file is already there.
    #[error("a file exists at the path")]
    Exists,
    /// The directory could not be opened or the socket not created.
    #[error("listen failed: {0}")]
    Failed(io::ErrorKind),
}

impl ListenError {
    /// A short stable word for logs: `refused`, `exists`, `failed`.
    pub(crate) fn result(&self) -> &'static str {
        match self {
            ListenError::Refused => "refused",
            ListenError::Exists => "exists",
            ListenError::Failed(_) => "failed",
        }
    }
}

/// A Unix socket listener the node created for a client; dropping it removes the socket file.
#[cfg(unix)]
pub(crate) struct SocketListener {
    listener: UnixListener,
    dir: Opened,
    /// The file name in `dir`.
    name: String,
    /// The path as the client named it.
    path: String,
    /// The real path of `dir`, as checked.
    parent: String,
    /// Device and inode of the socket file it created.
    file: (u64, u64),
}

#[cfg(unix)]
impl SocketListener {
    /// Creates the socket at `path` for `identity`, whose connection came on `transport`, if
    /// `policy` allows it. Blocking file-system calls: run it off the async threads.
    pub(crate) fn bind(
        policy: &ForwardingPolicy,
        transport: Option<Transport>,
        identity: &str,
        path: &str,
    ) -> Result<Self, ListenError> {
        use std::os::unix::fs::MetadataExt;

        // Nothing on the file system is touched for a path no rule names as written: a peer
        // cannot make the node walk (or automount) paths of its choosing.
        if policy.check_socket_listen_path(transport, identity, path) != Verdict::Allow {
            return Err(ListenError::Refused);
        }
        let (dir, name) = path.rsplit_once('/').ok_or(ListenError::Refused)?;
        if name.is_empty() {
            return Err(ListenError::Refused);
        }
        let dir = Opened::open(if dir.is_empty() { "/" } else { dir }, true)
            .map_err(|e| ListenError::Failed(e.kind()))?;
        let parent = dir.real_path().ok_or(ListenError::Refused)?;
        if policy.check_socket_listen(transport, identity, path, &parent) != Verdict::Allow {
            return Err(ListenError::Refused);
        }
        let at = dir.path().join(name);
        if std::fs::symlink_metadata(&at).is_ok() {
            return Err(ListenError::Exists);
        }
        let listener = bind_private(&at).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => ListenError::Exists,
            kind => ListenError::Failed(kind),
        })?;
        let meta = std::fs::symlink_metadata(&at).map_err(|e| ListenError::Failed(e.kind()))?;
        Ok(Self {
            listener,
            dir,
            name: name.to_owned(),
            path: path.to_owned(),
            parent,
            file: (meta.dev(), meta.ino()),
        })
    }

    /// Whether `policy` still lets `identity` listen here (a reload may have taken it away).
    pub(crate) async fn allowed(
        &self,
        policy: std::sync::Arc<ForwardingPolicy>,
        transport: Option<Transport>,
        identity: String,
    ) -> bool {
        let (path, parent) = (self.path.clone(), self.parent.clone());
        // Resolving the rules' paths is blocking file-system work.
        tokio::task::spawn_blocking(move || {
            policy.check_socket_listen(transport, &identity, &path, &parent) == Verdict::Allow
        })
        .await
        .unwrap_or(false)
    }

    /// The next connection.
    pub(crate) async fn accept(&self) -> io::Result<BoxedDuplex> {
        let (stream, _) = self.listener.accept().await?;
        Ok(Box::new(stream))
    }
}

/// Without Unix sockets there is no listener: every request is refused as unsupported.
#[cfg(not(unix))]
pub(crate) enum SocketListener {}

#[cfg(not(unix))]
impl SocketListener {
    /// Always [`ListenError::Failed`] with [`io::ErrorKind::Unsupported`].
    pub(crate) fn bind(
        _policy: &ForwardingPolicy,
        _transport: Option<Transport>,
        _identity: &str,
        _path: &str,
    ) -> Result<Self, ListenError> {
        Err(ListenError::Failed(io::ErrorKind::Unsupported))
    }

    pub(crate) async fn allowed(
        &self,
        _policy: std::sync::Arc<ForwardingPolicy>,
        _transport: Option<Transport>,
        _identity: String,
    ) -> bool {
        match *self {}
    }

    pub(crate) async fn accept(&self) -> io::Result<BoxedDuplex> {
        match *self {}
    }
}

#[cfg(unix)]
impl Drop for SocketListener {
    fn drop(&mut self) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};

        // Only the socket it created: a file put there since (after an operator removed the
        // socket) is left alone.
        let at = self.dir.path().join(&self.name);
        let ours = std::fs::symlink_metadata(&at)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(at);
        }
    }
}

/// A Unix stream socket bound at `at` with mode `0600`, listening.
#[cfg(unix)]
fn bind_private(at: &std::path::Path) -> io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};

    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    // On Linux the file bind creates takes the socket's mode (less the umask).
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fchmod on a file descriptor this function owns.
        if unsafe { libc::fchmod(socket.as_raw_fd(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    socket.bind(&SockAddr::unix(at)?)?;
    let listening = (move || {
        #[cfg(not(target_os = "linux"))]
        {
            use std::os::unix::fs::PermissionsExt;
            // Before listen: nothing can connect in between.
            std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))?;
        }
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        UnixListener::from_std(std::os::unix::net::UnixListener::from(
            std::os::fd::OwnedFd::from(socket),
        ))
    })();
    if listening.is_err() {
        // The file bind just created, which no listener owns to remove: left there, it would
        // refuse every later `-R` to this path as "exists".
        let _ = std::fs::remove_file(at);
    }
    listening
}
