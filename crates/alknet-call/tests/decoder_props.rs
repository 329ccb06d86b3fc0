//! Properties of the pure protocol core: the frame decoder, the envelope parser and the reply
//! decoder.

use alknet_call::envelope::{
    decode_envelope, decode_reply, encode_frame_of, error_from_payload, CallRequest, Envelope,
    EventType, Reply, MAX_ID_LEN,
};
use alknet_call::framing::{encode_frame, FrameDecoder};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};

/// Feeds `wire` to a decoder in pieces cut at `cuts`, draining frames after every piece. Stops at
/// the first error, as a receiver closing the stream would.
fn decode_in_pieces(decoder: &mut FrameDecoder, wire: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut frames = Vec::new();
    let mut start = 0;
    for (i, end) in cuts.into_iter().enumerate() {
        let piece = &wire[start..end];
        // Alternate between both ways of handing bytes to the decoder.
        if i % 2 == 0 {
            decoder.push(piece);
        } else {
            decoder.buffer_mut().extend_from_slice(piece);
        }
        start = end;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

/// Everything the receive path does with one frame; must never panic.
fn parse_everything(frame: &[u8]) {
    if let Ok(envelope) = decode_envelope(frame) {
        let _ = CallRequest::from_payload(&envelope.payload);
        let _ = error_from_payload(&envelope.payload);
    }
}

/// Floats whose shortest decimal form parses back exactly (serde_json's default float parser may
/// be off by one ulp on long mantissas, which would make round-trip comparisons flaky).
fn exact_float() -> impl Strategy<Value = f64> {
    (-1_000_000i32..1_000_000, 0i32..8).prop_map(|(m, e)| f64::from(m) / 2f64.powi(e))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        exact_float().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(any::<String>(), json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Ids of 1 to `MAX_ID_LEN` bytes of arbitrary characters.
fn request_id() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 1..MAX_ID_LEN).prop_map(|chars| {
        let mut id = String::new();
        for c in chars {
            if id.len() + c.len_utf8() > MAX_ID_LEN {
                break;
            }
            id.push(c);
        }
        id
    })
}

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        Just(EventType::Requested),
        Just(EventType::Responded),
        Just(EventType::Completed),
        Just(EventType::Aborted),
        Just(EventType::Error),
        any::<String>().prop_map(|s| EventType::parse(&s)),
    ]
}

proptest! {
    #[test]
    fn valid_frames_split_anywhere_decode_to_the_same_frames(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut wire = BytesMut::new();
        for body in &bodies {
            encode_frame(body, &mut wire);
        }
        let mut decoder = FrameDecoder::new(300);
        let frames = decode_in_pieces(&mut decoder, &wire, &cuts);
        let frames: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let bodies: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        prop_assert_eq!(frames, bodies);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_the_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        limit in 0usize..4096,
    ) {
        let mut decoder = FrameDecoder::new(limit);
        for frame in decode_in_pieces(&mut decoder, &bytes, &cuts) {
            prop_assert!(!frame.is_empty() && frame.len() <= limit);
            parse_everything(&frame);
        }
        // The WebSocket carrier hands whole messages to the parser without framing.
        parse_everything(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_the_parser(value in json_value(), id in json_value(), payload in json_value()) {
        parse_everything(&serde_json::to_vec(&value).unwrap());
        let envelope = serde_json::json!({"type": "call.requested", "id": id, "payload": payload});
        parse_everything(&serde_json::to_vec(&envelope).unwrap());
    }

    #[test]
    fn envelopes_round_trip_through_encode_and_decode(
        kind in event_type(),
        id in request_id(),
        payload in json_object(),
    ) {
        let envelope = Envelope { kind, id, payload };
        prop_assert_eq!(decode_envelope(&envelope.encode()), Ok(envelope.clone()));

        let mut wire = BytesMut::new();
        encode_frame_of(&envelope.kind, &envelope.id, &envelope.payload, &mut wire);
        let mut decoder = FrameDecoder::default();
        decoder.push(&wire);
        let frame = decoder.next_frame().unwrap().unwrap();
        prop_assert_eq!(decode_envelope(&frame), Ok(envelope));
    }

    #[test]
    fn call_requests_round_trip_through_their_payload(
        operation in "[a-z]{1,8}/[a-z_]{1,12}",
        input in json_value(),
        auth_token in proptest::option::of(any::<String>()),
        timeout_ms in proptest::option::of(1u64..),
    ) {
        let request = CallRequest { operation, input, auth_token, timeout_ms };
        prop_assert_eq!(CallRequest::from_payload(&request.to_payload()), Ok(request));
    }
}

/// Both decoders must give the same verdict on a frame read while waiting for answers to `id`:
/// the same frames rejected, and the same answer for the rest.
fn check_reply_agrees(frame: &[u8], id: &str) -> Result<(), TestCaseError> {
    let by_envelope = decode_envelope(frame).map(|envelope| {
        (envelope.id == id)
            .then(|| Reply::from_envelope(&envelope.kind, envelope.payload))
            .flatten()
    });
    let by_reply = decode_reply(frame, id);
    let shown = String::from_utf8_lossy(frame);
    prop_assert_eq!(by_reply.is_ok(), by_envelope.is_ok(), "{}", shown);
    if let (Ok(reply), Ok(expected)) = (by_reply, by_envelope) {
        prop_assert_eq!(reply, expected, "{}", shown);
    }
    Ok(())
}

/// A field that is mostly well formed, sometimes missing, sometimes any JSON at all.
fn field(well_formed: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => well_formed.prop_map(Some),
        1 => Just(None),
        1 => json_value().prop_map(Some),
    ]
}

/// Envelopes a caller may read on its own stream, valid and broken.
fn reply_like() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("call.responded"),
        Just("call.completed"),
        Just("call.aborted"),
        Just("call.error"),
        Just("call.requested"),
        Just("call.later"),
    ]
    .prop_map(Value::from);
    let id = prop_oneof![
        4 => Just("1".to_string()),
        2 => request_id(),
        1 => Just(String::new()),
        1 => Just("x".repeat(MAX_ID_LEN + 1)),
    ]
    .prop_map(Value::from);
    let payload = prop_oneof![
        json_value().prop_map(|output| serde_json::json!({ "output": output })),
        json_object(),
        (any::<String>(), any::<String>(), any::<bool>()).prop_map(|(code, message, retryable)| {
            serde_json::json!({ "code": code, "message": message, "retryable": retryable })
        }),
    ];
    (
        field(kind),
        field(id),
        field(payload),
        proptest::option::of(json_value()),
    )
        .prop_map(|(kind, id, payload, extra)| {
            let mut fields = Map::new();
            for (name, value) in [
                ("type", kind),
                ("id", id),
                ("payload", payload),
                ("trace", extra),
            ] {
                if let Some(value) = value {
                    fields.insert(name.to_string(), value);
                }
            }
            Value::Object(fields)
        })
}

proptest! {
    #[test]
    fn the_reply_decoder_accepts_exactly_what_the_envelope_decoder_accepts(envelope in reply_like()) {
        check_reply_agrees(&serde_json::to_vec(&envelope).unwrap(), "1")?;
    }

    #[test]
    fn arbitrary_bytes_get_the_same_verdict_from_both_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_reply_agrees(&bytes, "1")?;
    }

    #[test]
    fn arbitrary_json_gets_the_same_verdict_from_both_decoders(value in json_value()) {
        check_reply_agrees(&serde_json::to_vec(&value).unwrap(), "1")?;
    }
}
