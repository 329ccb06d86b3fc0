//! The node's QUIC connection ids: 8 random bytes and a 4-byte tag keyed by the node's key.
//!
//! quinn's own generator (`HashedConnectionIdGenerator`) draws 3 random bytes per id, about
//! 16.7 million values. quinn picks the id of a Retry without checking it against the ids in use
//! (its other ids it does check), and a client's Initial sent to an id that an open connection
//! owns is routed to that connection, which drops it: the handshake stalls until the client's
//! idle timeout. A node with 1 000 connections holds about 6 000 ids, so one Retry in 2 800 hit
//! one (quinn-rs/quinn#2883 describes the small id space). With 64 random bits a collision needs
//! billions of connections.
//!
//! The tag keeps what the keyed hash gave: a restarted node recognises its old connections' ids
//! and answers their packets with a stateless reset, and other ids are dropped unanswered.

use std::time::Duration;

use alknet_core::SecretKey;
use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

const NONCE_LEN: usize = 8;
const TAG_LEN: usize = 4;
const CID_LEN: usize = NONCE_LEN + TAG_LEN;

/// Generates and recognises the connection ids of one node key.
#[derive(Clone)]
pub(crate) struct KeyedConnectionIds {
    key: hmac::Key,
    random: SystemRandom,
}

impl KeyedConnectionIds {
    /// The generator of `key`'s node; a restart with the same key recognises the same ids.
    pub(crate) fn new(key: &SecretKey) -> Self {
        let seed = key.sign(b"alknet/quic-connection-id-key/v2");
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &seed),
            random: SystemRandom::new(),
        }
    }

    fn tag(&self, nonce: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hmac::sign(&self.key, nonce).as_ref()[..TAG_LEN]);
        tag
    }
}

impl ConnectionIdGenerator for KeyedConnectionIds {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0u8; CID_LEN];
        self.random
            .fill(&mut cid[..NONCE_LEN])
            .expect("the system random source failed");
        let tag = self.tag(&cid[..NONCE_LEN]);
        cid[NONCE_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&cid)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match cid.len() == CID_LEN && cid[NONCE_LEN..] == self.tag(&cid[..NONCE_LEN]) {
            true => Ok(()),
            false => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_node_restarted_with_its_key_recognises_its_old_connection_ids() {
        let key = SecretKey::generate();
        let before = KeyedConnectionIds::new(&key).generate_cid();
        // A new start derives the same tag key, so the old id passes (and gets a stateless reset).
        assert!(KeyedConnectionIds::new(&key).validate(&before).is_ok());
        // Another node's key drops it unanswered, as it drops a forged or altered id.
        let other = KeyedConnectionIds::new(&SecretKey::generate());
        assert!(other.validate(&before).is_err());
        let mut altered = before.to_vec();
        altered[0] ^= 1;
        let ids = KeyedConnectionIds::new(&key);
        assert!(ids.validate(&ConnectionId::new(&altered)).is_err());
        assert!(ids.validate(&ConnectionId::new(&before[..8])).is_err());
    }

    #[test]
    fn ids_do_not_repeat_where_quinns_three_random_bytes_do() {
        // 20 000 ids: with 2^24 values (quinn's generator) about 12 pairs collide; with 2^64
        // none should.
        let mut ids = KeyedConnectionIds::new(&SecretKey::generate());
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let cid = ids.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert!(seen.insert(cid), "connection id repeated: {cid}");
        }
        let mut quinns = quinn_proto::HashedConnectionIdGenerator::from_key(7);
        let repeats = (0..20_000)
            .filter(|_| !seen.insert(quinns.generate_cid()))
            .count();
        assert!(
            repeats > 0,
            "quinn's generator no longer repeats: revisit this module"
        );
    }
}
