//! Error codes of the call protocol and the error a `call.error` envelope carries.
//!
//! ```
//! use alknet_call::error::{CallError, ErrorCode};
//!
//! let err = CallError::new(ErrorCode::Timeout, "deadline of 30s passed");
//! assert!(err.retryable);
//! assert!(err.is(ErrorCode::Timeout));
//!
//! // Handlers may declare their own codes; those are never retryable unless they say so.
//! let err = CallError::custom("ITEM_NOT_OWNED", "the todo belongs to someone else");
//! assert_eq!(err.code(), None);
//! assert!(!err.retryable);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The error codes the protocol itself defines (see the table in `CALL-PROTOCOL.md`).
///
/// Clients switch on the code, never on the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No such external operation.
    NotFound,
    /// An identity is needed and missing, or the request's `auth_token` is invalid.
    Unauthenticated,
    /// The identity lacks the scopes or resource rights the operation requires.
    Forbidden,
    /// The input (or the request itself) is malformed or fails the schema.
    InvalidInput,
    /// The operation exists but was used the wrong way (e.g. `call` on a subscription).
    InvalidOperationType,
    /// The deadline passed.
    Timeout,
    /// The request was aborted (reported to local waiters only).
    Cancelled,
    /// A limit was hit: too many concurrent requests, or a slow subscriber's queue is full.
    Overloaded,
    /// The connection closed or the node is shutting down.
    Unavailable,
    /// The handler failed without a declared code, or panicked.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the protocol's table.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotFound,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::InvalidInput,
        ErrorCode::InvalidOperationType,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire, e.g. `"NOT_FOUND"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::InvalidOperationType => "INVALID_OPERATION_TYPE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout | ErrorCode::Overloaded | ErrorCode::Unavailable
        )
    }

    /// The protocol code spelled `s` on the wire, or `None` for any other (e.g. handler-declared) code.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call error as carried in a `call.error` payload.
///
/// `code` is a `String` on the wire because handlers may declare their own codes; use
/// [`code`](Self::code) or [`is`](Self::is) to compare against the protocol's codes.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct CallError {
    /// A protocol code (`NOT_FOUND`, …) or a code the handler declared.
    pub code: String,
    /// A human-readable explanation; never something to switch on.
    pub message: String,
    /// Whether the same request may succeed if sent again later.
    pub retryable: bool,
    /// Structured details, e.g. the schema validator's errors for `INVALID_INPUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl CallError {
    /// An error with a protocol code; `retryable` follows the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: message.into(),
            retryable: code.retryable(),
            details: None,
        }
    }

    /// An error with a handler-declared code; not retryable unless [`with_retryable`](Self::with_retryable) says so.
    pub fn custom(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
            details: None,
        }
    }

    /// The same error with `details` attached.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The same error with `retryable` overridden.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The protocol code, or `None` for a handler-declared code.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// Whether the error carries the protocol code `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }

    /// The `INTERNAL` error sent for any undeclared handler failure: a generic message and no
    /// details, so that nothing about the node's internals leaks to the caller.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_timeout_overloaded_and_unavailable_are_retryable() {
        let retryable: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(ErrorCode::retryable)
            .collect();
        assert_eq!(
            retryable,
            [
                ErrorCode::Timeout,
                ErrorCode::Overloaded,
                ErrorCode::Unavailable
            ]
        );
    }

    #[test]
    fn as_str_matches_the_serde_spelling_and_parses_back() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn parse_rejects_unknown_and_differently_cased_codes() {
        assert_eq!(ErrorCode::parse("ITEM_NOT_OWNED"), None);
        assert_eq!(ErrorCode::parse("not_found"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn new_takes_retryable_from_the_code() {
        assert!(CallError::new(ErrorCode::Overloaded, "queue full").retryable);
        assert!(!CallError::new(ErrorCode::Forbidden, "no").retryable);
    }

    #[test]
    fn custom_codes_are_not_retryable_and_have_no_protocol_code() {
        let err = CallError::custom("QUOTA", "over quota");
        assert!(!err.retryable);
        assert_eq!(err.code(), None);
        assert!(!err.is(ErrorCode::Internal));
    }

    #[test]
    fn with_retryable_overrides_the_default() {
        assert!(
            CallError::custom("BUSY", "later")
                .with_retryable(true)
                .retryable
        );
        assert!(
            !CallError::new(ErrorCode::Timeout, "late")
                .with_retryable(false)
                .retryable
        );
    }

    #[test]
    fn internal_has_a_generic_message_and_no_details() {
        let err = CallError::internal();
        assert!(err.is(ErrorCode::Internal));
        assert_eq!(err.message, "internal error");
        assert_eq!(err.details, None);
        assert!(!err.retryable);
    }

    #[test]
    fn display_shows_code_and_message() {
        let err = CallError::new(ErrorCode::NotFound, "no operation math/sub");
        assert_eq!(err.to_string(), "NOT_FOUND: no operation math/sub");
    }

    #[test]
    fn serializes_to_the_call_error_payload_shape() {
        let err =
            CallError::new(ErrorCode::InvalidInput, "bad").with_details(json!([{"path": "/a"}]));
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"code": "INVALID_INPUT", "message": "bad", "retryable": false, "details": [{"path": "/a"}]})
        );
        let plain = CallError::new(ErrorCode::Timeout, "late");
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"code": "TIMEOUT", "message": "late", "retryable": true})
        );
    }
}
