//! [`SledEventStore`]: the durable log on sled, with a group-commit sequencer.
//!
//! One dedicated thread (the sequencer) owns all writes. `append` sends its commit over a
//! bounded channel and awaits the answer. The sequencer takes everything waiting (up to
//! [`SledOptions::max_batch_commits`]), plans the batch (see `batch.rs`), writes it with one
//! atomic `apply_batch`, `flush`es (fsync) once, then publishes the new head and answers the
//! callers. Readers bound every read by the published head, so although sled holds a batch in
//! memory before its flush, nothing unflushed is ever returned.

mod keys;
pub mod raw;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prost::Message;
use signpost_schema::log::v1::EventEnvelope;
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch::{BatchPlan, CommittedState};
use crate::chain;
use crate::error::LogError;
use crate::record::IdempotencyRecord;
use crate::sequencing::{next_batch, poisoned_error, Request, SequencerThread};
use crate::store::EventStore;
use crate::subscription::Subscription;
use crate::types::{
    AppendOutcome, Commit, Head, IdempotencyKey, Position, StoredOutcome, StreamId,
};

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Tuning for [`SledEventStore::open`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Most commits written by one batch (one flush).
    pub max_batch_commits: usize,
    /// Commits that may wait for the sequencer before `append` itself waits.
    pub queue_capacity: usize,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// Most stream versions the sequencer caches; past it the cache is cleared and refilled
    /// from disk on demand.
    pub max_cached_stream_versions: usize,
    /// How long `open` waits for the directory's lock before refusing
    /// ([`DEFAULT_LOCK_WAIT`](crate::DEFAULT_LOCK_WAIT)). A store dropped in this process
    /// may hold the lock a moment longer, while sled's I/O threads finish its last writes;
    /// a store open elsewhere (another server) is refused once the wait ends.
    pub lock_wait: std::time::Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            max_batch_commits: 1024,
            queue_capacity: 4096,
            cache_capacity_bytes: 64 * 1024 * 1024,
            max_cached_stream_versions: 1_000_000,
            lock_wait: crate::locking::DEFAULT_LOCK_WAIT,
        }
    }
}

/// Counters of the sequencer's work since the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequencerStats {
    /// Batches written (each one `apply_batch` and one flush).
    pub batches: u64,
    /// Commits accepted into those batches.
    pub commits: u64,
    /// Events written.
    pub events: u64,
}

/// The durable event store on sled. Cheap to clone: clones share one store, which closes
/// (sequencer stopped, files released) when the last clone and subscription are dropped.
/// sled's I/O threads may keep the directory's lock a moment longer, which a reopen in the
/// same process waits out ([`SledOptions::lock_wait`]).
#[derive(Clone)]
pub struct SledEventStore {
    inner: Arc<SledInner>,
}

impl std::fmt::Debug for SledEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEventStore")
            .field("epoch", &self.inner.epoch)
            .field("head", &self.head().position)
            .finish()
    }
}

// Field order matters for drop: the sender goes first so that the sequencer sees its channel
// close, then `_sequencer` joins the thread, and only then is the database released.
struct SledInner {
    requests: mpsc::Sender<Request>,
    // Held only for its `Drop`, which joins the thread.
    _sequencer: SequencerThread,
    db: sled::Db,
    shared: Arc<Shared>,
    epoch: uuid::Uuid,
}

/// State the sequencer publishes to readers.
struct Shared {
    head: RwLock<Head>,
    head_tx: watch::Sender<Position>,
    poisoned: AtomicBool,
    batches: AtomicU64,
    commits: AtomicU64,
    events: AtomicU64,
    #[cfg(test)]
    fail_next_write: AtomicBool,
}

