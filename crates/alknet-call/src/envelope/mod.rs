//! Envelopes (`{ "type", "id", "payload" }`) and the payloads of the five event types.
//!
//! Decoding is strict about the envelope (a malformed one is a [`ProtocolViolation`] that ends the
//! stream) and lenient about what the protocol lets later versions add: unknown event types decode
//! to [`EventType::Unknown`] and unknown payload fields are ignored. Problems inside a well-formed
//! `call.requested` are [`CallError`]s (`INVALID_INPUT`) answered on that request only.
//!
//! ```
//! use alknet_call::envelope::{decode_envelope, CallRequest, EventType};
//! use serde_json::json;
//!
//! let frame = br#"{"type":"call.requested","id":"1","payload":{"operationId":"/math/add","input":{"a":1,"b":2}}}"#;
//! let envelope = decode_envelope(frame).unwrap();
//! assert_eq!(envelope.kind, EventType::Requested);
//! let request = CallRequest::from_payload(&envelope.payload).unwrap();
//! assert_eq!(request.operation, "math/add");
//! assert_eq!(request.input, json!({"a": 1, "b": 2}));
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use alknet_core::log_text::escaped;

use crate::error::{CallError, ErrorCode};
use crate::framing::{FrameError, MAX_FRAME_LIMIT};

mod received;
mod reply;
pub(crate) use reply::object;

pub(crate) use received::{decode_received, PayloadFields, Received};
pub(crate) use reply::{decode_owned_reply_raw, decode_reply_value};
pub use reply::{decode_reply, decode_reply_raw, RawOutput, Reply};

/// The longest request id the protocol allows, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// An envelope's `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventType {
    /// `call.requested`: the caller asks for an operation.
    Requested,
    /// `call.responded`: one output (one for a query or mutation, one per item for a subscription).
    Responded,
    /// `call.completed`: a subscription ended normally.
    Completed,
    /// `call.aborted`: the caller cancelled, or the callee gave up.
    Aborted,
    /// `call.error`: the request failed; terminal.
    Error,
    /// A type this version does not know; receivers ignore it so later versions can add types.
    Unknown(String),
}

impl EventType {
    /// The type's wire spelling, e.g. `"call.requested"`.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Requested => "call.requested",
            EventType::Responded => "call.responded",
            EventType::Completed => "call.completed",
            EventType::Aborted => "call.aborted",
            EventType::Error => "call.error",
            EventType::Unknown(other) => other,
        }
    }

    /// The event type spelled `s` on the wire; anything unrecognised is [`EventType::Unknown`].
    pub fn parse(s: &str) -> EventType {
        match s {
            "call.requested" => EventType::Requested,
            "call.responded" => EventType::Responded,
            "call.completed" => EventType::Completed,
            "call.aborted" => EventType::Aborted,
            "call.error" => EventType::Error,
            other => EventType::Unknown(other.to_owned()),
        }
    }
}

/// One decoded envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The event type.
    pub kind: EventType,
    /// The request id the envelope belongs to (1 to [`MAX_ID_LEN`] bytes).
    pub id: String,
    /// The type-specific payload; always a JSON object.
    pub payload: Value,
}

/// Bytes that are not a valid envelope. The receiver resets the stream (QUIC) or closes the
/// connection (single-stream carriers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("protocol violation: {0}")]
pub struct ProtocolViolation(pub String);

/// Decodes one envelope from a frame's JSON bytes (or a WebSocket binary message).
///
/// Not JSON, not an object, a missing or wrongly typed `type`, `id` or `payload`, a non-object
/// `payload`, or an `id` that is empty or longer than [`MAX_ID_LEN`] bytes is a violation. Unknown
/// top-level and payload fields are ignored.
pub fn decode_envelope(frame: &[u8]) -> Result<Envelope, ProtocolViolation> {
    let Received { kind, id, payload } = decode_received(frame)?;
    Ok(Envelope {
        kind,
        id,
        payload: payload.into_value(),
    })
}

