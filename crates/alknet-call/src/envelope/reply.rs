//! The answers to our own requests ([`Reply`]), and the decoder a caller reads them with.
//!
//! [`decode_reply`] accepts exactly the envelopes [`decode_envelope`](super::decode_envelope)
//! accepts, but borrows the frame instead of building the whole envelope as a `Value`: only a
//! `call.responded` output is built. It is the hot path of a subscription read on its own stream.
//!
//! One difference is deliberate and only ever stricter: where a JSON object repeats a key, the
//! envelope decoder keeps the last value and this one may reject the first (a repeated key is not
//! something a conforming sender writes).

use std::borrow::Cow;
use std::fmt;

use bytes::{Buf, Bytes};
use serde::de::{
    self, Deserialize, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    check_id_len, error_from_payload, EventType, ProtocolViolation, RESPONDED_OUTPUT,
    RESPONDED_START, RESPONDED_TAIL,
};
use crate::error::CallError;

/// An answer to one of our requests; its output is a `Value`, or a [`RawOutput`] where the
/// caller reads the JSON text itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply<O = Value> {
    /// `call.responded`: one output (`null` when the payload has none).
    Output(O),
    /// `call.completed`: a subscription ended normally.
    Completed,
    /// `call.error`: the request failed.
    Error(CallError),
    /// `call.aborted`: the callee gave up on the request.
    Aborted,
}

impl Reply {
    /// The reply an already decoded envelope carries (the dispatcher of a shared stream decodes
    /// every envelope once, then routes answers by id); `None` for `call.requested` and for
    /// unknown types, which are not answers.
    pub fn from_envelope(kind: &EventType, payload: Value) -> Option<Reply> {
        Some(match kind {
            EventType::Responded => Reply::Output(match payload {
                Value::Object(mut fields) => fields.remove("output").unwrap_or(Value::Null),
                _ => Value::Null,
            }),
            EventType::Completed => Reply::Completed,
            EventType::Aborted => Reply::Aborted,
            EventType::Error => Reply::Error(error_from_payload(&payload)),
            EventType::Requested | EventType::Unknown(_) => return None,
        })
    }
}

impl<O> Reply<O> {
    /// Whether no more answers follow for the request.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Reply::Output(_))
    }

    /// The same reply with its output converted by `f`.
    pub fn map_output<P>(self, f: impl FnOnce(O) -> P) -> Reply<P> {
        match self {
            Reply::Output(output) => Reply::Output(f(output)),
            Reply::Completed => Reply::Completed,
            Reply::Error(e) => Reply::Error(e),
            Reply::Aborted => Reply::Aborted,
        }
    }
}

/// One output as the JSON text it arrived as (a slice of the received frame, not copied), so a
/// consumer deserializes it into its own type, or hands the text on, without building a
/// `serde_json::Value` first. An output that arrived already decoded (answers routed on a
/// single-stream connection) is kept as that `Value`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawOutput(RawRepr);

#[derive(Clone, Debug, PartialEq)]
enum RawRepr {
    /// Syntactically valid JSON in UTF-8 (checked when the frame was decoded).
    Json(Bytes),
    Value(Value),
}

impl RawOutput {
    /// The output's JSON text, as received (`null` for a payload without `output`).
    pub fn json(&self) -> Cow<'_, str> {
        match &self.0 {
            // Valid UTF-8 (checked when the frame was decoded), so this borrows.
            RawRepr::Json(bytes) => String::from_utf8_lossy(bytes),
            RawRepr::Value(value) => Cow::Owned(value.to_string()),
        }
    }

    /// Deserializes the output into `T`. Fails where the JSON does not fit `T`, and where it is
    /// JSON that `serde_json` refuses (a number out of range, nesting beyond its limit).
    pub fn deserialize<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        match &self.0 {
            RawRepr::Json(bytes) => serde_json::from_slice(bytes),
            RawRepr::Value(value) => T::deserialize(value),
        }
    }

    /// The output as a `Value` (see [`deserialize`](Self::deserialize) for when that fails).
    pub fn into_value(self) -> serde_json::Result<Value> {
        match self.0 {
            RawRepr::Json(bytes) => serde_json::from_slice(&bytes),
            RawRepr::Value(value) => Ok(value),
        }
    }
}

