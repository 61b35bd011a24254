//! The routing projection: folds the log into the routing table and keeps a
//! bounded history of route changes for watchers that resume.
//!
//! For each event the fold recomputes the routes of the organization the
//! event touched, from the aggregates after the event (a [`RouteSource`]), and
//! diffs them with the previous ones. Changes are gathered until the end of the event's commit
//! (`commit_last_position`), then published as one [`Delta`] at that revision:
//! every route change of one command reaches watchers in one message.
//!
//! Who reads the log: in the server, the control plane's read-model task
//! ([`RoutingProjection::fed`] + [`RoutingFeed`]), which decodes each event
//! once and lends its own organizations and connections as the source, so the
//! log is read once and the aggregates are held once. [`RoutingProjection::start`]
//! tails the log by itself with its own aggregates ([`OwnAggregates`]): for
//! tests, tools and rebuilds that must not share state with the read model.
//!
//! Readers never block the fold for long: the table is a persistent map
//! (`imbl`), so a snapshot is an O(1) clone that stays valid while the fold
//! moves on, and the history is a ring of at most `history_limit` deltas.
//!
//! A watcher pulls what it is behind by with [`RoutingProjection::pull`]: the published
//! deltas themselves while it is at most [`CATCH_UP_AFTER`] of them behind (each is
//! encoded once for every watcher); further behind, one *catch-up* delta of every domain
//! changed since its revision, in its state now, at the current revision. The catch-up
//! comes from the last-change index ([`LastChanges`]): each domain changed since the
//! projection started, once, at the revision of its last change, up to
//! `catch_up_routes` domains. So a watcher behind a long run of writes gets the routes
//! that changed, each once, instead of every delta or a reset and the whole table; only a
//! watcher behind the index's floor, or whose catch-up would be larger than
//! `catch_up_bytes`, is reset.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use signpost_domain::connection::Connection;
use signpost_domain::organization::Organization;
use signpost_domain::Event;
use signpost_eventlog::{EventEnvelope, EventStore};
use tokio::sync::watch;

use crate::routes::{organization_routes, rewrite_group_fields, EncodedRoute, OrganizationRoutes};

/// The whole routing table: domain → route, in domain order.
///
/// A persistent B-tree rather than imbl's hash trie: the trie's nodes are sized for 32
/// entries and mostly empty at this size (heaptrack put the trie at 28 MB for 100,000
/// routes, against the routes' own 43 MB); the B-tree keeps its nodes at least half full
/// (RSS after a restart with 100,000 routes 378 / 384 → 358 / 366 MiB, `Resolve` not
/// slower: bench/FINDINGS.md, round 5). Snapshots come out in domain order.
pub type RouteTable = imbl::OrdMap<signpost_domain::Id, EncodedRoute>;

/// Every route change of one commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The revision (log position) the change brings a watcher to.
    pub revision: u64,
    /// Routes added or replaced.
    pub upserts: Vec<EncodedRoute>,
    /// Domains that now route to password.
    pub deletes: Vec<String>,
    /// The delta as the routing stream sends it (see [`Delta::encoded_message`]).
    encoded_message: EncodedOnce,
}

impl Delta {
    /// The changes `upserts` and `deletes` of the commit at `revision`.
    pub fn new(revision: u64, upserts: Vec<EncodedRoute>, deletes: Vec<String>) -> Self {
        Self {
            revision,
            upserts,
            deletes,
            encoded_message: EncodedOnce::default(),
        }
    }

    /// The delta as the routing stream sends it, encoded by the first watcher that
    /// sends it and shared by every later one: with thousands of watchers the same
    /// bytes are built once per delta, not once per stream, and each stream sends a
    /// reference to them rather than a copy.
    ///
    /// The stream has one form for a delta (`signpost-grpc` builds it: the gRPC message,
    /// framed), so every caller passes the same `encode`; only the first call runs it.
    pub fn encoded_message(&self, encode: impl FnOnce(&Delta) -> Bytes) -> &Bytes {
        self.encoded_message.0.get_or_init(|| encode(self))
    }

    /// Consecutive deltas (in revision order, as [`RoutingProjection::pull`]
    /// returns them) with each run of deltas that only change again the domains of the
    /// run's first one merged into one delta at the run's last revision, holding each
    /// domain's last change. Applied to a table in turn, they leave what `deltas` leave,
    /// and each says the revision it brings its reader to; what is skipped is only the
    /// intermediate states of domains that changed again.
    ///
    /// A burst of commits on the same routes (group assignments to one connection, one
    /// after another) then reaches a watcher that is behind it as one message of those
    /// routes, not one message per commit. Deltas of other domains are left as they are,
    /// each still encoded once for every stream: merging them would save no bytes, and
    /// a merged delta is encoded for each stream that sends it (bench/FINDINGS.md, round
    /// 29). A merged delta is never larger than its run's first delta, and a first delta
    /// of more than [`MERGE_SCAN`] changes starts no run.
    pub fn coalesce(deltas: Deltas) -> Deltas {
        if deltas.len() < 2 {
            return deltas;
        }
        let mut coalesced = Deltas::with_capacity(deltas.len());
        let mut run: Vec<Arc<Delta>> = Vec::new();
        for delta in deltas {
            if run.first().is_some_and(|first| first.covers(&delta)) {
                run.push(delta);
                continue;
            }
            if !run.is_empty() {
                coalesced.push(Self::merged(std::mem::take(&mut run)));
            }
            run.push(delta);
        }
        if !run.is_empty() {
            coalesced.push(Self::merged(run));
        }
        coalesced
    }

