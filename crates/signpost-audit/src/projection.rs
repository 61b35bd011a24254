//! [`AuditProjection`]: the audit database, kept current by tailing the log.
//!
//! At start it reads the `M` row (format, store epoch, position, hash). A database of
//! another format (format 1 kept nine trees: they are dropped), another store epoch, a
//! position beyond the log's head (the log was replaced by an older copy) or another hash
//! at that position (another history) is cleared and rebuilt from position 1. Otherwise
//! it resumes at the recorded position: the postings not yet merged into the base are
//! read back from their `L` rows and the position is published at once, so queries are
//! answered while the tail catches up. One task subscribes from position 1: events up to
//! the recorded position are only folded in memory (the fold needs the state before each
//! event), later ones also produce rows.
//!
//! Started with [`AuditProjection::start_fed`] (as the server does), the task folds
//! nothing itself: every event past the recorded position comes described from the
//! control plane's read model task through the [`AuditFeed`] (`feed.rs`), a short
//! catch-up at start included, so the server holds one read model and reads the log
//! once. When the feed lets go (its channel filled up after the head at start), or when
//! the start is at least [`AuditOptions::catch_up_alone_behind`] events behind (a
//! rebuild: the feed starts let go, so the server serves before the timeline has caught
//! up), the task reads the log itself with a read model of its own (`own_fold`) until
//! it reaches the head, then hands the events back to the feed and drops that model.
//! Either way a catch-up writes an organization-local entry as a stub, described when
//! read ([`AuditOptions::describe_when_read`], `lazy.rs`); events past it, described.
//!
//! Rows are written in batches, always at the end of a commit (`commit_last_position`):
//! - far behind the log's head (a rebuild, a catch-up), once `batch_events` events or
//!   `batch_bytes` bytes of entries are pending: few large writes;
//! - near the head, `linger` after the first pending commit: one write covers every
//!   commit of that window instead of one write per commit;
//! - at once when a reader waits for a position the pending commits reach (a reader
//!   waiting for a later position does not cut a rebuild's batches short).
//!
//! A write is one sled batch (`store.rs`), the recorded position included, run on a
//! blocking thread while the tail folds on (one write in flight at most); then the
//! position is published to readers. Readers never look past the published position, so
//! they always see whole commits. Under load, no fsync: the database can always be
//! rebuilt from the log, and after a crash (kill -9) sled recovers whole batches only, so
//! the recorded position matches the rows: the next start resumes from it, without gaps
//! or repeats. A write that reaches the log's head is flushed, so a server killed while
//! idle resumes at the head without folding the log again.
//!
//! A catch-up of at least `reopen_after_catch_up` events (a rebuild, or a start far
//! behind) ends with the database closed and opened again, at the first write that
//! reaches the log's head: sled keeps much of what a long run of writes used (a first
//! start on 500,000 events stayed 34 MiB above a restart), and a reopened database holds
//! only what it reads. The reopen starts once that write's position is published, as
//! the writer's next job. Readers wait for it (0.17 s after 500,000 events here); if
//! they hold the database longer, it is left for a later write that reaches the head.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use futures::{FutureExt, StreamExt};
use prost::Message;
use signpost_domain::Event;
use signpost_eventlog::{EventEnvelope, EventStore};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::AuditError;
use crate::feed::{AuditFeed, Handback, Offer, Step};
use crate::fold::{OwnFold, Rows};
use crate::keys::{self, Chunk, Index, Meta};
use crate::query::Order;
use crate::store::{Pending, Store};

/// Settings of the projection.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The base of our SP URLs (routes and connection views need it).
    pub public_base_url: String,
    /// Most events gathered into one write while catching up (far behind the head).
    pub batch_events: usize,
    /// Most bytes of entries gathered into one write while catching up.
    pub batch_bytes: usize,
    /// Positions whose postings are kept outside the base (in memory, and in one small
    /// row per write) before they become a run of the base (sooner if they hold 65,536
    /// distinct ids). Larger: fewer runs to merge and look up, more memory.
    pub merge_events: usize,
    /// How long the tail waits for more commits before writing what it has, when it is
    /// at the head: one database write covers every commit of that window instead of
    /// one write per commit. A query waiting for a position cuts the window short,
    /// so lingering never delays a reader.
    pub linger: std::time::Duration,
    /// sled page cache of the audit database.
    pub cache_capacity_bytes: u64,
    /// A catch-up at start of at least this many events is followed by closing the
    /// database and opening it again (what sled held for the catch-up's writes is let
    /// go). `u64::MAX`: never.
    pub reopen_after_catch_up: u64,
    /// Hand-overs the [`AuditFeed`] may make before the audit task takes them (while
    /// the read model catches up at start they are batches, and about this many steps
    /// wait at most; after it, live batches only while few wait, so at most twice this
    /// many). When they fill up while the read model catches up, it waits; after that,
    /// the feed lets go and the task reads the log itself until it has caught up again.
    pub feed_capacity: usize,
    /// A fed projection starting at least this many events behind the log's head
    /// catches up alone: its feed starts let go, so the read model catches up (and the
    /// server serves) at a restart's pace, and the audit task folds the log itself with a
    /// read model of its own, which it drops when it hands the events back to the feed
    /// at the head. Below it, the read model describes the catch-up and waits for the
    /// audit task: one fold of the log builds every projection, the fastest and
    /// cheapest way to have them all (a million events in about 1.9 s after the log
    /// opened on the 2-core reference machine, against 2.9 s catching up alone, which
    /// also reads the log and folds a read model a second time), but the server serves
    /// only once both are done (1.9 s instead of 1.3). The default, 2^20 events, bounds
    /// that wait (bench/FINDINGS.md, round 20).
    /// `u64::MAX`: the read model describes every catch-up.
    pub catch_up_alone_behind: u64,
    /// Whether the audit task's own fold (a rebuild, a catch-up far behind, or after the
    /// feed let go) writes organization-local entries as stubs, described when read
    /// (`lazy.rs`), instead of describing every entry as it folds. The answers are the
    /// same either way; describing at once makes a rebuild cost about twice as much.
    pub describe_when_read: bool,
    /// Whether [`AuditProjection::start`] returns only once the projection has
    /// caught up with the log head (the server doesn't wait: audit reads wait
    /// for the catch-up themselves). [`AuditProjection::start_fed`] never waits: its
    /// catch-up is the read model's, which its feed is given to.
    pub wait_at_start: bool,
}

