//! The decoder of every envelope a callee's dispatcher reads ([`decode_received`]), in one pass
//! over the frame, without building the envelope as a `serde_json::Value` tree: a request's
//! payload is kept as its fields, so the input is built once (as the `Value` the schema checks and
//! the handler gets) and never copied.
//!
//! It accepts and rejects exactly what parsing the frame as a `Value` and reading that did
//! (`decode_envelope` is built on it): every field is parsed as `serde_json` parses a `Value`
//! (numbers in range, nesting within the same recursion limit, counted from the envelope), a
//! repeated key keeps its last value, unknown fields are parsed and ignored (kept, as `Value`s, for
//! the payloads that are not requests).

use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::reply::CowStr;
use super::{check_id_len, positive_integer, CallRequest, EventType, ProtocolViolation};
use crate::error::{CallError, ErrorCode};

/// One envelope as the dispatcher reads it.
#[derive(Debug, PartialEq)]
pub(crate) struct Received {
    /// The event type.
    pub(crate) kind: EventType,
    /// The request id (1 to `MAX_ID_LEN` bytes).
    pub(crate) id: String,
    /// The payload, a JSON object, by field.
    pub(crate) payload: PayloadFields,
}

/// A payload object: the fields of a `call.requested` payload as parsed, the others apart.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PayloadFields {
    operation_id: Option<Value>,
    input: Option<Value>,
    auth_token: Option<Value>,
    timeout_ms: Option<Value>,
    /// Any other field (ignored by a request, part of other payloads).
    rest: Map<String, Value>,
}

impl PayloadFields {
    /// The payload as a `Value` object.
    pub(crate) fn into_value(self) -> Value {
        let mut fields = self.rest;
        for (name, value) in [
            ("operationId", self.operation_id),
            ("input", self.input),
            ("auth_token", self.auth_token),
            ("timeout_ms", self.timeout_ms),
        ] {
            if let Some(value) = value {
                fields.insert(name.to_owned(), value);
            }
        }
        Value::Object(fields)
    }

    /// The `call.requested` this payload asks for, by the rules of
    /// [`CallRequest::from_payload`], without copying the input.
    pub(crate) fn into_request(self) -> Result<CallRequest, CallError> {
        request_from(
            self.operation_id,
            self.input,
            self.auth_token,
            self.timeout_ms,
        )
    }
}

/// The rules of a `call.requested` payload's fields (see [`CallRequest::from_payload`]).
pub(super) fn request_from(
    operation_id: Option<Value>,
    input: Option<Value>,
    auth_token: Option<Value>,
    timeout_ms: Option<Value>,
) -> Result<CallRequest, CallError> {
    let invalid = |message: &str| CallError::new(ErrorCode::InvalidInput, message);
    let operation = match operation_id {
        Some(Value::String(mut op)) => {
            if !op.starts_with('/') {
                return Err(invalid(
                    "`operationId` must start with '/', e.g. \"/math/add\"",
                ));
            }
            op.remove(0);
            op
        }
        Some(_) => return Err(invalid("`operationId` must be a string")),
        None => return Err(invalid("`operationId` is missing")),
    };
    let auth_token = match auth_token {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token),
        Some(_) => return Err(invalid("`auth_token` must be a string or null")),
    };
    let timeout_ms = match timeout_ms {
        None => None,
        Some(value) => Some(
            positive_integer(&value)
                .ok_or_else(|| invalid("`timeout_ms` must be a positive integer (milliseconds)"))?,
        ),
    };
    Ok(CallRequest {
        operation,
        input: input.unwrap_or(Value::Null),
        auth_token,
        timeout_ms,
    })
}