    /// Upserts and deletions.
    fn changes(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    /// Whether every domain `next` changes is one this delta changes (this one no larger
    /// than [`MERGE_SCAN`]).
    fn covers(&self, next: &Delta) -> bool {
        if self.changes() > MERGE_SCAN || next.changes() > self.changes() {
            return false;
        }
        let changes = |domain: &[u8]| {
            self.upserts.iter().any(|route| route.domain() == domain)
                || self
                    .deletes
                    .iter()
                    .any(|deleted| deleted.as_bytes() == domain)
        };
        next.upserts.iter().all(|route| changes(route.domain()))
            && next
                .deletes
                .iter()
                .all(|deleted| changes(deleted.as_bytes()))
    }

    /// A non-empty run of consecutive deltas as one, at the last one's revision: each
    /// domain's last change, in domain order. A run of one is that delta.
    fn merged(mut run: Vec<Arc<Delta>>) -> Arc<Delta> {
        /// A domain's last change in the run.
        enum Last<'a> {
            Upsert(&'a EncodedRoute),
            Delete(&'a str),
        }
        if run.len() == 1 {
            if let Some(delta) = run.pop() {
                return delta;
            }
        }
        let revision = run.last().map_or(0, |delta| delta.revision);
        let mut last: BTreeMap<&[u8], Last<'_>> = BTreeMap::new();
        for delta in &run {
            for route in &delta.upserts {
                last.insert(route.domain(), Last::Upsert(route));
            }
            for domain in &delta.deletes {
                last.insert(domain.as_bytes(), Last::Delete(domain));
            }
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for change in last.into_values() {
            match change {
                Last::Upsert(route) => upserts.push(route.clone()),
                Last::Delete(domain) => deletes.push(domain.to_owned()),
            }
        }
        Arc::new(Delta::new(revision, upserts, deletes))
    }
}

/// Most changes of a delta that [`Delta::coalesce`] starts a run with: the domains of
/// the deltas after it are looked for among its own, one by one.
pub const MERGE_SCAN: usize = 64;

/// Most published deltas [`RoutingProjection::pull`] hands a watcher; one further behind
/// gets one catch-up delta instead, when the last-change index can build it.
pub const CATCH_UP_AFTER: usize = 16;

/// Most changes (routes and deletions) in one catch-up delta, whatever their bytes: a
/// catch-up is read under the table's read lock, so that read stays short even when the
/// changes are deletions of a few bytes each (a snapshot chunk is 1,000 routes).
pub const CATCH_UP_MAX_CHANGES: usize = 4096;

/// Published deltas, in revision order: held inline while there is one (a watcher that
/// keeps up pulls one delta a change, and every open stream pulls at every change: a heap
/// allocation and its free for each cost about 3% of a delivery's instructions,
/// bench/FINDINGS.md round 34).
pub type Deltas = smallvec::SmallVec<[Arc<Delta>; 1]>;

/// What a watcher is behind by ([`RoutingProjection::pull`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    /// The published deltas after its revision, in revision order (maybe none).
    Deltas(Deltas),
    /// One delta built for this watcher: every domain changed after its revision, in its
    /// state at the delta's revision (the current one), each once (a route, or a deletion
    /// for a domain that routes to password now, even if the watcher never had it).
    /// Applied to the watcher's table it gives the table at that revision, and like every
    /// delta it never splits a commit's changes.
    CatchUp(Delta),
}

/// A cache of a value's encoding, filled once. It is not part of the value: equal
/// values are equal encoded or not, and a clone (which may then be changed) starts
/// without it. Published deltas are never changed (the history holds them behind `Arc`).
#[derive(Default)]
struct EncodedOnce(OnceLock<Bytes>);

impl Clone for EncodedOnce {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for EncodedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for EncodedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(bytes) => write!(f, "{} bytes", bytes.len()),
            None => f.write_str("not encoded"),
        }
    }
}

/// The history no longer holds every change after the revision asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("route changes after revision {asked} are no longer kept (history starts after {floor})")]
pub struct HistoryGap {
    /// The revision asked for.
    pub asked: u64,
    /// Changes after this revision are kept.
    pub floor: u64,
}

/// Settings of the projection.
#[derive(Debug, Clone)]
pub struct RoutingOptions {
    /// The base of our SP URLs (entity id, ACS URL, redirect URI).
    pub public_base_url: String,
    /// How many deltas the history keeps for resuming watchers.
    pub history_limit: usize,
    /// How many changed domains the last-change index remembers (the oldest changes are
    /// forgotten first, and watchers behind them are reset).
    pub catch_up_routes: usize,
    /// Largest catch-up delta, in bytes of routes and deleted domains: a watcher whose
    /// catch-up would be larger is sent the published deltas, or reset. A catch-up is
    /// built and written for one stream, so it is kept to about a snapshot chunk's size
    /// (far under the 4 MiB a gRPC client usually accepts in one message): with 2 MiB,
    /// 1,000 streams behind writes spread over 4,096 routes of about 3 KiB each took
    /// the server's peak to 1.4 GiB (0.7 GiB before) and cut the writes with the streams
    /// open by a third; with 256 KiB that load is served as before (bench/FINDINGS.md,
    /// round 31).
    pub catch_up_bytes: usize,
}

impl RoutingOptions {
    /// Defaults with `public_base_url`.
    pub fn new(public_base_url: impl Into<String>) -> Self {
        Self {
            public_base_url: public_base_url.into(),
            history_limit: 4096,
            catch_up_routes: 65_536,
            catch_up_bytes: 256 * 1024,
        }
    }
}

/// Counters for status pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingStats {
    /// Revision applied.
    pub revision: u64,
    /// Routes in the table.
    pub routes: usize,
    /// Deltas kept.
    pub history_len: usize,
    /// Changes after this revision are kept as deltas.
    pub history_floor: u64,
    /// Domains in the last-change index.
    pub catch_up_routes: usize,
    /// Changes after this revision are in the last-change index.
    pub catch_up_floor: u64,
}

struct Live {
    revision: u64,
    table: RouteTable,
    /// The table's routes again, for `Resolve` ([`ByDomain`]).
    by_domain: ByDomain,
    history: VecDeque<Arc<Delta>>,
    history_floor: u64,
    last_changes: LastChanges,
}

/// Each domain changed since the projection started, once, at the revision of its last
/// change, with its state now: what a catch-up delta is read from. Bounded: past its
/// limit the oldest changes are forgotten and the floor moves up to them.
struct LastChanges {
    /// (revision of the domain's last change, domain) → its route now (None: unrouted).
    by_revision: BTreeMap<(u64, signpost_domain::Id), Option<EncodedRoute>>,
    /// Domain → the revision of its last change (its key in `by_revision`).
    revision_of: HashMap<signpost_domain::Id, u64, foldhash::fast::RandomState>,
    /// Every change after this revision is here.
    floor: u64,
    limit: usize,
}

impl LastChanges {
    fn new(limit: usize) -> Self {
        Self {
            by_revision: BTreeMap::new(),
            revision_of: HashMap::default(),
            floor: 0,
            limit: limit.max(1),
        }
    }

    /// Nothing is known before `revision` (the table was published whole there).
    fn restart_at(&mut self, revision: u64) {
        self.by_revision.clear();
        self.revision_of.clear();
        self.floor = revision;
    }

    /// `domain` changed at `revision` to `route`.
    fn record(&mut self, revision: u64, domain: &signpost_domain::Id, route: Option<EncodedRoute>) {
        if let Some(previous) = self.revision_of.insert(domain.clone(), revision) {
            self.by_revision.remove(&(previous, domain.clone()));
        }
        self.by_revision.insert((revision, domain.clone()), route);
        while self.by_revision.len() > self.limit {
            let Some(((oldest, forgotten), _)) = self.by_revision.pop_first() else {
                break;
            };
            self.revision_of.remove(&forgotten);
            self.floor = self.floor.max(oldest);
        }
    }