impl From<Value> for RawOutput {
    fn from(value: Value) -> Self {
        RawOutput(RawRepr::Value(value))
    }
}

/// Decodes one frame like [`decode_reply`], but keeps a `call.responded` output as the JSON text
/// it arrived as: the fast path of a subscription's items, one pass over the frame that builds
/// nothing. Every other frame is decoded by [`decode_reply`].
///
/// Accepts what `decode_reply` accepts; of a `call.responded` for `id` it checks only the JSON
/// syntax (and UTF-8) of the payload's fields, so a number out of range (`1e999`), a lone
/// surrogate escape (`"\ud800"`) or nesting beyond `serde_json`'s limit in the output fails when
/// the output is deserialized (`into_value`, `deserialize`), not here. Consumers of the raw text
/// see it as sent: JavaScript's `JSON.parse` (the napi binding) reads `1e999` as `Infinity`.
pub fn decode_reply_raw(
    frame: &Bytes,
    id: &str,
) -> Result<Option<Reply<RawOutput>>, ProtocolViolation> {
    decode_owned_reply_raw(frame.clone(), id)
}

/// [`decode_reply_raw`] of a frame handed over: the output of the usual layout is the frame
/// itself, narrowed, with no new reference to the buffer.
pub(crate) fn decode_owned_reply_raw(
    frame: Bytes,
    id: &str,
) -> Result<Option<Reply<RawOutput>>, ProtocolViolation> {
    if let Some(output) = output_as_encoded(&frame, id) {
        let (start, end) = (
            output.as_ptr() as usize - frame.as_ptr() as usize,
            output.len(),
        );
        let mut output = frame;
        output.advance(start);
        output.truncate(end);
        return Ok(Some(Reply::Output(RawOutput(RawRepr::Json(output)))));
    }
    let frame = &frame;
    if let Ok(head) = object(frame).and_then(serde_json::from_slice::<RawHead<'_>>) {
        if let (Some(kind), Some(wire_id), Some(payload)) = (head.kind, head.id, head.payload) {
            if kind.0 == EventType::Responded.as_str() && wire_id.0 == id {
                let output = match payload.output {
                    Some(output) => RawRepr::Json(slice_of(frame, output.get().as_bytes())),
                    None => RawRepr::Value(Value::Null),
                };
                return Ok(Some(Reply::Output(RawOutput(output))));
            }
        }
    }
    // Not an output for `id`, or not valid: decoded (and its violations named) as usual.
    Ok(decode_reply(frame, id)?.map(|reply| reply.map_output(RawOutput::from)))
}

/// Decodes one frame like [`decode_reply`], but reads the output of a frame laid out as this
/// crate's callee writes it straight into a `Value`, without parsing the envelope: one pass over
/// the output, the one a caller that wants a `Value` needs anyway (a subscription's `Value`
/// items, unary calls). Any other frame, and one whose output is not one JSON value, is decoded
/// by [`decode_reply`]. As with [`decode_reply_raw`], the output's nesting is counted from the
/// output, not from the envelope.
pub(crate) fn decode_reply_value(
    frame: &[u8],
    id: &str,
) -> Result<Option<Reply>, ProtocolViolation> {
    if let Some(output) = output_by_layout(frame, id) {
        if let Ok(output) = serde_json::from_slice::<Value>(output) {
            return Ok(Some(Reply::Output(output)));
        }
    }
    decode_reply(frame, id)
}

/// The output of a `call.responded` frame for `id` laid out byte for byte as a [`RespondedHead`]
/// writes it (what this crate's callee sends), found without parsing the envelope; `None` for
/// any other layout, which the general decoder then reads. Such a frame is a valid envelope
/// exactly when what lies between the head and the tail is one JSON value, which is checked.
fn output_as_encoded<'f>(frame: &'f [u8], id: &str) -> Option<&'f [u8]> {
    let output = output_by_layout(frame, id)?;
    // Checks the syntax and the UTF-8 of the output, and that nothing follows it.
    serde_json::from_slice::<&RawValue>(output).ok()?;
    Some(output)
}

