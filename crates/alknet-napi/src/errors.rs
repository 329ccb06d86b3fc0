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
