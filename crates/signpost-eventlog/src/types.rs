//! The values that go into and come out of the log.

use std::fmt;

use bytes::Bytes;

use crate::error::LogError;
use signpost_schema::log::v1::Actor;

/// A global position in the log: starts at 1, gapless, in commit order. 0 means "nothing yet".
pub type Position = u64;

/// The name of one stream (one aggregate), e.g. `organization-0190…`.
///
/// Valid ids are 1..=256 bytes of `[A-Za-z0-9._:/-]`. The restricted alphabet keeps ids safe to
/// embed in storage keys (no NUL separator can appear) and in logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted stream id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates and wraps a stream id.
    pub fn new(id: impl Into<String>) -> Result<Self, LogError> {
        let id = id.into();
        if id.is_empty() {
            return Err(LogError::InvalidStreamId("stream id is empty".to_owned()));
        }
        if id.len() > Self::MAX_LEN {
            return Err(LogError::InvalidStreamId(format!(
                "stream id is {} bytes long, at most {} allowed",
                id.len(),
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
        {
            return Err(LogError::InvalidStreamId(format!(
                "stream id {id:?} contains {bad:?}, only [A-Za-z0-9._:/-] allowed"
            )));
        }
        Ok(StreamId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a stream write expects of its stream's current version (optimistic concurrency).
///
/// Stream versions start at 1 for the first event; a stream without events has version 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (0 is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// One event to append: the store fills in everything else of the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The payload's kind, e.g. `organization_created`.
    pub event_type: String,
    /// The encoded payload; opaque to the log.
    pub payload: Bytes,
}

/// Events for one stream, guarded by an expected version.
///
/// A write with no events only checks the expected version: it lets a commit depend on another
/// stream staying unchanged without writing to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    /// The stream to append to.
    pub stream: StreamId,
    /// What the stream's version must be when the commit is validated.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// Who and why: copied into every envelope of a commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitMeta {
    /// The principal behind the commit.
    pub actor: Actor,
    /// Ties together the events of one command (and commands of one workflow).
    pub correlation_id: String,
    /// The command's request id, recorded in each envelope when given.
    pub request_id: Option<String>,
}

/// Identifies one command for idempotent retries: a request id is scoped by its principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// The authenticated caller (e.g. the API token id).
    pub principal: String,
    /// The caller's request id for this command.
    pub request_id: String,
}

/// Idempotency for a commit: stored with it, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key under which the outcome is remembered.
    pub key: IdempotencyKey,
    /// A digest of the request, to refuse the same key for a different request.
    pub request_fingerprint: [u8; 32],
    /// The caller's encoded answer, returned as-is to retries.
    pub outcome: Bytes,
}

/// One atomic commit: several streams may be written, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The stream writes; each stream at most once.
    pub writes: Vec<StreamWrite>,
    /// Actor, correlation and request ids for every envelope.
    pub meta: CommitMeta,
    /// When present, a retry with the same key returns this commit's outcome.
    pub idempotency: Option<Idempotency>,
}

/// Where a commit landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Position of the commit's first event.
    pub first_position: Position,
    /// Position of the commit's last event.
    pub last_position: Position,
    /// Each written stream's version after the commit, in the order of the writes.
    pub stream_versions: Vec<(StreamId, u64)>,
}

/// What an idempotent commit left behind, returned to its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    /// Where the original commit landed.
    pub committed: Committed,
    /// The original request's fingerprint.
    pub request_fingerprint: [u8; 32],
    /// The original commit's outcome bytes.
    pub outcome: Bytes,
}

/// The answer to a successful `append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The commit's events are durable and visible.
    Committed(Committed),
    /// The same key was already committed: nothing appended.
    Duplicate(StoredOutcome),
}

/// The last durable, visible event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its position; 0 for an empty log.
    pub position: Position,
    /// Its hash; all zeros for an empty log.
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        position: 0,
        hash: [0; 32],
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_accepts_the_documented_alphabet() {
        assert!(StreamId::new("organization-0190:a/b_c.d").is_ok());
        assert!(StreamId::new("x".repeat(256)).is_ok());
    }

    #[test]
    fn stream_id_refuses_empty_long_and_odd_characters() {
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("x".repeat(257)).is_err());
        assert!(StreamId::new("a b").is_err());
        assert!(StreamId::new("a\0b").is_err());
        assert!(StreamId::new("é").is_err());
    }

    #[test]
    fn expected_version_admits() {
        assert!(ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0));
        assert!(!ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(0).admits(0));
        assert!(ExpectedVersion::Exact(3).admits(3));
        assert!(!ExpectedVersion::Exact(3).admits(4));
    }
}
