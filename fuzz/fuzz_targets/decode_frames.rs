//! Arbitrary bytes through the whole receive path: frame decoder, envelope parser, request and
//! error payload parsers. Nothing may panic, and whatever decodes must re-encode to the same
//! envelope head.
//!
//! Run with `cargo +nightly fuzz run decode_frames` from the repository root.

#![no_main]

use alknet_call::envelope::{decode_envelope, error_from_payload, CallRequest, EventType};
use alknet_call::framing::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is chunked, so partial headers and bodies are exercised.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(64 * 1024);
    'stream: for piece in rest.chunks(usize::from(chunk).max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= decoder.limit());
                    check_envelope(&frame);
                }
                Ok(None) => break,
                // A receiver closes the stream here.
                Err(_) => break 'stream,
            }
        }
    }
    // WebSocket carrier: a whole message is one envelope, without a length prefix.
    check_envelope(rest);
});

fn check_envelope(bytes: &[u8]) {
    let Ok(envelope) = decode_envelope(bytes) else {
        return;
    };
    assert!(envelope.payload.is_object());
    assert!(!envelope.id.is_empty() && envelope.id.len() <= 128);
    if envelope.kind == EventType::Requested {
        if let Ok(request) = CallRequest::from_payload(&envelope.payload) {
            assert_eq!(CallRequest::from_payload(&request.to_payload()), Ok(request));
        }
    }
    let _ = error_from_payload(&envelope.payload);
    // Payload floats may move by an ulp through serde_json's default parser, so only the head of
    // the envelope is compared after a round trip.
    let again = decode_envelope(&envelope.encode()).expect("an encoded envelope decodes");
    assert_eq!((again.kind, again.id), (envelope.kind, envelope.id));
}