    /// The catch-up delta from `revision` (at or above the floor) to `head`, unless its
    /// routes and deleted domains come to more than `max_bytes`, or to more than
    /// [`CATCH_UP_MAX_CHANGES`].
    fn since(&self, revision: u64, head: u64, max_bytes: usize) -> Option<Delta> {
        debug_assert!(revision >= self.floor);
        let (mut upserts, mut deletes, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        let after = (revision.saturating_add(1), signpost_domain::Id::from(""));
        for ((_, domain), route) in self.by_revision.range(after..) {
            bytes += match route {
                Some(route) => route.wire_len(),
                None => domain.len(),
            };
            if bytes > max_bytes || upserts.len() + deletes.len() == CATCH_UP_MAX_CHANGES {
                return None;
            }
            match route {
                Some(route) => upserts.push(route.clone()),
                None => deletes.push(domain.to_string()),
            }
        }
        Some(Delta::new(head, upserts, deletes))
    }
}

impl Live {
    /// Sets the route of `domain` (`None`: unroutes it), in the table and its index.
    fn set(&mut self, domain: signpost_domain::Id, route: Option<EncodedRoute>) {
        self.by_domain.set(&domain, route.clone());
        match route {
            Some(route) => {
                self.table.insert(domain, route);
            }
            None => {
                self.table.remove(&*domain);
            }
        }
    }
}

/// The table's routes in a hash table by domain, for `Resolve`: one probe, where the
/// table's B-tree of 100,000 domains compared about 18, each reading a domain elsewhere
/// in memory (about 2 µs of the server's 20 to 22 a call by a profile, and `Resolve` at
/// 0.80 of the do-nothing call with this index against 0.74 without it, 20 turns each:
/// bench/FINDINGS.md, round 23). It holds the routes alone, the table's
/// own (an `Arc` each, 16 bytes a slot): a route holds its domain, which the index reads
/// to compare and to hash again when it grows. A map from the table's domain keys to
/// the routes (f520ce8) cost twice as much.
struct ByDomain {
    routes: hashbrown::HashTable<EncodedRoute>,
    hasher: foldhash::fast::RandomState,
}

impl ByDomain {
    fn new() -> Self {
        Self {
            routes: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.routes
            .reserve(additional, |held| hasher.hash_one(held.domain()));
    }

    fn get(&self, domain: &str) -> Option<&EncodedRoute> {
        let domain = domain.as_bytes();
        self.routes.find(self.hasher.hash_one(domain), |route| {
            route.domain() == domain
        })
    }

    fn set(&mut self, domain: &str, route: Option<EncodedRoute>) {
        debug_assert!(route
            .as_ref()
            .is_none_or(|route| route.domain() == domain.as_bytes()));
        let domain = domain.as_bytes();
        let hasher = &self.hasher;
        let hash = hasher.hash_one(domain);
        match (
            self.routes.find_entry(hash, |held| held.domain() == domain),
            route,
        ) {
            (Ok(held), Some(route)) => *held.into_mut() = route,
            (Ok(held), None) => {
                held.remove();
            }
            (Err(_), Some(route)) => {
                self.routes
                    .insert_unique(hash, route, |held| hasher.hash_one(held.domain()));
            }
            (Err(_), None) => {}
        }
    }
}

struct Shared {
    live: RwLock<Live>,
    /// Why the projection stopped (set once: it does not start again). Every watch
    /// stream looks at it after each change, so it is one atomic load while unset.
    failure: OnceLock<String>,
    epoch: Arc<str>,
    history_limit: usize,
    catch_up_bytes: usize,
}

/// The live routing projection. Cheap to clone.
#[derive(Clone)]
pub struct RoutingProjection {
    shared: Arc<Shared>,
    revision: watch::Receiver<u64>,
    /// Moves only when a commit changes the table (and when the projection stops).
    table: watch::Receiver<TableChange>,
}

/// The last commit that changed the table, as [`RoutingProjection::watch_table`] tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableChange {
    /// Its revision.
    pub revision: u64,
    /// Its delta, with the revision of the table change before it: a watcher holding any
    /// revision from that one up to (not including) the delta's is behind by this delta
    /// alone, and can take it without pulling ([`TableChange::delta_after`]). None for the
    /// table a start-up catch-up published whole.
    pub delta: Option<(u64, Arc<Delta>)>,
}

impl TableChange {
    /// The delta that brings a watcher at `revision` to this change, when it is the only
    /// one it is behind by (otherwise [`RoutingProjection::pull`] says what it is).
    pub fn delta_after(self, revision: u64) -> Option<Arc<Delta>> {
        self.delta
            .filter(|(before, delta)| *before <= revision && revision < delta.revision)
            .map(|(_, delta)| delta)
    }
}

impl std::fmt::Debug for RoutingProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingProjection")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Where the fold reads the aggregates a route is computed from: the state
/// *after* the event being applied. The control plane's read model is one (so
/// the routing table needs no copy of every organization and connection); a
/// projection that tails the log on its own keeps its own ([`OwnAggregates`]).
pub trait RouteSource {
    /// The organization `id`, if it exists.
    fn organization(&self, id: &str) -> Option<&Organization>;
    /// The connection `id`, if it exists.
    fn connection(&self, id: &str) -> Option<&Connection>;
    /// Calls `each` with the id of every organization.
    fn each_organization(&self, each: &mut dyn FnMut(&str));
}

/// Organizations and connections folded by the routing projection itself, for
/// [`RoutingProjection::start`].
#[derive(Debug, Default)]
pub struct OwnAggregates {
    organizations: HashMap<String, Organization>,
    connections: HashMap<String, Connection>,
}

impl OwnAggregates {
    /// Applies one event to the aggregate its stream names.
    pub fn apply(&mut self, envelope: &EventEnvelope, event: &Event) {
        let stream = envelope.stream_id.as_str();
        if let Some(id) = stream.strip_prefix("organization-") {
            self.organizations
                .entry(id.to_owned())
                .or_default()
                .apply(event);
        } else if let Some(id) = stream.strip_prefix("connection-") {
            self.connections
                .entry(id.to_owned())
                .or_default()
                .apply(event);
        }
    }
}

impl RouteSource for OwnAggregates {
    fn organization(&self, id: &str) -> Option<&Organization> {
        self.organizations.get(id)
    }

    fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.get(id)
    }

    fn each_organization(&self, each: &mut dyn FnMut(&str)) {
        self.organizations.keys().for_each(|id| each(id));
    }
}

/// Route changes by domain (None = delete). The domains are the organizations' own
/// copies, which the table keeps as its keys.
type Changes = BTreeMap<signpost_domain::Id, Option<EncodedRoute>>;

/// The fold's private state: the routes of every organization, and the
/// changes of the commit being applied.
struct Fold {
    public_base_url: String,
    /// Each organization's routes, keyed by the organization's own (shared) id.
    routes: HashMap<signpost_domain::Id, OrganizationRoutes>,
    /// Changes of the commit being applied: domain → new route (None = delete).
    pending: Changes,
}

impl Fold {
    /// Recomputes the routes of the organization `envelope`'s stream touches; an event
    /// that only changes a connection's groups rewrites their group fields alone.
    fn apply(&mut self, envelope: &EventEnvelope, source: &(impl RouteSource + ?Sized)) {
        let Some(organization_id) = organization_of(envelope, source) else {
            return;
        };
        match envelope.stream_id.strip_prefix("connection-") {
            Some(connection_id) if changes_groups_only(&envelope.event_type) => {
                self.regroup(organization_id, connection_id, source);
            }
            _ => self.recompute(organization_id, source),
        }
    }

