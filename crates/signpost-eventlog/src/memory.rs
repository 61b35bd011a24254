//! [`MemoryEventStore`]: the contract without a disk, for tests of code built on the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use signpost_schema::log::v1::EventEnvelope;
use tokio::sync::watch;

use crate::batch::{BatchPlan, CommittedState};
use crate::error::LogError;
use crate::store::EventStore;
use crate::subscription::Subscription;
use crate::types::{
    AppendOutcome, Commit, Head, IdempotencyKey, Position, StoredOutcome, StreamId,
};

/// An in-memory event store with the same semantics as the sled store ("durable" meaning
/// "committed under the lock"). Cheap to clone: clones share one log.
#[derive(Clone)]
pub struct MemoryEventStore {
    inner: Arc<MemoryInner>,
}

impl std::fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventStore")
            .field("epoch", &self.inner.epoch)
            .field("head", &self.head().position)
            .finish()
    }
}

struct MemoryInner {
    state: Mutex<MemoryState>,
    head_tx: watch::Sender<Position>,
    epoch: uuid::Uuid,
}

#[derive(Default)]
struct MemoryState {
    /// `events[i]` has position `i + 1`.
    events: Vec<EventEnvelope>,
    /// Each stream's positions; `streams[s][v - 1]` is the position of version `v`.
    streams: HashMap<StreamId, Vec<Position>>,
    idempotency: HashMap<IdempotencyKey, StoredOutcome>,
    head: Option<Head>,
}

impl CommittedState for MemoryState {
    fn stream_version(&mut self, stream: &StreamId) -> Result<u64, LogError> {
        Ok(self.streams.get(stream).map_or(0, |p| p.len() as u64))
    }

    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<StoredOutcome>, LogError> {
        Ok(self.idempotency.get(key).cloned())
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// An empty log with a fresh epoch.
    pub fn new() -> Self {
        let (head_tx, _) = watch::channel(0);
        MemoryEventStore {
            inner: Arc::new(MemoryInner {
                state: Mutex::new(MemoryState::default()),
                head_tx,
                epoch: uuid::Uuid::new_v4(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave half a commit behind (commits are applied
        // after validation, without fallible steps), so a poisoned lock is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryEventStore {
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, LogError> {
        let mut state = self.state();
        let mut plan = BatchPlan::new(state.head.unwrap_or(Head::EMPTY));
        let outcome = plan.add(commit, &mut *state)?;
        if plan.is_empty() {
            return Ok(outcome);
        }
        let head = plan.head();
        for envelope in plan.envelopes {
            let stream = StreamId::new(envelope.stream_id.clone())?;
            state
                .streams
                .entry(stream)
                .or_default()
                .push(envelope.position);
            state.events.push(envelope);
        }
        state.idempotency.extend(plan.idempotency);
        state.head = Some(head);
        // Published under the lock so that the watched head never moves backwards.
        self.inner.head_tx.send_replace(head.position);
        Ok(outcome)
    }

    async fn read_range(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let state = self.state();
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let state = self.state();
        let Some(positions) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
        Ok(positions
            .iter()
            .skip(start)
            .take(limit)
            .map(|position| state.events[(*position - 1) as usize].clone())
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        self.state().stream_version(stream)
    }

    async fn lookup_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredOutcome>, LogError> {
        self.state().idempotency(key)
    }

    fn head(&self) -> Head {
        self.state().head.unwrap_or(Head::EMPTY)
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head_tx.subscribe()
    }

    fn store_epoch(&self) -> uuid::Uuid {
        self.inner.epoch
    }

    fn subscribe(&self, from: Position) -> Subscription {
        Subscription::pull_on_notify(self.clone(), from)
    }
}