impl AuditOptions {
    /// Defaults with `public_base_url`.
    pub fn new(public_base_url: impl Into<String>) -> Self {
        Self {
            public_base_url: public_base_url.into(),
            // Stubs are a few bytes: with 65,536 events a write (8 MiB of described
            // entries was about 15,000), a first start on 100,000 organizations under
            // lookup load stayed 37 MiB more resident once caught up (272 against 227 to
            // 235 MiB, scenario 8's measure); 16,384 left the rebuild's time unchanged
            // (bench/FINDINGS.md, round 19).
            batch_events: 16_384,
            batch_bytes: 8 * 1024 * 1024,
            merge_events: 4_096,
            // 20 ms rather than 100: the same CPU in smaller bursts. Measured under 64
            // writing clients (bench writes scenario, alternating builds, same etcd):
            // p99 8.8-9.0 ms against 9.6-9.7 ms, the same throughput.
            linger: std::time::Duration::from_millis(20),
            // Small: a 64 MiB cache kept about 29 MiB more resident after a first start
            // on 100,000 organizations, and pages and exports were no faster.
            cache_capacity_bytes: 8 * 1024 * 1024,
            // After a catch-up of 500,000 events, a reopen took RSS from 306 / 313 to
            // 272 / 275 MiB (restart: 256); a few thousand events leave little to win.
            reopen_after_catch_up: 65_536,
            feed_capacity: 32_768,
            // A rebuild of a million events in one fold: every projection about 1.9 s
            // after the log opened here, the server serving then (serving first: 1.3 s,
            // the audit timeline about 2.9 s). Past it, the server serves first and a
            // fold of its own replays the whole log in the background.
            catch_up_alone_behind: 1 << 20,
            describe_when_read: true,
            wait_at_start: true,
        }
    }
}

/// Counters for status pages, tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStats {
    /// The last log position applied and visible to queries.
    pub position: u64,
    /// The position recorded at start (0 after a rebuild).
    pub resumed_from: u64,
    /// Whether this start cleared the database and rebuilt it.
    pub rebuilt: bool,
    /// Whether the events come described from an [`AuditFeed`] now (the task holds no
    /// read model of its own) rather than from the task's own fold of the log.
    pub fed: bool,
    /// How often the database was closed and opened again (after a catch-up).
    pub reopens: u32,
    /// How often a fold of the task's own (a catch-up alone, or after the feed let go)
    /// handed the events back to the feed at the head.
    pub handbacks: u32,
}

/// One stored row: (tree, key, value).
pub type DumpedRow = (String, Vec<u8>, Vec<u8>);

pub(crate) struct Shared {
    /// The database (its `timeline` tree) and the index state.
    pub timeline: Store,
    /// The log.
    pub store: Arc<dyn EventStore>,
    pub public_base_url: String,
    pub applied: watch::Sender<u64>,
    failure: RwLock<Option<String>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    resumed_from: u64,
    rebuilt: bool,
    /// Whether the tail takes its events from the feed now.
    fed: std::sync::atomic::AtomicBool,
    /// How often the database was reopened.
    reopens: std::sync::atomic::AtomicU32,
    /// How often an own fold handed the events back to the feed.
    handbacks: std::sync::atomic::AtomicU32,
    /// Raised by readers waiting for a position: the tail writes what it has gathered
    /// now if that reaches a position a reader waits for.
    demand: tokio::sync::Notify,
    /// The positions readers wait for (position → readers).
    wanted: Mutex<BTreeMap<u64, usize>>,
}

impl Shared {
    /// Whether a reader waits for a position at or below `position`.
    fn demanded(&self, position: u64) -> bool {
        self.wanted
            .lock()
            .expect("wanted lock")
            .first_key_value()
            .is_some_and(|(wanted, _)| *wanted <= position)
    }
}

/// A reader's wait for a position, registered while it lasts.
struct Wanted<'a> {
    shared: &'a Shared,
    position: u64,
}

impl<'a> Wanted<'a> {
    fn register(shared: &'a Shared, position: u64) -> Self {
        *shared
            .wanted
            .lock()
            .expect("wanted lock")
            .entry(position)
            .or_default() += 1;
        Self { shared, position }
    }
}

impl Drop for Wanted<'_> {
    fn drop(&mut self) {
        let mut wanted = self.shared.wanted.lock().expect("wanted lock");
        if let Some(count) = wanted.get_mut(&self.position) {
            *count -= 1;
            if *count == 0 {
                wanted.remove(&self.position);
            }
        }
    }
}

/// The audit timeline: entries, indexes, claims of domains and checkpoints in a sled database
/// of its own, folded from the log and kept current. Cheap to clone.
#[derive(Clone)]
pub struct AuditProjection {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditProjection")
            .field("stats", &self.stats())
            .finish()
    }
}

