//! The audit database's one tree (`timeline`, layout in `keys.rs`): writing a batch of
//! rows, turning postings into runs of the base, and the reads the queries build on.
//!
//! Writes come from the projection's tail only (one at a time). A write is one sled
//! `apply_batch`: entry chunks and their time rows, the write's postings as `L` rows,
//! and the `M` row with the position and hash it reaches, so after a crash the database
//! holds whole writes only, and the recorded position says which. Once the postings
//! outside the base cover `merge_events` positions or hold [`MAX_DELTA_IDS`] distinct
//! ids (checked at each write), the same batch instead writes them as a new run of the
//! base, merged with the newest runs that are no larger, deletes the `L` rows and
//! records the runs in `M`.
//!
//! Readers take a snapshot of the index state (the runs and the in-memory postings of
//! the `L` rows) under a lock held only while copying. A merged run's rows are deleted
//! by a later write, once no reader holds it (a start deletes whatever a crash left
//! behind).
//!
//! The database and its tree sit behind a lock that every read and write holds while it
//! uses them ([`Store::tree`]), and nothing keeps a handle past it, so the projection can
//! close the database and open it again ([`Store::reopen`]): after a long catch-up sled
//! holds on to much of what it wrote (write buffers, cached nodes, garbage not yet
//! reclaimed), which a reopened database does not.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use parking_lot::{MappedRwLockReadGuard, RwLockReadGuard};

use prost::Message;
use signpost_api::audit::v1::AuditEntry;

use crate::describe::action_name;
use crate::error::AuditError;
use crate::fold::Rows;
use crate::keys::{self, Chunk, ChunkBuilder, DomainChanges, Index, Meta};
use crate::query::Order;

impl From<keys::Malformed> for AuditError {
    fn from(_: keys::Malformed) -> Self {
        AuditError::Corrupt("an index row does not decode".into())
    }
}

/// One run of the base: the postings of positions `first..=last`, in the `B` rows of its
/// id. Readers hold it while they read its rows.
#[derive(Debug)]
pub(crate) struct Run {
    pub id: u32,
    pub first: u64,
    pub last: u64,
    pub postings: u64,
}

/// Postings per id key, positions ascending. Hashed with a seeded foldhash: every
/// posting of a catch-up goes through this map, and SipHash was a fifth of the gathering.
pub(crate) type Postings = HashMap<Vec<u8>, Vec<u64>, foldhash::fast::RandomState>;

/// Distinct ids the postings outside the base may hold before they become a run.
const MAX_DELTA_IDS: usize = 65_536;

/// Sled rows to insert: (key, value).
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

struct IndexState {
    /// The runs of the base, oldest first.
    runs: Vec<Arc<Run>>,
    /// Postings of positions after the base (their `L` rows).
    delta: Postings,
    /// How many postings `delta` holds.
    delta_postings: u64,
    /// The `L` rows holding `delta`.
    log_keys: Vec<Vec<u8>>,
}

/// The open database and its one tree.
struct Handles {
    db: sled::Db,
    tree: sled::Tree,
}

/// How long [`Store::reopen`] waits for readers to let go of the database before it
/// leaves the reopen for later.
const REOPEN_WAIT: Duration = Duration::from_millis(250);