/// The one rule on `id` lengths, shared by both decoders.
fn check_id_len(id: &str) -> Result<(), ProtocolViolation> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ProtocolViolation(format!(
            "envelope `id` must be 1 to {MAX_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

impl Envelope {
    /// The envelope's JSON bytes, without a frame prefix (a WebSocket binary message).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(err) =
            serde_json::to_writer(&mut out, &wire(&self.kind, &self.id, &self.payload))
        {
            // Unreachable for a `Value` payload; answer the id rather than send half an envelope.
            tracing::error!(target: "alknet::call", id = %escaped(&self.id), %err, "envelope could not be serialized");
            out.clear();
            let internal = error_payload(&CallError::internal());
            let fallback = wire(&EventType::Error, &self.id, &internal);
            if serde_json::to_writer(&mut out, &fallback).is_err() {
                out.clear();
            }
        }
        out
    }

    /// A `call.requested` envelope for `req`.
    pub fn requested(id: &str, req: &CallRequest) -> Envelope {
        Self::with_payload(EventType::Requested, id, req.to_payload())
    }

    /// A `call.responded` envelope carrying `output`.
    pub fn responded(id: &str, output: Value) -> Envelope {
        let mut payload = Map::new();
        payload.insert("output".into(), output);
        Self::with_payload(EventType::Responded, id, Value::Object(payload))
    }

    /// A `call.completed` envelope (a subscription ended normally).
    pub fn completed(id: &str) -> Envelope {
        Self::with_payload(EventType::Completed, id, Value::Object(Map::new()))
    }

    /// A `call.aborted` envelope.
    pub fn aborted(id: &str) -> Envelope {
        Self::with_payload(EventType::Aborted, id, Value::Object(Map::new()))
    }

    /// A `call.error` envelope carrying `err`.
    pub fn error(id: &str, err: &CallError) -> Envelope {
        Self::with_payload(EventType::Error, id, error_payload(err))
    }

    fn with_payload(kind: EventType, id: &str, payload: Value) -> Envelope {
        Envelope {
            kind,
            id: id.to_owned(),
            payload,
        }
    }
}

/// The envelope as serialized: borrows everything so the hot path builds no `Value`.
#[derive(Serialize)]
struct Wire<'a, P: ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    payload: &'a P,
}

fn wire<'a, P: ?Sized>(kind: &'a EventType, id: &'a str, payload: &'a P) -> Wire<'a, P> {
    Wire {
        kind: kind.as_str(),
        id,
        payload,
    }
}

/// The `call.responded` payload, borrowing the output.
#[derive(Serialize)]
struct RespondedPayload<'a> {
    output: &'a Value,
}

/// Why [`try_encode_frame_of`] could not write a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The payload's `Serialize` implementation failed.
    #[error("payload cannot be serialized as JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The envelope is larger than any receiver accepts.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Appends one frame (length prefix + envelope JSON) to `out`, serializing `payload` straight into
