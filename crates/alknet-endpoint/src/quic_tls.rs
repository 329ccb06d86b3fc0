//! QUIC server crypto that chooses its rustls config per ClientHello, as the TCP+TLS acceptor does.
//!
//! quinn starts one TLS session per connection from one config, before any handshake byte has
//! arrived. [`PerHelloQuicConfig`] starts a session of each config (raw key, certificate) and
//! holds the client's first handshake bytes until rustls's own [`Acceptor`] has parsed the
//! ClientHello from them; then it keeps the session the client asked for (see
//! [`wants_raw_key`]), replays the bytes into it, and from then on is that session. No TLS is
//! parsed here: the bytes are only put in TLS record framing, which is how `Acceptor` reads them.

use std::any::Any;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, PacketKey, Session};
use quinn::{ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;
use rustls::server::Acceptor;

use crate::tls::wants_raw_key;

/// A QUIC server crypto config that serves raw-key clients from `raw` and every other client from
/// `certificate`.
pub(crate) struct PerHelloQuicConfig {
    raw: Arc<QuicServerConfig>,
    certificate: Arc<QuicServerConfig>,
}

impl PerHelloQuicConfig {
    pub(crate) fn new(raw: Arc<QuicServerConfig>, certificate: Arc<QuicServerConfig>) -> Self {
        Self { raw, certificate }
    }
}

impl crypto::ServerConfig for PerHelloQuicConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, crypto::UnsupportedVersion> {
        // Initial keys depend on the version and connection id only, not on the config.
        self.raw.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.raw.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn Session> {
        Box::new(PerHelloSession {
            session: self.raw.clone().start_session(version, params),
            hello: Some(Hello {
                acceptor: Box::new(Acceptor::default()),
                received: Vec::new(),
                certificate: self.certificate.clone().start_session(version, params),
            }),
        })
    }
}

struct PerHelloSession {
    /// The raw-key session until the ClientHello is complete, then the one the client asked for.
    session: Box<dyn Session>,
    /// Present until the ClientHello is complete.
    hello: Option<Hello>,
}

struct Hello {
    acceptor: Box<Acceptor>,
    received: Vec<Vec<u8>>,
    certificate: Box<dyn Session>,
}

/// The largest TLS record payload (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// Gives `bytes` (handshake messages) to `acceptor` as TLS handshake records.
fn feed(acceptor: &mut Acceptor, bytes: &[u8]) -> std::io::Result<()> {
    for chunk in bytes.chunks(MAX_RECORD) {
        let len = u16::try_from(chunk.len()).map_err(std::io::Error::other)?;
        let mut record = Vec::with_capacity(5 + chunk.len());
        record.extend_from_slice(&[0x16, 0x03, 0x03]);
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(chunk);
        let mut rest = record.as_slice();
        while !rest.is_empty() {
            if acceptor.read_tls(&mut rest)? == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
        }
    }
    Ok(())
}

impl PerHelloSession {
    fn chosen(&self) -> Option<&dyn Session> {
        self.hello.is_none().then_some(self.session.as_ref())
    }

    fn chosen_mut(&mut self) -> Option<&mut Box<dyn Session>> {
        self.hello.is_none().then_some(&mut self.session)
    }
}

impl Session for PerHelloSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        // Before the choice this is the raw-key session; initial keys are the same for both.
        self.session.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.chosen()?.handshake_data()
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.chosen()?.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn PacketKey>)> {
        self.chosen()?.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.chosen()?.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.chosen().is_none_or(|session| session.is_handshaking())
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let Some(hello) = self.hello.as_mut() else {
            return self.session.read_handshake(buf);
        };
        hello.received.push(buf.to_vec());
        // A ClientHello rustls cannot read goes to the certificate session, which fails the
        // handshake with the proper alert.
        let wants_raw = match feed(&mut hello.acceptor, buf).map(|()| hello.acceptor.accept()) {
            Ok(Ok(None)) => return Ok(false),
            Ok(Ok(Some(accepted))) => wants_raw_key(accepted.client_hello().server_cert_types()),
            Ok(Err(_)) | Err(_) => false,
        };
        let Some(hello) = self.hello.take() else {
            return Ok(false);
        };
        if !wants_raw {
            self.session = hello.certificate;
        }
        let mut ready = false;
        for bytes in &hello.received {
            ready |= self.session.read_handshake(bytes)?;
        }
        Ok(ready)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.chosen().map_or(Ok(None), |s| s.transport_parameters())
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.chosen_mut()?.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.chosen_mut()?.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        // Only clients check retries.
        self.chosen()
            .is_some_and(|s| s.is_valid_retry(orig_dst_cid, header, payload))
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.chosen()
            .ok_or(ExportKeyingMaterialError)?
            .export_keying_material(output, label, context)
    }
}
