//! [`AuditProjection`]: the audit database, kept current by tailing the log.
//!
//! At start it reads the `(epoch, position, hash)` it recorded. A different store epoch, a
//! position beyond the log's head (the log was replaced by an older copy) or another hash
//! at that position (another history) clears every projection tree and rebuilds from
//! position 1. Otherwise one task subscribes from
//! position 1: events up to the recorded position are only folded in memory (the fold
//! needs the state before each event), later ones also produce rows.
//!
//! Rows are written in batches: at the end of a commit (`commit_last_position`) once
//! `batch_events` events are pending, or when the commit reaches the log's head (live
//! tailing writes once per commit). A batch is one sled batch per tree, data trees first
//! and the recorded position last, then the position is published to readers. Readers
//! never look past the published position, so they always see whole commits. No fsync:
//! the database can always be rebuilt from the log, and a crash between two tree writes
//! is repaired by re-applying from the recorded position (every row is keyed by its
//! position, so re-applying rewrites identical rows).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use prost::Message;
use signpost_domain::Event;
use signpost_eventlog::{EventEnvelope, EventStore};
use tokio::sync::watch;

use crate::error::AuditError;
use crate::fold::{Fold, Rows};
use crate::keys;

/// Settings of the projection.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The base of our SP URLs (routes and connection views need it).
    pub public_base_url: String,
    /// Events gathered into one write while catching up.
    pub batch_events: usize,
    /// How long the tail waits for more commits before writing what it has, when it is
    /// at the head: one database write covers every commit of that window instead of
    /// one write per commit. A query waiting for a position cuts the window short,
    /// so lingering never delays a reader.
    pub linger: std::time::Duration,
    /// sled page cache of the audit database.
    pub cache_capacity_bytes: u64,
    /// Whether [`AuditProjection::start`] returns only once the projection has
    /// caught up with the log head (the server doesn't wait: audit reads wait
    /// for the catch-up themselves, so a long rebuild never delays serving).
    pub wait_at_start: bool,
}