/// the buffer. On error `out` is left as it was.
///
/// Fails if `payload` cannot be serialized or the envelope exceeds [`MAX_FRAME_LIMIT`] (which no
/// receiver accepts).
pub fn try_encode_frame_of(
    kind: &EventType,
    id: &str,
    payload: &impl Serialize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u32(0);
    let written = serde_json::to_writer((&mut *out).writer(), &wire(kind, id, payload));
    let len = out.len() - start - 4;
    let result = match written {
        Err(err) => Err(EncodeError::Serialize(err)),
        Ok(()) if len > MAX_FRAME_LIMIT => Err(EncodeError::Frame(FrameError::TooLarge {
            len,
            limit: MAX_FRAME_LIMIT,
        })),
        Ok(()) => u32::try_from(len).map_err(|_| {
            EncodeError::Frame(FrameError::TooLarge {
                len,
                limit: MAX_FRAME_LIMIT,
            })
        }),
    };
    match result {
        Ok(len32) => {
            out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// Appends one frame (length prefix + envelope JSON) to `out`, serializing `payload` straight into
/// the buffer.
///
/// If that fails (the payload cannot be serialized, or the envelope exceeds [`MAX_FRAME_LIMIT`]),
/// a `call.error` `INTERNAL` frame for `id` is written instead, because a handler whose output
/// cannot be sent has failed. Use [`try_encode_frame_of`] where that fallback is wrong (a caller
/// sending a request).
pub fn encode_frame_of(kind: &EventType, id: &str, payload: &impl Serialize, out: &mut BytesMut) {
    if let Err(err) = try_encode_frame_of(kind, id, payload, out) {
        tracing::error!(target: "alknet::call", id = %escaped(id), kind = %escaped(kind.as_str()), err = %escaped(&err), "envelope could not be encoded; sending INTERNAL instead");
        let internal = match err {
            EncodeError::Frame(_) => CallError::new(
                ErrorCode::Internal,
                "the response exceeds the maximum frame size",
            ),
            EncodeError::Serialize(_) => CallError::internal(),
        };
        // Cannot fail: a short id and an error made of strings and a bool.
        let _ = try_encode_frame_of(&EventType::Error, id, &internal, out);
    }
}

/// Appends a `call.responded` frame carrying `output` to `out` without building an envelope first
/// (the hot path for handler results). An output too large for a frame becomes `call.error`
/// `INTERNAL`, as with [`encode_frame_of`].
pub fn encode_responded_frame(id: &str, output: &Value, out: &mut BytesMut) {
    encode_frame_of(&EventType::Responded, id, &RespondedPayload { output }, out);
}

/// How a [`RespondedHead`] begins, up to the JSON string of the id.
pub(crate) const RESPONDED_START: &[u8] = br#"{"type":"call.responded","id":"#;
/// What a [`RespondedHead`] has between the id and the output.
pub(crate) const RESPONDED_OUTPUT: &[u8] = br#","payload":{"output":"#;
/// What follows the output of a frame begun by a [`RespondedHead`].
pub(crate) const RESPONDED_TAIL: &[u8] = b"}}";

/// The start of every `call.responded` envelope for one request id (`{"type":"call.responded",
/// "id":…,"payload":{"output":`), encoded once per subscription: each item's frame is then the
/// length prefix, this head, the output and [`RESPONDED_TAIL`], so the id is escaped once, not
/// once per item.
pub(crate) struct RespondedHead(Box<[u8]>);

impl RespondedHead {
    /// The head for request `id`.
    pub(crate) fn new(id: &str) -> Self {
        let mut head = Vec::with_capacity(48 + id.len());
        head.extend_from_slice(RESPONDED_START);
        // Cannot fail: a string into a `Vec`.
        let _ = serde_json::to_writer(&mut head, id);
        head.extend_from_slice(RESPONDED_OUTPUT);
        Self(head.into_boxed_slice())
    }

    /// The length prefix of a frame whose output is `body_len` bytes; `None` if the frame would
    /// exceed [`MAX_FRAME_LIMIT`].
    fn prefix(&self, body_len: usize) -> Option<[u8; 4]> {
        let len = self.0.len() + body_len + RESPONDED_TAIL.len();
        let len32 = u32::try_from(len).ok().filter(|_| len <= MAX_FRAME_LIMIT)?;
        Some(len32.to_be_bytes())
    }

    /// Appends a `call.responded` frame carrying `output` to `out`, serializing it straight into
    /// the buffer (a `Vec`: serde's many small writes cost less there than in a `BytesMut`, and
    /// a whole batch becomes one `Bytes` without a copy). As with [`encode_responded_frame`], an
    /// output that cannot be sent (too large for a frame) becomes `call.error` `INTERNAL` for
    /// `id`, the id this head was made for: then `false`, and the request has had its terminal
    /// answer.
    pub(crate) fn encode(&self, id: &str, output: &Value, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.reserve(4 + self.0.len() + FRAME_CAPACITY);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.0);
        let written = serde_json::to_writer(&mut *out, output);
        let body_len = out.len() - start - 4 - self.0.len();
        match self.prefix(body_len).filter(|_| written.is_ok()) {
            Some(prefix) => {
                out.extend_from_slice(RESPONDED_TAIL);
                out[start..start + 4].copy_from_slice(&prefix);
                true
            }
            None => {
                out.truncate(start);
                let mut frame = BytesMut::new();
                encode_responded_frame(id, output, &mut frame);
                out.extend_from_slice(&frame);
                false
            }
        }
    }

    /// Appends a `call.responded` frame around `body`, an output encoded elsewhere (a pub/sub
    /// item shared by many subscribers); `false` (and nothing appended) if the frame would
    /// exceed [`MAX_FRAME_LIMIT`].
    pub(crate) fn encode_around(&self, body: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(prefix) = self.prefix(body.len()) else {
            return false;
        };
        out.reserve(4 + self.0.len() + body.len() + RESPONDED_TAIL.len());
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&self.0);
        out.extend_from_slice(body);
        out.extend_from_slice(RESPONDED_TAIL);
        true
    }

    /// The length prefix and head of a frame around `body_len` bytes of output that is written
    /// from a buffer of its own; the frame is the head, the body, then [`RESPONDED_TAIL`].
    /// `None` if the frame would exceed [`MAX_FRAME_LIMIT`].
    pub(crate) fn framed(&self, body_len: usize) -> Option<Bytes> {
        let prefix = self.prefix(body_len)?;
        let mut head = BytesMut::with_capacity(4 + self.0.len());
        head.extend_from_slice(&prefix);
        head.extend_from_slice(&self.0);
        Some(head.freeze())
    }
}

/// Initial size of an encoded frame: most answers fit without regrowing.
pub(crate) const FRAME_CAPACITY: usize = 256;

/// One frame in a buffer of its own (see [`encode_frame_of`]).
pub(crate) fn frame_of(kind: &EventType, id: &str, payload: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_CAPACITY);
    encode_frame_of(kind, id, payload, &mut buf);
    buf.freeze()
}

