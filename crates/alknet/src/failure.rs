//! How a command fails: what to tell the user and which exit code to leave.

use std::fmt;

use alknet_call::CallError;

/// A failed command. Its message says what was wrong and what to do.
#[derive(Debug)]
pub struct Failure {
    /// The process exit code: 1 for a failed call, 2 for usage or configuration.
    pub exit: u8,
    /// Printed to stderr after `alknet: `.
    pub message: String,
}

/// The result of a command.
pub type Outcome = Result<(), Failure>;

impl Failure {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Self {
            exit: 2,
            message: message.to_string(),
        }
    }

    /// A call that failed, or a node that could not be reached (exit 1).
    pub fn call(message: impl fmt::Display) -> Self {
        Self {
            exit: 1,
            message: message.to_string(),
        }
    }
}

impl From<CallError> for Failure {
    /// `CODE: message`, the code first so scripts can match it on stderr.
    fn from(e: CallError) -> Self {
        Failure::call(format!("{}: {}", e.code, e.message))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
