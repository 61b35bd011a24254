//! The crate's one error type, and how it becomes a control-plane error (the gRPC
//! boundary maps those to statuses in one place).

use signpost_control::ControlError;
use signpost_eventlog::LogError;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A request field is malformed.
    #[error("{message}")]
    InvalidArgument {
        /// Stable reason.
        reason: &'static str,
        /// The field at fault.
        field: &'static str,
        /// For humans.
        message: String,
    },
    /// Nothing of that name exists (or the caller may not know that it does).
    #[error("{message}")]
    NotFound {
        /// Stable reason.
        reason: &'static str,
        /// The field naming it.
        field: &'static str,
        /// For humans.
        message: String,
    },
    /// The caller's scope does not cover what it asked for.
    #[error("{0}")]
    PermissionDenied(String),
    /// The audit database failed.
    #[error("audit database: {0}")]
    Storage(#[from] sled::Error),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The projection stopped (it could not apply the log) or is shutting down.
    #[error("audit projection stopped: {0}")]
    Stopped(String),
    /// A file (the checkpoint key) could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Stored data does not decode: a bug or a damaged database.
    #[error("audit database corrupt: {0}")]
    Corrupt(String),
}

impl AuditError {
    pub(crate) fn invalid(
        reason: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::InvalidArgument {
            reason,
            field,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(
        reason: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::NotFound {
            reason,
            field,
            message: message.into(),
        }
    }
}

impl From<prost::DecodeError> for AuditError {
    fn from(error: prost::DecodeError) -> Self {
        Self::Corrupt(error.to_string())
    }
}

impl From<AuditError> for ControlError {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::InvalidArgument {
                reason,
                field,
                message,
            } => ControlError::InvalidArgument {
                reason,
                field,
                message,
            },
            AuditError::NotFound {
                reason,
                field,
                message,
            } => ControlError::Domain(signpost_domain::DomainError::not_found(
                reason, field, message,
            )),
            AuditError::PermissionDenied(message) => ControlError::PermissionDenied(message),
            AuditError::Log(error) => error.into(),
            AuditError::Storage(error) => {
                ControlError::Unavailable(format!("audit database: {error}"))
            }
            other @ (AuditError::Stopped(_) | AuditError::File { .. } | AuditError::Corrupt(_)) => {
                ControlError::Internal(other.to_string())
            }
        }
    }
}