impl AuditProjection {
    /// Opens (or creates) the database at `path`, catches up with `store` and keeps
    /// following it. Returns once everything committed at the call is applied.
    pub async fn start(
        store: Arc<dyn EventStore>,
        path: &Path,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let (db, config) = open_database(path, &options)?;
        Self::open(store, db, Some(config), options, None).await
    }

    /// Like [`AuditProjection::start`], but every event after the position the database
    /// has recorded is described by the returned [`AuditFeed`], to be given to the
    /// control plane's read model task
    /// ([`signpost_control::ControlPlane::start_with`]): the audit task keeps no read
    /// model of its own. A catch-up of at least
    /// [`AuditOptions::catch_up_alone_behind`] events is the exception: the feed starts
    /// let go, the task folds the log itself, and hands the events back to the feed once
    /// it has reached the head.
    pub async fn start_fed(
        store: Arc<dyn EventStore>,
        path: &Path,
        options: AuditOptions,
    ) -> Result<(Self, AuditFeed), AuditError> {
        let (db, config) = open_database(path, &options)?;
        let (sender, steps) = mpsc::channel(options.feed_capacity.max(1));
        let handback = Handback::default();
        let head = store.head().position;
        let fed = FedSide {
            steps,
            handback: handback.clone(),
        };
        let stubs = options.describe_when_read;
        let projection = Self::open(store, db, Some(config), options, Some(fed)).await?;
        let sender = projection.stats().fed.then_some(sender);
        let feed = AuditFeed::new(
            projection.shared.resumed_from,
            head,
            sender,
            handback,
            stubs,
        );
        Ok((projection, feed))
    }

    /// Like [`AuditProjection::start`] on an already opened database (which is never
    /// reopened: the caller may hold it).
    pub async fn start_with_db(
        store: Arc<dyn EventStore>,
        db: sled::Db,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        Self::open(store, db, None, options, None).await
    }

    /// Opens the projection; `config`: how to open `db` again (`None`: never reopened);
    /// `feed`: the side of a feed describing every event past the recorded position.
    async fn open(
        store: Arc<dyn EventStore>,
        db: sled::Db,
        config: Option<sled::Config>,
        options: AuditOptions,
        feed: Option<FedSide>,
    ) -> Result<Self, AuditError> {
        let epoch = store.store_epoch();
        let head = store.head().position;
        let names = db.tree_names();
        let format_1 = keys::FORMAT_1_TREES
            .iter()
            .any(|tree| names.iter().any(|name| name.as_ref() == tree.as_bytes()));
        if format_1 {
            tracing::warn!("audit database of format 1 (nine trees); rebuilding it");
            for tree in keys::FORMAT_1_TREES {
                db.drop_tree(tree)?;
            }
        }
        let mut tree = db.open_tree(keys::TIMELINE)?;
        let recorded = tree.get(keys::META)?.map(|bytes| {
            Meta::decode(bytes.as_ref()).map_err(|_| {
                tracing::warn!("audit database record does not decode; rebuilding it");
            })
        });
        let resume = match recorded {
            Some(Ok(meta)) if meta.format != keys::FORMAT => {
                tracing::warn!(
                    format = meta.format,
                    expected = keys::FORMAT,
                    "audit database of another format; rebuilding it"
                );
                None
            }
            Some(Ok(meta)) if meta.epoch != epoch.as_bytes() => {
                tracing::warn!(
                    recorded_position = meta.position,
                    head,
                    "audit database belongs to another log (store epoch); rebuilding it"
                );
                None
            }
            Some(Ok(meta)) => {
                let same_history = match meta.position {
                    0 => true,
                    position if position > head => false,
                    position => {
                        let at = store.read_range(position, 1).await?;
                        at.first().map(|e| &e.hash[..]) == Some(meta.hash.as_slice())
                    }
                };
                if !same_history {
                    tracing::warn!(
                        recorded_position = meta.position,
                        head,
                        "audit database belongs to another log history; rebuilding it"
                    );
                }
                same_history.then_some(meta)
            }
            Some(Err(())) | None => None,
        };
        let rebuild = resume.is_none();
        let meta = match resume {
            Some(meta) => meta,
            None => {
                db.drop_tree(keys::TIMELINE)?;
                tree = db.open_tree(keys::TIMELINE)?;
                let meta = Meta {
                    format: keys::FORMAT,
                    epoch: epoch.as_bytes().to_vec(),
                    position: 0,
                    hash: Vec::new(),
                    base_position: 0,
                    runs: Vec::new(),
                    next_run: 1,
                };
                tree.insert(keys::META, meta.encode_to_vec())?;
                meta
            }
        };
        let resumed_from = meta.position;
        let timeline = Store::open(db, tree, config, &meta, options.merge_events as u64)?;
        let (applied, _) = watch::channel(resumed_from);
        let (stop, stop_signal) = watch::channel(false);
        let shared = Arc::new(Shared {
            timeline,
            store: store.clone(),
            public_base_url: options.public_base_url.clone(),
            applied,
            failure: RwLock::new(None),
            stop,
            task: Mutex::new(None),
            resumed_from,
            rebuilt: rebuild,
            fed: std::sync::atomic::AtomicBool::new(false),
            reopens: std::sync::atomic::AtomicU32::new(0),
            handbacks: std::sync::atomic::AtomicU32::new(0),
            demand: tokio::sync::Notify::new(),
            wanted: Mutex::new(BTreeMap::new()),
        });
        // A fed projection's catch-up is the read model's, which its feed is given to
        // after this returns: it cannot be waited for here.
        let wait_at_start = options.wait_at_start && feed.is_none();
        let behind = head.saturating_sub(resumed_from);
        let source = Source::start(&shared, &options, meta.position, feed, behind);
        let reopen_due = head.saturating_sub(resumed_from) >= options.reopen_after_catch_up;
        let task = tokio::spawn(tail(
            shared.clone(),
            options,
            meta,
            reopen_due,
            source,
            stop_signal,
        ));
        *shared.task.lock().expect("task lock") = Some(task);
        let projection = Self { shared };
        if wait_at_start {
            projection.wait_for(head).await?;
        }
        Ok(projection)
    }