/// Decodes one envelope from a frame's JSON bytes (or a WebSocket binary message); the
/// violations are those of [`decode_envelope`](super::decode_envelope), in the same order.
pub(crate) fn decode_received(frame: &[u8]) -> Result<Received, ProtocolViolation> {
    let fields: EnvelopeFields = serde_json::from_slice(frame)
        .map_err(|e| ProtocolViolation(format!("envelope is not valid JSON: {e}")))?;
    let EnvelopeFields::Object { kind, id, payload } = fields else {
        return Err(ProtocolViolation("envelope is not a JSON object".into()));
    };
    let kind = match kind {
        Some(Value::String(kind)) => EventType::parse(&kind),
        Some(_) => return Err(ProtocolViolation("envelope `type` is not a string".into())),
        None => return Err(ProtocolViolation("envelope has no `type`".into())),
    };
    let id = match id {
        Some(Value::String(id)) => id,
        Some(_) => return Err(ProtocolViolation("envelope `id` is not a string".into())),
        None => return Err(ProtocolViolation("envelope has no `id`".into())),
    };
    check_id_len(&id)?;
    let payload = match payload {
        Some(Payload::Object(fields)) => fields,
        Some(Payload::Other) => {
            return Err(ProtocolViolation(
                "envelope `payload` is not a JSON object".into(),
            ))
        }
        None => return Err(ProtocolViolation("envelope has no `payload`".into())),
    };
    Ok(Received { kind, id, payload })
}

/// A JSON document read as an envelope: an object's three fields (each parsed as a `Value`
/// would be, the payload by field), or anything else (parsed as a `Value`, then dropped).
// Lives on the stack for one parse; boxing the common variant would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum EnvelopeFields {
    Object {
        kind: Option<Value>,
        id: Option<Value>,
        payload: Option<Payload>,
    },
    Other,
}

/// The `payload` field: an object by field, or another JSON value (parsed, then dropped).
#[allow(clippy::large_enum_variant)]
enum Payload {
    Object(PayloadFields),
    Other,
}

/// Runs `visit_map` on objects and parses anything else as a `Value` (then dropped), so that a
/// document is accepted or rejected exactly as parsing it as a `Value` would.
macro_rules! other_as_value {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            Ok($other)
        }
    };
}

