//! Arbitrary bytes through the caller's reply decoder. Nothing may panic, and the reply decoder
//! is never looser than the envelope decoder: whatever it accepts, `decode_envelope` accepts too
//! and reads as the same answer. (It may be stricter, only where a JSON object repeats a key.)
//!
//! Run with `cargo +nightly fuzz run decode_reply` from the repository root.

#![no_main]

use alknet_call::envelope::{decode_envelope, decode_reply, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The caller waits for answers to id "1"; frames of other ids must decode too.
    let Ok(reply) = decode_reply(data, "1") else {
        return;
    };
    let envelope = match decode_envelope(data) {
        Ok(envelope) => envelope,
        Err(e) => panic!("the reply decoder accepted a frame the envelope decoder rejects: {e}"),
    };
    let expected = if envelope.id == "1" {
        Reply::from_envelope(&envelope.kind, envelope.payload)
    } else {
        None
    };
    assert_eq!(reply, expected);
});