    /// The last log position applied and visible to queries.
    pub fn position(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// A receiver that changes whenever the applied position moves.
    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Why the projection stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.read().expect("failure lock").clone()
    }

    /// Counters.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            position: self.position(),
            resumed_from: self.shared.resumed_from,
            rebuilt: self.shared.rebuilt,
            fed: self.shared.fed.load(std::sync::atomic::Ordering::Relaxed),
            reopens: self
                .shared
                .reopens
                .load(std::sync::atomic::Ordering::Relaxed),
            handbacks: self
                .shared
                .handbacks
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The database (earlier versions kept checkpoints in it: [`crate::Checkpointer::open_at`]
    /// moves them out), held until the guard drops: the projection may close and reopen
    /// it after a catch-up, so keep no clone of it (nor of its trees) past the guard.
    pub fn database(&self) -> Result<impl std::ops::Deref<Target = sled::Db> + '_, AuditError> {
        self.shared.timeline.database()
    }

    /// The log the projection follows.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.shared.store
    }

    /// Waits until the projection has applied `position` (or stopped).
    pub async fn wait_for(&self, position: u64) -> Result<(), AuditError> {
        let mut watcher = self.shared.applied.subscribe();
        let mut wanted = None;
        loop {
            let reached = *watcher.borrow_and_update() >= position;
            if reached || self.failure().is_some() {
                break;
            }
            // Someone is waiting: the tail writes what it has as soon as that reaches
            // `position`, instead of lingering or gathering a larger batch. Asked again
            // every few milliseconds, as the position may need commits not read yet.
            wanted.get_or_insert_with(|| Wanted::register(&self.shared, position));
            self.shared.demand.notify_one();
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(5), watcher.changed()).await;
        }
        drop(wanted);
        match self.failure() {
            Some(reason) if self.position() < position => Err(AuditError::Stopped(reason)),
            _ => Ok(()),
        }
    }

    /// Stops tailing and waits for the task to end. Rows not written yet are dropped: the
    /// next start re-applies them from the recorded position. The database closes when
    /// the last clone is dropped.
    pub async fn stop(&self) {
        let _ = self.shared.stop.send(true);
        let task = self.shared.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Every row the log determines, listed as format 1 stored them (tree, key, value),
    /// whatever the batching and whether entries were described when folded or are
    /// described when read (stubs are listed described): for comparing a rebuild with a
    /// live database.
    pub async fn dump(&self) -> Result<Vec<DumpedRow>, AuditError> {
        let timeline = &self.shared.timeline;
        let tree = timeline.tree()?;
        let mut rows = Vec::new();
        let meta = match tree.get(keys::META)? {
            Some(bytes) => Meta::decode(bytes.as_ref())?,
            None => Meta::default(),
        };
        for (key, value) in [
            ("epoch", meta.epoch),
            ("hash", meta.hash),
            ("position", meta.position.to_be_bytes().to_vec()),
        ] {
            rows.push(("meta".to_owned(), key.as_bytes().to_vec(), value));
        }
        let mut times = Vec::new();
        let mut entries = Vec::new();
        for row in tree.scan_prefix([keys::ENTRY]) {
            let (key, value) = row?;
            let chunk = Chunk::decode(keys::trailing_position(&key), &value)?;
            for position in chunk.first..=chunk.last() {
                let bytes = chunk.entry(position).unwrap_or_default();
                entries.push((position, bytes.to_vec()));
                let mut time = keys::time_bytes(chunk.time(position).unwrap_or_default()).to_vec();
                time.extend_from_slice(&position.to_be_bytes());
                times.push(("time".to_owned(), time, Vec::new()));
            }
        }
        let postings = timeline.all_postings()?;
        drop(tree);
        let mut in_log_order = crate::lazy::InLogOrder::default();
        let mut describer = crate::lazy::Describer::InLogOrder(&mut in_log_order, self.store());
        for (position, stored) in entries {
            let stored = describer.resolve(position, stored).await?;
            rows.push((
                "entries".to_owned(),
                position.to_be_bytes().to_vec(),
                stored,
            ));
        }
        rows.extend(times);
        for index in Index::ALL {
            let mut keys: Vec<Vec<u8>> = postings
                .iter()
                .filter(|(i, _, _)| *i == index)
                .map(|(_, id, position)| keys::indexed(id, *position))
                .collect();
            keys.sort();
            rows.extend(
                keys.into_iter()
                    .map(|key| (index.name().to_owned(), key, Vec::new())),
            );
        }
        Ok(rows)
    }

    /// How many stored entries are stubs, to be described when read
    /// ([`AuditOptions::describe_when_read`]): a walk through every entry.
    pub fn entries_described_when_read(&self) -> Result<u64, AuditError> {
        let mut stubs = 0;
        self.scan_entries(1, self.position(), Order::Ascending, |_, stored| {
            let (entry, _) = keys::split_stored(stored)?;
            if keys::stub_organization(entry)?.is_some() {
                stubs += 1;
            }
            Ok(true)
        })?;
        Ok(stubs)
    }

    /// Calls `f` with each stored entry's position and bytes in `[low, high]` (for
    /// queries without an index).
    pub(crate) fn scan_entries(
        &self,
        low: u64,
        high: u64,
        order: Order,
        f: impl FnMut(u64, &[u8]) -> Result<bool, AuditError>,
    ) -> Result<(), AuditError> {
        self.shared.timeline.entries(low, high, order, f)
    }
}