impl<'de> Deserialize<'de> for EnvelopeFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvelopeFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            other_as_value!(EnvelopeFields::Other);
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let (mut kind, mut id, mut payload) = (None, None, None);
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    match &*key.0 {
                        "type" => kind = Some(map.next_value()?),
                        "id" => id = Some(map.next_value()?),
                        "payload" => payload = Some(map.next_value_seed(PayloadSeed)?),
                        _ => drop(map.next_value::<Value>()?),
                    }
                }
                Ok(EnvelopeFields::Object { kind, id, payload })
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a `payload` value (see [`Payload`]).
struct PayloadSeed;

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            other_as_value!(Payload::Other);
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = PayloadFields::default();
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    let slot = match &*key.0 {
                        "operationId" => &mut fields.operation_id,
                        "input" => &mut fields.input,
                        "auth_token" => &mut fields.auth_token,
                        "timeout_ms" => &mut fields.timeout_ms,
                        _ => {
                            let value = map.next_value()?;
                            fields.rest.insert(key.0.into_owned(), value);
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(Payload::Object(fields))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What the callee did with a frame before this decoder: parse the whole frame as a `Value`,
    /// read the envelope from it, then the request from the payload (`from_payload`, whose rules
    /// `request_from` keeps).
    fn by_value(frame: &[u8]) -> Result<(EventType, String, Result<CallRequest, CallError>), bool> {
        let value: Value = serde_json::from_slice(frame).map_err(|_| false)?;
        let Value::Object(mut fields) = value else {
            return Err(false);
        };
        let kind = match fields.remove("type") {
            Some(Value::String(kind)) => EventType::parse(&kind),
            _ => return Err(false),
        };
        let id = match fields.remove("id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= super::super::MAX_ID_LEN => id,
            _ => return Err(false),
        };
        match fields.remove("payload") {
            Some(payload @ Value::Object(_)) => Ok((kind, id, CallRequest::from_payload(&payload))),
            _ => Err(false),
        }
    }

    fn by_fields(
        frame: &[u8],
    ) -> Result<(EventType, String, Result<CallRequest, CallError>), bool> {
        let received = decode_received(frame).map_err(|_| false)?;
        Ok((received.kind, received.id, received.payload.into_request()))
    }

    fn request(frame: &str) -> Result<CallRequest, CallError> {
        decode_received(frame.as_bytes())
            .unwrap()
            .payload
            .into_request()
    }

    fn violation(frame: &str) -> String {
        decode_received(frame.as_bytes()).unwrap_err().0
    }

    #[test]
    fn a_request_is_read_with_its_input() {
        let req = request(
            r#"{"type":"call.requested","id":"7","payload":{"operationId":"/echo/ping","input":{"n":1},"timeout_ms":250,"auth_token":"t"}}"#,
        )
        .unwrap();
        assert_eq!(req.operation, "echo/ping");
        assert_eq!(req.input, json!({"n": 1}));
        assert_eq!(req.timeout_ms, Some(250));
        assert_eq!(req.auth_token.as_deref(), Some("t"));
    }

    #[test]
    fn malformed_frames_are_violations_in_the_envelope_decoders_words() {
        assert!(
            violation(r#"{"type":"call.requested","id":"1","payload":{"#)
                .contains("not valid JSON")
        );
        assert!(
            violation(r#"{"type":"call.requested","id":"1","payload":{}} x"#)
                .contains("not valid JSON")
        );
        assert!(violation("[1]").contains("not a JSON object"));
        assert!(violation("12").contains("not a JSON object"));
        assert!(violation(r#"{"id":"1","payload":{}}"#).contains("no `type`"));
        assert!(
            violation(r#"{"type":["call.requested"],"id":"1","payload":{}}"#)
                .contains("`type` is not a string")
        );
        assert!(
            violation(r#"{"type":"call.requested","id":2,"payload":{}}"#)
                .contains("`id` is not a string")
        );
        assert!(
            violation(r#"{"type":"call.requested","id":"","payload":{}}"#).contains("1 to 128")
        );
        assert!(
            violation(r#"{"type":"call.requested","id":"1","payload":"{}"}"#)
                .contains("not a JSON object")
        );
        assert!(violation(r#"{"type":"call.requested","id":"1"}"#).contains("no `payload`"));
    }

    #[test]
    fn an_input_that_is_not_an_object_is_passed_on_for_the_schema_to_judge() {
        for input in ["1", "\"x\"", "[1,{}]", "null", "true"] {
            let frame = format!(
                r#"{{"type":"call.requested","id":"1","payload":{{"operationId":"/a/b","input":{input}}}}}"#
            );
            let want: Value = serde_json::from_str(input).unwrap();
            assert_eq!(request(&frame).unwrap().input, want);
        }
        assert_eq!(
            request(r#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b"}}"#)
                .unwrap()
                .input,
            Value::Null
        );
    }

    #[test]
    fn unknown_fields_are_ignored_but_must_be_valid_json_values() {
        let req = request(
            r#"{"trace":{"a":[1,2]},"type":"call.requested","id":"1","payload":{"priority":7,"operationId":"/a/b","x":{"y":null}}}"#,
        )
        .unwrap();
        assert_eq!(req.operation, "a/b");
        // Out of range in an ignored field: refused, as parsing a `Value` refused it.
        assert!(violation(
            r#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b","x":1e999}}"#
        )
        .contains("not valid JSON"));
        assert!(
            violation(r#"{"t":-1e400,"type":"call.requested","id":"1","payload":{}}"#)
                .contains("not valid JSON")
        );
    }

    #[test]
    fn huge_numbers_are_read_as_a_value_reads_them() {
        let req = request(
            r#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b","input":{"n":18446744073709551616,"m":-9223372036854775809,"f":1e308}}}"#,
        )
        .unwrap();
        assert_eq!(req.input["n"], json!(18446744073709551616.0));
        assert_eq!(req.input["f"], json!(1e308));
        assert!(violation(
            r#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b","input":1e309}}"#
        )
        .contains("not valid JSON"));
        let timeout = request(
            r#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b","timeout_ms":18446744073709551616}}"#,
        );
        assert!(timeout.unwrap_err().is(ErrorCode::InvalidInput));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let req = request(
            r#"{"type":1,"type":"call.requested","id":"1","payload":{"operationId":"/x/y","input":1},"payload":{"operationId":"/a/b","input":2,"input":3,"operationId":"/c/d"}}"#,
        )
        .unwrap();
        assert_eq!(req.operation, "c/d");
        assert_eq!(req.input, json!(3));
        assert!(
            violation(r#"{"type":"call.requested","id":"1","payload":{},"payload":[]}"#)
                .contains("not a JSON object")
        );
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let req = request(
            r#"{"\u0074ype":"call.requested","id":"1","payload":{"operation\u0049d":"/a/b","in\u0070ut":[1]}}"#,
        )
        .unwrap();
        assert_eq!(req.operation, "a/b");
        assert_eq!(req.input, json!([1]));
    }

    #[test]
    fn nesting_is_limited_as_for_a_value_counted_from_the_envelope() {
        let mut verdicts = Vec::new();
        for depth in [120, 125, 126, 127, 130] {
            let input = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let frame = format!(
                r#"{{"type":"call.requested","id":"1","payload":{{"operationId":"/a/b","input":{input}}}}}"#
            );
            let accepted = by_fields(frame.as_bytes()).is_ok();
            assert_eq!(
                accepted,
                by_value(frame.as_bytes()).is_ok(),
                "depth {depth}"
            );
            verdicts.push(accepted);
        }
        // The limit lies inside the range tried.
        assert!(verdicts.contains(&true) && verdicts.contains(&false));
    }

    /// Pieces of envelopes, valid and broken, joined as text so that keys can repeat.
    fn piece() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("1".to_string()),
            Just("-5".to_string()),
            Just("1.5".to_string()),
            Just("1e999".to_string()),
            Just("18446744073709551616".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"x\"".to_string()),
            Just("\"/a/b\"".to_string()),
            Just("\"a/b\"".to_string()),
            Just("[1,{\"a\":null}]".to_string()),
            Just("{\"n\":1}".to_string()),
            Just("{".to_string()),
            Just("\"\\ud800\"".to_string()),
        ];
        let key = prop_oneof![
            Just("operationId"),
            Just("input"),
            Just("auth_token"),
            Just("timeout_ms"),
            Just("other"),
            Just("operation\\u0049d"),
        ];
        (key, value).prop_map(|(k, v)| format!("\"{k}\":{v}"))
    }

    fn frame() -> impl Strategy<Value = String> {
        let payload = prop_oneof![
            4 => prop::collection::vec(piece(), 0..6).prop_map(|p| format!("{{{}}}", p.join(","))),
            1 => Just("[]".to_string()),
            1 => Just("7".to_string()),
        ];
        let field = prop_oneof![
            Just("\"type\":\"call.requested\"".to_string()),
            Just("\"type\":\"call.later\"".to_string()),
            Just("\"type\":5".to_string()),
            Just("\"id\":\"1\"".to_string()),
            Just("\"id\":\"\"".to_string()),
            Just("\"id\":{}".to_string()),
            Just("\"trace\":1e999".to_string()),
            Just("\"trace\":[]".to_string()),
            payload.prop_map(|p| format!("\"payload\":{p}")),
        ];
        prop::collection::vec(field, 0..6).prop_map(|f| format!("{{{}}}", f.join(",")))
    }

    proptest! {
        #[test]
        fn requests_are_read_as_reading_a_value_read_them(frame in frame()) {
            prop_assert_eq!(by_fields(frame.as_bytes()), by_value(frame.as_bytes()), "{}", frame);
        }

        #[test]
        fn arbitrary_bytes_get_the_same_verdict(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            prop_assert_eq!(by_fields(&bytes), by_value(&bytes));
        }
    }
}
