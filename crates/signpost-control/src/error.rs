//! The control plane's one error type. The gRPC boundary maps it to status
//! codes in one place (`signpost-api`'s `status` module).

use signpost_domain::{DomainError, ErrorKind};
use signpost_eventlog::LogError;

/// Why a call failed. Nothing was appended when an error is returned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A domain rule refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No valid credential.
    #[error("{message}")]
    Unauthenticated {
        /// Stable reason (`API_TOKEN_INVALID`, `SETUP_LINK_INVALID`, `CREDENTIALS_MISSING`).
        reason: &'static str,
        /// For humans.
        message: String,
    },
    /// The credential's role does not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// A request field is malformed (checked before any rule).
    #[error("{message}")]
    InvalidArgument {
        /// Stable reason.
        reason: &'static str,
        /// The field at fault.
        field: &'static str,
        /// For humans.
        message: String,
    },
    /// Something outside (DNS, an IdP's server) did not give what was needed.
    #[error("{message}")]
    External {
        /// Stable reason.
        reason: &'static str,
        /// The field whose value led there.
        field: &'static str,
        /// For humans (never a response body or a secret).
        message: String,
    },
    /// The same request id was used for a different request.
    #[error("request id `{0}` was already used for a different request")]
    RequestIdReused(String),
    /// The store cannot take writes or reads now.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed while waiting.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug or corrupt state; logged where it happens.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// A malformed request field.
    pub fn invalid(reason: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            reason,
            field,
            message: message.into(),
        }
    }

    /// Whether the error is an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Domain(DomainError {
                kind: ErrorKind::Conflict,
                ..
            })
        )
    }
}

impl From<LogError> for ControlError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::WrongExpectedVersion {
                expected, actual, ..
            } => {
                let expected = match expected {
                    signpost_eventlog::ExpectedVersion::Exact(v) => v,
                    _ => 0,
                };
                Self::Domain(DomainError::conflict(expected, actual))
            }
            LogError::IdempotencyKeyReused { request_id } => Self::RequestIdReused(request_id),
            LogError::Unavailable(message) => Self::Unavailable(message),
            LogError::Closed => Self::Unavailable("the event store is closed".into()),
            other => Self::Internal(other.to_string()),
        }
    }
}