/// The `call.requested` payload.
///
/// Its `Serialize` implementation writes the wire shape (the same as [`to_payload`](Self::to_payload)),
/// so `encode_frame_of(&EventType::Requested, id, &request, out)` sends it without cloning the input.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRequest {
    /// The operation's registry name, without the wire's leading slash (`math/add`).
    pub operation: String,
    /// The input (`null` when the request had none).
    pub input: Value,
    /// A token that overrides the connection's identity for this request only.
    pub auth_token: Option<String>,
    /// The deadline the caller asks for, in milliseconds (positive).
    pub timeout_ms: Option<u64>,
}

impl CallRequest {
    /// Reads a `call.requested` payload.
    ///
    /// `INVALID_INPUT` for a missing or non-string `operationId` or one without a leading `/`, a
    /// `timeout_ms` that is not a positive integer, or an `auth_token` that is neither a string nor
    /// `null`. A missing `input` is `null`; an `auth_token` of `null` is absent.
    pub fn from_payload(payload: &Value) -> Result<CallRequest, CallError> {
        let Some(fields) = payload.as_object() else {
            return Err(CallError::new(
                ErrorCode::InvalidInput,
                "call.requested payload must be a JSON object",
            ));
        };
        let field = |name: &str| fields.get(name).cloned();
        received::request_from(
            field("operationId"),
            field("input"),
            field("auth_token"),
            field("timeout_ms"),
        )
    }

    /// The `call.requested` payload: `operationId` with its leading slash; absent optional fields
    /// are omitted.
    pub fn to_payload(&self) -> Value {
        let mut payload = Map::new();
        payload.insert(
            "operationId".into(),
            Value::String(format!("/{}", self.operation)),
        );
        payload.insert("input".into(), self.input.clone());
        if let Some(token) = &self.auth_token {
            payload.insert("auth_token".into(), Value::String(token.clone()));
        }
        if let Some(timeout) = self.timeout_ms {
            payload.insert("timeout_ms".into(), Value::from(timeout));
        }
        Value::Object(payload)
    }
}

impl Serialize for CallRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RequestRef {
            operation: &self.operation,
            input: &self.input,
            auth_token: self.auth_token.as_deref(),
            timeout_ms: self.timeout_ms,
        }
        .serialize(serializer)
    }
}

/// A `call.requested` payload borrowing its parts (what a caller encodes, without copying the
/// operation name or the input into a [`CallRequest`] first); the wire shape of `CallRequest`.
pub(crate) struct RequestRef<'a> {
    /// The operation's registry name, without the leading slash.
    pub(crate) operation: &'a str,
    pub(crate) input: &'a Value,
    pub(crate) auth_token: Option<&'a str>,
    pub(crate) timeout_ms: Option<u64>,
}

impl Serialize for RequestRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len =
            2 + usize::from(self.auth_token.is_some()) + usize::from(self.timeout_ms.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("operationId", &format_args!("/{}", self.operation))?;
        map.serialize_entry("input", self.input)?;
        if let Some(token) = self.auth_token {
            map.serialize_entry("auth_token", token)?;
        }
        if let Some(timeout) = self.timeout_ms {
            map.serialize_entry("timeout_ms", &timeout)?;
        }
        map.end()
    }
}

