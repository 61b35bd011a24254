//! The crate's one error type.

use crate::types::{ExpectedVersion, Position};

/// Why an event-log operation failed.
///
/// Rule-like refusals (`WrongExpectedVersion`, `IdempotencyKeyReused`, `EmptyCommit`,
/// `InvalidStreamId`, `DuplicateStreamInCommit`) mean nothing was appended and retrying the same
/// commit unchanged will fail the same way. `Unavailable` and `Closed` are about the store, not
/// the commit. `Corrupt` and `FormatMismatch` need an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// Optimistic concurrency check failed for one stream of the commit.
    #[error(
        "wrong expected version for stream {stream}: expected {expected}, actual version {actual}"
    )]
    WrongExpectedVersion {
        /// The stream whose version did not match.
        stream: String,
        /// What the commit expected.
        expected: ExpectedVersion,
        /// The stream's version when the commit was validated.
        actual: u64,
    },
    /// The same principal and request id were already committed with a different request.
    #[error("idempotency key reused with a different request: request id {request_id}")]
    IdempotencyKeyReused {
        /// The reused request id.
        request_id: String,
    },
    /// The commit carried no event at all.
    #[error("commit has no events")]
    EmptyCommit,
    /// A stream id is empty, too long or has characters outside `[A-Za-z0-9._:/-]`.
    #[error("invalid stream id: {0}")]
    InvalidStreamId(String),
    /// The commit names the same stream in two writes.
    #[error("stream {0} appears twice in one commit")]
    DuplicateStreamInCommit(String),
    /// The store on disk was written with a format this build does not read.
    #[error("store format version {found} is not supported (this build reads {supported})")]
    FormatMismatch {
        /// The format version found on disk.
        found: u32,
        /// The format version this build reads and writes.
        supported: u32,
    },
    /// Storage failed, or the store was poisoned by an earlier failed write or flush.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Stored data is damaged.
    #[error("event log corrupt at position {position}: {reason}")]
    Corrupt {
        /// The first position known to be damaged (0 for store metadata).
        position: Position,
        /// What is wrong.
        reason: String,
    },
    /// The store has shut down.
    #[error("event store closed")]
    Closed,
}

impl From<sled::Error> for LogError {
    fn from(error: sled::Error) -> Self {
        LogError::Unavailable(format!("sled: {error}"))
    }
}