/// How far behind the log's head the tail gathers full batches instead of lingering.
const FAR_BEHIND: u64 = 1024;

/// A database with the settings of `options`, and those settings (to open it again).
fn open_database(
    path: &Path,
    options: &AuditOptions,
) -> Result<(sled::Db, sled::Config), AuditError> {
    // A projection needs no durability of its own (it records the position it has
    // applied and catches up from the log), so: no background flushing, and a small
    // page cache (sled's default is 1 GiB; pages are read back from disk fine).
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity_bytes)
        .flush_every_ms(None);
    let db = signpost_eventlog::open_sled_waiting_for_lock(
        &config,
        signpost_eventlog::DEFAULT_LOCK_WAIT,
    )?;
    Ok((db, config))
}

/// The projection's side of a feed: the steps it describes, and where the own fold
/// offers the events back to it.
struct FedSide {
    steps: mpsc::Receiver<Vec<Step>>,
    handback: Handback,
}

/// Where the tail's events come from.
struct Source {
    /// Where whether the source is fed, and its handbacks, are shown.
    shared: Arc<Shared>,
    store: Arc<dyn EventStore>,
    /// Where an own fold offers the events back to the feed (a fed projection only), and
    /// the room of the channel it offers.
    handback: Option<(Handback, usize)>,
    mode: Mode,
    /// The last position taken (or written before the start).
    last: u64,
    /// Whether its own folds write stubs ([`AuditOptions::describe_when_read`]).
    stubs: bool,
}

enum Mode {
    /// Taking the steps of its own fold of the log (`own_fold`, on a thread of its own),
    /// which come in batches: `taking` is the rest of the last one.
    Own {
        steps: mpsc::Receiver<OwnStep>,
        taking: std::vec::IntoIter<Step>,
    },
    /// Taking the steps the read model's task describes, which come in batches
    /// (`taking`: the rest of the last one): while it catches up at start, and after
    /// that, what it applied before it ran out of events at hand (`AuditFeed`).
    Fed {
        steps: mpsc::Receiver<Vec<Step>>,
        taking: std::vec::IntoIter<Step>,
    },
}

impl Source {
    /// The source of a task whose rows are written up to `recorded`, `behind` events
    /// behind the log's head: the feed's steps if there is a feed and the catch-up is
    /// short, else its own fold.
    fn start(
        shared: &Arc<Shared>,
        options: &AuditOptions,
        recorded: u64,
        feed: Option<FedSide>,
        behind: u64,
    ) -> Self {
        let handback = feed
            .as_ref()
            .map(|fed| (fed.handback.clone(), options.feed_capacity.max(1)));
        let fed = feed.and_then(|fed| {
            if behind < options.catch_up_alone_behind {
                return Some(fed.steps);
            }
            tracing::info!(
                behind,
                "audit timeline catches up alone; the read model does not wait for it"
            );
            None
        });
        let store = shared.store.clone();
        let mode = match fed {
            Some(steps) => Mode::Fed {
                steps,
                taking: Vec::new().into_iter(),
            },
            None => Mode::Own {
                steps: own_fold(
                    store.clone(),
                    recorded,
                    handback.clone(),
                    options.describe_when_read,
                ),
                taking: Vec::new().into_iter(),
            },
        };
        let source = Self {
            shared: shared.clone(),
            store,
            handback,
            mode,
            last: recorded,
            stubs: options.describe_when_read,
        };
        source.show_fed();
        source
    }

    fn show_fed(&self) {
        self.shared
            .fed
            .store(self.is_fed(), std::sync::atomic::Ordering::Relaxed);
    }

    fn is_fed(&self) -> bool {
        matches!(self.mode, Mode::Fed { .. })
    }

    /// A fold of its own, with rows past the last position taken.
    fn own(&self) -> Mode {
        Mode::Own {
            steps: own_fold(
                self.store.clone(),
                self.last,
                self.handback.clone(),
                self.stubs,
            ),
            taking: Vec::new().into_iter(),
        }
    }

    /// The next event of the batch already taken, if any: no waiting and no channel.
    fn buffered(&mut self) -> Option<Step> {
        let (Mode::Fed { taking, .. } | Mode::Own { taking, .. }) = &mut self.mode;
        let step = taking.next()?;
        self.last = step.position;
        Some(step)
    }