    /// After an event that changed only `connection_id`'s groups or group requirement:
    /// nothing, unless it is its organization's active connection (routes are computed
    /// from that one alone), whose routes get their group fields written again
    /// ([`rewrite_group_fields`]). The routes held are those of the state before the event:
    /// every event since the catch-up was applied.
    fn regroup(
        &mut self,
        organization_id: &str,
        connection_id: &str,
        source: &(impl RouteSource + ?Sized),
    ) {
        let Some(organization) = source.organization(organization_id) else {
            return;
        };
        if organization.active_connection_id.as_deref() != Some(connection_id) {
            return;
        }
        let (Some(connection), Some(routes)) = (
            source.connection(connection_id),
            self.routes.get_mut(organization_id),
        ) else {
            return;
        };
        let pending = &mut self.pending;
        rewrite_group_fields(routes, organization, connection, |domain, route| {
            pending.insert(domain.clone(), Some(route.clone()));
        });
    }

    fn recompute(&mut self, organization_id: &str, source: &(impl RouteSource + ?Sized)) {
        let Some(organization) = source.organization(organization_id) else {
            return;
        };
        let active = organization
            .active_connection_id
            .as_ref()
            .and_then(|id| source.connection(id));
        let new = organization_routes(organization, active, &self.public_base_url);
        let old = self.routes.remove(organization_id).unwrap_or_default();
        for (domain, route) in &new {
            if old.get(domain) != Some(route) {
                self.pending.insert(domain.clone(), Some(route.clone()));
            }
        }
        for domain in old.keys().filter(|d| !new.contains_key(*d)) {
            self.pending.insert(domain.clone(), None);
        }
        if !new.is_empty() {
            let key = if *organization.id == *organization_id {
                organization.id.clone()
            } else {
                organization_id.into()
            };
            self.routes.insert(key, new);
        }
    }
}

/// Whether events of `event_type` change nothing of a connection but its group roles or
/// group requirement (`Connection::apply`), so nothing of a route but its group fields.
fn changes_groups_only(event_type: &str) -> bool {
    matches!(
        event_type,
        "group_assigned" | "group_unassigned" | "group_requirement_changed"
    )
}

/// The organization whose routes an event may change: its own stream's, or its
/// connection's organization.
fn organization_of<'a>(
    envelope: &'a EventEnvelope,
    source: &'a (impl RouteSource + ?Sized),
) -> Option<&'a str> {
    let stream = envelope.stream_id.as_str();
    if let Some(id) = stream.strip_prefix("organization-") {
        Some(id)
    } else if let Some(id) = stream.strip_prefix("connection-") {
        source
            .connection(id)
            .map(|connection| &*connection.organization_id)
    } else {
        None
    }
}

/// The write side of a [`RoutingProjection`] whose log is read by someone else
/// (see [`RoutingProjection::fed`]): call [`RoutingFeed::apply`] for every
/// event in position order, with a [`RouteSource`] that already holds the
/// state after it.
pub struct RoutingFeed {
    fold: Fold,
    shared: Arc<Shared>,
    publish: watch::Sender<u64>,
    /// The last commit that changed the table: watch streams wait on it rather than on
    /// the revision, which every commit moves.
    table: watch::Sender<TableChange>,
    /// The catch-up ends at this position (0: none).
    catch_up_head: u64,
}

impl std::fmt::Debug for RoutingFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingFeed")
            .field("revision", &*self.publish.borrow())
            .finish()
    }
}

impl RoutingFeed {
    /// Declares that the events up to `head` (what the store held when its reader started)
    /// are a catch-up before anyone can watch: [`RoutingFeed::apply`] then does nothing
    /// until `head`, where it computes every organization's routes once, from its final
    /// state (publishing the table at `head`, with no history below it), instead of once
    /// per event.
    pub fn catch_up_to(&mut self, head: u64) {
        self.catch_up_head = head;
    }

    /// Applies one event. At the last event of its commit, the commit's route changes are
    /// published as one delta and the revision moves to it (during a catch-up, see
    /// [`RoutingFeed::catch_up_to`], nothing is published before its end).
    pub fn apply(&mut self, envelope: &EventEnvelope, source: &(impl RouteSource + ?Sized)) {
        if envelope.position <= self.catch_up_head {
            if envelope.position == self.catch_up_head {
                self.finish_catch_up(envelope.position, source);
            }
            return;
        }
        self.fold.apply(envelope, source);
        if envelope.commit_last_position <= envelope.position {
            let changes = std::mem::take(&mut self.fold.pending);
            let delta = self.shared.publish(envelope.position, changes);
            self.publish.send_replace(envelope.position);
            if let Some(delta) = delta {
                self.table.send_replace(TableChange {
                    revision: envelope.position,
                    delta: Some(delta),
                });
            }
        }
    }

    /// The catch-up began at the log's first event (a feed starts with an empty table,
    /// beside a source as empty), so every organization the source holds was touched by
    /// it: each one's routes are computed once, from its final state.
    fn finish_catch_up(&mut self, revision: u64, source: &(impl RouteSource + ?Sized)) {
        let mut organizations = Vec::new();
        source.each_organization(&mut |id| organizations.push(id.to_owned()));
        for organization_id in organizations {
            self.fold.recompute(&organization_id, source);
        }
        let changes = std::mem::take(&mut self.fold.pending);
        self.shared.publish_catch_up(revision, changes);
        self.publish.send_replace(revision);
        self.table.send_replace(TableChange {
            revision,
            delta: None,
        });
    }

    /// The log cannot be applied: the projection stops, and waiters see `reason`.
    pub fn fail(&self, reason: String) {
        tracing::error!(%reason, "routing projection stopped: cannot apply the log");
        let _ = self.shared.failure.set(reason);
        self.publish.send_modify(|_| {});
        self.table.send_modify(|_| {});
    }
}

impl RoutingProjection {
    /// An empty projection of the store with epoch `epoch`, and the feed that
    /// moves it: for a caller that already reads and decodes the log (the
    /// control plane's read model), so the log is read once and the
    /// aggregates are held once.
    pub fn fed(epoch: String, options: RoutingOptions) -> (Self, RoutingFeed) {
        let shared = Arc::new(Shared {
            live: RwLock::new(Live {
                revision: 0,
                table: RouteTable::new(),
                by_domain: ByDomain::new(),
                history: VecDeque::new(),
                history_floor: 0,
                last_changes: LastChanges::new(options.catch_up_routes),
            }),
            failure: OnceLock::new(),
            epoch: epoch.into(),
            history_limit: options.history_limit.max(1),
            catch_up_bytes: options.catch_up_bytes,
        });
        let (publish, revision) = watch::channel(0u64);
        let (table_sender, table) = watch::channel(TableChange::default());
        let projection = Self {
            shared: shared.clone(),
            revision,
            table,
        };
        let feed = RoutingFeed {
            fold: Fold {
                public_base_url: options.public_base_url,
                routes: HashMap::new(),
                pending: BTreeMap::new(),
            },
            shared,
            publish,
            table: table_sender,
            catch_up_head: 0,
        };
        (projection, feed)
    }

