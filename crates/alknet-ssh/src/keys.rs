//! The node's Ed25519 key as an SSH key, and SSH keys as alknet fingerprints.

use alknet_core::{PublicKey, SecretKey};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{PrivateKey, PublicKey as SshPublicKey};

/// `key` as an SSH Ed25519 key pair (the same key: its SSH fingerprint and its alknet
/// fingerprint name one key).
pub fn host_key(key: &SecretKey) -> Ed25519Keypair {
    Ed25519Keypair::from_seed(&key.to_bytes())
}

/// `key` as a russh private key (for the client side).
pub fn private_key(key: &SecretKey) -> PrivateKey {
    PrivateKey::from(host_key(key))
}

/// `key` as an OpenSSH private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted):
/// what `ssh -i` reads. Handle it as the secret it is.
pub fn openssh_private_key(key: &SecretKey) -> String {
    private_key(key)
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map(|pem| pem.to_string())
        .unwrap_or_default()
}

/// The alknet fingerprint (`ed25519:<hex>`) of an SSH public key; `None` for other key types.
pub fn fingerprint_of_ssh_key(key: &SshPublicKey) -> Option<String> {
    match key.key_data() {
        KeyData::Ed25519(ed) => PublicKey::from_bytes(&ed.0).ok().map(|k| k.fingerprint()),
        _ => None,
    }
}

/// The OpenSSH `authorized_keys` / `known_hosts` line of `key` (`ssh-ed25519 AAAA…`).
pub fn openssh_public_key(key: &PublicKey) -> String {
    let data = KeyData::Ed25519(russh::keys::ssh_key::public::Ed25519PublicKey(
        key.to_bytes(),
    ));
    SshPublicKey::new(data, "").to_openssh().unwrap_or_default()
}

/// Parses OpenSSH public key lines (`ssh-ed25519 AAAA… comment`), the CAs trusted to sign user
/// certificates (`[ssh] user_ca`); the error names the line that is not a key.
pub fn parse_user_ca(lines: &[String]) -> Result<Vec<SshPublicKey>, String> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            SshPublicKey::from_openssh(line.trim())
                .map_err(|e| format!("ssh.user_ca[{i}] is not an OpenSSH public key: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_key_has_the_nodes_fingerprint() {
        let key = SecretKey::generate();
        let ssh = private_key(&key);
        assert_eq!(
            fingerprint_of_ssh_key(ssh.public_key()).unwrap(),
            key.public().fingerprint()
        );
        assert!(openssh_public_key(&key.public()).starts_with("ssh-ed25519 AAAA"));
    }

    #[test]
    fn user_ca_lines_parse_or_name_the_bad_one() {
        let good = openssh_public_key(&SecretKey::generate().public());
        assert_eq!(parse_user_ca(std::slice::from_ref(&good)).unwrap().len(), 1);
        let err = parse_user_ca(&[good, "ssh-ed25519 nope".into()]).unwrap_err();
        assert!(err.contains("ssh.user_ca[1]"), "{err}");
    }
}