    /// The next event (`None`: the log was closed). Cancel-safe: nothing is awaited
    /// after an event is taken.
    async fn next(&mut self) -> Option<Result<Step, String>> {
        loop {
            match &mut self.mode {
                Mode::Fed { steps, taking } => {
                    if let Some(step) = taking.next() {
                        self.last = step.position;
                        return Some(Ok(step));
                    }
                    if let Some(batch) = steps.recv().await {
                        *taking = batch.into_iter();
                    } else {
                        // The feed let go (or the read model's task stopped): read the
                        // log again, with rows from the first step not handed over.
                        tracing::warn!(
                            position = self.last,
                            "audit timeline reads the log itself until it catches up"
                        );
                        self.mode = self.own();
                        self.show_fed();
                    }
                }
                Mode::Own { steps, taking } => {
                    if let Some(step) = taking.next() {
                        self.last = step.position;
                        return Some(Ok(step));
                    }
                    match steps.recv().await? {
                        OwnStep::Steps(batch) => *taking = batch.into_iter(),
                        OwnStep::Failed(reason) => return Some(Err(reason)),
                        OwnStep::HandedBack(steps) => {
                            tracing::info!(
                                position = self.last,
                                "audit timeline caught up; its own read model is dropped"
                            );
                            self.mode = Mode::Fed {
                                steps,
                                taking: Vec::new().into_iter(),
                            };
                            self.show_fed();
                            self.shared
                                .handbacks
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// Steps of the own fold queued for the tail (the fold waits when they are not taken).
const OWN_FOLD_QUEUE: usize = 4096;

/// How long an own fold that has offered the events back to the feed leaves the read
/// model's task to take the offer once a new event is in the log, before it withdraws
/// the offer and folds the event itself (to offer again at the head). The read model's
/// task applies an event within microseconds of its append when it is not loaded.
const HANDBACK_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// What the own fold hands the tail.
enum OwnStep {
    /// Events in order, each with its rows if it is past the rows already written.
    Steps(Vec<Step>),
    /// The log could not be read or an event decoded: the projection stops.
    Failed(String),
    /// The fold reached the log's head and the feed took the events back: every step
    /// after the last one comes described from the read model's task, into this channel.
    HandedBack(mpsc::Receiver<Vec<Step>>),
}

/// What came of an offer to give the events back to the feed.
enum Offered {
    /// The feed takes them up at `first`; the fold ends after the event before it.
    /// `held`: an event the fold read meanwhile.
    Taken {
        first: u64,
        steps: mpsc::Receiver<Vec<Step>>,
        held: Option<Next>,
    },
    /// The fold keeps folding, from the event it read meanwhile (`None`: the log
    /// closed), and offers again at the head.
    Kept { next: Option<Next> },
    /// The offer was dropped unanswered (the feed is gone): the fold keeps folding and
    /// offers no more.
    Refused,
    /// The tail is gone.
    Closed,
}

/// The next envelope of a subscription.
type Next = Result<EventEnvelope, signpost_eventlog::LogError>;

/// Folds the log from position 1 with a read model of its own, on a thread of its own,
/// and returns its steps: rows for positions past `rows_after`, for as long as the log
/// and the receiver last. With a `handback` (the projection has a feed; with the room
/// of the channel to offer), the fold offers the events back to the feed whenever it
/// has reached the log's head, and ends once the feed has taken them.
fn own_fold(
    store: Arc<dyn EventStore>,
    rows_after: u64,
    handback: Option<(Handback, usize)>,
    stubs: bool,
) -> mpsc::Receiver<OwnStep> {
    let (sender, receiver) = mpsc::channel(OWN_FOLD_QUEUE);
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("audit-fold".into())
        .spawn(move || {
            // One future for the whole fold, driven by this thread: the fold's work runs
            // between its awaits, and it parks only when it waits.
            runtime.block_on(fold_alone(store, rows_after, handback, stubs, sender));
        });
    if let Err(error) = spawned {
        let (failed, receiver) = mpsc::channel(1);
        let _ = failed.try_send(OwnStep::Failed(format!(
            "starting the audit fold thread: {error}"
        )));
        return receiver;
    }
    receiver
}

/// Most steps the own fold hands the tail at once (fewer wake-ups of the tail).
const OWN_FOLD_BATCH: usize = 256;

/// The own fold's loop (see [`own_fold`]).
async fn fold_alone(
    store: Arc<dyn EventStore>,
    rows_after: u64,
    mut handback: Option<(Handback, usize)>,
    stubs: bool,
    sender: mpsc::Sender<OwnStep>,
) {
    if let Some((handback, _)) = &handback {
        // A fold catching up alone at start leaves the cores to the read model until it
        // has caught up (and the server serves).
        tokio::select! {
            () = handback.model_caught_up() => {}
            () = sender.closed() => return,
        }
    }
    let mut fold = OwnFold::new(stubs);
    let mut events = store.subscribe(1);
    let mut last = 0;
    // Steps not handed to the tail yet: handed over when there are enough, or before the
    // fold waits for anything.
    let mut batch = Vec::with_capacity(OWN_FOLD_BATCH);
    // Once the feed has taken the events back: its first position and steps. The fold
    // goes on up to the event before it (an event read while the offer stood is the one
    // after the offer, so at most that).
    let mut taken: Option<(u64, mpsc::Receiver<Vec<Step>>)> = None;
    let mut held: Option<Next> = None;
    loop {
        if let Some((first, steps)) = taken.take() {
            if last + 1 >= first {
                let _ = hand(&sender, &mut batch).await;
                let _ = sender.send(OwnStep::HandedBack(steps)).await;
                return;
            }
            taken = Some((first, steps));
        }
        // The event read already, or the next one if it can be read without waiting
        // (`Some(None)`: the log closed).
        let ready = match held.take() {
            Some(next) => Some(Some(next)),
            None => events.next().now_or_never(),
        };
        let next = match ready {
            Some(next) => next,
            None => {
                // Nothing to read without waiting: the tail gets what is gathered, and a
                // fold at the log's head offers the events back.
                if !hand(&sender, &mut batch).await {
                    return;
                }
                let offer_to = handback.as_ref().filter(|(to, _)| {
                    taken.is_none()
                        && last >= rows_after
                        && last >= store.head().position
                        && to.feed_is_alive()
                });
                match offer_to {
                    None => tokio::select! {
                        next = events.next() => next,
                        () = sender.closed() => None,
                    },
                    Some((to, room)) => {
                        match offer(&*store, to, *room, last, &mut events, &sender).await {
                            Offered::Taken {
                                first,
                                steps,
                                held: read,
                            } => {
                                taken = Some((first, steps));
                                held = read;
                                continue;
                            }
                            Offered::Kept { next } => next,
                            Offered::Refused => {
                                handback = None;
                                continue;
                            }
                            Offered::Closed => return,
                        }
                    }
                }
            }
        };
        let Some(next) = next else {
            let _ = hand(&sender, &mut batch).await;
            return;
        };
        let decoded = next.map_err(|e| e.to_string()).and_then(|envelope| {
            let event = signpost_domain::decode_event(&envelope.payload)
                .map_err(|e| format!("position {}: {e}", envelope.position))?;
            Ok((envelope, event))
        });
        let (envelope, event): (EventEnvelope, Event) = match decoded {
            Ok(pair) => pair,
            Err(reason) => {
                if hand(&sender, &mut batch).await {
                    let _ = sender.send(OwnStep::Failed(reason)).await;
                }
                return;
            }
        };
        last = envelope.position;
        let rows = fold.apply(&envelope, &event, envelope.position > rows_after);
        batch.push(Step::new(&envelope, rows));
        if batch.len() >= OWN_FOLD_BATCH && !hand(&sender, &mut batch).await {
            return;
        }
    }
}

/// Hands the gathered steps to the tail; false if it is gone.
async fn hand(sender: &mpsc::Sender<OwnStep>, batch: &mut Vec<Step>) -> bool {
    if batch.is_empty() {
        return !sender.is_closed();
    }
    let steps = std::mem::replace(batch, Vec::with_capacity(OWN_FOLD_BATCH));
    sender.send(OwnStep::Steps(steps)).await.is_ok()
}

/// Offers the events after `after` (the head, which the fold has reached) back to the
/// feed, with a channel of `room` steps. If the log's head is still `after` once the
/// offer stands, the read model's task has not seen a later event yet, so it takes the
/// offer at `after + 1`, whenever that comes: handed back at once, even if the log stays
/// quiet. Else (an append came in between) the fold waits for the read model's task to
/// take it; if the fold reads a new event first, the task has [`HANDBACK_GRACE`] to get
/// to it.
async fn offer(
    store: &dyn EventStore,
    handback: &Handback,
    room: usize,
    after: u64,
    events: &mut signpost_eventlog::Subscription,
    tail: &mpsc::Sender<OwnStep>,
) -> Offered {
    let (steps_sender, steps) = mpsc::channel(room);
    let (accepted_sender, mut accepted) = oneshot::channel();
    handback.offer(Offer {
        after,
        steps: steps_sender,
        accepted: accepted_sender,
    });
    // Paired with the fence the feed runs before it looks for an offer: either the feed
    // sees this offer, or the head read here is past the event it was looking at.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    if store.head().position == after {
        return Offered::Taken {
            first: after + 1,
            steps,
            held: None,
        };
    }
    let next = tokio::select! {
        biased;
        taken = &mut accepted => {
            return match taken {
                Ok(first) => Offered::Taken { first, steps, held: None },
                Err(_) => Offered::Refused,
            };
        }
        () = tail.closed() => {
            handback.withdraw();
            return Offered::Closed;
        }
        next = events.next() => next,
    };
    let taken = match tokio::time::timeout(HANDBACK_GRACE, &mut accepted).await {
        Ok(taken) => taken,
        // Not taken in time: withdrawn, unless the feed has just taken it.
        Err(_) if handback.withdraw() => return Offered::Kept { next },
        Err(_) => accepted.await,
    };
    match taken {
        Ok(first) => Offered::Taken {
            first,
            steps,
            held: next,
        },
        // Dropped unanswered: fold the event read.
        Err(_) => Offered::Kept { next },
    }
}

/// The tailing task: folds every event, writes rows past `meta.position` in batches;
/// `reopen_due`: whether the first write reaching the head reopens the database.
async fn tail(
    shared: Arc<Shared>,
    options: AuditOptions,
    meta: Meta,
    reopen_due: bool,
    mut source: Source,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending = Pending::default();
    let batch_events = options.batch_events.max(1);
    let batch_bytes = options.batch_bytes.max(1);
    let head = shared.store.watch_head();
    let mut writer = Writer {
        shared: shared.clone(),
        meta: Some(meta),
        in_flight: None,
        reopen_due,
    };
    // The end of the last complete commit gathered in `pending`, and when it must be written.
    let mut ready: Option<(u64, Vec<u8>)> = None;
    // The rows of a commit not complete yet: kept out of `pending` until its last event,
    // so that a write made meanwhile (the linger window closed, a reader waits) holds
    // whole commits only, every row at or below the position it records.
    let mut open_commit: Vec<Rows> = Vec::new();
    let mut write_at: Option<tokio::time::Instant> = None;
    // Events taken from the source's current batch since the last `select!` below.
    let mut straight = 0;
    loop {
        // The rest of a batch already taken is folded without setting up the `select!`
        // again for each event (about 3% of a first start's CPU); the stop, a write
        // finished, the linger window and readers' demands are looked at between batches
        // and at least every `STRAIGHT_EVENTS` events.
        let buffered = if straight < STRAIGHT_EVENTS {
            source.buffered()
        } else {
            None
        };
        let step = if let Some(step) = buffered {
            straight += 1;
            step
        } else {
            straight = 0;
            let linger = async {
                match write_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let in_flight = async {
                match writer.in_flight.as_mut() {
                    Some(in_flight) => (&mut in_flight.handle).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                biased;
                () = async {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                } => {
                    writer.settle().await;
                    return;
                }
                joined = in_flight => {
                    if !writer.finished(joined) {
                        return;
                    }
                    continue;
                }
                _ = linger => None,
                _ = shared.demand.notified(), if ready.is_some() => {
                    let demanded = ready
                        .as_ref()
                        .is_some_and(|(position, _)| shared.demanded(*position));
                    if !demanded {
                        continue;
                    }
                    None
                }
                next = source.next() => match next {
                    Some(next) => Some(next),
                    None => {
                        writer.settle().await;
                        return;
                    }
                },
            };
            let Some(next) = next else {
                // The linger window closed, or a reader waits: write what is gathered.
                if let Some((position, hash)) = ready.take() {
                    write_at = None;
                    let batch = std::mem::take(&mut pending);
                    if !writer.start(batch, position, hash).await {
                        return;
                    }
                }
                continue;
            };
            match next {
                Ok(step) => step,
                Err(reason) => {
                    writer.settle().await;
                    fail(&shared, reason);
                    return;
                }
            }
        };
        let Some(rows) = step.rows else {
            continue;
        };
        if step.commit_last_position > step.position {
            open_commit.push(rows);
            continue;
        }
        for rows in open_commit.drain(..) {
            pending.add(rows);
        }
        pending.add(rows);
        // A commit is complete: write now when the batch is full or a reader waits for
        // it, else within the linger window (near the head) or once the batch is full.
        let position = step.position;
        ready = Some((position, step.hash));
        let full = pending.events >= batch_events || pending.bytes >= batch_bytes;
        if full || shared.demanded(position) {
            write_at = None;
            let (position, hash) = ready.take().expect("just set");
            let batch = std::mem::take(&mut pending);
            if !writer.start(batch, position, hash).await {
                return;
            }
        } else if write_at.is_none() && *head.borrow() < position.saturating_add(FAR_BEHIND) {
            write_at = Some(tokio::time::Instant::now() + options.linger);
        }
    }
}

/// Events the tail folds from a batch already taken before it looks at anything else.
const STRAIGHT_EVENTS: usize = 256;

/// The tail's writes: one at a time on a blocking thread, while the tail folds on.
struct Writer {
    shared: Arc<Shared>,
    /// The record as of the last write finished (`None` while one is in flight).
    meta: Option<Meta>,
    in_flight: Option<InFlight>,
    /// Whether the next write that reaches the head reopens the database (the catch-up
    /// at start was long; see the module's notes).
    reopen_due: bool,
}

/// What a job of the writer did.
enum Done {
    /// Wrote a batch; `reached_head`: the log's head when it started (it was flushed).
    Wrote { reached_head: bool },
    /// Reopened the database (false: readers held it, or it is the caller's).
    Reopened(bool),
}

/// What a job returns: the record as of its end, and what it did.
type Finished = Result<(Meta, Done), AuditError>;

struct InFlight {
    position: u64,
    handle: tokio::task::JoinHandle<Finished>,
}

impl Writer {
    /// Starts writing `batch` (reaching `position` / `hash`) once the write in flight is
    /// done; false when a write failed (the projection has stopped).
    async fn start(&mut self, batch: Pending, position: u64, hash: Vec<u8>) -> bool {
        if !self.settle().await {
            return false;
        }
        let Some(mut meta) = self.meta.take() else {
            return false;
        };
        let shared = self.shared.clone();
        // A write that reaches the log's head is flushed too, so a server killed while
        // idle resumes at the head instead of folding the whole log again. Under load the
        // head has moved on by then and nothing is flushed (rows need no durability: they
        // are rebuilt from the log).
        let flush = *shared.store.watch_head().borrow() <= position;
        let handle = tokio::task::spawn_blocking(move || {
            shared.timeline.write(batch, &mut meta, position, &hash)?;
            if flush {
                shared.timeline.database()?.flush()?;
            }
            Ok((
                meta,
                Done::Wrote {
                    reached_head: flush,
                },
            ))
        });
        self.in_flight = Some(InFlight { position, handle });
        true
    }

    /// Starts reopening the database, after the write that reached `position` (already
    /// published: the reopen does not delay the catch-up's end).
    fn start_reopen(&mut self, position: u64) {
        let Some(meta) = self.meta.take() else {
            return;
        };
        let shared = self.shared.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let reopened = shared.timeline.reopen()?;
            Ok((meta, Done::Reopened(reopened)))
        });
        self.in_flight = Some(InFlight { position, handle });
    }

    /// Waits for the write in flight, if any; false when it failed.
    async fn settle(&mut self) -> bool {
        match self.in_flight.as_mut() {
            Some(in_flight) => {
                let joined = (&mut in_flight.handle).await;
                self.finished(joined)
            }
            None => true,
        }
    }

    /// The job in flight ended: a write's position is published (and the reopen due
    /// after the catch-up starts once a write reaches the head); false when it failed.
    fn finished(&mut self, joined: Result<Finished, tokio::task::JoinError>) -> bool {
        let position = self
            .in_flight
            .take()
            .map(|f| f.position)
            .unwrap_or_default();
        match joined {
            Ok(Ok((meta, done))) => {
                self.meta = Some(meta);
                match done {
                    Done::Wrote { reached_head } => {
                        self.shared.applied.send_replace(position);
                        if reached_head && self.reopen_due {
                            self.start_reopen(position);
                        }
                    }
                    Done::Reopened(true) => {
                        self.reopen_due = false;
                        self.shared
                            .reopens
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Done::Reopened(false) => {}
                }
                true
            }
            Ok(Err(error)) => {
                fail(&self.shared, format!("the audit database: {error}"));
                false
            }
            Err(error) => {
                fail(&self.shared, format!("the audit database: {error}"));
                false
            }
        }
    }
}

fn fail(shared: &Shared, reason: String) {
    tracing::error!(%reason, "audit projection stopped: cannot apply the log");
    *shared.failure.write().expect("failure lock") = Some(reason);
    shared.applied.send_modify(|_| {});
}