    /// Folds everything already in `store` on its own (keeping its own copy
    /// of the aggregates), then keeps following it.
    pub async fn start(
        store: Arc<dyn EventStore>,
        options: RoutingOptions,
    ) -> Result<Self, String> {
        let (projection, mut feed) = Self::fed(store.store_epoch().to_string(), options);
        let head = store.head().position;
        feed.catch_up_to(head);
        let mut aggregates = OwnAggregates::default();
        let mut events = store.subscribe(1);
        tokio::spawn(async move {
            while let Some(next) = events.next().await {
                let applied = next.map_err(|e| e.to_string()).and_then(|envelope| {
                    let event = signpost_domain::decode_event(&envelope.payload)
                        .map_err(|e| format!("position {}: {e}", envelope.position))?;
                    aggregates.apply(&envelope, &event);
                    feed.apply(&envelope, &aggregates);
                    Ok(())
                });
                if let Err(reason) = applied {
                    feed.fail(reason);
                    return;
                }
            }
        });
        projection.wait_for(head).await?;
        Ok(projection)
    }

    /// The store epoch the revisions belong to.
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// The same, shared (a watch stream holds it for its life: one copy for all).
    pub fn shared_epoch(&self) -> Arc<str> {
        self.shared.epoch.clone()
    }

    /// The revision applied.
    pub fn revision(&self) -> u64 {
        self.shared.live.read().expect("routing lock").revision
    }

    /// A receiver that changes whenever the revision moves: at every commit.
    pub fn watch_revision(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    /// A receiver that changes when a commit changes the table (it holds that commit's
    /// revision and delta), and when the projection stops: what a watch stream waits on. Most
    /// commits change no route (a setup link, a token, an organization without a routed
    /// domain), and with thousands of streams open, waking each at every commit would
    /// cost more than the commits.
    pub fn watch_table(&self) -> watch::Receiver<TableChange> {
        self.table.clone()
    }

    /// Why the projection stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.get().cloned()
    }

    /// Waits until the projection has applied `revision`.
    pub async fn wait_for(&self, revision: u64) -> Result<(), String> {
        let mut watcher = self.revision.clone();
        let shared = self.shared.clone();
        let _ = watcher
            .wait_for(|applied| *applied >= revision || shared.failure.get().is_some())
            .await;
        match self.failure() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// The route for a normalized domain, with the revision of the answer.
    pub fn lookup(&self, domain: &str) -> (u64, Option<EncodedRoute>) {
        let live = self.shared.live.read().expect("routing lock");
        (live.revision, live.by_domain.get(domain).cloned())
    }

    /// The whole table and its revision (an O(1) persistent clone).
    pub fn snapshot(&self) -> (u64, RouteTable) {
        let live = self.shared.live.read().expect("routing lock");
        (live.revision, live.table.clone())
    }

    /// What a watcher at `revision` is behind by, and the revision it brings the watcher
    /// to (the current one): the published deltas after `revision` while they are at most
    /// [`CATCH_UP_AFTER`]; further behind, one catch-up delta from the last-change index
    /// if the index reaches back to `revision` and the delta fits `catch_up_bytes` and
    /// [`CATCH_UP_MAX_CHANGES`];
    /// otherwise every published delta, if the history still holds them; otherwise a
    /// [`HistoryGap`] (the watcher must be reset).
    pub fn pull(&self, revision: u64) -> Result<(Pulled, u64), HistoryGap> {
        let live = self.shared.live.read().expect("routing lock");
        let kept = revision >= live.history_floor;
        let start = history_start(&live.history, revision);
        let behind = live.history.len() - start;
        let deltas = || {
            let mut deltas = Deltas::new();
            for delta in live.history.range(start..) {
                deltas.push(delta.clone());
            }
            deltas
        };
        if kept && behind <= CATCH_UP_AFTER {
            return Ok((Pulled::Deltas(deltas()), live.revision));
        }
        let index = &live.last_changes;
        if revision >= index.floor {
            if let Some(delta) = index.since(revision, live.revision, self.shared.catch_up_bytes) {
                return Ok((Pulled::CatchUp(delta), live.revision));
            }
        }
        if kept {
            return Ok((Pulled::Deltas(deltas()), live.revision));
        }
        Err(HistoryGap {
            asked: revision,
            floor: live.history_floor.min(index.floor),
        })
    }

    /// Counters.
    pub fn stats(&self) -> RoutingStats {
        let live = self.shared.live.read().expect("routing lock");
        RoutingStats {
            revision: live.revision,
            routes: live.table.len(),
            history_len: live.history.len(),
            history_floor: live.history_floor,
            catch_up_routes: live.last_changes.by_revision.len(),
            catch_up_floor: live.last_changes.floor,
        }
    }
}

/// Where the deltas after `revision` start in `history` (oldest first). Every open stream
/// asks at every change, almost always one delta behind: the newest few are looked at
/// before a binary search over the thousands kept, which cost about 140 instructions a
/// delivery, 1.3% (bench/FINDINGS.md, round 35).
fn history_start(history: &VecDeque<Arc<Delta>>, revision: u64) -> usize {
    const NEWEST: usize = 4;
    let len = history.len();
    for start in (len.saturating_sub(NEWEST)..len).rev() {
        if history[start].revision <= revision {
            return start + 1;
        }
    }
    history.partition_point(|delta| delta.revision <= revision)
}

impl Shared {
    /// Publishes the end of the start-up catch-up: the table at `revision`, with no
    /// history below it.
    fn publish_catch_up(&self, revision: u64, changes: Changes) {
        let mut live = self.live.write().expect("routing lock");
        // Room for every route at once: no table left behind by growing.
        live.by_domain.reserve(changes.len());
        for (domain, route) in changes {
            live.set(domain, route);
        }
        live.revision = revision;
        live.history.clear();
        live.history_floor = revision;
        live.last_changes.restart_at(revision);
    }