impl AuditOptions {
    /// Defaults with `public_base_url`.
    pub fn new(public_base_url: impl Into<String>) -> Self {
        Self {
            public_base_url: public_base_url.into(),
            batch_events: 1024,
            linger: std::time::Duration::from_millis(100),
            cache_capacity_bytes: 64 * 1024 * 1024,
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
}

/// One stored row: (tree, key, value).
pub type DumpedRow = (String, Vec<u8>, Vec<u8>);

/// The trees of the database.
pub(crate) struct Trees {
    pub meta: sled::Tree,
    pub entries: sled::Tree,
    pub by_org: sled::Tree,
    pub by_connection: sled::Tree,
    pub by_actor: sled::Tree,
    pub by_type: sled::Tree,
    pub time: sled::Tree,
    pub domain_history: sled::Tree,
    pub org_domains: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Self, AuditError> {
        Ok(Self {
            meta: db.open_tree(keys::META)?,
            entries: db.open_tree(keys::ENTRIES)?,
            by_org: db.open_tree(keys::BY_ORG)?,
            by_connection: db.open_tree(keys::BY_CONNECTION)?,
            by_actor: db.open_tree(keys::BY_ACTOR)?,
            by_type: db.open_tree(keys::BY_TYPE)?,
            time: db.open_tree(keys::TIME)?,
            domain_history: db.open_tree(keys::DOMAIN_HISTORY)?,
            org_domains: db.open_tree(keys::ORG_DOMAINS)?,
        })
    }

    pub(crate) fn index(&self, name: &str) -> &sled::Tree {
        match name {
            keys::BY_ORG => &self.by_org,
            keys::BY_CONNECTION => &self.by_connection,
            keys::BY_ACTOR => &self.by_actor,
            _ => &self.by_type,
        }
    }

    fn all(&self) -> [&sled::Tree; 9] {
        [
            &self.meta,
            &self.entries,
            &self.by_org,
            &self.by_connection,
            &self.by_actor,
            &self.by_type,
            &self.time,
            &self.domain_history,
            &self.org_domains,
        ]
    }
}

pub(crate) struct Shared {
    pub db: sled::Db,
    pub trees: Trees,
    pub store: Arc<dyn EventStore>,
    pub public_base_url: String,
    pub applied: watch::Sender<u64>,
    failure: RwLock<Option<String>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    resumed_from: u64,
    rebuilt: bool,
    /// Raised by readers waiting for a position: the tail writes what it has gathered
    /// now instead of lingering.
    demand: tokio::sync::Notify,
}

/// The audit timeline: entries, indexes, route history and checkpoints in a sled database
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

/// Rows gathered for one write.
#[derive(Default)]
struct Pending {
    events: usize,
    entries: sled::Batch,
    index: HashMap<&'static str, sled::Batch>,
    time: sled::Batch,
    domain_history: sled::Batch,
    org_domains: sled::Batch,
}

impl Pending {
    fn add(&mut self, rows: Rows) {
        self.events += 1;
        if let Some((position, entry)) = rows.entry {
            self.entries
                .insert(&keys::position(position), entry.encode_to_vec());
        }
        for (tree, key) in rows.index {
            self.index.entry(tree).or_default().insert(key, &[][..]);
        }
        if let Some(key) = rows.time_key {
            self.time.insert(&key, &[][..]);
        }
        for (key, value) in rows.domain_history {
            self.domain_history.insert(key, value);
        }
        for key in rows.org_domains {
            self.org_domains.insert(key, &[][..]);
        }
    }

    fn write(self, trees: &Trees, position: u64, hash: &[u8]) -> Result<(), sled::Error> {
        trees.entries.apply_batch(self.entries)?;
        for (name, batch) in self.index {
            trees.index(name).apply_batch(batch)?;
        }
        trees.time.apply_batch(self.time)?;
        trees.domain_history.apply_batch(self.domain_history)?;
        trees.org_domains.apply_batch(self.org_domains)?;
        // The recorded position goes last: everything below it is written.
        let mut meta = sled::Batch::default();
        meta.insert(keys::META_HASH, hash);
        meta.insert(keys::META_POSITION, &position.to_be_bytes()[..]);
        trees.meta.apply_batch(meta)?;
        Ok(())
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
        // A projection needs no durability of its own (it records the position it has
        // applied and catches up from the log), so: no background flushing, and a small
        // page cache (sled's default is 1 GiB; pages are read back from disk fine).
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(None)
            .open()?;
        Self::start_with_db(store, db, options).await
    }

    /// Like [`AuditProjection::start`] on an already opened database.
    pub async fn start_with_db(
        store: Arc<dyn EventStore>,
        db: sled::Db,
        options: AuditOptions,
    ) -> Result<Self, AuditError> {
        let trees = Trees::open(&db)?;
        let epoch = store.store_epoch();
        let head = store.head().position;
        let recorded_epoch = trees.meta.get(keys::META_EPOCH)?;
        let recorded_position = trees
            .meta
            .get(keys::META_POSITION)?
            .map(|v| keys::trailing_position(&v))
            .unwrap_or(0);
        let recorded_hash = trees.meta.get(keys::META_HASH)?;
        let same_history = match recorded_position {
            0 => true,
            position if position > head => false,
            position => {
                let at = store.read_range(position, 1).await?;
                at.first().map(|e| e.hash.as_slice()) == recorded_hash.as_deref()
            }
        };
        let rebuild =
            recorded_epoch.as_deref() != Some(epoch.as_bytes().as_slice()) || !same_history;
        let resumed_from = if rebuild {
            if recorded_epoch.is_some() {
                tracing::warn!(
                    recorded_position,
                    head,
                    "audit database belongs to another log history; rebuilding it"
                );
            }
            for tree in trees.all() {
                tree.clear()?;
            }
            trees.meta.insert(keys::META_EPOCH, epoch.as_bytes())?;
            trees
                .meta
                .insert(keys::META_POSITION, &0u64.to_be_bytes()[..])?;
            0
        } else {
            recorded_position
        };
        let (applied, _) = watch::channel(resumed_from);
        let (stop, stop_signal) = watch::channel(false);
        let shared = Arc::new(Shared {
            db,
            trees,
            store: store.clone(),
            public_base_url: options.public_base_url.clone(),
            applied,
            failure: RwLock::new(None),
            stop,
            task: Mutex::new(None),
            resumed_from,
            rebuilt: rebuild,
            demand: tokio::sync::Notify::new(),
        });
        let wait_at_start = options.wait_at_start;
        let task = tokio::spawn(tail(shared.clone(), options, resumed_from, stop_signal));
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
        }
    }

    /// The database (checkpoints live in it too, in a tree a rebuild never clears).
    pub fn database(&self) -> &sled::Db {
        &self.shared.db
    }

    /// The log the projection follows.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.shared.store
    }