/// A JSON number that is a positive integer, also when written as a float such as `1000.0`
/// (JSON does not distinguish the two).
fn positive_integer(value: &Value) -> Option<u64> {
    let number = value.as_number()?;
    if let Some(n) = number.as_u64() {
        return (n > 0).then_some(n);
    }
    if number.is_i64() {
        return None; // negative
    }
    let f = number.as_f64()?;
    // 2^64 is exactly representable; anything below it with no fraction fits a u64.
    (f.fract() == 0.0 && f > 0.0 && f < 18_446_744_073_709_551_616.0).then_some(f as u64)
}

/// The `call.error` payload for `err`.
fn error_payload(err: &CallError) -> Value {
    let mut payload = Map::new();
    payload.insert("code".into(), Value::String(err.code.clone()));
    payload.insert("message".into(), Value::String(err.message.clone()));
    payload.insert("retryable".into(), Value::Bool(err.retryable));
    if let Some(details) = &err.details {
        payload.insert("details".into(), details.clone());
    }
    Value::Object(payload)
}

/// Parses a `call.error` payload into a [`CallError`], leniently: a missing or non-string `code` is
/// `INTERNAL`, a missing `message` is `""`, a missing `retryable` follows the code (false for
/// unknown codes), and a `null` `details` is absent.
pub fn error_from_payload(payload: &Value) -> CallError {
    let code = payload
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or(ErrorCode::Internal.as_str());
    let message = payload.get("message").and_then(Value::as_str).unwrap_or("");
    let retryable = payload
        .get("retryable")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| ErrorCode::parse(code).is_some_and(|c| c.retryable()));
    let details = payload.get("details").filter(|d| !d.is_null()).cloned();
    CallError {
        code: code.to_owned(),
        message: message.to_owned(),
        retryable,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{FrameDecoder, DEFAULT_MAX_FRAME};
    use serde_json::json;

    /// The frame from the end of `CALL-PROTOCOL.md`.
    const EXAMPLE_JSON: &str = r#"{"type":"call.requested","id":"1","payload":{"operationId":"/math/add","input":{"a":1,"b":2}}}"#;

    fn example_request() -> CallRequest {
        CallRequest {
            operation: "math/add".into(),
            input: json!({"a": 1, "b": 2}),
            auth_token: None,
            timeout_ms: None,
        }
    }

    fn violation(json: &str) -> String {
        decode_envelope(json.as_bytes()).unwrap_err().0
    }

    fn request(payload: Value) -> Result<CallRequest, CallError> {
        CallRequest::from_payload(&payload)
    }

    // --- the protocol's byte example ---

    #[test]
    fn the_protocol_example_is_0x5e_bytes_long() {
        assert_eq!(EXAMPLE_JSON.len(), 0x5e);
    }

    #[test]
    fn the_protocol_example_frame_decodes_to_a_math_add_request() {
        let mut wire = vec![0x00, 0x00, 0x00, 0x5e];
        wire.extend_from_slice(EXAMPLE_JSON.as_bytes());
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire);
        let frame = decoder.next_frame().unwrap().unwrap();
        let envelope = decode_envelope(&frame).unwrap();
        assert_eq!(envelope.kind, EventType::Requested);
        assert_eq!(envelope.id, "1");
        assert_eq!(
            CallRequest::from_payload(&envelope.payload).unwrap(),
            example_request()
        );
    }

    #[test]
    fn encoding_the_example_request_reproduces_the_protocol_bytes() {
        let mut out = BytesMut::new();
        encode_frame_of(&EventType::Requested, "1", &example_request(), &mut out);
        assert_eq!(&out[..4], &[0x00, 0x00, 0x00, 0x5e]);
        assert_eq!(&out[4..], EXAMPLE_JSON.as_bytes());
    }

    #[test]
    fn the_protocol_example_answer_is_what_encode_responded_frame_writes() {
        let mut out = BytesMut::new();
        encode_responded_frame("1", &json!(3), &mut out);
        let answer = br#"{"type":"call.responded","id":"1","payload":{"output":3}}"#;
        assert_eq!(&out[..4], &(answer.len() as u32).to_be_bytes());
        assert_eq!(&out[4..], answer);
    }

    // --- decode_envelope ---

    #[test]
    fn unknown_event_types_decode_to_unknown() {
        let envelope =
            decode_envelope(br#"{"type":"call.progress","id":"9","payload":{}}"#).unwrap();
        assert_eq!(envelope.kind, EventType::Unknown("call.progress".into()));
        assert_eq!(envelope.kind.as_str(), "call.progress");
    }

    #[test]
    fn unknown_top_level_fields_are_ignored() {
        let envelope =
            decode_envelope(br#"{"type":"call.aborted","id":"9","payload":{},"trace":"x"}"#)
                .unwrap();
        assert_eq!(envelope, Envelope::aborted("9"));
    }

    #[test]
    fn unknown_payload_fields_are_ignored() {
        let envelope = decode_envelope(
            br#"{"type":"call.requested","id":"1","payload":{"operationId":"/a/b","priority":7}}"#,
        )
        .unwrap();
        let req = CallRequest::from_payload(&envelope.payload).unwrap();
        assert_eq!(req.operation, "a/b");
        let err = error_from_payload(
            &json!({"code": "TIMEOUT", "message": "late", "retryable": true, "node": "n1"}),
        );
        assert_eq!(err, CallError::new(ErrorCode::Timeout, "late"));
    }

    #[test]
    fn every_event_type_round_trips_through_its_wire_name() {
        for kind in [
            EventType::Requested,
            EventType::Responded,
            EventType::Completed,
            EventType::Aborted,
            EventType::Error,
        ] {
            assert!(kind.as_str().starts_with("call."));
            assert_eq!(EventType::parse(kind.as_str()), kind);
        }
    }

    #[test]
    fn invalid_json_is_a_violation() {
        assert!(violation("{\"type\":").contains("not valid JSON"));
        assert!(decode_envelope(b"\xff\xfe").is_err());
    }

    #[test]
    fn a_non_object_envelope_is_a_violation() {
        assert!(violation("[1,2]").contains("not a JSON object"));
        assert!(violation("\"call.requested\"").contains("not a JSON object"));
    }

    #[test]
    fn missing_fields_are_violations() {
        assert!(violation(r#"{"id":"1","payload":{}}"#).contains("`type`"));
        assert!(violation(r#"{"type":"call.aborted","payload":{}}"#).contains("`id`"));
        assert!(violation(r#"{"type":"call.aborted","id":"1"}"#).contains("`payload`"));
    }

    #[test]
    fn wrongly_typed_fields_are_violations() {
        assert!(violation(r#"{"type":1,"id":"1","payload":{}}"#).contains("`type`"));
        assert!(violation(r#"{"type":"call.aborted","id":1,"payload":{}}"#).contains("`id`"));
        assert!(
            violation(r#"{"type":"call.aborted","id":"1","payload":null}"#).contains("`payload`")
        );
        assert!(
            violation(r#"{"type":"call.aborted","id":"1","payload":[]}"#).contains("`payload`")
        );
    }

    #[test]
    fn an_empty_id_is_a_violation() {
        assert!(violation(r#"{"type":"call.aborted","id":"","payload":{}}"#).contains("1 to 128"));
    }

    #[test]
    fn ids_of_128_bytes_are_accepted_and_129_rejected() {
        let at_limit = format!(
            r#"{{"type":"call.aborted","id":"{}","payload":{{}}}}"#,
            "x".repeat(128)
        );
        assert!(decode_envelope(at_limit.as_bytes()).is_ok());
        let over = format!(
            r#"{{"type":"call.aborted","id":"{}","payload":{{}}}}"#,
            "é".repeat(65)
        );
        assert!(violation(&over).contains("got 130"));
    }

    // --- encoding ---

    #[test]
    fn encode_and_decode_round_trip_each_constructor() {
        let envelopes = [
            Envelope::requested("a", &example_request()),
            Envelope::responded("b", json!({"sum": 3})),
            Envelope::completed("c"),
            Envelope::aborted("d"),
            Envelope::error(
                "e",
                &CallError::new(ErrorCode::InvalidInput, "bad").with_details(json!({"path": "/a"})),
            ),
        ];
        for envelope in envelopes {
            assert_eq!(decode_envelope(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn completed_and_aborted_carry_an_empty_object() {
        assert_eq!(Envelope::completed("1").payload, json!({}));
        assert_eq!(Envelope::aborted("1").payload, json!({}));
    }

    #[test]
    fn error_envelopes_carry_the_call_error_payload() {
        let err = CallError::custom("QUOTA", "over quota").with_details(json!({"left": 0}));
        let envelope = Envelope::error("1", &err);
        assert_eq!(envelope.kind, EventType::Error);
        assert_eq!(
            envelope.payload,
            json!({"code": "QUOTA", "message": "over quota", "retryable": false, "details": {"left": 0}})
        );
        assert_eq!(error_from_payload(&envelope.payload), err);
    }

    #[test]
    fn frames_from_a_responded_head_are_the_frames_encode_responded_frame_writes() {
        for id in ["1", "a\"b\\c", "é", "\u{1}"] {
            let head = RespondedHead::new(id);
            let output = json!({"topic": "t/x", "data": [1, "two", {"3": null, "é\n": "\"\u{7}"}]});
            let mut want = BytesMut::new();
            encode_responded_frame(id, &output, &mut want);

            let mut encoded = b"before".to_vec();
            head.encode(id, &output, &mut encoded);
            assert_eq!(&encoded[..6], b"before");
            assert_eq!(&encoded[6..], &want[..]);

            let body = serde_json::to_vec(&output).unwrap();
            let mut around = Vec::new();
            assert!(head.encode_around(&body, &mut around));
            assert_eq!(around, want.to_vec());

            let mut joined = head.framed(body.len()).unwrap().to_vec();
            joined.extend_from_slice(&body);
            joined.extend_from_slice(RESPONDED_TAIL);
            assert_eq!(joined, want.to_vec());
        }
    }

    #[test]
    fn a_responded_head_refuses_frames_above_the_limit() {
        let head = RespondedHead::new("1");
        assert!(head.framed(MAX_FRAME_LIMIT).is_none());
        let mut out = Vec::new();
        assert!(!head.encode_around(&vec![b'1'; MAX_FRAME_LIMIT], &mut out));
        assert!(out.is_empty());
        let output = Value::String("x".repeat(MAX_FRAME_LIMIT));
        head.encode("1", &output, &mut out);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&out);
        let frame = decoder.next_frame().unwrap().unwrap();
        let envelope = decode_envelope(&frame).unwrap();
        assert_eq!(envelope.kind, EventType::Error);
        assert_eq!(envelope.payload["code"], "INTERNAL");
    }

    #[test]
    fn encode_frame_of_matches_envelope_encode() {
        let envelope = Envelope::responded("7", json!([1, "two", null]));
        let mut out = BytesMut::new();
        encode_frame_of(&envelope.kind, &envelope.id, &envelope.payload, &mut out);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&out);
        assert_eq!(
            &decoder.next_frame().unwrap().unwrap()[..],
            &envelope.encode()[..]
        );
    }

    #[test]
    fn encode_frame_of_appends_after_existing_bytes() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_frame_of(&EventType::Completed, "1", &json!({}), &mut out);
        assert_eq!(&out[..6], b"prefix");
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&out[6..]);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(decode_envelope(&frame), Ok(Envelope::completed("1")));
    }

    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("nope"))
        }
    }

    #[test]
    fn try_encode_frame_of_leaves_the_buffer_untouched_on_failure() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let result = try_encode_frame_of(&EventType::Responded, "1", &Unserializable, &mut out);
        assert!(matches!(result, Err(EncodeError::Serialize(_))));
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn an_unserializable_payload_is_sent_as_an_internal_error() {
        let mut out = BytesMut::new();
        encode_frame_of(&EventType::Responded, "1", &Unserializable, &mut out);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&out);
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_eq!(
            decode_envelope(&frame),
            Ok(Envelope::error("1", &CallError::internal()))
        );
    }

    #[test]
    fn an_output_larger_than_any_frame_limit_is_sent_as_an_internal_error() {
        let huge = Value::String("x".repeat(MAX_FRAME_LIMIT));
        let mut out = BytesMut::new();
        encode_responded_frame("1", &huge, &mut out);
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&out);
        let envelope = decode_envelope(&decoder.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(envelope.kind, EventType::Error);
        assert!(error_from_payload(&envelope.payload).is(ErrorCode::Internal));
        assert_eq!(decoder.buffered(), 0);
    }

    // --- CallRequest ---

    #[test]
    fn the_leading_slash_is_stripped_from_operation_id() {
        assert_eq!(
            request(json!({"operationId": "/math/add"}))
                .unwrap()
                .operation,
            "math/add"
        );
    }

    #[test]
    fn a_missing_input_is_null() {
        assert_eq!(
            request(json!({"operationId": "/a/b"})).unwrap().input,
            Value::Null
        );
    }

    #[test]
    fn a_missing_operation_id_is_invalid_input() {
        assert!(request(json!({"input": 1}))
            .unwrap_err()
            .is(ErrorCode::InvalidInput));
    }

    #[test]
    fn a_non_string_operation_id_is_invalid_input() {
        assert!(request(json!({"operationId": 5}))
            .unwrap_err()
            .is(ErrorCode::InvalidInput));
    }

    #[test]
    fn an_operation_id_without_a_leading_slash_is_invalid_input() {
        assert!(request(json!({"operationId": "math/add"}))
            .unwrap_err()
            .is(ErrorCode::InvalidInput));
    }

    #[test]
    fn a_positive_integer_timeout_is_accepted() {
        let req = request(json!({"operationId": "/a/b", "timeout_ms": 1500})).unwrap();
        assert_eq!(req.timeout_ms, Some(1500));
    }

    #[test]
    fn an_integral_float_timeout_is_accepted() {
        let req = request(json!({"operationId": "/a/b", "timeout_ms": 1500.0})).unwrap();
        assert_eq!(req.timeout_ms, Some(1500));
    }

    #[test]
    fn bad_timeouts_are_invalid_input() {
        for timeout in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!(0.0),
            json!(-1.0),
            json!(1e300),
            json!("100"),
            json!(null),
            json!(true),
        ] {
            let err = request(json!({"operationId": "/a/b", "timeout_ms": timeout})).unwrap_err();
            assert!(err.is(ErrorCode::InvalidInput), "timeout_ms {timeout}");
        }
    }

    #[test]
    fn a_null_auth_token_is_absent() {
        let req = request(json!({"operationId": "/a/b", "auth_token": null})).unwrap();
        assert_eq!(req.auth_token, None);
    }

    #[test]
    fn a_string_auth_token_is_kept() {
        let req = request(json!({"operationId": "/a/b", "auth_token": "alk_x_y"})).unwrap();
        assert_eq!(req.auth_token.as_deref(), Some("alk_x_y"));
    }

    #[test]
    fn a_non_string_auth_token_is_invalid_input() {
        assert!(request(json!({"operationId": "/a/b", "auth_token": 42}))
            .unwrap_err()
            .is(ErrorCode::InvalidInput));
    }

    #[test]
    fn to_payload_adds_the_slash_and_omits_absent_fields() {
        assert_eq!(
            example_request().to_payload(),
            json!({"operationId": "/math/add", "input": {"a": 1, "b": 2}})
        );
    }

    #[test]
    fn to_payload_round_trips_through_from_payload() {
        let req = CallRequest {
            auth_token: Some("tok".into()),
            timeout_ms: Some(250),
            ..example_request()
        };
        assert_eq!(CallRequest::from_payload(&req.to_payload()), Ok(req));
    }

    #[test]
    fn serialize_writes_the_same_shape_as_to_payload() {
        let req = CallRequest {
            auth_token: Some("tok".into()),
            timeout_ms: Some(250),
            ..example_request()
        };
        assert_eq!(serde_json::to_value(&req).unwrap(), req.to_payload());
        assert_eq!(
            serde_json::to_value(example_request()).unwrap(),
            example_request().to_payload()
        );
    }

    // --- error_from_payload ---

    #[test]
    fn error_from_payload_reads_every_field() {
        let err = error_from_payload(
            &json!({"code": "FORBIDDEN", "message": "no", "retryable": true, "details": [1]}),
        );
        assert_eq!(
            err,
            CallError::new(ErrorCode::Forbidden, "no")
                .with_retryable(true)
                .with_details(json!([1]))
        );
    }

    #[test]
    fn error_from_payload_defaults_a_missing_message_to_empty() {
        assert_eq!(error_from_payload(&json!({"code": "TIMEOUT"})).message, "");
    }

    #[test]
    fn error_from_payload_takes_a_missing_retryable_from_the_code() {
        assert!(error_from_payload(&json!({"code": "UNAVAILABLE"})).retryable);
        assert!(!error_from_payload(&json!({"code": "NOT_FOUND"})).retryable);
        assert!(!error_from_payload(&json!({"code": "MY_CODE"})).retryable);
    }

    #[test]
    fn error_from_payload_treats_a_missing_code_as_internal() {
        assert!(error_from_payload(&json!({})).is(ErrorCode::Internal));
    }

    #[test]
    fn error_from_payload_treats_null_details_as_absent() {
        assert_eq!(
            error_from_payload(&json!({"code": "INTERNAL", "details": null})).details,
            None
        );
    }
}
