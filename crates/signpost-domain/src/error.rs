//! The one error type of the domain: which rule refused a command, and why.

/// How a refusal should be understood by a caller (mapped to a gRPC code at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command itself is malformed or breaks a rule about its input.
    InvalidArgument,
    /// The command is well formed but the current state does not allow it.
    FailedPrecondition,
    /// The command names something that does not exist.
    NotFound,
    /// The command would create something that already exists.
    AlreadyExists,
    /// The aggregate changed since the caller read it (expected version mismatch).
    Conflict,
}

/// A command refused by a domain rule. Nothing is appended when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    /// How to understand the refusal.
    pub kind: ErrorKind,
    /// Stable, machine-readable reason, e.g. `DOMAIN_ALREADY_CLAIMED`.
    pub reason: &'static str,
    /// The request field at fault, when one is.
    pub field: Option<&'static str>,
    /// A lowercase sentence for humans.
    pub message: String,
}

impl DomainError {
    /// A malformed input in `field`.
    pub fn invalid(reason: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidArgument,
            reason,
            field: Some(field),
            message: message.into(),
        }
    }

    /// A command the current state does not allow.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::FailedPrecondition,
            reason,
            field: None,
            message: message.into(),
        }
    }

    /// Something named by the command does not exist.
    pub fn not_found(
        reason: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            reason,
            field: Some(field),
            message: message.into(),
        }
    }

    /// Something the command would create already exists.
    pub fn already_exists(
        reason: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorKind::AlreadyExists,
            reason,
            field: Some(field),
            message: message.into(),
        }
    }

    /// The aggregate is not at the version the caller expected.
    pub fn conflict(expected: u64, actual: u64) -> Self {
        Self {
            kind: ErrorKind::Conflict,
            reason: "VERSION_MISMATCH",
            field: Some("expected_version"),
            message: format!("expected version {expected} but the current version is {actual}"),
        }
    }
}

impl From<signpost_names::NameError> for DomainError {
    fn from(error: signpost_names::NameError) -> Self {
        let field = match error.reason() {
            "EMAIL_INVALID" => "email",
            _ => "domain",
        };
        Self::invalid(error.reason(), field, error.to_string())
    }
}

/// Result of a domain command: the events to append, or why none are.
pub type Decision = Result<Vec<crate::Event>, DomainError>;

/// Checks a free-text input: trimmed, 1..=`max` characters, no control characters.
pub(crate) fn check_text(
    value: &str,
    field: &'static str,
    max: usize,
) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(
            "FIELD_REQUIRED",
            field,
            format!("`{field}` is required"),
        ));
    }
    if trimmed.chars().count() > max {
        return Err(DomainError::invalid(
            "FIELD_TOO_LONG",
            field,
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "FIELD_INVALID",
            field,
            format!("`{field}` contains control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}
