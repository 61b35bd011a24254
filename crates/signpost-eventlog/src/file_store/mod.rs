//! [`FileEventStore`]: the log as append-only segment files, with a group-commit sequencer.
//!
//! One dedicated thread (the sequencer) owns all writes, exactly as in the sled store: `append`
//! sends its commit over a bounded channel; the sequencer takes everything waiting (up to
//! [`FileOptions::max_batch_commits`]), plans the batch (`batch.rs`), encodes it as **one
//! frame**, appends it with **one `write`** and makes it durable with **one `fdatasync`**, then
//! extends the in-memory indexes, publishes the new head and answers the callers. Nothing is
//! indexed before its `fdatasync` returned, and every read goes through the index, so nothing
//! unsynced is ever visible.
//!
//! The disk layout (see `format.rs` for the bytes):
//!
//! ```text
//! <dir>/LOCK                 flock'ed by the open store (and by the raw tools)
//! <dir>/meta                 format version and epoch, written once (temp file, fsync, rename)
//! <dir>/index                the index as the last clean close left it (checkpoint.rs): a
//!                            cache the next open checks against the segments, never data
//! <dir>/segment-NNNNNNNN.log frames: [magic|len|crc|header crc] records… HEAD record,
//!                            then possibly zeros written ahead
//! ```
//!
//! After answering a batch the sequencer keeps zeros written ahead of the data
//! ([`FileOptions::preallocate_bytes`]), so that a frame's `fdatasync` flushes data only and
//! does not also wait for a filesystem journal commit (as it must when the file grows).
//!
//! At open one sequential scan of the segments (1 MiB buffered reads) checks every frame's
//! checksum and rebuilds the indexes: slot → record location (12 bytes per event), stream →
//! its positions, idempotency key hash → record location (the record is read back on lookup),
//! and the head. A torn tail (the last, never acknowledged batch) is cut; damage followed by
//! valid data fails the open with [`LogError::Corrupt`]; see `recover.rs` for the rules. When
//! the store closes cleanly the sequencer saves the index (`<dir>/index`); the next open still
//! reads and checks every frame, but takes the events and streams the saved index covers from
//! it once the frames bear it out, and indexes only what was appended after it
//! (`checkpoint.rs`).
//!
//! Reads `pread` contiguous runs: `read_range` of N consecutive events is one read (up to
//! 8 MiB), then each record's checksum is checked and its envelope decoded. The last batch
//! written stays in memory as its envelopes (up to [`RECENT_BATCH_EVENTS`]) until the next,
//! and a `read_range` within it copies them instead: the projections following the head
//! read every batch back just after it was written.
//! [`FileEventStore::scan`] is the same, as a blocking iterator for start-up code.

mod checkpoint;
mod format;
mod index;
pub mod raw;
mod read;
mod recover;
mod sequencer;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message;
use signpost_schema::log::v1::EventEnvelope;
use tokio::sync::{mpsc, oneshot, watch};

pub use format::FORMAT_VERSION;

use crate::error::LogError;
use crate::sequencing::{poisoned_error, SequencerThread};
use crate::sled_store::SequencerStats;
use crate::store::EventStore;
use crate::subscription::Subscription;
use crate::types::{
    AppendOutcome, Commit, Head, IdempotencyKey, Position, StoredOutcome, StreamId,
};
use format::{io_error, IdempotencyRecord, KIND_IDEMPOTENCY};
use index::{Index, Location};
use read::{Item, Segments};
use sequencer::{Request, Sequencer};