impl Shared {
    fn head(&self) -> Head {
        *self
            .head
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SledEventStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// A new store gets format version [`FORMAT_VERSION`] and a random epoch. An existing one
    /// must have the same format version ([`LogError::FormatMismatch`]); its head is reloaded
    /// and the last event's hash verified ([`LogError::Corrupt`] if the tail is broken).
    pub fn open(dir: &Path, options: SledOptions) -> Result<Self, LogError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            // The sequencer flushes every batch; a background flusher would only add fsyncs.
            .flush_every_ms(None);
        let db = open_sled_waiting_for_lock(&config, options.lock_wait)?;
        let (epoch, head) = load_or_initialize(&db)?;
        let (head_tx, _) = watch::channel(head.position);
        let shared = Arc::new(Shared {
            head: RwLock::new(head),
            head_tx,
            poisoned: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::channel(options.queue_capacity.max(1));
        // sled's flush ends with `sync_file_range` on Linux, which neither flushes the
        // device's write cache nor the file's size: not durable across a power loss. An
        // `fdatasync` of sled's data file after each flush is.
        let data_file = std::fs::File::open(dir.join("db"))
            .map_err(|e| LogError::Unavailable(format!("opening the log's data file: {e}")))?;
        let sequencer = Sequencer {
            data_file,
            db: db.clone(),
            requests: receiver,
            shared: shared.clone(),
            versions: HashMap::new(),
            head,
            options,
            poisoned: false,
        };
        let handle = std::thread::Builder::new()
            .name("eventlog-sequencer".to_owned())
            .spawn(move || sequencer.run())
            .map_err(|error| LogError::Unavailable(format!("cannot start sequencer: {error}")))?;
        tracing::info!(position = head.position, %epoch, "event log opened");
        Ok(SledEventStore {
            inner: Arc::new(SledInner {
                requests,
                _sequencer: SequencerThread(Some(handle)),
                db,
                shared,
                epoch,
            }),
        })
    }

    /// What the sequencer did since the store was opened.
    pub fn stats(&self) -> SequencerStats {
        let shared = &self.inner.shared;
        SequencerStats {
            batches: shared.batches.load(Ordering::Relaxed),
            commits: shared.commits.load(Ordering::Relaxed),
            events: shared.events.load(Ordering::Relaxed),
        }
    }

    /// Whether a failed write or flush has poisoned the store (every append now fails).
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    async fn blocking<T, F>(&self, read: F) -> Result<T, LogError>
    where
        F: FnOnce(&sled::Db) -> Result<T, LogError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(|error| LogError::Unavailable(format!("read task failed: {error}")))?
    }
}

/// Opens a sled database, retrying while its directory's lock is held, for at most `wait`
/// (`locking.rs`: sled's I/O threads may hold it a moment after every handle of a
/// database is dropped, so a database closed and opened again in one process, such as the
/// audit index's reopen, may find its own lock still held).
pub fn open_sled_waiting_for_lock(
    config: &sled::Config,
    wait: std::time::Duration,
) -> sled::Result<sled::Db> {
    crate::locking::retry_while_locked(
        wait,
        || config.open(),
        |error| matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock")),
    )
}

/// Reads format, epoch and head, or writes them for a new store; verifies the tail.
fn load_or_initialize(db: &sled::Db) -> Result<(uuid::Uuid, Head), LogError> {
    let Some(format) = db.get(keys::FORMAT_KEY)? else {
        if !db.is_empty() {
            return Err(LogError::Corrupt {
                position: 0,
                reason: "store has data but no format version".to_owned(),
            });
        }
        let epoch = uuid::Uuid::new_v4();
        let mut batch = sled::Batch::default();
        batch.insert(keys::FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()[..]);
        batch.insert(keys::EPOCH_KEY, &epoch.as_bytes()[..]);
        batch.insert(keys::HEAD_KEY, &keys::head_value(Head::EMPTY)[..]);
        db.apply_batch(batch)?;
        db.flush()?;
        return Ok((epoch, Head::EMPTY));
    };
    let found = u32::from_be_bytes(format.as_ref().try_into().map_err(|_| LogError::Corrupt {
        position: 0,
        reason: "format version is not 4 bytes".to_owned(),
    })?);
    if found != FORMAT_VERSION {
        return Err(LogError::FormatMismatch {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let epoch = db
        .get(keys::EPOCH_KEY)?
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| LogError::Corrupt {
            position: 0,
            reason: "missing or malformed store epoch".to_owned(),
        })?;
    let head = match db.get(keys::HEAD_KEY)? {
        Some(bytes) => keys::parse_head(&bytes)?,
        None => {
            return Err(LogError::Corrupt {
                position: 0,
                reason: "missing head".to_owned(),
            })
        }
    };
    verify_tail(db, head)?;
    Ok((epoch, head))
}

/// Checks that the recorded head event exists, hashes to the recorded head hash, and that no
/// event lies beyond it.
fn verify_tail(db: &sled::Db, head: Head) -> Result<(), LogError> {
    if let Some((key, _)) = db.get_gt(keys::event(head.position))? {
        if let Some(position) = keys::event_position(&key) {
            return Err(LogError::Corrupt {
                position,
                reason: format!("event stored beyond the recorded head {}", head.position),
            });
        }
    }
    if head.position == 0 {
        return Ok(());
    }
    let corrupt = |reason: String| LogError::Corrupt {
        position: head.position,
        reason,
    };
    let bytes = db
        .get(keys::event(head.position))?
        .ok_or_else(|| corrupt("the head event is missing".to_owned()))?;
    let envelope = EventEnvelope::decode(bytes.as_ref())
        .map_err(|error| corrupt(format!("undecodable head event: {error}")))?;
    if envelope.position != head.position {
        return Err(corrupt(format!(
            "head event claims position {}",
            envelope.position
        )));
    }
    let computed = chain::envelope_hash(&envelope);
    if *envelope.hash != computed || computed != head.hash {
        return Err(corrupt("head event hash does not match".to_owned()));
    }
    Ok(())
}

fn decode_event(key: &[u8], value: &[u8]) -> Result<EventEnvelope, LogError> {
    EventEnvelope::decode(value).map_err(|error| LogError::Corrupt {
        position: keys::event_position(key).unwrap_or(0),
        reason: format!("undecodable event: {error}"),
    })
}

/// The single writer.
struct Sequencer {
    /// sled's data file, for `fdatasync` after each flush (see `SledEventStore::open`).
    data_file: std::fs::File,
    db: sled::Db,
    requests: mpsc::Receiver<Request>,
    shared: Arc<Shared>,
    /// Committed stream versions (a cache of `v/` keys).
    versions: HashMap<StreamId, u64>,
    head: Head,
    options: SledOptions,
    poisoned: bool,
}

/// The committed state as the sequencer sees it: everything on disk is committed, because each
/// batch is flushed before the next is planned.
struct SequencerView<'a> {
    db: &'a sled::Db,
    versions: &'a mut HashMap<StreamId, u64>,
}

impl CommittedState for SequencerView<'_> {
    fn stream_version(&mut self, stream: &StreamId) -> Result<u64, LogError> {
        if let Some(version) = self.versions.get(stream) {
            return Ok(*version);
        }
        let version = match self.db.get(keys::stream_version(stream))? {
            Some(bytes) => keys::u64_value(&bytes, "stream version")?,
            None => 0,
        };
        self.versions.insert(stream.clone(), version);
        Ok(version)
    }

    fn idempotency(&mut self, key: &IdempotencyKey) -> Result<Option<StoredOutcome>, LogError> {
        load_idempotency(self.db, key)
    }
}

fn load_idempotency(
    db: &sled::Db,
    key: &IdempotencyKey,
) -> Result<Option<StoredOutcome>, LogError> {
    let Some(bytes) = db.get(keys::idempotency(key))? else {
        return Ok(None);
    };
    let record = IdempotencyRecord::decode(bytes.as_ref()).map_err(|error| LogError::Corrupt {
        position: 0,
        reason: format!("undecodable idempotency record: {error}"),
    })?;
    record.into_stored().map(Some)
}

impl Sequencer {
    fn run(mut self) {
        let max_batch = self.options.max_batch_commits.max(1);
        let mut requests = Vec::with_capacity(max_batch);
        while next_batch(&mut self.requests, &mut requests, max_batch) {
            self.commit_batch(&mut requests);
        }
        tracing::debug!("event log sequencer stopped");
    }

