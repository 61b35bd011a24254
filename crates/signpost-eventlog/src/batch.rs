//! Validating commits and turning them into envelopes: the part of the sequencer that both
//! stores share, so that their semantics cannot drift apart.
//!
//! A [`BatchPlan`] starts at the committed head and takes commits one at a time. Each commit is
//! validated against the committed state *plus* what earlier commits of the same batch already
//! wrote; a rejected commit leaves the plan untouched, so it never affects the others. The store
//! then persists the plan's envelopes, stream versions and idempotency records atomically.

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use signpost_schema::log::v1::EventEnvelope;

use crate::chain;
use crate::error::LogError;
use crate::types::{
    AppendOutcome, Commit, Committed, Head, IdempotencyKey, Position, StoredOutcome, StreamId,
};

/// Read access to the committed state a plan builds on.
pub(crate) trait CommittedState {
    /// The stream's committed version (0 when it has no events).
    fn stream_version(&mut self, stream: &StreamId) -> Result<u64, LogError>;
    /// The committed idempotency record for `key`.
    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<StoredOutcome>, LogError>;
}

/// The writes of one batch, built commit by commit.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    tail: Head,
    /// New envelopes, in position order.
    pub envelopes: Vec<EventEnvelope>,
    /// Each stream written by the batch and its version after the batch.
    pub stream_versions: HashMap<StreamId, u64, foldhash::fast::RandomState>,
    /// Idempotency records written by the batch.
    pub idempotency: HashMap<IdempotencyKey, StoredOutcome, foldhash::fast::RandomState>,
}

impl BatchPlan {
    /// An empty plan continuing the log after `head`.
    pub fn new(head: Head) -> Self {
        Self::with_capacity(head, 0)
    }

    /// An empty plan continuing the log after `head`, with room for `commits` commits of
    /// one event on one stream each (a batch of group assignments grows no table).
    pub fn with_capacity(head: Head, commits: usize) -> Self {
        BatchPlan {
            tail: head,
            envelopes: Vec::with_capacity(commits),
            stream_versions: HashMap::with_capacity_and_hasher(commits, Default::default()),
            idempotency: HashMap::with_capacity_and_hasher(commits, Default::default()),
        }
    }

    /// The head once this plan is committed.
    pub fn head(&self) -> Head {
        self.tail
    }

    /// Whether the plan writes anything.
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }

    /// Validates `commit` and, if accepted, adds its events to the plan.
    pub fn add(
        &mut self,
        commit: Commit,
        state: &mut impl CommittedState,
    ) -> Result<AppendOutcome, LogError> {
        let event_count: usize = commit.writes.iter().map(|w| w.events.len()).sum();
        if event_count == 0 {
            return Err(LogError::EmptyCommit);
        }
        let mut seen = HashSet::with_capacity(commit.writes.len());
        for write in &commit.writes {
            if !seen.insert(&write.stream) {
                return Err(LogError::DuplicateStreamInCommit(write.stream.to_string()));
            }
        }

        // Idempotency before versions: a retry of a committed command must get its first
        // outcome even though the streams have moved on since.
        if let Some(idempotency) = &commit.idempotency {
            let stored = match self.idempotency.get(&idempotency.key) {
                Some(stored) => Some(stored.clone()),
                None => state.idempotency(&idempotency.key)?,
            };
            if let Some(stored) = stored {
                if stored.request_fingerprint == idempotency.request_fingerprint {
                    return Ok(AppendOutcome::Duplicate(stored));
                }
                return Err(LogError::IdempotencyKeyReused {
                    request_id: idempotency.key.request_id.clone(),
                });
            }
        }

        let mut current_versions = Vec::with_capacity(commit.writes.len());
        for write in &commit.writes {
            let actual = match self.stream_versions.get(&write.stream) {
                Some(version) => *version,
                None => state.stream_version(&write.stream)?,
            };
            if !write.expected.admits(actual) {
                return Err(LogError::WrongExpectedVersion {
                    stream: write.stream.to_string(),
                    expected: write.expected,
                    actual,
                });
            }
            current_versions.push(actual);
        }

        // Accepted: from here on nothing can fail, so the plan never holds half a commit.
        let recorded_at = prost_types::Timestamp::from(SystemTime::now());
        let request_id = commit.meta.request_id.clone().unwrap_or_default();
        let first_position: Position = self.tail.position + 1;
        let mut stream_versions = Vec::with_capacity(commit.writes.len());
        for (write, mut version) in commit.writes.into_iter().zip(current_versions) {
            for event in write.events {
                version += 1;
                let mut envelope = EventEnvelope {
                    position: self.tail.position + 1,
                    stream_id: write.stream.as_str().to_owned(),
                    stream_version: version,
                    event_id: uuid::Uuid::now_v7().to_string(),
                    recorded_at: Some(recorded_at),
                    actor: Some(commit.meta.actor.clone()),
                    correlation_id: commit.meta.correlation_id.clone(),
                    request_id: request_id.clone(),
                    event_type: event.event_type,
                    payload: event.payload,
                    previous_hash: Bytes::copy_from_slice(&self.tail.hash),
                    hash: Bytes::new(),
                    commit_last_position: first_position + event_count as u64 - 1,
                };
                let hash = chain::seal(&mut envelope);
                self.tail = Head {
                    position: envelope.position,
                    hash,
                };
                self.envelopes.push(envelope);
            }
            self.stream_versions.insert(write.stream.clone(), version);
            stream_versions.push((write.stream, version));
        }
        let committed = Committed {
            first_position,
            last_position: self.tail.position,
            stream_versions,
        };
        if let Some(idempotency) = commit.idempotency {
            self.idempotency.insert(
                idempotency.key,
                StoredOutcome {
                    committed: committed.clone(),
                    request_fingerprint: idempotency.request_fingerprint,
                    outcome: idempotency.outcome,
                },
            );
        }
        Ok(AppendOutcome::Committed(committed))
    }
}