/// Tuning for [`FileEventStore::open`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Most commits written by one batch (one frame, one `fdatasync`).
    pub max_batch_commits: usize,
    /// Commits that may wait for the sequencer before `append` itself waits.
    pub queue_capacity: usize,
    /// A segment file is closed to new frames once the next frame would take it past this
    /// size (a frame larger than this gets a segment of its own). At most 1 TiB.
    pub segment_bytes: u64,
    /// Zeros written (and synced) ahead of the log's end, 0 for none. A `fdatasync` after a
    /// write past the end of a file must also commit the filesystem's journal (the file's size
    /// changed), a second disk round trip shared with every other writer of the filesystem; a
    /// write over blocks that already hold zeros needs only its data flushed. With this, the
    /// journal is paid once per this many bytes instead of once per batch. The writer tops
    /// the zeros up after answering a batch, once less than half of this is left.
    pub preallocate_bytes: u64,
    /// How long `open` waits for the directory's lock before refusing
    /// ([`DEFAULT_LOCK_WAIT`](crate::DEFAULT_LOCK_WAIT)): a child process another thread
    /// of this process is starting holds a copy of the lock's descriptor until its exec.
    /// A store open elsewhere (another server) is refused once the wait ends.
    pub lock_wait: std::time::Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            max_batch_commits: 1024,
            queue_capacity: 4096,
            segment_bytes: 256 << 20,
            preallocate_bytes: 4 << 20,
            lock_wait: crate::locking::DEFAULT_LOCK_WAIT,
        }
    }
}

/// The durable event store on append-only segment files. Cheap to clone: clones share one
/// store, which closes (sequencer stopped, directory unlocked) when the last clone,
/// subscription and [`FileScan`] are dropped.
#[derive(Clone)]
pub struct FileEventStore {
    inner: Arc<FileInner>,
}

impl std::fmt::Debug for FileEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEventStore")
            .field("epoch", &self.inner.epoch)
            .field("head", &self.head().position)
            .finish()
    }
}

// Field order matters for drop: the sender goes first so that the sequencer sees its channel
// close, then `_sequencer` joins the thread, and only then is the directory unlocked.
struct FileInner {
    requests: mpsc::Sender<Request>,
    // Held only for its `Drop`, which joins the thread.
    _sequencer: SequencerThread,
    shared: Arc<Shared>,
    epoch: uuid::Uuid,
    /// Whether the open took its index from the checkpoint (up to the place it covers).
    from_checkpoint: bool,
    // Held only for the flock on `<dir>/LOCK`, released when the file is closed.
    _lock: Arc<File>,
}

/// What the sequencer publishes to readers.
pub(crate) struct Shared {
    index: RwLock<Index>,
    /// The last batch written (when it held at most [`RECENT_BATCH_EVENTS`] events), its
    /// envelopes as they were encoded into its frame.
    recent: std::sync::Mutex<Option<Arc<RecentBatch>>>,
    head_tx: watch::Sender<Position>,
    poisoned: AtomicBool,
    batches: AtomicU64,
    commits: AtomicU64,
    events: AtomicU64,
    // Keeps the directory locked while a scan outlives the store handle.
    _lock: Arc<File>,
    #[cfg(test)]
    fail_next_write: AtomicBool,
}

/// The envelopes of one batch, from position `first` on.
#[derive(Debug)]
pub(crate) struct RecentBatch {
    pub first: Position,
    pub envelopes: Vec<EventEnvelope>,
}

/// Batches of at most this many events stay in memory until the next one (about a
/// kilobyte an event): a bulk commit is read back from its segment instead.
pub(crate) const RECENT_BATCH_EVENTS: usize = 4096;

