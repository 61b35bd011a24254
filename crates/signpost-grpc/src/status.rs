//! The one place where errors become gRPC statuses.
//!
//! Every refusal carries a `google.rpc.ErrorInfo` (machine-readable `reason`,
//! domain `signpost.dev`) and, when a request field is at fault, a
//! `google.rpc.BadRequest` field violation, so clients never parse messages.

use signpost_control::ControlError;
use signpost_domain::{DomainError, ErrorKind};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Signpost error.
pub const ERROR_DOMAIN: &str = "signpost.dev";

pub(crate) fn status(code: Code, reason: &str, field: Option<&str>, message: String) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []);
    if let Some(field) = field {
        details.add_bad_request_violation(field, message.clone());
    }
    Status::with_error_details(code, message, details)
}

/// Maps a control-plane error to a status.
pub fn to_status(error: ControlError) -> Status {
    match error {
        ControlError::Domain(DomainError {
            kind,
            reason,
            field,
            message,
        }) => {
            let code = match kind {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::AlreadyExists => Code::AlreadyExists,
                ErrorKind::Conflict => Code::Aborted,
            };
            status(code, reason, field, message)
        }
        ControlError::Unauthenticated { reason, message } => {
            status(Code::Unauthenticated, reason, None, message)
        }
        ControlError::PermissionDenied(message) => {
            status(Code::PermissionDenied, "ROLE_NOT_ALLOWED", None, message)
        }
        ControlError::InvalidArgument {
            reason,
            field,
            message,
        } => status(Code::InvalidArgument, reason, Some(field), message),
        ControlError::External {
            reason,
            field,
            message,
        } => status(Code::FailedPrecondition, reason, Some(field), message),
        error @ ControlError::RequestIdReused(_) => status(
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
            Some("request_id"),
            error.to_string(),
        ),
        ControlError::Unavailable(message) => status(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            None,
            format!("the event store is unavailable: {message}"),
        ),
        ControlError::DeadlineExceeded(message) => {
            status(Code::DeadlineExceeded, "DEADLINE_EXCEEDED", None, message)
        }
        ControlError::Internal(message) => {
            tracing::error!(%message, "internal error");
            status(Code::Internal, "INTERNAL", None, "internal error".into())
        }
    }
}

/// A service that cannot answer yet (e.g. an index still catching up); retryable.
pub fn unavailable(reason: &str, message: impl Into<String>) -> Status {
    status(Code::Unavailable, reason, None, message.into())
}

/// A malformed request field found at the wire boundary.
pub fn invalid_field(reason: &str, field: &str, message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, reason, Some(field), message.into())
}
