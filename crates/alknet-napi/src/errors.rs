//! How failures cross into JavaScript.

use alknet_call::CallError;

/// A call failure as a JavaScript `Error` whose message is the JSON-encoded `CallError`
/// (`{ code, message, retryable, details? }`); the TypeScript layer parses it back.
pub(crate) fn call_error(error: CallError) -> napi::Error {
    let json = serde_json::to_string(&error).unwrap_or_else(|_| {
        r#"{"code":"INTERNAL","message":"unencodable error","retryable":false}"#.to_string()
    });
    napi::Error::from_reason(json)
}

/// A failure that is not a call error, as a JavaScript `Error` whose message is JSON
/// `{ "kind": "connect", "code", "message", "details" }`; the TypeScript layer rebuilds a
/// `ConnectError` from it, so programs can switch on `err.code`.
pub(crate) fn coded(
    code: &str,
    message: impl std::fmt::Display,
    details: serde_json::Value,
) -> napi::Error {
    let json = serde_json::json!({
        "kind": "connect",
        "code": code,
        "message": message.to_string(),
        "details": details,
    });
    napi::Error::from_reason(json.to_string())
}

/// A connect failure with its stable code and details (the fingerprints of a pin mismatch, …).
pub(crate) fn connect_error(error: alknet_node::ConnectError) -> napi::Error {
    let mut details = serde_json::to_value(&error).unwrap_or_default();
    if let Some(map) = details.as_object_mut() {
        map.remove("code");
    }
    coded(error.code(), &error, details)
}

/// A node that could not start, with its stable code.
pub(crate) fn node_error(error: alknet_node::NodeError) -> napi::Error {
    coded(error.code(), &error, serde_json::Value::Null)
}

/// A plain failure (bad options, a key file, a bind error) with a message to act on.
pub(crate) fn plain(message: impl std::fmt::Display) -> napi::Error {
    napi::Error::from_reason(message.to_string())
}

/// Parses JSON handed over by JavaScript; `what` names it in the error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &str,
) -> napi::Result<T> {
    serde_json::from_str(json).map_err(|e| plain(format!("{what} is not valid: {e}")))
}
