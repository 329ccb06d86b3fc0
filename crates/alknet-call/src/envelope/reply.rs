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

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{check_id_len, error_from_payload, EventType, ProtocolViolation};
use crate::error::CallError;

/// An answer to one of our requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `call.responded`: one output (`null` when the payload has none).
    Output(Value),
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

    /// Whether no more answers follow for the request.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Reply::Output(_))
    }
}

/// Decodes one frame read on a stream that carries the answers to our request `id`.
///
/// `Ok(None)` is a valid envelope that is not an answer to `id` (another id, a `call.requested`,
/// or a type this version does not know). Anything [`decode_envelope`](super::decode_envelope)
/// rejects is a [`ProtocolViolation`] here too: a missing or wrongly typed `type`, `id` or
/// `payload`, a non-object payload, an id of the wrong length, bytes that are not JSON.
pub fn decode_reply(frame: &[u8], id: &str) -> Result<Option<Reply>, ProtocolViolation> {
    let head: Head<'_> = serde_json::from_slice(frame).map_err(|e| violation(&e))?;
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
struct CowStr<'a>(Cow<'a, str>);

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

    #[test]
    fn escaped_ids_are_compared_by_their_value() {
        assert_eq!(
            reply(r#"{"type":"call.completed","id":"\u0031","payload":{}}"#),
            Ok(Some(Reply::Completed))
        );
    }
}
