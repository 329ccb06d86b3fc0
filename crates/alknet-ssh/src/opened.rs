//! Files on the node opened without I/O (`O_PATH` on Linux), so that the path the forwarding
//! policy checked and the file then used (a socket connected to, a directory a socket is created
//! in) are the same: a symbolic link swapped in between cannot redirect it.

use std::io;
use std::path::PathBuf;

/// An opened file (links in its path followed).
#[cfg(target_os = "linux")]
pub(crate) struct Opened(std::fs::File);

#[cfg(target_os = "linux")]
impl Opened {
    /// Opens `path`; with `directory`, it must be a directory.
    pub(crate) fn open(path: &str, directory: bool) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = if directory { libc::O_DIRECTORY } else { 0 };
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC | dir)
            .open(path)
            .map(Self)
    }

    /// The opened file's real path, as the kernel names it.
    pub(crate) fn real_path(&self) -> Option<String> {
        std::fs::read_link(self.path())
            .ok()?
            .into_os_string()
            .into_string()
            .ok()
    }

    /// A path that reaches the opened file, whatever its own path now leads to
    /// (`/proc/self/fd/N`).
    pub(crate) fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

/// Elsewhere: the real path as resolved now.
#[cfg(not(target_os = "linux"))]
pub(crate) struct Opened(String);

#[cfg(not(target_os = "linux"))]
impl Opened {
    /// Resolves `path`; with `directory`, it must be a directory.
    pub(crate) fn open(path: &str, directory: bool) -> io::Result<Self> {
        let real = std::fs::canonicalize(path)?;
        if directory && !real.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        real.into_os_string()
            .into_string()
            .map(Self)
            .map_err(|_| io::ErrorKind::InvalidInput.into())
    }

    /// The real path.
    pub(crate) fn real_path(&self) -> Option<String> {
        Some(self.0.clone())
    }

    /// The real path, to use the file by.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }
}