/// What lies between the head and the tail of a frame laid out as a [`RespondedHead`] writes
/// it for `id`: its output if that is one JSON value (not checked here).
fn output_by_layout<'f>(frame: &'f [u8], id: &str) -> Option<&'f [u8]> {
    // An id that JSON escapes is not compared byte for byte.
    if id.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return None;
    }
    frame
        .strip_prefix(RESPONDED_START)?
        .strip_prefix(b"\"")?
        .strip_prefix(id.as_bytes())?
        .strip_prefix(b"\"")?
        .strip_prefix(RESPONDED_OUTPUT)?
        .strip_suffix(RESPONDED_TAIL)
}

/// `frame` if it is a JSON object, as an envelope must be: serde's derived structs also read a
/// JSON array, field by field in order, which would take `["call.responded", "id", {…}]`.
pub(crate) fn object(frame: &[u8]) -> serde_json::Result<&[u8]> {
    match frame
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'{') => Ok(frame),
        _ => Err(serde::de::Error::custom(
            "an envelope must be a JSON object",
        )),
    }
}

/// `part` (borrowed from `frame`) as a slice of the same buffer.
fn slice_of(frame: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= frame.len() => frame.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// Decodes one frame read on a stream that carries the answers to our request `id`.
///
/// `Ok(None)` is a valid envelope that is not an answer to `id` (another id, a `call.requested`,
/// or a type this version does not know). Anything [`decode_envelope`](super::decode_envelope)
/// rejects is a [`ProtocolViolation`] here too: a missing or wrongly typed `type`, `id` or
/// `payload`, a non-object payload, an id of the wrong length, bytes that are not JSON.
pub fn decode_reply(frame: &[u8], id: &str) -> Result<Option<Reply>, ProtocolViolation> {
    let head: Head<'_> = object(frame)
        .and_then(serde_json::from_slice)
        .map_err(|e| violation(&e))?;
    let kind = head
        .kind
        .ok_or_else(|| ProtocolViolation("envelope has no `type`".into()))?;
    let wire_id = head
        .id
        .ok_or_else(|| ProtocolViolation("envelope has no `id`".into()))?;
    check_id_len(&wire_id.0)?;
    let payload = head
        .payload
        .ok_or_else(|| ProtocolViolation("envelope has no `payload`".into()))?
        .get();
    if !payload.starts_with('{') {
        return Err(ProtocolViolation(
            "envelope `payload` is not a JSON object".into(),
        ));
    }
    let kind = EventType::parse(&kind.0);
    if wire_id.0 != id {
        check_payload(payload)?;
        return Ok(None);
    }
    Ok(Some(match kind {
        EventType::Responded => {
            let responded: Responded = serde_json::from_str(payload).map_err(|e| violation(&e))?;
            Reply::Output(responded.output)
        }
        EventType::Error => {
            let payload: Value = serde_json::from_str(payload).map_err(|e| violation(&e))?;
            Reply::Error(error_from_payload(&payload))
        }
        EventType::Completed => {
            check_payload(payload)?;
            Reply::Completed
        }
        EventType::Aborted => {
            check_payload(payload)?;
            Reply::Aborted
        }
        EventType::Requested | EventType::Unknown(_) => {
            check_payload(payload)?;
            return Ok(None);
        }
    }))
}

fn violation(e: &serde_json::Error) -> ProtocolViolation {
    match e.classify() {
        serde_json::error::Category::Data => ProtocolViolation(format!("envelope: {e}")),
        _ => ProtocolViolation(format!("envelope is not valid JSON: {e}")),
    }
}

/// A payload not otherwise read is still parsed as the envelope decoder would (numbers in
/// range, nesting within the recursion limit), so both decoders accept the same frames.
fn check_payload(payload: &str) -> Result<(), ProtocolViolation> {
    serde_json::from_str::<Value>(payload)
        .map(drop)
        .map_err(|e| violation(&e))
}

/// A string borrowed from the frame when it has no escapes.
pub(super) struct CowStr<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The envelope's three fields, borrowed from the frame. serde's derived field matching is what
/// keeps this the fast path of a subscription (a hand-written visitor measured ~15 % slower per
/// item); unknown fields are skipped, and a repeated key is an error.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    id: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// The envelope's fields with the payload read by [`OutputOf`]: one pass, nothing built.
#[derive(serde::Deserialize)]
struct RawHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    id: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    payload: Option<OutputOf<'a>>,
}