impl Shared {
    /// The last batch written (a panic while it was replaced leaves a usable value: it is
    /// only ever swapped whole).
    pub(crate) fn recent(&self) -> std::sync::MutexGuard<'_, Option<Arc<RecentBatch>>> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The events at positions `from..from + count` if the last batch written holds them
    /// all, copied.
    fn recent_events(&self, from: Position, count: u64) -> Option<Vec<EventEnvelope>> {
        let recent = self.recent().clone()?;
        let start = usize::try_from(from.checked_sub(recent.first)?).ok()?;
        let end = start.checked_add(usize::try_from(count).ok()?)?;
        recent.envelopes.get(start..end).map(<[_]>::to_vec)
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        // The index is only extended after validation, by appends that cannot fail halfway
        // for a reason other than a panic, so a poisoned lock still holds a usable index.
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The events at slots `first..first + count` (clamped to the index), with the segments to
    /// read them from.
    fn range_items(&self, first: u64, count: u64) -> (Segments, Vec<Item>) {
        let index = self.index();
        let end = index.slots().min(first.saturating_add(count));
        let items = (first..end)
            .map(|slot| (slot, index.event_location(slot as usize)))
            .collect();
        (index.segments.clone(), items)
    }
}

/// An event the index lists under `stream` must say it belongs there. An index built by the
/// open scan or the sequencer always agrees (both file an event under the stream it names);
/// one taken from a checkpoint (`checkpoint.rs`) is a file of the data directory like any
/// other, so a stream's reads check it rather than hand a command another stream's events.
fn of_stream(event: &EventEnvelope, stream: &StreamId) -> Result<(), LogError> {
    if event.stream_id == stream.as_str() {
        return Ok(());
    }
    Err(LogError::Corrupt {
        position: event.position,
        reason: format!(
            "the log's index lists this event under stream {stream}, but it belongs to {}",
            event.stream_id
        ),
    })
}

/// Takes the exclusive flock on `<dir>/LOCK`, retrying while it is held for at most `wait`
/// (`locking.rs`).
pub(crate) fn lock_dir(dir: &Path, wait: std::time::Duration) -> Result<File, LogError> {
    let path = dir.join(format::LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&format!("opening {}", path.display()), e))?;
    crate::locking::retry_while_locked(
        wait,
        || fs2::FileExt::try_lock_exclusive(&file),
        |error| error.kind() == std::io::ErrorKind::WouldBlock,
    )
    .map_err(|error| {
        LogError::Unavailable(format!(
            "event log directory {} is in use (lock {} held: {error})",
            dir.display(),
            path.display()
        ))
    })?;
    Ok(file)
}

/// Writes `<dir>/meta` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_meta(dir: &Path, format: u32, epoch: uuid::Uuid) -> Result<(), LogError> {
    let temp = dir.join(format::META_TEMP_FILE);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(format::meta_text(format, epoch).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(format::META_FILE))
    };
    write().map_err(|e| io_error("writing the store metadata", e))?;
    recover::sync_dir(dir)
}

