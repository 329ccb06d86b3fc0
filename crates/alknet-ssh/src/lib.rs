//! `alknet/ssh` and `alknet/tunnel`: SSH on the node's port, over whatever carried the connection (QUIC, TCP+TLS,
//! iroh, or a plain TCP port for OpenSSH clients), for port forwarding only: `-L`, `-D` (SOCKS)
//! and `-R`, checked against a hot-reloadable [`ForwardingPolicy`](policy::ForwardingPolicy).
//!
//! The protocol is [russh](https://docs.rs/russh); this crate adds the node's identities (one
//! peer list for call and SSH: a client key's `ed25519:<hex>` fingerprint), the policy, the
//! limits and the log lines. [`tunnel`] is the native alternative: one QUIC stream per forwarded
//! connection, no SSH framing.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use alknet_core::{config::{AuthConfig, ConfigStore, PeerEntry}, ConfigIdentityProvider, SecretKey};
//! use alknet_ssh::{policy::ForwardingPolicy, SshServer};
//!
//! let node_key = SecretKey::generate();
//! let alice = SecretKey::generate();
//! let mut auth = AuthConfig::default();
//! auth.peers.push(PeerEntry::new("alice", [alice.public().fingerprint()]));
//! let identity = Arc::new(ConfigIdentityProvider::new(ConfigStore::new(auth)?));
//! let server = SshServer::new(&node_key, identity, ConfigStore::new(ForwardingPolicy::default())?);
//! // OpenSSH: ssh -N -D 1080 -p 2222 alice@127.0.0.1
//! let listener = server.listen("127.0.0.1:2222".parse()?).await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod keys;
mod listen;
#[cfg(unix)]
mod opened;
pub mod outbound;
pub mod policy;
pub mod server;
pub mod tunnel;

pub use policy::ForwardingPolicy;
pub use server::{PeerInfo, SshError, SshListener, SshServer};
pub use tunnel::{TunnelClient, TunnelServer, TUNNEL_ALPN};

/// The ALPN of SSH on a node's port.
pub const ALPN: &[u8] = b"alknet/ssh";

/// The buffer of each direction of a forwarded connection's copy loop (tokio's default is 8 KiB,
/// which costs a QUIC stream write, and an SSH packet, per 8 KiB). Two per open channel.
pub const COPY_BUFFER: usize = 64 * 1024;

/// Copies both ways between `a` and `b` until both directions ended (or one failed), with
/// [`COPY_BUFFER`]-sized buffers: the copy loop of every forwarded connection.
pub async fn pipe<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUFFER, COPY_BUFFER).await
}

/// What an SSH session runs inside, which decides whether SSH encrypts at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// An alknet carrier: QUIC, TLS over TCP or iroh, end to end between the client and the node,
    /// with both ends' keys checked in its handshake. SSH inside it may negotiate the `none`
    /// cipher: the carrier already encrypts and authenticates every byte, so a second AEAD pass
    /// only costs CPU (the native tunnel makes the same choice).
    Encrypted,
    /// Anything else: a plain TCP socket (OpenSSH clients on the node's SSH port), a stream of
    /// unknown origin. SSH encrypts as usual and never offers `none`.
    Plain,
}

/// The cipher preference of the node's server and the client: russh's algorithm lists, with
/// AES-GCM ahead of ChaCha20-Poly1305 where the CPU has AES instructions (ring's AES-GCM then
/// outruns its ChaCha20-Poly1305; without them ChaCha20 stays first, as russh and OpenSSH
/// order it). Inside an [`Carrier::Encrypted`] carrier `none` leads; it is chosen only when both
/// ends offer it, and an end offers it only on such a carrier (OpenSSH never offers it).
pub(crate) fn preferred(carrier: Carrier) -> russh::Preferred {
    const AES_FIRST: &[russh::cipher::Name] = &[
        russh::cipher::AES_256_GCM,
        russh::cipher::AES_128_GCM,
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_192_CTR,
        russh::cipher::AES_128_CTR,
    ];
    let mut preferred = russh::Preferred::default();
    if hardware_aes() {
        preferred.cipher = std::borrow::Cow::Borrowed(AES_FIRST);
    }
    if carrier == Carrier::Encrypted {
        let mut ciphers = vec![russh::cipher::NONE];
        ciphers.extend(preferred.cipher.iter().copied());
        preferred.cipher = std::borrow::Cow::Owned(ciphers);
    }
    preferred
}

fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[allow(unreachable_code)]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_leads_only_with_hardware_aes_and_no_default_cipher_is_dropped() {
        let ours = preferred(Carrier::Plain).cipher;
        let expected_first = if hardware_aes() {
            russh::cipher::AES_256_GCM
        } else {
            russh::cipher::CHACHA20_POLY1305
        };
        assert_eq!(ours[0], expected_first);
        for cipher in russh::Preferred::default().cipher.iter() {
            assert!(ours.contains(cipher), "{cipher:?} is no longer offered");
        }
        assert!(!ours.contains(&russh::cipher::NONE));
    }

    #[test]
    fn none_leads_only_inside_an_encrypted_carrier() {
        let inside = preferred(Carrier::Encrypted).cipher;
        assert_eq!(inside[0], russh::cipher::NONE);
        assert_eq!(&inside[1..], &preferred(Carrier::Plain).cipher[..]);
    }
}
