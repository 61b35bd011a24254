//! The [`EventStore`] trait: what every log implementation promises.

use signpost_schema::log::v1::EventEnvelope;

use crate::error::LogError;
use crate::subscription::Subscription;
use crate::types::{
    AppendOutcome, Commit, Head, IdempotencyKey, Position, StoredOutcome, StreamId,
};

/// A durable, append-only, hash-chained event log.
///
/// The contract (proven for every implementation by the `contract` suite):
/// - positions are global, start at 1, have no gaps and follow commit order;
/// - each event's `stream_version` is its stream's version after it; each stream write is
///   checked against its [`ExpectedVersion`](crate::ExpectedVersion) and a commit is all or
///   nothing;
/// - an acknowledged commit is durable, and nothing is visible to readers (`read_*`, `head`,
///   `subscribe`, `lookup_idempotency`) before it is durable;
/// - a commit whose idempotency key was already committed appends nothing and returns the
///   first outcome.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends one commit atomically; answers once it is durable and visible.
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, LogError>;

    /// Up to `limit` events with position `>= from`, in position order, never above the head.
    async fn read_range(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError>;

    /// The same events as [`EventStore::read_range`], each as the bytes of its encoded
    /// envelope: what the chain verifier hashes. A store that keeps envelopes encoded hands
    /// them over as stored, without decoding them; the default encodes what `read_range`
    /// decoded. A stored envelope that is damaged is a [`LogError::Corrupt`] here only when
    /// it cannot be told apart from its neighbours (a failed checksum); bytes that merely do
    /// not decode are handed over for the caller to find out.
    async fn read_range_encoded(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<bytes::Bytes>, LogError> {
        use prost::Message;
        let events = self.read_range(from, limit).await?;
        Ok(events
            .into_iter()
            .map(|event| bytes::Bytes::from(event.encode_to_vec()))
            .collect())
    }

    /// Up to `limit` events of `stream` with version `>= from_version`, in version order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError>;

    /// Every event of each of `streams`, in the order the streams are given (a stream
    /// without events gets an empty list): [`EventStore::read_stream`] from version 1 for
    /// many streams at once, as a page of views folded from the log needs. The default
    /// reads them one after the other; a store that can reads them in one pass, in log
    /// order.
    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<Vec<EventEnvelope>>, LogError> {
        let mut events = Vec::with_capacity(streams.len());
        for stream in streams {
            events.push(self.read_stream(stream, 1, usize::MAX).await?);
        }
        Ok(events)
    }

    /// The stream's committed version; 0 when it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError>;

    /// The committed outcome stored under `key`, if any: lets callers skip work for a retry.
    async fn lookup_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredOutcome>, LogError>;

    /// The last durable, visible event (position 0 and a zero hash for an empty log).
    fn head(&self) -> Head;

    /// Watches the head position; changes only after the events up to it are readable.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<Position>;

    /// A random id fixed when the store was created: tells a rebuilt store from the old one.
    fn store_epoch(&self) -> uuid::Uuid;

    /// Every event with position `>= from`, exactly once, in order: history first, then live.
    fn subscribe(&self, from: Position) -> Subscription;
}
