//! A node's Ed25519 identity.

use alknet_core::SecretKey;
use napi_derive::napi;

use crate::errors::coded;

/// One Ed25519 key: a node's identity everywhere (TLS raw public key, pinned fingerprint).
#[napi]
pub struct Keypair {
    pub(crate) key: SecretKey,
}

#[napi]
impl Keypair {
    /// A new key, in memory only.
    #[napi(factory)]
    pub fn generate() -> Self {
        Self {
            key: SecretKey::generate(),
        }
    }

    /// Loads the PKCS#8 PEM key at `path`, or creates it (file mode 0600) if there is none.
    #[napi(factory)]
    pub fn load_or_create(path: String) -> napi::Result<Self> {
        SecretKey::load_or_create(&path)
            .map(|key| Self { key })
            .map_err(|e| coded("KEY_FILE", e, serde_json::Value::Null))
    }

    /// `ed25519:<64 lowercase hex>`: what other nodes pin and peer lists name.
    #[napi(getter)]
    pub fn fingerprint(&self) -> String {
        self.key.public().fingerprint()
    }
}