/// Reads the metadata of an existing store, or creates it for an empty directory.
fn load_or_create_meta(dir: &Path) -> Result<uuid::Uuid, LogError> {
    match std::fs::read_to_string(dir.join(format::META_FILE)) {
        Ok(text) => {
            let (found, epoch) = format::parse_meta(&text)?;
            if found != FORMAT_VERSION {
                return Err(LogError::FormatMismatch {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            epoch.ok_or_else(|| LogError::Corrupt {
                position: 0,
                reason: "store metadata: missing or malformed epoch".to_owned(),
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A new store: refuse a directory holding anything else (another store's files,
            // segments that lost their metadata).
            let entries =
                std::fs::read_dir(dir).map_err(|e| io_error("listing the log directory", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error("listing the log directory", e))?;
                let name = entry.file_name();
                if name != format::LOCK_FILE && name != format::META_TEMP_FILE {
                    return Err(LogError::Corrupt {
                        position: 0,
                        reason: format!(
                            "{} has no store metadata but holds {}: not an empty directory",
                            dir.display(),
                            name.to_string_lossy()
                        ),
                    });
                }
            }
            let epoch = uuid::Uuid::new_v4();
            write_meta(dir, FORMAT_VERSION, epoch)?;
            Ok(epoch)
        }
        Err(error) => Err(io_error("reading the store metadata", error)),
    }
}

/// The committed idempotency record of `key`: looked up by hash in the index, read from disk
/// and compared, newest first.
pub(crate) fn find_idempotency(
    shared: &Shared,
    key: &IdempotencyKey,
) -> Result<Option<StoredOutcome>, LogError> {
    let (segments, locations) = {
        let index = shared.index();
        let hash = index.idempotency_hash(key.principal.as_bytes(), key.request_id.as_bytes());
        let locations = index.idempotency_locations(hash);
        if locations.is_empty() {
            return Ok(None);
        }
        (index.segments.clone(), locations)
    };
    read_idempotency(&segments, &locations, key)
}

fn read_idempotency(
    segments: &[Arc<File>],
    locations: &[Location],
    key: &IdempotencyKey,
) -> Result<Option<StoredOutcome>, LogError> {
    for location in locations.iter().rev() {
        let bytes = read::read_record(segments, *location, KIND_IDEMPOTENCY, 0)?;
        let record =
            IdempotencyRecord::decode(bytes.as_slice()).map_err(|error| LogError::Corrupt {
                position: 0,
                reason: format!("undecodable idempotency record: {error}"),
            })?;
        if record.matches(key) {
            return record.into_stored().map(Some);
        }
    }
    Ok(None)
}

impl FileEventStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// A new store (an empty or missing directory) gets format version [`FORMAT_VERSION`] and
    /// a random epoch. An existing one must have the same format version
    /// ([`LogError::FormatMismatch`]); its segments are scanned once to rebuild the indexes,
    /// a torn tail is cut, and the last event is checked against the recorded head
    /// ([`LogError::Corrupt`] for damage to acknowledged data or a broken tail). Another
    /// process (or handle) holding the directory makes this fail with
    /// [`LogError::Unavailable`], once [`FileOptions::lock_wait`] has passed.
    pub fn open(dir: &Path, options: FileOptions) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating the log directory", e))?;
        let lock = Arc::new(lock_dir(dir, options.lock_wait)?);
        let epoch = load_or_create_meta(dir)?;
        let checkpoint = checkpoint::load(dir, epoch).unwrap_or_else(|reason| {
            tracing::warn!(%reason, "event log: not using the index checkpoint");
            None
        });
        let recovered = recover::recover(dir, checkpoint)?;
        let index = recovered.index;
        let head = index.head;
        let hasher = index.idempotency_hasher();
        let file = index.segments[recovered.write_segment as usize].clone();
        let (head_tx, _) = watch::channel(head.position);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            recent: std::sync::Mutex::new(None),
            head_tx,
            poisoned: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            _lock: lock.clone(),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
        });
        let (requests, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let sequencer = Sequencer {
            dir: dir.to_owned(),
            shared: shared.clone(),
            requests: receiver,
            head,
            segment: recovered.write_segment,
            file,
            offset: recovered.write_offset,
            allocated: recovered.allocated,
            preallocation_failed: false,
            options,
            hasher,
            poisoned: false,
            frame: Vec::new(),
            epoch,
            checkpointed_at: recovered.checkpoint_used,
        };
        let handle = std::thread::Builder::new()
            .name("eventlog-sequencer".to_owned())
            .spawn(move || sequencer.run())
            .map_err(|error| LogError::Unavailable(format!("cannot start sequencer: {error}")))?;
        tracing::info!(
            position = head.position,
            %epoch,
            discarded_bytes = recovered.discarded_bytes,
            index_checkpoint = recovered.checkpoint_used.is_some(),
            "event log opened"
        );
        Ok(FileEventStore {
            inner: Arc::new(FileInner {
                requests,
                _sequencer: SequencerThread(Some(handle)),
                shared,
                epoch,
                from_checkpoint: recovered.checkpoint_used.is_some(),
                _lock: lock,
            }),
        })
    }

    /// Whether this open took its index from the checkpoint the last clean close left
    /// (`<dir>/index`), instead of building all of it from the segments. Either way the
    /// segments' checksums were all checked; this only says how much indexing was saved.
    pub fn opened_from_checkpoint(&self) -> bool {
        self.inner.from_checkpoint
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

    /// Whether a failed write or `fdatasync` has poisoned the store (every append now fails).
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// A fast, **blocking** iterator over the events at positions `from..=to`, in order,
    /// bounded by the head at the time of the call (`from` 0 is read as 1; pass `u64::MAX` as
    /// `to` for "up to the head").
    ///
    /// It reads the segments sequentially in large blocks (one `pread` of up to 8 MiB per run
    /// of events, copying the locations of up to 64 Ki events out of the index at a time, so
    /// appends are never held up) and decodes lazily, one envelope per `next`. Meant for
    /// start-up code that rebuilds projections or verifies the chain: call it from a blocking
    /// thread (`tokio::task::spawn_blocking`), not from an async task. It yields
    /// `Err(LogError::Corrupt)` for a damaged or undecodable event and then ends.
    pub fn scan(&self, from: Position, to: Position) -> FileScan {
        let from = from.max(1);
        let slots = self.inner.shared.index().slots();
        FileScan {
            shared: self.inner.shared.clone(),
            next_slot: from - 1,
            end_slot: slots.min(to),
            segments: Arc::new(Vec::new()),
            items: Vec::new(),
            cursor: 0,
            run_next: 0,
            run_end: 0,
            run_base: 0,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// For a read of up to `limit` events from `from`: the first position (at least 1) and
    /// how many positions the log holds, or `None` when there is nothing to read.
    fn readable_range(&self, from: Position, limit: usize) -> Option<(Position, u64)> {
        let from = from.max(1);
        let slots = self.inner.shared.index().slots();
        (limit != 0 && from <= slots).then_some((from, slots))
    }

    async fn blocking<T, F>(&self, read: F) -> Result<T, LogError>
    where
        F: FnOnce(&Shared) -> Result<T, LogError> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.inner.shared.clone();
        tokio::task::spawn_blocking(move || read(&shared))
            .await
            .map_err(|error| LogError::Unavailable(format!("read task failed: {error}")))?
    }
}

/// `read_range` reads at most this many events on the calling task instead of the blocking
/// pool (the live tail: recently written, in the page cache).
const INLINE_READ_EVENTS: u64 = 64;

/// How many event locations a [`FileScan`] copies out of the index at a time.
const SCAN_ITEMS: u64 = 64 * 1024;

/// The iterator of [`FileEventStore::scan`].
pub struct FileScan {
    shared: Arc<Shared>,
    /// Next slot to copy out of the index, and the end (exclusive).
    next_slot: u64,
    end_slot: u64,
    segments: Segments,
    /// Copied-out locations; `items[cursor..]` are not read yet.
    items: Vec<Item>,
    cursor: usize,
    /// `items[run_next..run_end]` are in `buf`, which starts at file offset `run_base`.
    run_next: usize,
    run_end: usize,
    run_base: u64,
    buf: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for FileScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileScan")
            .field("next_slot", &self.next_slot)
            .field("end_slot", &self.end_slot)
            .finish_non_exhaustive()
    }
}

impl FileScan {
    fn fill(&mut self) -> Result<bool, LogError> {
        if self.cursor == self.items.len() {
            if self.next_slot >= self.end_slot {
                return Ok(false);
            }
            let count = (self.end_slot - self.next_slot).min(SCAN_ITEMS);
            let (segments, items) = self.shared.range_items(self.next_slot, count);
            if items.is_empty() {
                return Ok(false);
            }
            self.next_slot += items.len() as u64;
            self.segments = segments;
            self.items = items;
            self.cursor = 0;
        }
        let count = read::run_len(&self.items[self.cursor..]);
        let run = &self.items[self.cursor..self.cursor + count];
        self.run_base = read::read_run(&self.segments, run, &mut self.buf)?;
        self.run_next = self.cursor;
        self.run_end = self.cursor + count;
        self.cursor += count;
        Ok(true)
    }
}

impl Iterator for FileScan {
    type Item = Result<EventEnvelope, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.run_next == self.run_end {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
        let item = self.items[self.run_next];
        self.run_next += 1;
        let event = read::decode_event(&self.buf, self.run_base, item);
        self.failed = event.is_err();
        Some(event)
    }
}

#[async_trait::async_trait]
impl EventStore for FileEventStore {
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
        let Some((from, slots)) = self.readable_range(from, limit) else {
            return Ok(Vec::new());
        };
        let count = (limit as u64).min(slots - (from - 1));
        // A subscription following the head reads the batch just written: its envelopes
        // are still in memory.
        if let Some(events) = self.inner.shared.recent_events(from, count) {
            return Ok(events);
        }
        // Otherwise the last few events are still in the page cache: a `pread` of a few
        // KiB, cheaper than a hop to the blocking pool and back (two thread wake-ups on
        // every commit's path).
        if count <= INLINE_READ_EVENTS {
            let shared = &self.inner.shared;
            let (segments, items) = shared.range_items(from - 1, limit as u64);
            return read::read_events(&segments, &items);
        }
        self.blocking(move |shared| {
            let (segments, items) = shared.range_items(from - 1, limit as u64);
            read::read_events(&segments, &items)
        })
        .await
    }

    async fn read_range_encoded(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<bytes::Bytes>, LogError> {
        let Some((from, _)) = self.readable_range(from, limit) else {
            return Ok(Vec::new());
        };
        self.blocking(move |shared| {
            let (segments, items) = shared.range_items(from - 1, limit as u64);
            read::read_encoded(&segments, &items)
        })
        .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, LogError> {
        let (segments, items) = {
            let index = self.inner.shared.index();
            let Some(positions) = index.stream(stream.as_str()) else {
                return Ok(Vec::new());
            };
            let start = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
            if limit == 0 || start >= positions.len() {
                return Ok(Vec::new());
            }
            let end = positions.len().min(start.saturating_add(limit));
            let items: Vec<Item> = positions[start..end]
                .iter()
                .map(|position| {
                    let slot = position - 1;
                    (slot, index.event_location(slot as usize))
                })
                .collect();
            (index.segments.clone(), items)
        };
        let events = self
            .blocking(move |_| read::read_events(&segments, &items))
            .await?;
        for event in &events {
            of_stream(event, stream)?;
        }
        Ok(events)
    }

    async fn read_streams(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<Vec<EventEnvelope>>, LogError> {
        // Every stream's events in one trip to the reader threads, read in log order (so
        // neighbouring records share reads) and handed back to their streams.
        let (segments, items, owners) = {
            let index = self.inner.shared.index();
            let mut tagged: Vec<(Item, usize)> = Vec::new();
            for (owner, stream) in streams.iter().enumerate() {
                let positions = index.stream(stream.as_str()).unwrap_or_default();
                tagged.extend(positions.iter().map(|position| {
                    let slot = position - 1;
                    ((slot, index.event_location(slot as usize)), owner)
                }));
            }
            tagged.sort_unstable_by_key(|((slot, _), owner)| (*slot, *owner));
            let (items, owners): (Vec<Item>, Vec<usize>) = tagged.into_iter().unzip();
            (index.segments.clone(), items, owners)
        };
        let mut per_stream = Vec::new();
        per_stream.resize_with(streams.len(), Vec::new);
        if items.is_empty() {
            return Ok(per_stream);
        }
        let events = self
            .blocking(move |_| read::read_events(&segments, &items))
            .await?;
        for (event, owner) in events.into_iter().zip(owners) {
            of_stream(&event, &streams[owner])?;
            per_stream[owner].push(event);
        }
        Ok(per_stream)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, LogError> {
        Ok(self
            .inner
            .shared
            .index()
            .stream(stream.as_str())
            .map_or(0, |positions| positions.len() as u64))
    }

    async fn lookup_idempotency(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredOutcome>, LogError> {
        let (segments, locations) = {
            let index = self.inner.shared.index();
            let hash = index.idempotency_hash(key.principal.as_bytes(), key.request_id.as_bytes());
            let locations = index.idempotency_locations(hash);
            if locations.is_empty() {
                return Ok(None);
            }
            (index.segments.clone(), locations)
        };
        let key = key.clone();
        self.blocking(move |_| read_idempotency(&segments, &locations, &key))
            .await
    }

    fn head(&self) -> Head {
        self.inner.shared.index().head
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

    /// Every range reads the same envelopes whether the last batch is served from memory
    /// or, after a reopen, from the segments alone; a batch too large to keep is read
    /// from its segment.
    #[tokio::test]
    async fn a_read_of_the_batch_just_written_gives_what_its_segment_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
        for round in 0..4 {
            // Appends sent together: the sequencer takes them as one batch or a few.
            let appends = (0..20).map(|i| store.append(commit(&format!("s{round}-{i}"))));
            for outcome in futures::future::join_all(appends).await {
                outcome.unwrap();
            }
        }
        let head = store.head().position;
        let recent = store
            .inner
            .shared
            .recent()
            .clone()
            .expect("the last batch is kept");
        assert_eq!(recent.first + recent.envelopes.len() as u64 - 1, head);
        assert!(store.inner.shared.recent_events(head, 1).is_some());
        let mut read_now = Vec::new();
        for from in 1..=head + 1 {
            for limit in [1, 2, 7, 100] {
                read_now.push(store.read_range(from, limit).await.unwrap());
            }
        }
        drop(store);

        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
        assert!(store.inner.shared.recent().is_none());
        let mut read_back = Vec::new();
        for from in 1..=head + 1 {
            for limit in [1, 2, 7, 100] {
                read_back.push(store.read_range(from, limit).await.unwrap());
            }
        }
        assert_eq!(read_now, read_back);
        assert_eq!(read_back[0][0].position, 1);

        // A bulk commit is not kept: its events are read from the segment.
        let mut bulk = commit("bulk");
        bulk.writes[0].events = vec![bulk.writes[0].events[0].clone(); RECENT_BATCH_EVENTS + 1];
        store.append(bulk).await.unwrap();
        assert!(store.inner.shared.recent().is_none());
        let last = store.read_range(head + 1, usize::MAX).await.unwrap();
        assert_eq!(last.len(), RECENT_BATCH_EVENTS + 1);
        assert!(last.iter().all(|envelope| envelope.stream_id == "bulk"));
    }

    #[tokio::test]
    async fn failed_write_poisons_the_store_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
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
        assert_eq!(store.read_range(1, 10).await.unwrap().len(), 1);
        drop(store);
        // A poisoned store saves no index: the next open scans the segments.
        assert!(!dir.path().join(checkpoint::CHECKPOINT_FILE).exists());

        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
        assert!(!store.opened_from_checkpoint());
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

    #[tokio::test]
    async fn reads_refuse_what_a_forged_index_files_under_another_stream() {
        // A checkpoint written from an index that files every event under the other
        // stream, with the true frames' digest, places and head: the open takes it, and
        // reading either stream reports the mismatch instead of handing the events over.
        let dir = tempfile::tempdir().unwrap();
        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
        for stream in ["a", "b", "a", "b"] {
            store.append(commit(stream)).await.unwrap();
        }
        let epoch = store.store_epoch();
        drop(store);
        let recovered = recover::recover(dir.path(), None).unwrap();
        let real = recovered.index;
        let mut forged = Index::new(real.segments.clone());
        for slot in 0..real.slots() {
            let other = if slot % 2 == 0 { "b" } else { "a" };
            forged.push_event(real.event_location(slot as usize), Some(other));
        }
        forged.head = real.head;
        forged.frames = real.frames.clone();
        checkpoint::write(
            dir.path(),
            epoch,
            &forged,
            recovered.write_segment,
            recovered.write_offset,
        )
        .unwrap();
        drop(real);

        let store = FileEventStore::open(dir.path(), FileOptions::default()).unwrap();
        assert!(store.opened_from_checkpoint());
        let a = StreamId::new("a").unwrap();
        assert!(matches!(
            store.read_stream(&a, 1, 10).await,
            Err(LogError::Corrupt { position: 2, .. })
        ));
        assert!(matches!(
            store.read_streams(std::slice::from_ref(&a)).await,
            Err(LogError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn scan_reads_across_segments_and_stops_at_the_head_of_its_call() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileOptions {
            segment_bytes: 2048,
            ..FileOptions::default()
        };
        let store = FileEventStore::open(dir.path(), options).unwrap();
        for i in 0..60 {
            store.append(commit(&format!("s{}", i % 5))).await.unwrap();
        }
        assert!(store.inner.shared.index().segments.len() > 3);
        let scan = store.scan(0, u64::MAX);
        store.append(commit("late")).await.unwrap();
        let positions: Vec<u64> = scan.map(|e| e.unwrap().position).collect();
        assert_eq!(positions, (1..=60).collect::<Vec<_>>());
        let middle: Vec<u64> = store.scan(7, 33).map(|e| e.unwrap().position).collect();
        assert_eq!(middle, (7..=33).collect::<Vec<_>>());
        assert_eq!(store.scan(62, u64::MAX).count(), 0);
        assert_eq!(store.scan(61, 61).count(), 1);
    }
}