    /// Publishes the end of a commit: table, history and revision move together. Returns
    /// the commit's delta, if it changed the table, with the revision of the table change
    /// before it (what [`TableChange::delta`] holds).
    fn publish(&self, revision: u64, changes: Changes) -> Option<(u64, Arc<Delta>)> {
        let mut live = self.live.write().expect("routing lock");
        live.revision = revision;
        if changes.is_empty() {
            return None;
        }
        // Every table change after it is in the history, the newest last.
        let before = live
            .history
            .back()
            .map_or(live.history_floor, |delta| delta.revision);
        let mut delta = Delta::new(revision, Vec::new(), Vec::new());
        for (domain, route) in changes {
            match &route {
                Some(route) => delta.upserts.push(route.clone()),
                None => delta.deletes.push(domain.to_string()),
            }
            live.last_changes.record(revision, &domain, route.clone());
            live.set(domain, route);
        }
        let delta = Arc::new(delta);
        live.history.push_back(delta.clone());
        while live.history.len() > self.history_limit {
            if let Some(dropped) = live.history.pop_front() {
                live.history_floor = dropped.revision;
            }
        }
        Some((before, delta))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use signpost_api::routing::v1 as wire;
    use signpost_domain::schema;

    /// Watch streams wait on the table, not on the revision: a commit that changes no
    /// route moves the revision alone; one that changes a route moves both.
    #[test]
    fn only_a_commit_that_changes_routes_moves_the_table_watch() {
        let (projection, mut feed) =
            RoutingProjection::fed("epoch".into(), RoutingOptions::new("https://sp.test"));
        let (mut revisions, mut table) = (projection.watch_revision(), projection.watch_table());
        let mut source = OwnAggregates::default();
        let organization = "organization-o1";
        let connection = "connection-c1";
        let commits: [(&str, Event); 6] = [
            (
                organization,
                Event::OrganizationCreated(schema::OrganizationCreated {
                    organization_id: "o1".into(),
                    ..Default::default()
                }),
            ),
            (
                organization,
                Event::DomainClaimed(schema::DomainClaimed {
                    domain: "firm.test".into(),
                    ..Default::default()
                }),
            ),
            (
                organization,
                Event::DomainVerified(schema::DomainVerified {
                    domain: "firm.test".into(),
                    ..Default::default()
                }),
            ),
            (
                connection,
                Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
                    connection_id: "c1".into(),
                    organization_id: "o1".into(),
                    oidc: Some(schema::OidcSettings::default()),
                    ..Default::default()
                })),
            ),
            (
                organization,
                Event::ConnectionActivated(schema::ConnectionActivated {
                    connection_id: "c1".into(),
                }),
            ),
            (
                "setup-link-l1",
                Event::SetupLinkRevoked(schema::SetupLinkRevoked::default()),
            ),
        ];
        for (n, (stream, event)) in commits.into_iter().enumerate() {
            let position = n as u64 + 1;
            let envelope = EventEnvelope {
                position,
                commit_last_position: position,
                stream_id: stream.into(),
                event_type: signpost_domain::event_type(&event).into(),
                ..Default::default()
            };
            source.apply(&envelope, &event);
            feed.apply(&envelope, &source);
            assert!(revisions.has_changed().unwrap(), "commit {position}");
            revisions.borrow_and_update();
            // Only the activation routes the verified domain.
            let routes_changed = position == 5;
            assert_eq!(
                table.has_changed().unwrap(),
                routes_changed,
                "commit {position}"
            );
            if routes_changed {
                assert_eq!(table.borrow_and_update().revision, position);
            }
        }
        assert_eq!(projection.snapshot().1.len(), 1);
    }

    /// The group events are named as the domain names them, and no other event is taken
    /// for one (another event's routes are computed whole).
    #[test]
    fn only_the_group_events_change_groups_only() {
        let group_events = [
            Event::GroupAssigned(schema::GroupAssigned::default()),
            Event::GroupUnassigned(schema::GroupUnassigned::default()),
            Event::GroupRequirementChanged(schema::GroupRequirementChanged::default()),
        ];
        for event in &group_events {
            assert!(changes_groups_only(signpost_domain::event_type(event)));
        }
        let others = [
            Event::ConnectionConfigured(Default::default()),
            Event::ConnectionActivated(Default::default()),
            Event::SsoPolicyChanged(Default::default()),
            Event::DomainVerified(Default::default()),
            Event::ProviderSwitched(Default::default()),
        ];
        for event in &others {
            assert!(!changes_groups_only(signpost_domain::event_type(event)));
        }
    }

    /// Organization `organization`'s route for `domain`: held verbatim for an even
    /// organization, with its SAML URLs derived from the base URL for an odd one (the
    /// two forms a route's domain is read from).
    fn route(domain: &str, organization: u8) -> EncodedRoute {
        let mut route = wire::Route {
            domain: domain.to_owned(),
            organization_id: format!("org-{organization}"),
            ..Default::default()
        };
        if organization.is_multiple_of(2) {
            return EncodedRoute::encode(&route);
        }
        route.connection_id = format!("conn-{organization}");
        route.saml = Some(wire::SamlRoute {
            idp_entity_id: "https://idp.example/entity".to_owned(),
            ..Default::default()
        });
        EncodedRoute::with_service_provider_urls(&route, "https://signpost.example")
    }

    fn domain(d: u8) -> String {
        format!("d{d:02}.example")
    }

    /// A commit's changes: each (domain, organization routing it, or none: deleted).
    fn commit_changes(commit: &[(u8, Option<u8>)]) -> Changes {
        commit
            .iter()
            .map(|(d, organization)| {
                let d = domain(*d);
                let route = organization.map(|o| route(&d, o));
                (signpost_domain::Id::from(d.as_str()), route)
            })
            .collect()
    }

    /// Publishes commit number `n` (from 0) at revision `n + 1`, the first as the end of
    /// the catch-up; returns the revision.
    fn publish_commit(feed: &RoutingFeed, n: usize, commit: &[(u8, Option<u8>)]) -> u64 {
        let revision = n as u64 + 1;
        if n == 0 {
            feed.shared
                .publish_catch_up(revision, commit_changes(commit));
        } else {
            feed.shared.publish(revision, commit_changes(commit));
        }
        revision
    }

    /// Every published delta after `revision` still kept, and the current revision.
    fn published_since(projection: &RoutingProjection, revision: u64) -> (Vec<Arc<Delta>>, u64) {
        let live = projection.shared.live.read().expect("routing lock");
        assert!(revision >= live.history_floor);
        let deltas = live.history.iter().filter(|d| d.revision > revision);
        (deltas.cloned().collect(), live.revision)
    }

    fn delta(revision: u64, upserts: &[(u8, u8)], deletes: &[u8]) -> Arc<Delta> {
        Arc::new(Delta::new(
            revision,
            upserts
                .iter()
                .map(|(d, o)| route(&domain(*d), *o))
                .collect(),
            deletes.iter().map(|d| domain(*d)).collect(),
        ))
    }

    #[test]
    fn a_burst_on_the_same_routes_is_merged_and_other_deltas_are_left_as_they_are() {
        // Three commits on domains 1 and 2; one on domain 3 and one deleting it; one on
        // domain 1 again.
        let burst = vec![
            delta(10, &[(1, 0), (2, 0)], &[]),
            delta(11, &[(2, 1)], &[]),
            delta(12, &[(1, 2)], &[2]),
            delta(13, &[(3, 0)], &[]),
            delta(14, &[], &[3]),
            delta(15, &[(1, 3)], &[]),
        ];
        let coalesced = Delta::coalesce(burst.clone().into());
        assert_eq!(coalesced.len(), 3);
        assert_eq!(coalesced[0].revision, 12);
        assert_eq!(coalesced[0].upserts, vec![route(&domain(1), 2)]);
        assert_eq!(coalesced[0].deletes, vec![domain(2)]);
        // Deleting what the delta before upserted changes no new domain: merged.
        assert_eq!(coalesced[1].revision, 14);
        assert!(coalesced[1].upserts.is_empty());
        assert_eq!(coalesced[1].deletes, vec![domain(3)]);
        // A delta of a domain the run's first did not change is its own message, sent as
        // published.
        assert!(Arc::ptr_eq(&coalesced[2], &burst[5]));

        // Alternating organizations: nothing to merge.
        let alternating = vec![
            delta(1, &[(1, 0)], &[]),
            delta(2, &[(2, 0)], &[]),
            delta(3, &[(1, 1)], &[]),
        ];
        let coalesced = Delta::coalesce(alternating.clone().into());
        assert_eq!(coalesced.len(), 3);
        assert!(coalesced
            .iter()
            .zip(&alternating)
            .all(|(a, b)| Arc::ptr_eq(a, b)));
    }

    /// A catch-up holds at most `CATCH_UP_MAX_CHANGES` changes, however few their bytes:
    /// beyond that a watcher gets the published deltas while they are kept, else a gap.
    #[test]
    fn a_catch_up_holds_at_most_its_number_of_changes() {
        for (per_commit, history_limit, expect) in [
            (200, 4096, "catch-up"),
            (300, 4096, "deltas"),
            (300, 8, "gap"),
        ] {
            let mut options = RoutingOptions::new("https://signpost.example");
            options.catch_up_bytes = usize::MAX;
            options.history_limit = history_limit;
            let (projection, feed) = RoutingProjection::fed("epoch".to_owned(), options);
            feed.shared.publish_catch_up(1, Changes::new());
            const COMMITS: u64 = 17;
            for commit in 0..COMMITS {
                let changes = (0..per_commit)
                    .map(|n| {
                        let domain = format!("c{commit}-{n}.example");
                        let route = route(&domain, 0);
                        (signpost_domain::Id::from(domain.as_str()), Some(route))
                    })
                    .collect();
                feed.shared.publish(2 + commit, changes);
            }
            let changes = per_commit * COMMITS as usize;
            let pulled = projection.pull(1);
            match (expect, pulled) {
                ("catch-up", Ok((Pulled::CatchUp(delta), head))) => {
                    assert!(changes <= CATCH_UP_MAX_CHANGES);
                    assert_eq!((delta.upserts.len(), head), (changes, 1 + COMMITS));
                }
                ("deltas", Ok((Pulled::Deltas(deltas), _))) => {
                    assert!(changes > CATCH_UP_MAX_CHANGES);
                    assert_eq!(deltas.len(), COMMITS as usize);
                }
                ("gap", Err(gap)) => assert_eq!(gap.asked, 1),
                (expect, other) => panic!(
                    "expected {expect}, got {}",
                    match other {
                        Ok((Pulled::CatchUp(delta), _)) =>
                            format!("a catch-up of {}", delta.upserts.len()),
                        Ok((Pulled::Deltas(deltas), _)) => format!("{} deltas", deltas.len()),
                        Err(gap) => format!("{gap}"),
                    }
                ),
            }
        }
    }

    /// Looking at the newest deltas first finds where a watcher's deltas start exactly
    /// as a binary search does: for histories of every length up to 12, with gaps between
    /// revisions, and watchers at every revision around them.
    #[test]
    fn history_start_agrees_with_a_binary_search() {
        for len in 0..12u64 {
            let history: VecDeque<Arc<Delta>> = (0..len)
                .map(|i| Arc::new(Delta::new(10 + 3 * i, Vec::new(), Vec::new())))
                .collect();
            for revision in 0..(10 + 3 * len + 3) {
                assert_eq!(
                    history_start(&history, revision),
                    history.partition_point(|delta| delta.revision <= revision),
                    "{len} deltas, a watcher at {revision}"
                );
            }
        }
    }

    proptest::proptest! {
        /// `Resolve`'s index answers what the table holds, after the catch-up's
        /// publication and after every commit's publication that follows it.
        #[test]
        fn resolve_finds_what_the_table_holds(
            commits in proptest::collection::vec(
                proptest::collection::vec((0u8..16, proptest::option::of(0u8..4)), 0..6),
                1..20,
            )
        ) {
            let (projection, feed) = RoutingProjection::fed(
                "epoch".to_owned(),
                RoutingOptions::new("https://signpost.example"),
            );
            for (n, commit) in commits.iter().enumerate() {
                let revision = publish_commit(&feed, n, commit);
                let (at, table) = projection.snapshot();
                proptest::prop_assert_eq!(at, revision);
                for d in 0..16 {
                    let d = domain(d);
                    proptest::prop_assert_eq!(
                        projection.lookup(&d),
                        (revision, table.get(d.as_str()).cloned()),
                        "{}", d
                    );
                }
                let live = projection.shared.live.read().expect("routing lock");
                proptest::prop_assert_eq!(live.by_domain.routes.len(), table.len());
            }
        }

        /// Coalesced deltas bring a table from a revision to the same table as every
        /// delta since it applied in turn, each at one of those deltas' revisions; a
        /// merged delta is no larger than the first delta of its run, and a delta that
        /// changes a domain its predecessor did not is never merged into it.
        #[test]
        fn coalesced_deltas_leave_the_table_every_delta_leaves(
            commits in proptest::collection::vec(
                proptest::collection::vec((0u8..12, proptest::option::of(0u8..4)), 0..6),
                2..24,
            ),
        ) {
            let (projection, feed) = RoutingProjection::fed(
                "epoch".to_owned(),
                RoutingOptions::new("https://signpost.example"),
            );
            let as_map = |table: &RouteTable| -> BTreeMap<String, EncodedRoute> {
                table.iter().map(|(d, r)| (d.to_string(), r.clone())).collect()
            };
            // The watcher's table: the one the first commit left.
            let mut table = BTreeMap::new();
            for (n, commit) in commits.iter().enumerate() {
                publish_commit(&feed, n, commit);
                if n == 0 {
                    table = as_map(&projection.snapshot().1);
                }
            }
            let (_, head_table) = projection.snapshot();
            let (deltas, head) = published_since(&projection, 1);
            let coalesced = Delta::coalesce(deltas.clone().into());
            proptest::prop_assert!(coalesced.len() <= deltas.len());
            let mut at = 1;
            for delta in &coalesced {
                proptest::prop_assert!(delta.revision > at, "revisions move forward");
                // The deltas it stands for: those after `at`, up to its revision.
                let run: Vec<&Arc<Delta>> = deltas
                    .iter()
                    .filter(|d| d.revision > at && d.revision <= delta.revision)
                    .collect();
                proptest::prop_assert_eq!(run.last().map(|d| d.revision), Some(delta.revision));
                if run.len() == 1 {
                    proptest::prop_assert!(Arc::ptr_eq(run[0], delta), "a delta alone is sent as it is");
                }
                proptest::prop_assert!(delta.changes() <= run[0].changes());
                let domains = |d: &Delta| -> BTreeSet<Vec<u8>> {
                    d.upserts
                        .iter()
                        .map(|r| r.domain().to_vec())
                        .chain(d.deletes.iter().map(|d| d.as_bytes().to_vec()))
                        .collect()
                };
                for next in &run[1..] {
                    proptest::prop_assert!(domains(next).is_subset(&domains(run[0])));
                }
                at = delta.revision;
                for route in &delta.upserts {
                    let d = String::from_utf8(route.domain().to_vec()).unwrap();
                    table.insert(d, route.clone());
                }
                for d in &delta.deletes {
                    table.remove(d);
                }
            }
            proptest::prop_assert_eq!(at, deltas.last().map_or(1, |d| d.revision));
            proptest::prop_assert!(at <= head);
            proptest::prop_assert_eq!(table, as_map(&head_table));
        }

        /// A table change's delta is offered to a watcher exactly when pulling would give
        /// it that delta alone: at any revision from the table change before it up to its
        /// own, whatever the history keeps.
        #[test]
        fn a_table_change_offers_its_delta_to_the_watchers_it_alone_brings_to_the_head(
            commits in proptest::collection::vec(
                proptest::collection::vec((0u8..12, proptest::option::of(0u8..4)), 0..4),
                2..32,
            ),
            history_limit in 1usize..8,
        ) {
            let mut options = RoutingOptions::new("https://signpost.example");
            options.history_limit = history_limit;
            let (projection, feed) = RoutingProjection::fed("epoch".to_owned(), options);
            for (n, commit) in commits.iter().enumerate() {
                let revision = n as u64 + 1;
                if n == 0 {
                    feed.shared.publish_catch_up(revision, commit_changes(commit));
                    continue;
                }
                let Some(delta) = feed.shared.publish(revision, commit_changes(commit)) else {
                    proptest::prop_assert!(commit.is_empty() || commit_changes(commit).is_empty());
                    continue;
                };
                let change = TableChange { revision, delta: Some(delta) };
                for at in 0..=revision {
                    let offered = change.clone().delta_after(at);
                    let alone = match projection.pull(at) {
                        Ok((Pulled::Deltas(deltas), head)) if deltas.len() == 1 => {
                            proptest::prop_assert_eq!(head, revision);
                            Some(deltas[0].clone())
                        }
                        _ => None,
                    };
                    match (&offered, &alone) {
                        (Some(offered), Some(alone)) => proptest::prop_assert!(
                            Arc::ptr_eq(offered, alone),
                            "at {}: the same delta", at
                        ),
                        (None, None) => {}
                        _ => proptest::prop_assert!(
                            false,
                            "at {}: offered {:?}, pulled alone {:?}", at, offered.as_ref().map(|d| d.revision), alone.as_ref().map(|d| d.revision)
                        ),
                    }
                }
            }
        }

        /// Whatever a watcher at any revision pulls brings its table to the head's: the
        /// published deltas while it is at most `CATCH_UP_AFTER` behind; further behind,
        /// one catch-up delta at the head holding exactly the domains changed since its
        /// revision, each once, whenever the index reaches back there and the delta fits
        /// its byte limit; otherwise the published deltas if kept, otherwise a gap. The
        /// index never holds more than its limit.
        #[test]
        fn a_pull_brings_a_watcher_at_any_revision_to_the_head(
            commits in proptest::collection::vec(
                proptest::collection::vec((0u8..24, proptest::option::of(0u8..4)), 0..5),
                2..48,
            ),
            history_limit in 1usize..40,
            catch_up_routes in 1usize..30,
            catch_up_bytes in proptest::sample::select(vec![0usize, 60, 200, 1_000, 1 << 20]),
        ) {
            let mut options = RoutingOptions::new("https://signpost.example");
            options.history_limit = history_limit;
            options.catch_up_routes = catch_up_routes;
            options.catch_up_bytes = catch_up_bytes;
            let (projection, feed) = RoutingProjection::fed("epoch".to_owned(), options);
            let as_map = |table: &RouteTable| -> BTreeMap<String, EncodedRoute> {
                table.iter().map(|(d, r)| (d.to_string(), r.clone())).collect()
            };
            // The table at each revision (0: before the first), and each domain's last
            // change after the catch-up.
            let mut tables = vec![BTreeMap::new()];
            let mut last_change: BTreeMap<String, u64> = BTreeMap::new();
            for (n, commit) in commits.iter().enumerate() {
                let revision = publish_commit(&feed, n, commit);
                tables.push(as_map(&projection.snapshot().1));
                if n > 0 {
                    for (d, _) in commit {
                        last_change.insert(domain(*d), revision);
                    }
                }
                let stats = projection.stats();
                proptest::prop_assert!(stats.catch_up_routes <= catch_up_routes);
            }
            let head = commits.len() as u64;
            let stats = projection.stats();
            let head_table = &tables[head as usize];
            for at in 0..=head {
                let changed: BTreeSet<String> = last_change
                    .iter()
                    .filter(|(_, revision)| **revision > at)
                    .map(|(d, _)| d.clone())
                    .collect();
                let size: usize = changed
                    .iter()
                    .map(|d| head_table.get(d).map_or(d.len(), EncodedRoute::wire_len))
                    .sum();
                let catch_up_possible = at >= stats.catch_up_floor && size <= catch_up_bytes;
                let behind = commits[at.min(head) as usize..]
                    .iter()
                    .filter(|commit| !commit.is_empty())
                    .count();
                let mut table = tables[at as usize].clone();
                let apply = |table: &mut BTreeMap<String, EncodedRoute>, delta: &Delta| {
                    for d in &delta.deletes {
                        table.remove(d);
                    }
                    for route in &delta.upserts {
                        table.insert(String::from_utf8(route.domain().to_vec()).unwrap(), route.clone());
                    }
                };
                match projection.pull(at) {
                    Ok((Pulled::Deltas(deltas), revision)) => {
                        proptest::prop_assert_eq!(revision, head);
                        proptest::prop_assert!(at >= stats.history_floor);
                        proptest::prop_assert!(deltas.len() <= CATCH_UP_AFTER || !catch_up_possible);
                        for delta in &deltas {
                            proptest::prop_assert!(delta.revision > at);
                            apply(&mut table, delta);
                        }
                    }
                    Ok((Pulled::CatchUp(delta), revision)) => {
                        proptest::prop_assert_eq!(revision, head);
                        proptest::prop_assert_eq!(delta.revision, head);
                        proptest::prop_assert!(catch_up_possible);
                        proptest::prop_assert!(behind > CATCH_UP_AFTER || at < stats.history_floor);
                        let domains: Vec<String> = delta
                            .upserts
                            .iter()
                            .map(|r| String::from_utf8(r.domain().to_vec()).unwrap())
                            .chain(delta.deletes.iter().cloned())
                            .collect();
                        proptest::prop_assert_eq!(domains.len(), changed.len(), "each domain once");
                        proptest::prop_assert_eq!(domains.into_iter().collect::<BTreeSet<_>>(), changed.clone());
                        apply(&mut table, &delta);
                    }
                    Err(gap) => {
                        proptest::prop_assert_eq!(gap.asked, at);
                        proptest::prop_assert!(at < stats.history_floor);
                        proptest::prop_assert!(!catch_up_possible);
                        continue;
                    }
                }
                proptest::prop_assert_eq!(&table, head_table, "from revision {}", at);
            }
        }
    }
}