    /// Waits until the projection has applied `position` (or stopped).
    pub async fn wait_for(&self, position: u64) -> Result<(), AuditError> {
        let mut watcher = self.shared.applied.subscribe();
        loop {
            let reached = *watcher.borrow_and_update() >= position;
            if reached || self.failure().is_some() {
                break;
            }
            // Someone is waiting: the tail writes what it has instead of lingering. Asked
            // again every few milliseconds, as the position may need commits not read yet.
            self.shared.demand.notify_one();
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(5), watcher.changed()).await;
        }
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

    /// Every row of the rebuildable trees, for comparing a rebuild with a live database.
    pub fn dump(&self) -> Result<Vec<DumpedRow>, AuditError> {
        let mut rows = Vec::new();
        for (name, tree) in keys::PROJECTION_TREES.iter().zip(self.shared.trees.all()) {
            for row in tree.iter() {
                let (key, value) = row?;
                rows.push((name.to_string(), key.to_vec(), value.to_vec()));
            }
        }
        Ok(rows)
    }
}

/// The tailing task: folds every event, writes rows past `resumed_from` in batches.
async fn tail(
    shared: Arc<Shared>,
    options: AuditOptions,
    resumed_from: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut fold = Fold::new(&options.public_base_url);
    let mut pending = Pending::default();
    let batch_events = options.batch_events.max(1);
    let mut events = shared.store.subscribe(1);
    // The end of the last complete commit gathered in `pending`, and when it must be written.
    let mut ready: Option<(u64, Vec<u8>)> = None;
    let mut write_at: Option<tokio::time::Instant> = None;
    loop {
        let linger = async {
            match write_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = linger => None,
            _ = shared.demand.notified(), if ready.is_some() => None,
            next = events.next() => match next {
                Some(next) => Some(next),
                None => return,
            },
        };
        let Some(next) = next else {
            // The linger window closed: write what is gathered.
            if let Some((position, hash)) = ready.take() {
                write_at = None;
                if !write(&shared, std::mem::take(&mut pending), position, hash).await {
                    return;
                }
            }
            continue;
        };
        let outcome = next.map_err(|e| e.to_string()).and_then(|envelope| {
            let event = signpost_domain::decode_event(&envelope.payload)
                .map_err(|e| format!("position {}: {e}", envelope.position))?;
            Ok((envelope, event))
        });
        let (envelope, event): (EventEnvelope, Event) = match outcome {
            Ok(pair) => pair,
            Err(reason) => {
                fail(&shared, reason);
                return;
            }
        };
        let write_rows = envelope.position > resumed_from;
        let rows = fold.apply(&envelope, &event, write_rows);
        if !write_rows {
            continue;
        }
        pending.add(rows);
        if envelope.commit_last_position > envelope.position {
            continue;
        }
        // A commit is complete: write now when the batch is big, else within the linger window.
        ready = Some((envelope.position, envelope.hash.clone()));
        if pending.events >= batch_events {
            write_at = None;
            let (position, hash) = ready.take().expect("just set");
            if !write(&shared, std::mem::take(&mut pending), position, hash).await {
                return;
            }
        } else if write_at.is_none() {
            write_at = Some(tokio::time::Instant::now() + options.linger);
        }
    }
}

/// Writes a batch on a blocking thread and publishes its position; false when it failed.
async fn write(shared: &Arc<Shared>, batch: Pending, position: u64, hash: Vec<u8>) -> bool {
    let writer = shared.clone();
    let written =
        tokio::task::spawn_blocking(move || batch.write(&writer.trees, position, &hash)).await;
    match written {
        Ok(Ok(())) => {
            shared.applied.send_replace(position);
            true
        }
        Ok(Err(error)) => {
            fail(shared, format!("writing the audit database: {error}"));
            false
        }
        Err(error) => {
            fail(shared, format!("writing the audit database: {error}"));
            false
        }
    }
}

fn fail(shared: &Shared, reason: String) {
    tracing::error!(%reason, "audit projection stopped: cannot apply the log");
    *shared.failure.write().expect("failure lock") = Some(reason);
    shared.applied.send_modify(|_| {});
}