thread_local! {
    /// How many guards of a store's lock ([`Held`]) this thread holds.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A read guard of a store's lock, counted in [`HELD`] while it lives.
///
/// A thread's first guard is taken fairly: while a reopen waits for the lock, new readers
/// wait behind it, so readers that keep overlapping cannot put a reopen off for ever (they
/// did, in a test that reads on three threads throughout a catch-up). The guards a thread
/// takes while it holds one (a query's callbacks read again) are taken recursively: they
/// never wait for the reopen, which waits for the guard they are nested in. A thread that
/// held a guard while it waited for another thread's first read could be held up by a
/// reopen between the two, for at most [`REOPEN_WAIT`] (the reopen then gives up); no
/// reader does that.
pub(crate) struct Held<'a, T> {
    guard: MappedRwLockReadGuard<'a, T>,
    /// Counted per thread, so dropped on the thread that took it.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<'a, T> Held<'a, T> {
    fn map(
        guard: RwLockReadGuard<'a, Option<Handles>>,
        part: impl FnOnce(&Handles) -> &T,
    ) -> Result<Self, AuditError> {
        let guard =
            RwLockReadGuard::try_map(guard, |h| h.as_ref().map(part)).map_err(|_| closed())?;
        HELD.set(HELD.get() + 1);
        Ok(Held {
            guard,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        HELD.set(HELD.get() - 1);
    }
}

/// The tree and the index state.
pub(crate) struct Store {
    /// `None` only while the database is being reopened, or when opening it again
    /// failed. Readers hold it through [`Held`] guards, fairly at a thread's first and
    /// recursively inside it, so a waiting reopen gets its turn once the readers in it
    /// finish, and never deadlocks a query whose callbacks read again.
    handles: parking_lot::RwLock<Option<Handles>>,
    /// How to open the database again (`None`: a database the caller opened, which is
    /// never reopened).
    config: Option<sled::Config>,
    /// Postings outside the base that trigger a merge.
    merge_events: u64,
    index: RwLock<IndexState>,
    /// Merged runs whose rows are deleted once no reader holds them.
    retired: Mutex<Vec<Arc<Run>>>,
}

/// Rows gathered for one write.
#[derive(Default)]
pub(crate) struct Pending {
    /// Events gathered.
    pub events: usize,
    /// Bytes of entries gathered.
    pub bytes: usize,
    chunk: ChunkBuilder,
    rows: KeyValues,
    postings: Postings,
    /// How many postings `postings` holds.
    posting_count: u64,
}

impl Pending {
    /// Adds an event's rows (events come in position order).
    pub(crate) fn add(&mut self, rows: Rows) {
        self.events += 1;
        let Some((position, entry)) = rows.entry else {
            return;
        };
        let changes = (!rows.changes.is_empty()).then_some(DomainChanges {
            changes: rows.changes,
        });
        self.bytes += self.chunk.push_with(position, rows.time_nanos, |out| {
            keys::put_stored(out, &entry, changes.as_ref())
        });
        if self.chunk.is_full() {
            self.finish_chunk();
        }
        for key in rows.postings.iter() {
            let positions = match self.postings.get_mut(key) {
                Some(positions) => positions,
                None => self.postings.entry(key.to_vec()).or_default(),
            };
            if positions.last() != Some(&position) {
                positions.push(position);
                self.posting_count += 1;
            }
        }
    }

    fn finish_chunk(&mut self) {
        if !self.chunk.is_empty() {
            let (key, value, time_key) = self.chunk.finish();
            self.rows.push((key.to_vec(), value));
            self.rows.push((time_key.to_vec(), Vec::new()));
        }
    }
}

/// Writes pieces into blocks (base blocks, or `L` rows).
struct BlockWriter {
    blocks: KeyValues,
    current: Vec<u8>,
    /// (id key, first position) of the current block's first piece.
    first: Option<(Vec<u8>, u64)>,
}

impl BlockWriter {
    fn new() -> Self {
        Self {
            blocks: Vec::new(),
            current: Vec::new(),
            first: None,
        }
    }

    fn add(&mut self, id_key: &[u8], positions: &[u64], key: &impl Fn(&[u8], u64) -> Vec<u8>) {
        for piece in positions.chunks(keys::PIECE_POSITIONS) {
            if self.first.is_none() {
                self.first = Some((id_key.to_vec(), piece[0]));
            }
            keys::put_piece(&mut self.current, id_key, piece);
            if self.current.len() >= keys::BLOCK_BYTES {
                self.finish(key);
            }
        }
    }

    fn finish(&mut self, key: &impl Fn(&[u8], u64) -> Vec<u8>) {
        if let Some((id_key, position)) = self.first.take() {
            self.blocks
                .push((key(&id_key, position), std::mem::take(&mut self.current)));
        }
    }
}

fn sorted_keys(postings: &Postings) -> Vec<&Vec<u8>> {
    let mut ids: Vec<&Vec<u8>> = postings.keys().collect();
    ids.sort_unstable();
    ids
}

/// The id key part of a `B` key.
fn base_key_id(key: &[u8]) -> &[u8] {
    key.get(5..key.len().saturating_sub(8)).unwrap_or_default()
}

/// An id key and its positions.
type IdPostings = (Vec<u8>, Vec<u64>);

/// The postings of one run, id by id, in id key order.
struct RunStream {
    blocks: sled::Iter,
    block: Option<sled::IVec>,
    offset: usize,
    peeked: Option<IdPostings>,
}

impl RunStream {
    fn new(tree: &sled::Tree, run: u32) -> Self {
        Self {
            blocks: tree.scan_prefix(keys::base_prefix(run)),
            block: None,
            offset: 0,
            peeked: None,
        }
    }

    fn next_piece(&mut self) -> Result<Option<IdPostings>, AuditError> {
        loop {
            if let Some(block) = &self.block {
                if self.offset < block.len() {
                    let mut pieces = keys::pieces(&block[self.offset..]);
                    let Some(piece) = pieces.next() else {
                        return Err(keys::Malformed.into());
                    };
                    let piece = piece?;
                    let positions = piece.positions().collect::<Result<Vec<u64>, _>>()?;
                    let id = piece.id_key.to_vec();
                    self.offset = block.len() - pieces.remaining();
                    return Ok(Some((id, positions)));
                }
            }
            match self.blocks.next() {
                Some(row) => {
                    self.block = Some(row?.1);
                    self.offset = 0;
                }
                None => return Ok(None),
            }
        }
    }

    /// The next id and all its positions in the run.
    fn next_id(&mut self) -> Result<Option<IdPostings>, AuditError> {
        let first = match self.peeked.take() {
            Some(first) => first,
            None => match self.next_piece()? {
                Some(first) => first,
                None => return Ok(None),
            },
        };
        let (id, mut positions) = first;
        loop {
            match self.next_piece()? {
                Some((next, more)) if next == id => positions.extend(more),
                Some(other) => {
                    self.peeked = Some(other);
                    break;
                }
                None => break,
            }
        }
        Ok(Some((id, positions)))
    }
}

fn decode_entry(stored: &[u8], position: u64) -> Result<AuditEntry, AuditError> {
    let (bytes, _) = keys::split_stored(stored)?;
    let mut entry = AuditEntry::decode(bytes)?;
    entry.position = position;
    entry.action = action_name(&entry.event_type)
        .unwrap_or("unknown")
        .to_owned();
    Ok(entry)
}

/// Reads entries, keeping the last chunk read (pages and exports read neighbours).
#[derive(Default)]
pub(crate) struct EntryReader {
    chunk: Option<Chunk>,
}

impl EntryReader {
    /// The stored bytes of the entry at `position` (a stub's, if it is one), if stored.
    pub(crate) fn stored(
        &mut self,
        tree: &sled::Tree,
        position: u64,
    ) -> Result<Option<Vec<u8>>, AuditError> {
        self.with_stored(tree, position, |stored| Ok(stored.to_vec()))
    }

    /// The claims of domains stored with the entry at `position`, if stored.
    pub(crate) fn changes(
        &mut self,
        tree: &sled::Tree,
        position: u64,
    ) -> Result<Option<DomainChanges>, AuditError> {
        self.with_stored(tree, position, |stored| {
            let (_, changes) = keys::split_stored(stored)?;
            Ok(DomainChanges::decode(changes)?)
        })
    }

    fn with_stored<T>(
        &mut self,
        tree: &sled::Tree,
        position: u64,
        f: impl FnOnce(&[u8]) -> Result<T, AuditError>,
    ) -> Result<Option<T>, AuditError> {
        let cached = matches!(&self.chunk, Some(chunk) if chunk.first <= position && position <= chunk.last());
        if !cached {
            let found = tree
                .range(
                    keys::positioned(keys::ENTRY, position)
                        ..=keys::positioned(keys::ENTRY, u64::MAX),
                )
                .next()
                .transpose()?;
            let Some((key, value)) = found else {
                return Ok(None);
            };
            let chunk = Chunk::decode(keys::trailing_position(&key), &value)?;
            self.chunk = Some(chunk);
        }
        let Some(chunk) = &self.chunk else {
            return Ok(None);
        };
        chunk.entry(position).map(f).transpose()
    }
}

impl Store {
    /// The store over `db`'s `tree`, at the state `meta` records (loads the `L` rows).
    /// `config`: how to open `db` again, for [`Store::reopen`].
    pub(crate) fn open(
        db: sled::Db,
        tree: sled::Tree,
        config: Option<sled::Config>,
        meta: &Meta,
        merge_events: u64,
    ) -> Result<Self, AuditError> {
        // Rows of runs `meta` does not list: merged runs not deleted yet when the process
        // ended (or a crash). Nothing reads them.
        let mut stale = sled::Batch::default();
        let mut stale_rows = 0usize;
        let mut ids: Vec<u32> = meta.runs.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let base_all = [keys::BASE];
        let base_end = keys::prefix_end(&base_all).expect("B is not 0xff");
        let mut from = base_all.to_vec();
        for id in ids {
            let prefix = keys::base_prefix(id);
            for row in tree.range(from.clone()..prefix.to_vec()) {
                stale.remove(row?.0);
                stale_rows += 1;
            }
            from = keys::prefix_end(&prefix).unwrap_or_else(|| base_end.clone());
        }
        for row in tree.range(from..base_end) {
            stale.remove(row?.0);
            stale_rows += 1;
        }
        if stale_rows > 0 {
            tree.apply_batch(stale)?;
        }
        let mut delta = Postings::default();
        let mut delta_postings = 0;
        let mut log_keys = Vec::new();
        for row in tree.scan_prefix([keys::LOG]) {
            let (key, value) = row?;
            for piece in keys::pieces(&value) {
                let piece = piece?;
                let positions = delta.entry(piece.id_key.to_vec()).or_default();
                for position in piece.positions() {
                    positions.push(position?);
                    delta_postings += 1;
                }
            }
            log_keys.push(key.to_vec());
        }
        let mut runs = Vec::new();
        let mut first = 1;
        for record in &meta.runs {
            runs.push(Arc::new(Run {
                id: record.id,
                first,
                last: record.last,
                postings: record.postings,
            }));
            first = record.last + 1;
        }
        Ok(Self {
            handles: parking_lot::RwLock::new(Some(Handles { db, tree })),
            config,
            merge_events: merge_events.max(1),
            index: RwLock::new(IndexState {
                runs,
                delta,
                delta_postings,
                log_keys,
            }),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The tree, held until the guard drops. Every read and write goes through this and
    /// keeps no handle (no `sled::Iter` either) past the guard.
    pub(crate) fn tree(&self) -> Result<Held<'_, sled::Tree>, AuditError> {
        Held::map(self.read_handles(), |h| &h.tree)
    }

    /// The database, held until the guard drops.
    pub(crate) fn database(&self) -> Result<Held<'_, sled::Db>, AuditError> {
        Held::map(self.read_handles(), |h| &h.db)
    }

    /// The lock, for reading: waiting behind a reopen that waits for it when this thread
    /// holds none of it yet, recursively (never waiting for a writer) when it does.
    fn read_handles(&self) -> RwLockReadGuard<'_, Option<Handles>> {
        if HELD.get() == 0 {
            self.handles.read()
        } else {
            self.handles.read_recursive()
        }
    }

    /// Flushes the database, closes it and opens it again, so that what sled held on to
    /// for the writes so far is let go. Waits up to [`REOPEN_WAIT`] for readers to let
    /// go of it; false when they did not (or when the database cannot be reopened: one
    /// the caller opened). An error leaves the database closed: reads fail from then on.
    pub(crate) fn reopen(&self) -> Result<bool, AuditError> {
        let Some(config) = &self.config else {
            return Ok(false);
        };
        let Some(mut handles) = self.handles.try_write_for(REOPEN_WAIT) else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        if let Some(open) = handles.as_ref() {
            open.db.flush()?;
        }
        // No handle lives outside the lock, so this closes the database (and lets go of
        // its file lock).
        *handles = None;
        // The database just closed may still hold its lock while sled's I/O threads finish.
        let db = signpost_eventlog::open_sled_waiting_for_lock(
            config,
            signpost_eventlog::DEFAULT_LOCK_WAIT,
        )?;
        let tree = db.open_tree(keys::TIMELINE)?;
        *handles = Some(Handles { db, tree });
        tracing::info!(elapsed = ?started.elapsed(), "audit database closed and opened again");
        Ok(true)
    }

    /// Writes `pending` and moves `meta` to `position` / `hash` (and its postings into a
    /// run of the base, when due), as one sled batch. On success the in-memory index
    /// follows.
    pub(crate) fn write(
        &self,
        mut pending: Pending,
        meta: &mut Meta,
        position: u64,
        hash: &[u8],
    ) -> Result<(), AuditError> {
        pending.finish_chunk();
        let mut batch = sled::Batch::default();
        for (key, value) in std::mem::take(&mut pending.rows) {
            batch.insert(key, value);
        }
        let mut next = meta.clone();
        next.position = position;
        next.hash = hash.to_vec();
        // Due after `merge_events` positions, or earlier when the postings in memory
        // hold many distinct ids (each costs about 150 bytes there).
        let flush = position.saturating_sub(meta.base_position) >= self.merge_events
            || self.index.read().expect("index lock").delta.len() + pending.postings.len()
                >= MAX_DELTA_IDS;
        let mut log_keys = Vec::new();
        // The runs merged into the new one (the newest ones), and the new run.
        let mut merged: Vec<Arc<Run>> = Vec::new();
        let mut created = None;
        if flush {
            let state = self.index.read().expect("index lock");
            let mut postings = state.delta_postings + pending.posting_count;
            let mut keep = state.runs.len();
            while keep > 0 && state.runs[keep - 1].postings <= postings {
                keep -= 1;
                postings += state.runs[keep].postings;
            }
            merged = state.runs[keep..].to_vec();
            let id = meta.next_run;
            let started = std::time::Instant::now();
            let blocks = self.merge(&merged, &state.delta, &pending.postings, id)?;
            tracing::debug!(
                position,
                runs = merged.len(),
                blocks = blocks.len(),
                postings,
                elapsed = ?started.elapsed(),
                "audit postings merged into a run"
            );
            for (key, value) in blocks {
                batch.insert(key, value);
            }
            for key in &state.log_keys {
                batch.remove(key.as_slice());
            }
            next.runs.truncate(keep);
            next.runs.push(keys::RunRecord {
                id,
                last: position,
                postings,
            });
            next.next_run = id.wrapping_add(1);
            next.base_position = position;
            created = Some(Arc::new(Run {
                id,
                first: state
                    .runs
                    .get(keep)
                    .map_or(meta.base_position + 1, |r| r.first),
                last: position,
                postings,
            }));
        } else if !pending.postings.is_empty() {
            // The write's postings as `L` rows: key `L`, position, part (u32 BE).
            let mut part = 0u32;
            let mut current = Vec::new();
            let mut flush = |current: &mut Vec<u8>, part: &mut u32| {
                let mut key = keys::positioned(keys::LOG, position).to_vec();
                key.extend_from_slice(&part.to_be_bytes());
                *part += 1;
                log_keys.push(key.clone());
                batch.insert(key, std::mem::take(current));
            };
            for id in sorted_keys(&pending.postings) {
                for piece in pending.postings[id].chunks(keys::PIECE_POSITIONS) {
                    keys::put_piece(&mut current, id, piece);
                    if current.len() >= keys::BLOCK_BYTES {
                        flush(&mut current, &mut part);
                    }
                }
            }
            if !current.is_empty() {
                flush(&mut current, &mut part);
            }
        }
        let deleted = self.collect_retired(&mut batch)?;
        batch.insert(keys::META, next.encode_to_vec());
        self.tree()?.apply_batch(batch)?;
        *meta = next;
        let mut retired = self.retired.lock().expect("retired lock");
        retired.retain(|run| !deleted.contains(&run.id));
        let mut state = self.index.write().expect("index lock");
        match created {
            Some(run) => {
                let keep = state.runs.len() - merged.len();
                state.runs.truncate(keep);
                state.runs.push(run);
                state.delta = Postings::default();
                state.delta_postings = 0;
                state.log_keys.clear();
                retired.extend(merged);
            }
            None => {
                state.delta_postings += pending.posting_count;
                for (id, positions) in pending.postings {
                    state.delta.entry(id).or_default().extend(positions);
                }
                state.log_keys.extend(log_keys);
            }
        }
        Ok(())
    }

    /// Adds to `batch` the deletion of every retired run no reader holds; returns their
    /// ids.
    fn collect_retired(&self, batch: &mut sled::Batch) -> Result<Vec<u32>, AuditError> {
        let retired = self.retired.lock().expect("retired lock");
        let mut done = Vec::new();
        for run in retired.iter() {
            if Arc::strong_count(run) > 1 {
                continue;
            }
            for row in self.tree()?.scan_prefix(keys::base_prefix(run.id)) {
                batch.remove(row?.0);
            }
            done.push(run.id);
        }
        Ok(done)
    }

    /// The blocks of run `id`: the postings of `runs` (consecutive, oldest first), then
    /// of `delta`, then of `pending`.
    fn merge(
        &self,
        runs: &[Arc<Run>],
        delta: &Postings,
        pending: &Postings,
        id: u32,
    ) -> Result<KeyValues, AuditError> {
        let key = |id_key: &[u8], position: u64| keys::base(id, id_key, position);
        let mut fresh: Vec<&Vec<u8>> = delta.keys().chain(pending.keys()).collect();
        fresh.sort_unstable();
        fresh.dedup();
        let mut fresh = fresh.into_iter().peekable();
        let tree = self.tree()?;
        let mut streams: Vec<RunStream> = runs
            .iter()
            .map(|run| RunStream::new(&tree, run.id))
            .collect();
        let mut heads = Vec::with_capacity(streams.len());
        for stream in &mut streams {
            heads.push(stream.next_id()?);
        }
        let mut writer = BlockWriter::new();
        let mut positions: Vec<u64> = Vec::new();
        loop {
            // The smallest id among the runs' next ids and the fresh ones.
            let smallest = heads
                .iter()
                .flatten()
                .map(|(id, _)| id.as_slice())
                .chain(fresh.peek().map(|id| id.as_slice()))
                .min()
                .map(<[u8]>::to_vec);
            let Some(smallest) = smallest else {
                break;
            };
            for (head, stream) in heads.iter_mut().zip(&mut streams) {
                if head.as_ref().is_some_and(|(id, _)| *id == smallest) {
                    if let Some((_, more)) = head.take() {
                        positions.extend(more);
                    }
                    *head = stream.next_id()?;
                }
            }
            if fresh.next_if(|id| **id == smallest).is_some() {
                if let Some(more) = delta.get(&smallest) {
                    positions.extend_from_slice(more);
                }
                if let Some(more) = pending.get(&smallest) {
                    positions.extend_from_slice(more);
                }
            }
            writer.add(&smallest, &positions, &key);
            positions.clear();
        }
        writer.finish(&key);
        Ok(writer.blocks)
    }

    /// Calls `f` with the positions in `[low, high]` indexed under `id` in `index`, in
    /// `order`, until it returns false.
    pub(crate) fn positions(
        &self,
        index: Index,
        id: &str,
        low: u64,
        high: u64,
        order: Order,
        mut f: impl FnMut(u64) -> Result<bool, AuditError>,
    ) -> Result<(), AuditError> {
        if low > high {
            return Ok(());
        }
        let id_key = keys::id_key(index, id);
        let (runs, recent) = {
            let state = self.index.read().expect("index lock");
            let recent = state
                .delta
                .get(&id_key)
                .map(|positions| {
                    let from = positions.partition_point(|p| *p < low);
                    let to = positions.partition_point(|p| *p <= high);
                    positions[from..to.max(from)].to_vec()
                })
                .unwrap_or_default();
            (state.runs.clone(), recent)
        };
        let overlapping = runs
            .iter()
            .filter(|run| run.first <= high && low <= run.last);
        match order {
            Order::Ascending => {
                for run in overlapping {
                    let (from, to) = (low.max(run.first), high.min(run.last));
                    if !self.base_positions(run, &id_key, from, to, order, &mut f)? {
                        return Ok(());
                    }
                }
                for position in recent {
                    if !f(position)? {
                        return Ok(());
                    }
                }
            }
            Order::Descending => {
                for position in recent.into_iter().rev() {
                    if !f(position)? {
                        return Ok(());
                    }
                }
                for run in overlapping.rev() {
                    let (from, to) = (low.max(run.first), high.min(run.last));
                    if !self.base_positions(run, &id_key, from, to, order, &mut f)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Like [`Store::positions`] within one run; false when `f` asked to stop.
    fn base_positions(
        &self,
        run: &Run,
        id_key: &[u8],
        low: u64,
        high: u64,
        order: Order,
        f: &mut impl FnMut(u64) -> Result<bool, AuditError>,
    ) -> Result<bool, AuditError> {
        let prefix = keys::base_prefix(run.id);
        let tree = self.tree()?;
        match order {
            Order::Ascending => {
                let target = keys::base(run.id, id_key, low);
                let start = tree
                    .range(prefix.to_vec()..=target.clone())
                    .next_back()
                    .transpose()?
                    .map(|(key, _)| key.to_vec())
                    .unwrap_or(target);
                let end = keys::prefix_end(&prefix).unwrap_or_else(|| vec![u8::MAX; 6]);
                for row in tree.range(start..end) {
                    let (_, value) = row?;
                    for piece in keys::pieces(&value) {
                        let piece = piece?;
                        match piece.id_key.cmp(id_key) {
                            Ordering::Less => continue,
                            Ordering::Greater => return Ok(true),
                            Ordering::Equal => {}
                        }
                        for position in piece.positions() {
                            let position = position?;
                            if position < low {
                                continue;
                            }
                            if position > high {
                                return Ok(true);
                            }
                            if !f(position)? {
                                return Ok(false);
                            }
                        }
                    }
                }
                Ok(true)
            }
            Order::Descending => {
                let target = keys::base(run.id, id_key, high);
                let mut found = Vec::new();
                for row in tree.range(prefix.to_vec()..=target).rev() {
                    let (key, value) = row?;
                    found.clear();
                    for piece in keys::pieces(&value) {
                        let piece = piece?;
                        if piece.id_key != id_key {
                            continue;
                        }
                        for position in piece.positions() {
                            let position = position?;
                            if (low..=high).contains(&position) {
                                found.push(position);
                            }
                        }
                    }
                    for &position in found.iter().rev() {
                        if !f(position)? {
                            return Ok(false);
                        }
                    }
                    // Blocks before one that starts with an earlier id hold none of it;
                    // positions below `low` end the walk too.
                    let first_position = keys::trailing_position(&key);
                    if base_key_id(&key) < id_key
                        || (base_key_id(&key) == id_key && first_position <= low)
                    {
                        return Ok(true);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Every posting (index, id, position), for `dump`.
    pub(crate) fn all_postings(&self) -> Result<Vec<(Index, Vec<u8>, u64)>, AuditError> {
        let (runs, delta) = {
            let state = self.index.read().expect("index lock");
            (state.runs.clone(), state.delta.clone())
        };
        let tree = self.tree()?;
        let mut out = Vec::new();
        let mut push = |id_key: &[u8], position: u64| {
            if let Some((index, id)) = keys::split_id_key(id_key) {
                out.push((index, id.to_vec(), position));
            }
        };
        for run in &runs {
            for row in tree.scan_prefix(keys::base_prefix(run.id)) {
                let (_, value) = row?;
                for piece in keys::pieces(&value) {
                    let piece = piece?;
                    for position in piece.positions() {
                        push(piece.id_key, position?);
                    }
                }
            }
        }
        for (id_key, positions) in &delta {
            for &position in positions {
                push(id_key, position);
            }
        }
        Ok(out)
    }

    /// Calls `f` with every stored entry in `[low, high]`, in `order`, until it returns
    /// false.
    pub(crate) fn entries(
        &self,
        low: u64,
        high: u64,
        order: Order,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, AuditError>,
    ) -> Result<(), AuditError> {
        if low > high {
            return Ok(());
        }
        let from = keys::positioned(keys::ENTRY, low);
        let end = keys::positioned(keys::ENTRY, u64::MAX);
        let tree = self.tree()?;
        match order {
            Order::Ascending => {
                for row in tree.range(from..=end) {
                    let (key, value) = row?;
                    let chunk = Chunk::decode(keys::trailing_position(&key), &value)?;
                    for position in chunk.first.max(low)..=chunk.last().min(high) {
                        let Some(bytes) = chunk.entry(position) else {
                            continue;
                        };
                        if !f(position, bytes)? {
                            return Ok(());
                        }
                    }
                    if chunk.last() >= high {
                        return Ok(());
                    }
                }
            }
            Order::Descending => {
                let holder = tree
                    .range(keys::positioned(keys::ENTRY, high)..=end)
                    .next()
                    .transpose()?
                    .map(|(key, _)| keys::trailing_position(&key))
                    .unwrap_or(u64::MAX);
                let start = keys::positioned(keys::ENTRY, 0);
                for row in tree
                    .range(start..=keys::positioned(keys::ENTRY, holder))
                    .rev()
                {
                    let (key, value) = row?;
                    let chunk = Chunk::decode(keys::trailing_position(&key), &value)?;
                    if chunk.first <= high {
                        for position in (chunk.first.max(low)..=chunk.last().min(high)).rev() {
                            let Some(bytes) = chunk.entry(position) else {
                                continue;
                            };
                            if !f(position, bytes)? {
                                return Ok(());
                            }
                        }
                    }
                    if chunk.first <= low {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes a stored entry.
    pub(crate) fn decode(bytes: &[u8], position: u64) -> Result<AuditEntry, AuditError> {
        decode_entry(bytes, position)
    }

    /// The first position whose indexed time is `>= nanos` (`None`: no stored one).
    pub(crate) fn first_at_or_after(&self, nanos: i64) -> Result<Option<u64>, AuditError> {
        let from = keys::time(nanos, 0);
        let end = keys::time(i64::MAX, u64::MAX);
        let tree = self.tree()?;
        let Some((key, _)) = tree.range(from..=end).next().transpose()? else {
            return Ok(None);
        };
        let last = keys::trailing_position(&key);
        let Some(value) = tree.get(keys::positioned(keys::ENTRY, last))? else {
            return Err(AuditError::Corrupt(format!(
                "time row of a missing entry chunk ending at {last}"
            )));
        };
        let (chunk, _) = Chunk::decode_header(last, &value)?;
        let first = (chunk.first..=last)
            .find(|p| chunk.time(*p).is_some_and(|t| t >= nanos))
            .unwrap_or(last);
        Ok(Some(first))
    }
}

fn closed() -> AuditError {
    AuditError::Stopped("the audit database is closed: it could not be opened again".into())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// One event of a generated log: its postings (index, id) and time.
    #[derive(Debug, Clone)]
    struct Event {
        postings: Vec<(Index, String)>,
        step: i64,
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            0..4usize,
            proptest::collection::btree_set(0..3usize, 0..3),
            0..3usize,
            0..3usize,
            0..3i64,
        )
            .prop_map(|(org, connections, actor, kind, step)| {
                let mut postings = Vec::new();
                if org > 0 {
                    postings.push((Index::Organization, format!("org-{org}")));
                }
                for c in connections {
                    postings.push((Index::Connection, format!("c{c}")));
                }
                postings.push((Index::Actor, ["", "a", "actor-long-name"][actor].to_owned()));
                postings.push((Index::EventType, format!("type_{kind}")));
                Event { postings, step }
            })
    }

    fn rows(position: u64, time: i64, event: &Event) -> Rows {
        Rows {
            entry: Some((
                position,
                keys::encode_entry(&AuditEntry {
                    event_type: "domain_claimed".into(),
                    summary: format!("entry {position}"),
                    ..Default::default()
                }),
            )),
            postings: {
                let mut keys = crate::fold::IdKeys::default();
                for (index, id) in &event.postings {
                    keys.push(*index, id);
                }
                keys
            },
            time_nanos: time,
            changes: Vec::new(),
        }
    }

    struct Model {
        postings: BTreeMap<(Index, String), Vec<u64>>,
        times: Vec<i64>,
    }

    /// Writes `events` in batches of `batches` sizes, reopening the store (a restart)
    /// after the writes listed in `restarts`; returns the store and the model.
    fn build(
        events: &[Event],
        batches: &[usize],
        merge_events: u64,
        restarts: &[usize],
    ) -> (Store, Model) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut meta = Meta {
            format: keys::FORMAT,
            ..Default::default()
        };
        let mut store = Store::open(db.clone(), tree.clone(), None, &meta, merge_events).unwrap();
        let mut model = Model {
            postings: BTreeMap::new(),
            times: Vec::new(),
        };
        let mut position = 0u64;
        let mut time = -10;
        let mut sizes = batches.iter().cycle();
        let mut writes = 0;
        while (position as usize) < events.len() {
            let size = (*sizes.next().unwrap()).max(1);
            let mut pending = Pending::default();
            for event in events.iter().skip(position as usize).take(size) {
                position += 1;
                time += event.step;
                model.times.push(time);
                for (index, id) in &event.postings {
                    model
                        .postings
                        .entry((*index, id.clone()))
                        .or_default()
                        .push(position);
                }
                pending.add(rows(position, time, event));
            }
            store.write(pending, &mut meta, position, b"h").unwrap();
            writes += 1;
            if restarts.contains(&writes) {
                drop(store);
                let recorded =
                    Meta::decode(tree.get(keys::META).unwrap().unwrap().as_ref()).unwrap();
                assert_eq!(recorded, meta);
                store = Store::open(db.clone(), tree.clone(), None, &meta, merge_events).unwrap();
            }
        }
        (store, model)
    }

    fn collect(
        store: &Store,
        index: Index,
        id: &str,
        low: u64,
        high: u64,
        order: Order,
        limit: usize,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        store
            .positions(index, id, low, high, order, |p| {
                out.push(p);
                Ok(out.len() < limit)
            })
            .unwrap();
        out
    }

    fn expected(
        model: &Model,
        index: Index,
        id: &str,
        low: u64,
        high: u64,
        order: Order,
        limit: usize,
    ) -> Vec<u64> {
        let mut all: Vec<u64> = model
            .postings
            .get(&(index, id.to_owned()))
            .map(|p| {
                p.iter()
                    .copied()
                    .filter(|p| (low..=high).contains(p))
                    .collect()
            })
            .unwrap_or_default();
        if order == Order::Descending {
            all.reverse();
        }
        all.truncate(limit);
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn postings_entries_and_times_answer_like_a_plain_list(
            events in proptest::collection::vec(event(), 1..160),
            batches in proptest::collection::vec(1..40usize, 1..6),
            merge_events in 1..80u64,
            restarts in proptest::collection::vec(1..20usize, 0..3),
            probes in proptest::collection::vec((0..170u64, 0..170u64, 1..30usize), 8),
        ) {
            let (store, model) = build(&events, &batches, merge_events, &restarts);
            let n = events.len() as u64;
            for ((index, id), _) in model.postings.iter().chain([((Index::Actor, "nobody".to_owned()), &Vec::new())].iter().map(|(k, v)| (k, *v))) {
                for &(a, b, limit) in &probes {
                    let (low, high) = (a.min(b), a.max(b));
                    for order in [Order::Ascending, Order::Descending] {
                        prop_assert_eq!(
                            collect(&store, *index, id, low, high, order, limit),
                            expected(&model, *index, id, low, high, order, limit),
                            "{:?} {} [{}, {}] {:?} {}", index, id, low, high, order, limit
                        );
                    }
                }
            }
            for &(a, b, limit) in &probes {
                let (low, high) = (a.min(b), a.max(b));
                for order in [Order::Ascending, Order::Descending] {
                    let mut seen = Vec::new();
                    store.entries(low, high, order, |position, bytes| {
                        let entry = Store::decode(bytes, position)?;
                        assert_eq!(entry.summary, format!("entry {position}"));
                        assert_eq!(entry.action, "domain.claimed");
                        seen.push(position);
                        Ok(seen.len() < limit)
                    }).unwrap();
                    let mut wanted: Vec<u64> = (low.max(1)..=high.min(n)).collect();
                    if order == Order::Descending {
                        wanted.reverse();
                    }
                    wanted.truncate(limit);
                    prop_assert_eq!(seen, wanted);
                }
                let mut reader = EntryReader::default();
                let stored = reader.stored(&store.tree().unwrap(), a).unwrap();
                let entry = stored.map(|s| Store::decode(&s, a).unwrap());
                prop_assert_eq!(entry.map(|e| e.position), (1..=n).contains(&a).then_some(a));
            }
            for nanos in -12..(model.times.last().copied().unwrap_or(0) + 2) {
                let first = model.times.iter().position(|t| *t >= nanos).map(|i| i as u64 + 1);
                prop_assert_eq!(store.first_at_or_after(nanos).unwrap(), first, "{}", nanos);
            }
            let mut all = store.all_postings().unwrap();
            all.sort();
            let mut wanted: Vec<(Index, Vec<u8>, u64)> = model
                .postings
                .iter()
                .flat_map(|((index, id), positions)| positions.iter().map(move |p| (*index, id.as_bytes().to_vec(), *p)))
                .collect();
            wanted.sort();
            prop_assert_eq!(all, wanted);
        }
    }

    #[test]
    fn long_posting_lists_span_pieces_and_blocks() {
        let events: Vec<Event> = (0..20_000)
            .map(|i| Event {
                postings: vec![
                    (Index::EventType, "frequent".to_owned()),
                    (Index::Organization, format!("org-{}", i % 997)),
                ],
                step: 1,
            })
            .collect();
        let (store, model) = build(&events, &[3000, 700], 5000, &[2, 5]);
        for (low, high) in [(1, 20_000), (4000, 9000), (2047, 2049), (19_999, 30_000)] {
            for order in [Order::Ascending, Order::Descending] {
                for limit in [1, 60, 100_000] {
                    for id in ["frequent", "org-5"] {
                        let index = if id == "frequent" {
                            Index::EventType
                        } else {
                            Index::Organization
                        };
                        assert_eq!(
                            collect(&store, index, id, low, high, order, limit),
                            expected(&model, index, id, low, high, order, limit),
                            "{id} [{low}, {high}] {order:?} {limit}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_reader_keeps_its_runs_while_merges_happen() {
        let event = Event {
            postings: vec![(Index::Actor, "a".to_owned())],
            step: 1,
        };
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut meta = Meta::default();
        let store = Store::open(db.clone(), tree.clone(), None, &meta, 100).unwrap();
        let write = |meta: &mut Meta, from: u64, to: u64| {
            let mut pending = Pending::default();
            for position in from..=to {
                pending.add(rows(position, position as i64, &event));
            }
            store.write(pending, meta, to, b"h").unwrap();
        };
        // One run of many blocks (more than a sled node holds).
        write(&mut meta, 1, 150_000);
        assert_eq!(meta.runs.len(), 1);
        let mut seen = Vec::new();
        let mut position = 150_000;
        store
            .positions(Index::Actor, "a", 1, 150_000, Order::Ascending, |p| {
                seen.push(p);
                if p == 1 {
                    // Merges while the reader walks the run: its rows stay.
                    write(&mut meta, position + 1, position + 150_000);
                    position += 150_000;
                    assert_eq!(meta.runs.len(), 1, "merged into a new run");
                    write(&mut meta, position + 1, position + 1);
                }
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, (1..=150_000).collect::<Vec<_>>());
        write(&mut meta, position + 2, position + 2);
        // Every merged run is deleted now that no reader holds it.
        let runs: std::collections::BTreeSet<u32> = tree
            .scan_prefix([keys::BASE])
            .map(|row| u32::from_be_bytes(row.unwrap().0[1..5].try_into().unwrap()))
            .collect();
        assert_eq!(
            runs.into_iter().collect::<Vec<_>>(),
            meta.runs.iter().map(|r| r.id).collect::<Vec<_>>()
        );
        assert_eq!(
            collect(
                &store,
                Index::Actor,
                "a",
                1,
                u64::MAX,
                Order::Descending,
                usize::MAX
            )
            .len() as u64,
            position + 2
        );
    }

    /// A store over a database in `dir` that it can reopen.
    fn reopenable(dir: &std::path::Path) -> Arc<Store> {
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        let db = config.open().unwrap();
        let tree = db.open_tree(keys::TIMELINE).unwrap();
        Arc::new(Store::open(db, tree, Some(config), &Meta::default(), 100).unwrap())
    }

    /// Starts reopening `store` on a thread of its own, and returns once the reopen has
    /// claimed the lock and waits for its readers (or has ended).
    fn waiting_reopen(store: &Arc<Store>) -> std::thread::JoinHandle<bool> {
        let reopen = std::thread::spawn({
            let store = store.clone();
            move || store.reopen().unwrap()
        });
        while !store.handles.is_locked_exclusive() && !reopen.is_finished() {
            std::thread::yield_now();
        }
        reopen
    }

    #[test]
    fn a_waiting_reopen_goes_before_readers_that_come_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopenable(dir.path());
        let first = store.tree().unwrap();
        let reopen = waiting_reopen(&store);
        // A reader arriving now waits behind the reopen: with readers taken recursively it
        // would get in beside `first` at once and could keep the reopen waiting past its
        // limit (a reader of its own after another, on several threads, did in a test).
        let late = std::thread::spawn({
            let store = store.clone();
            move || {
                let tree = store.tree().unwrap();
                // Held past the reopen's limit: harmless only if it came after the reopen.
                std::thread::sleep(REOPEN_WAIT * 2);
                drop(tree);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(first);
        assert!(reopen.join().unwrap(), "the reopen had its turn");
        late.join().unwrap();
    }

    #[test]
    fn a_reader_reads_again_inside_its_read_while_a_reopen_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopenable(dir.path());
        let outer = store.tree().unwrap();
        let reopen = waiting_reopen(&store);
        // Nested in `outer`, so taken at once: waiting behind the reopen, which waits for
        // `outer`, would hold both until the reopen gave up.
        let inner = store.tree().unwrap();
        drop(inner);
        drop(outer);
        assert!(reopen.join().unwrap(), "the reopen had its turn");
    }
}
