//! Carriers: how whole envelopes travel over a connection's streams.
//!
//! The dispatcher ([`crate::session`]) and the caller ([`crate::peer`]) consume and produce whole
//! envelopes. A carrier adapter turns a transport into an [`EnvelopeSource`] (envelopes in) and a
//! [`FrameSink`] (encoded envelopes out); the `writer` task batches what many requests send on
//! one stream into single writes.
//!
//! [`byte_stream`] is the adapter for QUIC streams and TCP+TLS: length-prefixed frames over a
//! [`BiStream`](alknet_core::BiStream). A WebSocket adapter (one binary message = one envelope)
//! implements the same two traits and reuses the same dispatcher.

use std::future::Future;
use std::io;

use alknet_core::Chunks;
use bytes::{Buf, Bytes};

pub mod byte_stream;
pub(crate) mod writer;

/// The application error code a caller stops its receive side with to cancel the request(s) of
/// a stream (QUIC STOP_SENDING, protocol v1.1).
pub const STOP_CANCELLED: u32 = 0;

/// Why an [`EnvelopeSource`] yields no more envelopes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiveError {
    /// The peer broke the protocol (a bad frame); the stream must be abandoned.
    #[error("{0}")]
    Violation(String),
    /// The stream broke (reset by the peer, transport failure).
    #[error("stream broken: {0}")]
    Broken(String),
}

/// Envelopes arriving on one stream of a carrier.
pub trait EnvelopeSource: Send + 'static {
    /// The next envelope's JSON bytes; `Ok(None)` once the peer finished sending. Cancel safe:
    /// dropping the future loses no bytes.
    fn next_envelope(&mut self)
        -> impl Future<Output = Result<Option<Bytes>, ReceiveError>> + Send;

    /// Abandons the stream after a protocol violation (QUIC: reset with `code`).
    fn abandon(&mut self, code: u32);
}

/// Where one stream's outgoing envelopes go.
///
/// Envelopes are encoded as frames, with their 4-byte length prefix
/// ([`encode_frame_of`](crate::envelope::encode_frame_of)), so that a batch of them is one write
/// on a byte stream; an adapter for a message carrier splits a batch at the prefixes and sends each
/// envelope as one message.
pub trait FrameSink: Send + 'static {
    /// Writes a batch of whole frames and flushes it.
    fn send(&mut self, frames: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes the whole frames queued in `frames` and flushes them, taking them out as they are
    /// written. The default joins them and calls [`send`](Self::send); a byte stream hands the
    /// chunks to the transport as they are (QUIC keeps them without a copy).
    fn send_chunks(&mut self, frames: &mut Chunks) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let joined = frames.copy_to_bytes(frames.remaining());
            self.send(&joined).await
        }
    }

    /// Ends the sending side normally (QUIC: FIN).
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}