    fn commit_batch(&mut self, requests: &mut Vec<Request>) {
        if self.poisoned {
            for request in requests.drain(..) {
                let _ = request.reply.send(Err(poisoned_error()));
            }
            return;
        }
        if self.versions.len() > self.options.max_cached_stream_versions {
            self.versions.clear();
        }
        let mut plan = BatchPlan::new(self.head);
        let mut answers = Vec::with_capacity(requests.len());
        let mut accepted = 0u64;
        {
            let mut view = SequencerView {
                db: &self.db,
                versions: &mut self.versions,
            };
            for request in requests.drain(..) {
                let answer = plan.add(request.commit, &mut view);
                if matches!(answer, Ok(AppendOutcome::Committed(_))) {
                    accepted += 1;
                }
                answers.push((request.reply, answer));
            }
        }
        if plan.is_empty() {
            // Only refusals and duplicates of committed commands: nothing to make durable.
            for (reply, answer) in answers {
                let _ = reply.send(answer);
            }
            return;
        }

        if let Err(error) = self.write(&plan) {
            // sled may hold part of the batch in memory, and our caches are ahead of the disk:
            // nothing here can be trusted any more. A restart reopens from what was flushed.
            self.poisoned = true;
            self.shared.poisoned.store(true, Ordering::Release);
            tracing::error!(%error, position = self.head.position, "event log write failed, store poisoned");
            for (reply, _) in answers {
                let _ = reply.send(Err(LogError::Unavailable(format!(
                    "event log write failed: {error}"
                ))));
            }
            return;
        }

        let head = plan.head();
        self.head = head;
        self.versions.extend(plan.stream_versions);
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.shared.commits.fetch_add(accepted, Ordering::Relaxed);
        self.shared
            .events
            .fetch_add(plan.envelopes.len() as u64, Ordering::Relaxed);
        // Publish before answering: whoever hears "committed" can read it back.
        *self
            .shared
            .head
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = head;
        self.shared.head_tx.send_replace(head.position);
        tracing::trace!(
            position = head.position,
            commits = accepted,
            "batch committed"
        );
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    /// One atomic batch, one flush.
    fn write(&self, plan: &BatchPlan) -> Result<(), LogError> {
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::AcqRel) {
            return Err(LogError::Unavailable("injected write failure".to_owned()));
        }
        let mut batch = sled::Batch::default();
        for envelope in &plan.envelopes {
            batch.insert(
                &keys::event(envelope.position)[..],
                envelope.encode_to_vec(),
            );
            batch.insert(
                keys::stream_index(&envelope.stream_id, envelope.stream_version),
                &envelope.position.to_be_bytes()[..],
            );
        }
        for (stream, version) in &plan.stream_versions {
            batch.insert(keys::stream_version(stream), &version.to_be_bytes()[..]);
        }
        for (key, stored) in &plan.idempotency {
            batch.insert(
                keys::idempotency(key),
                IdempotencyRecord::new(key, stored).encode_to_vec(),
            );
        }
        batch.insert(keys::HEAD_KEY, &keys::head_value(plan.head())[..]);
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(|e| LogError::Unavailable(format!("fdatasync of the log: {e}")))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventStore for SledEventStore {
    async fn append(&self, commit: Commit) -> Result<AppendOutcome, LogError> {
        if self.is_poisoned() {
            return Err(poisoned_error());
        }
        let stopped = || LogError::Unavailable("event log sequencer stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request { commit, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn read_range(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let from = from.max(1);
        let head = self.head().position;
        if limit == 0 || from > head {
            return Ok(Vec::new());
        }
        let to = head.min(from.saturating_add(limit as u64 - 1));
        self.blocking(move |db| {
            db.range(keys::event(from)..=keys::event(to))
                .map(|entry| {
                    let (key, value) = entry?;
                    decode_event(&key, &value)
                })
                .collect()
        })
        .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let head = self.head().position;
        let stream = stream.as_str().to_owned();
        self.blocking(move |db| {
            let prefix = keys::stream_index_prefix(&stream);
            let start = keys::stream_index(&stream, from_version.max(1));
            let mut events = Vec::new();
            for entry in db.range(start..) {
                let (key, value) = entry?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let position = keys::u64_value(&value, "stream index entry")?;
                // Versions grow with positions: past the head, everything is unpublished.
                if position > head || events.len() == limit {
                    break;
                }
                let event_key = keys::event(position);
                let bytes = db.get(event_key)?.ok_or_else(|| LogError::Corrupt {
                    position,
                    reason: format!("stream {stream} indexes a missing event"),
                })?;
                events.push(decode_event(&event_key, &bytes)?);
            }
            Ok(events)
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        let head = self.head().position;
        let prefix = keys::stream_index_prefix(stream.as_str());
        self.blocking(move |db| {
            // The newest index entry at or below the head; entries above it are unpublished.
            for entry in db.scan_prefix(&prefix).rev() {
                let (key, value) = entry?;
                if keys::u64_value(&value, "stream index entry")? <= head {
                    return keys::stream_index_version(&key).ok_or_else(|| LogError::Corrupt {
                        position: 0,
                        reason: "malformed stream index key".to_owned(),
                    });
                }
            }
            Ok(0)
        })
        .await
    }

    async fn lookup_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredOutcome>, LogError> {
        let head = self.head().position;
        let key = key.clone();
        self.blocking(move |db| {
            Ok(load_idempotency(db, &key)?.filter(|stored| stored.committed.last_position <= head))
        })
        .await
    }

    fn head(&self) -> Head {
        self.inner.shared.head()
    }

    fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.shared.head_tx.subscribe()
    }

    fn store_epoch(&self) -> uuid::Uuid {
        self.inner.epoch
    }

    fn subscribe(&self, from: Position) -> Subscription {
        Subscription::pull_on_notify(self.clone(), from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CommitMeta, ExpectedVersion, NewEvent, StreamWrite};
    use signpost_schema::log::v1::Actor;

    fn commit(stream: &str) -> Commit {
        Commit {
            writes: vec![StreamWrite {
                stream: StreamId::new(stream).unwrap(),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_type: "tested".into(),
                    payload: bytes::Bytes::from_static(b"payload"),
                }],
            }],
            meta: CommitMeta {
                actor: Actor::default(),
                correlation_id: "c".into(),
                request_id: None,
            },
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn failed_write_poisons_the_store_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledEventStore::open(dir.path(), SledOptions::default()).unwrap();
        store.append(commit("a")).await.unwrap();
        let head_before = store.head();

        store
            .inner
            .shared
            .fail_next_write
            .store(true, Ordering::Release);
        assert!(matches!(
            store.append(commit("a")).await,
            Err(LogError::Unavailable(_))
        ));
        assert!(store.is_poisoned());
        // Later appends fail too, even though the injected failure was one-shot.
        assert!(matches!(
            store.append(commit("b")).await,
            Err(LogError::Unavailable(_))
        ));
        assert_eq!(store.head(), head_before);
        drop(store);

        let store = SledEventStore::open(dir.path(), SledOptions::default()).unwrap();
        assert_eq!(store.head(), head_before);
        let AppendOutcome::Committed(committed) = store.append(commit("a")).await.unwrap() else {
            panic!("expected a commit");
        };
        assert_eq!(committed.first_position, 2);
        assert_eq!(
            store
                .stream_version(&StreamId::new("a").unwrap())
                .await
                .unwrap(),
            2
        );
    }
}