/// A payload object's `output` field as raw JSON; the other fields are checked for syntax and
/// skipped. Anything but an object, or a repeated `output`, is an error (as with [`Responded`]).
struct OutputOf<'a> {
    output: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for OutputOf<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = OutputOf<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut output = None;
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    if key.0 == "output" {
                        if output.is_some() {
                            return Err(de::Error::duplicate_field("output"));
                        }
                        output = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(OutputOf { output })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A `call.responded` payload: its `output` (`null` when absent); other fields skipped.
#[derive(serde::Deserialize)]
struct Responded {
    #[serde(default)]
    output: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn reply(json: &str) -> Result<Option<Reply>, ProtocolViolation> {
        decode_reply(json.as_bytes(), "1")
    }

    #[test]
    fn an_envelope_written_as_a_json_array_is_a_violation() {
        // serde's derived structs read arrays field by field; the envelope decoder does not.
        for frame in [r#"["","x",{}]"#, r#" ["call.responded","1",{"output":1}]"#] {
            assert!(reply(frame).is_err(), "{frame}");
            assert!(
                super::super::decode_envelope(frame.as_bytes()).is_err(),
                "{frame}"
            );
            let raw = decode_reply_raw(&Bytes::from(frame), "1");
            assert!(raw.is_err(), "{frame}");
        }
        assert!(reply(r#" {"type":"call.responded","id":"1","payload":{"output":1}}"#).is_ok());
    }

    #[test]
    fn a_responded_envelope_is_its_output() {
        assert_eq!(
            reply(r#"{"type":"call.responded","id":"1","payload":{"output":[1,"x"]}}"#),
            Ok(Some(Reply::Output(json!([1, "x"]))))
        );
    }

    #[test]
    fn a_responded_envelope_without_output_is_null() {
        assert_eq!(
            reply(r#"{"type":"call.responded","id":"1","payload":{"extra":1}}"#),
            Ok(Some(Reply::Output(Value::Null)))
        );
    }

    #[test]
    fn error_completed_and_aborted_envelopes_decode_to_their_reply() {
        assert_eq!(
            reply(
                r#"{"type":"call.error","id":"1","payload":{"code":"TIMEOUT","message":"late"}}"#
            ),
            Ok(Some(Reply::Error(CallError::new(
                ErrorCode::Timeout,
                "late"
            ))))
        );
        assert_eq!(
            reply(r#"{"type":"call.completed","id":"1","payload":{}}"#),
            Ok(Some(Reply::Completed))
        );
        assert_eq!(
            reply(r#"{"type":"call.aborted","id":"1","payload":{}}"#),
            Ok(Some(Reply::Aborted))
        );
    }

    #[test]
    fn other_ids_requests_and_unknown_types_are_not_answers() {
        assert_eq!(
            reply(r#"{"type":"call.responded","id":"2","payload":{"output":1}}"#),
            Ok(None)
        );
        assert_eq!(
            reply(r#"{"type":"call.requested","id":"1","payload":{}}"#),
            Ok(None)
        );
        assert_eq!(
            reply(r#"{"type":"call.progress","id":"1","payload":{}}"#),
            Ok(None)
        );
    }

    #[test]
    fn a_reply_missing_type_id_or_payload_is_a_violation() {
        for frame in [
            r#"{"id":"1","payload":{}}"#,
            r#"{"type":"call.completed","payload":{}}"#,
            r#"{"type":"call.completed","id":"1"}"#,
        ] {
            assert!(reply(frame).is_err(), "{frame}");
        }
    }

    #[test]
    fn a_reply_with_wrongly_typed_fields_is_a_violation() {
        for frame in [
            r#"{"type":1,"id":"1","payload":{}}"#,
            r#"{"type":"call.completed","id":1,"payload":{}}"#,
            r#"{"type":"call.completed","id":"1","payload":null}"#,
            r#"{"type":"call.responded","id":"1","payload":[1]}"#,
            r#"{"type":"call.responded","id":"","payload":{}}"#,
            r#"[1]"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1}"#,
        ] {
            assert!(reply(frame).is_err(), "{frame}");
        }
    }

    #[test]
    fn a_malformed_payload_of_another_id_is_still_a_violation() {
        assert!(reply(r#"{"type":"call.responded","id":"2","payload":{"x":1e999}}"#).is_err());
    }

    fn raw(json: &str) -> Result<Option<Reply<RawOutput>>, ProtocolViolation> {
        decode_reply_raw(&Bytes::copy_from_slice(json.as_bytes()), "1")
    }

    #[test]
    fn a_raw_output_is_the_output_text_as_it_arrived() {
        let frame = r#"{"type":"call.responded","id":"1","payload":{"before":[{}],"output": [1, "\u00e9\n", {"a":null}] ,"after":2}}"#;
        let Ok(Some(Reply::Output(output))) = raw(frame) else {
            panic!("not an output")
        };
        assert_eq!(output.json(), r#"[1, "\u00e9\n", {"a":null}]"#);
        assert_eq!(
            output.deserialize::<Value>().unwrap(),
            json!([1, "é\n", {"a": null}])
        );
        assert_eq!(output.into_value().unwrap(), json!([1, "é\n", {"a": null}]));
    }

    #[test]
    fn a_raw_output_that_is_absent_is_null() {
        let frame = r#"{"payload":{"extra":1},"id":"1","type":"call.responded"}"#;
        let Ok(Some(Reply::Output(output))) = raw(frame) else {
            panic!("not an output")
        };
        assert_eq!(output.json(), "null");
    }

    #[test]
    fn the_raw_and_layout_decoders_accept_and_reject_what_decode_reply_does() {
        let frames = [
            r#"{"type":"call.responded","id":"1","payload":{"output":[1,"x"]}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"extra":1}}"#,
            r#"{"type":"call.responded","id":"\u0031","payload":{"outp\u0075t":"é"}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1,"output":2}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":{"a":["é"]}}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1},"x":{"y":2}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1,"output":2}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1 2}}"#,
            r#"{"type":"call.responded","id":"2","payload":{"output":1}}"#,
            r#"{"type":"call.error","id":"1","payload":{"code":"TIMEOUT","message":"late"}}"#,
            r#"{"type":"call.completed","id":"1","payload":{}}"#,
            r#"{"type":"call.aborted","id":"1","payload":{}}"#,
            r#"{"type":"call.requested","id":"1","payload":{}}"#,
            r#"{"type":"call.progress","id":"1","payload":{}}"#,
            r#"{"id":"1","payload":{}}"#,
            r#"{"type":"call.responded","payload":{"output":1}}"#,
            r#"{"type":"call.responded","id":"1"}"#,
            r#"{"type":1,"id":"1","payload":{}}"#,
            r#"{"type":"call.responded","id":1,"payload":{"output":1}}"#,
            r#"{"type":"call.responded","id":"1","payload":null}"#,
            r#"{"type":"call.responded","id":"1","payload":[1]}"#,
            r#"{"type":"call.responded","id":"1","payload":"{}"}"#,
            r#"{"type":"call.responded","id":"","payload":{}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":[1}}"#,
            r#"{"type":"call.responded","id":"1","payload":{"output":1}} x"#,
            r#"[1]"#,
        ];
        for frame in frames {
            let by_value = reply(frame);
            let by_layout = decode_reply_value(frame.as_bytes(), "1");
            assert_eq!(by_layout, by_value, "{frame}");
            let by_raw = raw(frame).map(|r| r.map(|r| r.map_output(|o| o.into_value().unwrap())));
            assert_eq!(by_raw.is_ok(), by_value.is_ok(), "{frame}");
            if let Ok(by_value) = by_value {
                assert_eq!(by_raw.unwrap(), by_value, "{frame}");
            }
        }
    }

    #[test]
    fn invalid_utf8_in_a_raw_output_is_a_violation() {
        let mut frame = br#"{"type":"call.responded","id":"1","payload":{"output":"x"}}"#.to_vec();
        let at = frame.iter().position(|&b| b == b'x').unwrap();
        frame[at] = 0xff;
        assert!(decode_reply_raw(&Bytes::from(frame), "1").is_err());
    }

    #[test]
    fn escaped_ids_are_compared_by_their_value() {
        assert_eq!(
            reply(r#"{"type":"call.completed","id":"\u0031","payload":{}}"#),
            Ok(Some(Reply::Completed))
        );
    }
}
