//! Ed25519 keys: a node's one identity.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

/// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// RFC 8410 SubjectPublicKeyInfo prefix of an Ed25519 public key; the 32 key bytes follow.
pub(crate) const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key could not be loaded or saved.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key file does not exist.
    #[error(
        "key file {path} does not exist; create one with `alknet keygen` or Keypair.loadOrCreate"
    )]
    Missing {
        /// The path that was read.
        path: String,
    },
    /// The key file could not be parsed as a PKCS#8 Ed25519 key.
    #[error("key file {path} is not a PKCS#8 PEM Ed25519 private key ({reason})")]
    Malformed {
        /// The path that was read.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// The key file can be read by other users.
    #[error("key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    WorldReadable {
        /// The path that was read.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A public key of the wrong length or not on the curve.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
}

/// An Ed25519 secret key. The node's identity; never logged (its `Debug` shows the fingerprint).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().fingerprint())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl SecretKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from its 32-byte seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` (Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The key as PKCS#8 v1 DER (RFC 8410), the form TLS libraries take.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&self.to_bytes());
        der
    }

    /// Parses a PKCS#8 PEM Ed25519 key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The key as PKCS#8 PEM text (what `openssl pkey` reads).
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(Default::default())
            .map(|z| z.to_string())
            .unwrap_or_default()
    }

    /// Loads a key file written by [`SecretKey::save`]. Refuses a file other users can read
    /// (see [`read_private_file`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let bytes = read_private_file(path)?;
        let shown = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|_| KeyError::Malformed {
            path: shown.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        Self::from_pem(&text).map_err(|reason| KeyError::Malformed {
            path: shown,
            reason,
        })
    }

    /// Writes the key as PKCS#8 PEM with mode 0600, refusing to overwrite an existing file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        let path = path.as_ref();
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_pem().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads the key at `path`, or creates and saves a new one if there is none.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        match Self::load(path.as_ref()) {
            Err(KeyError::Missing { .. }) => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            other => other,
        }
    }
}

/// Reads a private key file (the node's key). The file is opened once and everything is checked
/// on that open file: it must be a regular file that no other user can read. A symlink is
/// followed (mounted secrets are symlinks), but the file checked is the file read, so swapping
/// the path between the check and the read cannot slip in another.
pub fn read_private_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    read_key_file(path, false)
}

/// Reads an X.509 certificate's private key, as [`read_private_file`] does, except that a key
/// owned by root may also be readable by its group (mode 0640 or 0440): the layout of Debian's
/// `ssl-cert` group, where services read `/etc/ssl/private` through group membership. Write
/// access for the group and any access for other users are still refused.
pub fn read_tls_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    read_key_file(path, true)
}

fn read_key_file(path: &Path, root_group_read: bool) -> Result<Vec<u8>, KeyError> {
    // Only Unix has the permission bits it checks.
    #[cfg(not(unix))]
    let _ = root_group_read;
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::Missing {
            path: shown.clone(),
        },
        _ => KeyError::Io {
            path: shown.clone(),
            source,
        },
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        let allowed = if root_group_read && meta.uid() == 0 {
            0o040
        } else {
            0
        };
        if mode & 0o077 & !allowed != 0 {
            return Err(KeyError::WorldReadable { path: shown, mode });
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

impl PublicKey {
    /// A public key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `ed25519:<64 lowercase hex>`, the string peers pin.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint::Fingerprint::Ed25519(self.to_bytes()).to_string()
    }

    /// The key as a DER SubjectPublicKeyInfo: the "certificate" of an RFC 7250 raw-key handshake.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.to_bytes());
        der
    }

    /// Verifies an Ed25519 signature.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = SecretKey::generate();
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(SecretKey::load(&path).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn load_or_create_creates_once_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let second = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
    }

    #[test]
    fn missing_key_file_is_a_clear_error() {
        let err = SecretKey::load("/nonexistent/alknet.key").unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }));
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn malformed_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        fs::write(&path, "not a key").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            SecretKey::load(&path).unwrap_err(),
            KeyError::Malformed { .. }
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        SecretKey::generate().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::WorldReadable { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    /// Two saved keys in `dir`: `private.key` (mode 0600) and `open.key` (mode 0644).
    #[cfg(unix)]
    fn private_and_open_keys(
        dir: &Path,
    ) -> (std::path::PathBuf, SecretKey, std::path::PathBuf, SecretKey) {
        use std::os::unix::fs::PermissionsExt;
        let (private, open) = (dir.join("private.key"), dir.join("open.key"));
        let (private_key, open_key) = (SecretKey::generate(), SecretKey::generate());
        private_key.save(&private).unwrap();
        open_key.save(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
        (private, private_key, open, open_key)
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_key_is_checked_by_the_file_it_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let (private, key, open, _) = private_and_open_keys(dir.path());
        let link = dir.path().join("node.key");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert_eq!(SecretKey::load(&link).unwrap().to_bytes(), key.to_bytes());
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&open, &link).unwrap();
        assert!(matches!(
            SecretKey::load(&link).unwrap_err(),
            KeyError::WorldReadable { .. }
        ));
    }

    /// A symlink swapped between a private and a world-readable key while the key is loaded:
    /// whatever the timing, the world-readable key is never returned (its mode is checked on the
    /// file that is read, not on whatever the path named a moment before).
    #[cfg(unix)]
    #[test]
    fn a_key_swapped_between_check_and_read_is_never_accepted() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (private, _, open, exposed) = private_and_open_keys(dir.path());
        let link = dir.path().join("node.key");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, dir, link) = (stop.clone(), dir.path().to_owned(), link.clone());
            let targets = [open.clone(), private.clone()];
            std::thread::spawn(move || {
                let staged = dir.join("staged");
                for i in 0usize.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = fs::remove_file(&staged);
                    std::os::unix::fs::symlink(&targets[i % 2], &staged).unwrap();
                    fs::rename(&staged, &link).unwrap();
                }
            })
        };
        // Until both files have been seen many times, however long the swapper takes to run.
        let (mut accepted, mut refused) = (0, 0);
        while accepted < 3000 || refused < 3000 {
            match SecretKey::load(&link) {
                Ok(key) => {
                    assert_ne!(key.to_bytes(), exposed.to_bytes());
                    accepted += 1;
                }
                Err(KeyError::WorldReadable { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = SecretKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(key.to_bytes())));
        assert!(shown.contains("ed25519:"));
    }

    #[test]
    fn spki_and_pkcs8_have_rfc8410_layout() {
        let key = SecretKey::generate();
        let spki = key.public().to_spki_der();
        assert_eq!(spki.len(), 44);
        assert_eq!(&spki[12..], &key.public().to_bytes());
        let pkcs8 = key.to_pkcs8_der();
        assert_eq!(&pkcs8[pkcs8.len() - 32..], &key.to_bytes());
    }
}
