//! Length-prefixed frames: a 4-byte big-endian length `N`, then `N` bytes of JSON.
//!
//! [`FrameDecoder`] is a pure state machine: feed it bytes as they arrive (in any split) and take
//! whole frames out. It does no I/O, so it can be tested and fuzzed without sockets.
//!
//! ```
//! use alknet_call::framing::{encode_frame, FrameDecoder, DEFAULT_MAX_FRAME};
//! use bytes::BytesMut;
//!
//! let mut wire = BytesMut::new();
//! encode_frame(br#"{"type":"call.completed","id":"1","payload":{}}"#, &mut wire);
//!
//! let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
//! decoder.push(&wire[..3]); // a partial header yields nothing yet
//! assert_eq!(decoder.next_frame(), Ok(None));
//! decoder.push(&wire[3..]);
//! let frame = decoder.next_frame().unwrap().unwrap();
//! assert_eq!(&frame[..], br#"{"type":"call.completed","id":"1","payload":{}}"#);
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The frame size limit a receiver uses unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The largest frame size limit a receiver may be configured with (64 MiB).
pub const MAX_FRAME_LIMIT: usize = 64 * 1024 * 1024;

/// The length prefix's size in bytes.
const HEADER_LEN: usize = 4;

/// How much buffer space to reserve at a time while a frame's body is arriving: a peer announcing
/// a large frame must send the bytes before we commit the memory for them.
const RESERVE_CHUNK: usize = 64 * 1024;

/// A frame header the protocol forbids. Either one is a protocol violation: the receiver resets the
/// stream (QUIC) or closes the connection (single-stream carriers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced a frame of length 0.
    #[error("protocol violation: frame of length 0")]
    Empty,
    /// The header announced a frame above the receiver's limit.
    #[error("protocol violation: frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
}

/// Buffers bytes from a stream and yields whole frames.
///
/// Once [`next_frame`](Self::next_frame) has returned an error the stream is unusable (the
/// offending header stays buffered, so every later call returns the same error); the caller resets
/// the stream or closes the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `limit` bytes; `limit` is clamped to
    /// [`MAX_FRAME_LIMIT`].
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            limit: limit.min(MAX_FRAME_LIMIT),
        }
    }

    /// The frame size limit in effect (after clamping).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The receive buffer, for reading socket data straight into it (e.g. with
    /// `AsyncReadExt::read_buf`). Only append to it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame's JSON bytes (without the length prefix), `Ok(None)` if more bytes are
    /// needed, or an error as soon as a forbidden header is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        let missing = (HEADER_LEN + len).saturating_sub(self.buf.len());
        if missing > 0 {
            self.buf.reserve(missing.min(RESERVE_CHUNK));
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// How many bytes are buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length the next frame's header announced, once its header is buffered.
    pub fn announced(&self) -> Option<usize> {
        self.buf
            .first_chunk::<HEADER_LEN>()
            .map(|h| u32::from_be_bytes(*h) as usize)
    }
}

impl Default for FrameDecoder {
    /// A decoder with the [`DEFAULT_MAX_FRAME`] limit.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

/// Appends `json` as one frame (4-byte big-endian length, then the bytes) to `out`.
///
/// No size limit is checked here; the receiver enforces its own (see [`MAX_FRAME_LIMIT`]).
///
/// # Panics
///
/// If `json` is longer than `u32::MAX` bytes, which no frame limit allows.
pub fn encode_frame(json: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(json.len()).unwrap_or_else(|_| {
        panic!(
            "a frame body of {} bytes does not fit a 4-byte length",
            json.len()
        )
    });
    out.reserve(HEADER_LEN + json.len());
    out.put_u32(len);
    out.extend_from_slice(json);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bodies: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for body in bodies {
            encode_frame(body, &mut out);
        }
        out
    }

    #[test]
    fn encode_frame_writes_a_big_endian_length_prefix() {
        assert_eq!(&framed(&[b"{}"])[..], b"\x00\x00\x00\x02{}");
    }

    #[test]
    fn a_partial_header_yields_nothing() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&[0, 0, 0]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 3);
    }

    #[test]
    fn a_partial_body_yields_nothing_until_complete() {
        let wire = framed(&[b"{\"a\":1}"]);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire[..6]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(&wire[6..]);
        assert_eq!(
            decoder.next_frame(),
            Ok(Some(Bytes::from_static(b"{\"a\":1}")))
        );
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn several_frames_in_one_push_come_out_in_order() {
        let wire = framed(&[b"1", b"22", b"333"]);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire);
        for body in [&b"1"[..], b"22", b"333"] {
            assert_eq!(decoder.next_frame(), Ok(Some(Bytes::copy_from_slice(body))));
        }
        assert_eq!(decoder.next_frame(), Ok(None));
    }

    #[test]
    fn bytes_read_into_buffer_mut_are_decoded() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.buffer_mut().extend_from_slice(&framed(&[b"[]"]));
        assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from_static(b"[]"))));
    }

    #[test]
    fn a_zero_length_header_is_rejected() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn an_oversized_header_is_rejected_before_its_body_arrives() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&1025u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: 1025,
                limit: 1024
            })
        );
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let body = vec![b'x'; 16];
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&framed(&[&body]));
        assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from(body))));
    }

    #[test]
    fn errors_persist_because_the_stream_is_unusable() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&[0, 0, 0, 0, 0, 0, 0, 1, b'1']);
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn the_limit_is_clamped_to_the_protocol_maximum() {
        assert_eq!(FrameDecoder::new(usize::MAX).limit(), MAX_FRAME_LIMIT);
        assert_eq!(FrameDecoder::new(1000).limit(), 1000);
        assert_eq!(FrameDecoder::default().limit(), DEFAULT_MAX_FRAME);
    }

    #[test]
    fn a_large_announced_frame_does_not_allocate_its_full_length_up_front() {
        let mut decoder = FrameDecoder::new(MAX_FRAME_LIMIT);
        decoder.push(&(MAX_FRAME_LIMIT as u32).to_be_bytes());
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(decoder.buffer_mut().capacity() < 1024 * 1024);
    }
}
