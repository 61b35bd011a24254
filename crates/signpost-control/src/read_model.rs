//! The admin read model: every aggregate's current state plus the indexes the
//! control plane needs (domain → organization, token hash → token, ...).
//!
//! It is a projection: folded from the log by [`crate::projection`], one
//! envelope at a time, with the aggregates' own `apply`, so it cannot drift
//! from what a command handler would rebuild from the streams. It records the
//! position it has applied.
//!
//! It holds every organization the control plane serves (the server's largest
//! structure; the audit timeline is described from it too), so it is laid out for size:
//! aggregates boxed in their maps ([`Aggregates`]: a hash table by id, which every event
//! probes once, and an ordered set of the same keys for lists), ids and domain names held once (the
//! indexes and the aggregates' state share the maps' `Arc<str>` keys), one record per
//! domain name for its owner and its verifications, texts and claim mappings that many
//! aggregates repeat held once each (`Pool`), external ids, entity ids, token hashes and
//! each organization's connections and setup links found through indexes of ids alone
//! (`IdIndex`: 16 bytes an entry, the key read from the aggregate), and a SAML
//! connection's settings as one encoded message whose certificates have no DER (the
//! domain's `SamlIdp`), which admin views read back from the log
//! ([`ReadModel::certificates_at`]). A closed setup link keeps its organization, version
//! and state alone ([`ClosedLink`]); its views are folded from its stream in the log.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hashbrown::hash_table::{self, HashTable};
use signpost_domain::api_token::ApiToken;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::event::from_timestamp;
use signpost_domain::organization::Organization;
use signpost_domain::setup_link::{LinkState, SetupLink};
use signpost_domain::{schema, Event, Id, VecMap};
use signpost_eventlog::EventEnvelope;

/// An aggregate's state with when its stream began.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked<T> {
    /// Current state.
    pub state: T,
    /// When its first event was recorded, in nanoseconds since the Unix epoch: 8 bytes
    /// where a `DateTime<Utc>` takes 12, which put a tracked connection (224 bytes now)
    /// in the allocator's next size class up (256).
    created_at_nanos: i64,
}

impl<T> Tracked<T> {
    /// `state`, whose first event was recorded `created_at` (past 2262: the latest time
    /// the model holds).
    pub fn new(state: T, created_at: DateTime<Utc>) -> Self {
        Tracked {
            state,
            created_at_nanos: created_at.timestamp_nanos_opt().unwrap_or(i64::MAX),
        }
    }

    /// When its first event was recorded.
    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.created_at_nanos)
    }
}

/// The aggregates of one kind: found by id through a hash table, listed in id order
/// (lists page by id) through an ordered set of the same keys.
///
/// Every event looks its aggregate up first. In a `BTreeMap` of 100,000 ids that took
/// about 17 comparisons, each reading an id elsewhere in memory: on a million events the
/// read model's task, which every projection's catch-up waits for, spent about 0.15 s
/// there (bench/FINDINGS.md, round 21). A probe of the table reads one id.
///
/// Boxed: the table moves its entries when it grows, and a `Tracked<Connection>` is 488
/// bytes; a box costs its own size plus a pointer. The keys are `Arc<str>` so that the
/// ordered set and the indexes (domain → organization, entity id → connection, ...)
/// share them instead of holding copies.
#[derive(Clone)]
pub struct Aggregates<T> {
    by_id: hashbrown::HashMap<Arc<str>, Box<Tracked<T>>, foldhash::fast::RandomState>,
    ordered: BTreeSet<Arc<str>>,
}

impl<T> Default for Aggregates<T> {
    fn default() -> Self {
        Self {
            by_id: hashbrown::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            ordered: BTreeSet::new(),
        }
    }
}

impl<T> std::ops::Index<&str> for Aggregates<T> {
    type Output = Tracked<T>;

    /// The aggregate `id`; panics when it is not held.
    fn index(&self, id: &str) -> &Tracked<T> {
        self.get(id).expect("no aggregate with that id")
    }
}

impl<'a, T> IntoIterator for &'a Aggregates<T> {
    type Item = (&'a Arc<str>, &'a Tracked<T>);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    /// In id order.
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<T: PartialEq> PartialEq for Aggregates<T> {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id && self.ordered == other.ordered
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Aggregates<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> Aggregates<T> {
    /// The aggregate `id`.
    pub fn get(&self, id: &str) -> Option<&Tracked<T>> {
        self.by_id.get(id).map(|tracked| &**tracked)
    }

    /// The aggregate `id`, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Tracked<T>> {
        self.by_id.get_mut(id).map(|tracked| &mut **tracked)
    }

    /// The shared key of aggregate `id`, and the aggregate.
    pub fn get_key_value(&self, id: &str) -> Option<(&Arc<str>, &Tracked<T>)> {
        self.by_id
            .get_key_value(id)
            .map(|(key, tracked)| (key, &**tracked))
    }

    /// The shared key of aggregate `id`, and the aggregate to change.
    pub fn get_key_value_mut(&mut self, id: &str) -> Option<(&Arc<str>, &mut Tracked<T>)> {
        self.by_id
            .get_key_value_mut(id)
            .map(|(key, tracked)| (key, &mut **tracked))
    }

    /// Whether aggregate `id` is held.
    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// How many aggregates are held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Holds `value` as aggregate `key`; returns the one it replaces.
    pub fn insert(&mut self, key: Arc<str>, value: Box<Tracked<T>>) -> Option<Box<Tracked<T>>> {
        match self.by_id.entry(key) {
            hashbrown::hash_map::Entry::Occupied(mut held) => {
                Some(std::mem::replace(held.get_mut(), value))
            }
            hashbrown::hash_map::Entry::Vacant(vacant) => {
                self.ordered.insert(vacant.key().clone());
                vacant.insert(value);
                None
            }
        }
    }

    /// Lets go of aggregate `id`; returns its key and the aggregate.
    pub fn remove_entry(&mut self, id: &str) -> Option<(Arc<str>, Box<Tracked<T>>)> {
        let removed = self.by_id.remove_entry(id)?;
        self.ordered.remove(id);
        Some(removed)
    }

    /// Rebuilds the ordered set with full nodes ([`ReadModel::pack`]).
    fn pack(&mut self) {
        self.ordered = std::mem::take(&mut self.ordered).into_iter().collect();
    }

    /// The ids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.ordered.iter()
    }

    /// The aggregates, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Tracked<T>)> {
        self.after("")
    }

    /// The aggregates without their ids, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Tracked<T>> {
        self.iter().map(|(_, tracked)| tracked)
    }

    /// The aggregates after id `after` (all of them when it is empty), in id order: a
    /// list's page.
    pub fn after<'a>(
        &'a self,
        after: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Tracked<T>)> + 'a {
        let start = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after)
        };
        self.ordered
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|id| self.get_key_value(id))
    }
}

/// A closed setup link as the model keeps it. A closed link authorizes nothing and no
/// command changes it, but the control plane keeps every link ever issued, one a
/// connection at least: what is left in memory is what a command on it decides with
/// (its state, and its version) and what lists find it by (its organization). Views of
/// it read the rest from its stream in the log. 128 bytes and the recipient's address
/// less per link than the whole state in its box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedLink {
    /// Its organization (the model's shared id).
    pub organization_id: Id,
    /// Its stream's version (a stream of four billion events is beyond any log).
    pub version: u32,
    /// Revoked, spent or expired.
    pub state: LinkState,
}

impl ClosedLink {
    /// The state a command on link `id` decides on: a closed link's decisions depend on
    /// its state alone (and its version, for the write they would make).
    pub fn state_of(&self, id: &Id) -> SetupLink {
        SetupLink {
            id: id.clone(),
            organization_id: self.organization_id.clone(),
            state: self.state,
            version: u64::from(self.version),
            ..SetupLink::default()
        }
    }
}

/// Who verified a domain claim, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The actor id, with the person it acted for when given.
    pub verified_by: String,
    /// When.
    pub verified_at: DateTime<Utc>,
}

/// A [`Verification`] as the model keeps it: the actor's text is shared by every claim
/// it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VerificationRecord {
    verified_by: Arc<str>,
    verified_at: DateTime<Utc>,
}

/// What the model knows of one domain name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DomainRecord {
    /// The organization that claimed it last, until a release.
    owner: Option<Arc<str>>,
    /// Who verified each organization's claim. Claims are unique across organizations
    /// (the control plane checks before claiming), so this holds one entry at most in
    /// practice; it is keyed by organization so that any log folds as before.
    verifications: VecMap<Arc<str>, VerificationRecord>,
}

impl DomainRecord {
    fn is_empty(&self) -> bool {
        self.owner.is_none() && self.verifications.is_empty()
    }
}

/// Current state of everything, as of [`ReadModel::position`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadModel {
    /// The last log position applied.
    pub position: u64,
    /// Organizations by id.
    pub organizations: Aggregates<Organization>,
    /// Configured connections by id.
    pub connections: Aggregates<Connection>,
    /// Connections allocated by a setup link but not configured yet: id → organization.
    pub draft_connections: BTreeMap<Id, Id>,
    /// Setup links by id, but the closed ones.
    pub setup_links: Aggregates<SetupLink>,
    /// Closed setup links (revoked, spent or expired) by id: what commands decide on and
    /// lists find them by, no more ([`ClosedLink`]).
    pub closed_links: BTreeMap<Id, ClosedLink>,
    /// API tokens by id.
    pub api_tokens: Aggregates<ApiToken>,
    /// Owner and verifications of every domain name claimed.
    domains: HashMap<Id, DomainRecord>,
    /// Texts many aggregates repeat (who verified a claim, a provider preset).
    texts: Pool<str>,
    /// Claim mappings: connections set up from one preset share theirs.
    claim_mappings: Pool<schema::ClaimMapping>,
    /// Organizations by external id.
    external_ids: TextIndex,
    /// SAML connections by IdP entity id.
    entity_ids: TextIndex,
    /// Setup links by their token's hash (every link that holds it: a token is 32
    /// random bytes, but a log is read as it is).
    link_by_token: IdIndex<[u8]>,
    /// API tokens by their token's hash (likewise).
    api_token_by_hash: IdIndex<[u8]>,
    /// Configured connections by organization (lists of one organization's
    /// connections, without a walk through every organization's).
    connections_by_organization: TextIndex,
    /// Draft connections by organization.
    drafts_by_organization: TextIndex,
    /// Setup links by organization (lists, and a new link superseding the open ones).
    links_by_organization: TextIndex,
    /// The open setup links by expiry (nanoseconds since the Unix epoch), then id: what
    /// the expiry sweep reads, without a walk through every link ever issued.
    open_links: BTreeSet<(i64, Id)>,
    /// For each SAML connection, the position of the `ConnectionConfigured` that set its
    /// settings. The model keeps each signing certificate's fingerprint, subject and
    /// dates (what routes, decisions and the audit use) but not its DER, about 850 bytes
    /// per connection and the largest part of its state: admin views read the DER back
    /// from that event ([`ReadModel::certificates_at`]).
    certificates_at: HashMap<Arc<str>, u64>,
}

/// The kind of aggregate a stream holds, and its id.
fn split_stream(stream: &str) -> Option<(&str, &str)> {
    ["organization-", "connection-", "setup-link-", "api-token-"]
        .into_iter()
        .find_map(|prefix| stream.strip_prefix(prefix).map(|id| (prefix, id)))
}

/// The current state of aggregate `id`, or a fresh (empty) one when it does not exist:
/// what a command handler decides on. Borrowed, so deciding clones nothing.
pub fn state_of<'a, T: Default + Clone>(
    map: &'a Aggregates<T>,
    id: &str,
) -> std::borrow::Cow<'a, T> {
    match map.get(id) {
        Some(tracked) => std::borrow::Cow::Borrowed(&tracked.state),
        None => std::borrow::Cow::Owned(T::default()),
    }
}

/// Makes sure aggregate `id` is in `map` (fresh, created `at`, when it was not), and
/// returns its key for the indexes to share.
fn ensure<T: Default>(map: &mut Aggregates<T>, id: &str, at: DateTime<Utc>) -> Arc<str> {
    if let Some((key, _)) = map.get_key_value(id) {
        return key.clone();
    }
    let key: Arc<str> = id.into();
    let fresh = Tracked {
        state: T::default(),
        // Times past 2262 do not fit; no log holds one (`recorded_at` is the server's clock).
        created_at_nanos: at.timestamp_nanos_opt().unwrap_or(i64::MAX),
    };
    map.insert(key.clone(), Box::new(fresh));
    key
}

/// The map's own copy of `id` when it holds that key, else `id` itself: how state shares
/// the ids it names with the maps' keys.
fn shared<T>(map: &Aggregates<T>, id: &Id) -> Id {
    map.get_key_value(id)
        .map_or_else(|| id.clone(), |(key, _)| key.clone())
}

/// Points `slot` at `key` when they hold the same id (state keeps what its events said,
/// whatever the stream it is in).
fn share(slot: &mut Id, key: &Id) {
    if **slot == **key {
        *slot = key.clone();
    }
}

/// One shared copy of each distinct value that aggregates repeat (a provider preset,
/// a claim mapping, who verified a claim).
///
/// Values no aggregate holds any more are dropped once the pool has doubled since it
/// was last pruned, so it stays within twice the distinct values in use, whatever the
/// log's length.
#[derive(Debug)]
struct Pool<T: ?Sized> {
    values: HashSet<Arc<T>>,
    prune_at: usize,
}

/// Values are only pruned from a pool this size and up.
const POOL_MIN_PRUNE: usize = 64;

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            values: HashSet::new(),
            prune_at: POOL_MIN_PRUNE,
        }
    }
}

impl<T: ?Sized> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            values: self.values.clone(),
            prune_at: self.prune_at,
        }
    }
}

/// Two pools are equal when they hold the same values (a model folded in one pass and
/// one folded in steps prune at the same points, but a clone's references keep values).
impl<T: ?Sized + Eq + std::hash::Hash> PartialEq for Pool<T> {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<T: ?Sized + Eq + std::hash::Hash> Pool<T> {
    /// The pool's copy of `value`; when it holds none, `make`'s joins the pool.
    fn share(&mut self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        if self.values.len() >= self.prune_at {
            self.values.retain(|held| Arc::strong_count(held) > 1);
            self.prune_at = (self.values.len() * 2).max(POOL_MIN_PRUNE);
        }
        let shared = make();
        self.values.insert(shared.clone());
        shared
    }
}

/// Applies `event` to aggregate `id` (created `at` when new); returns its shared key.
fn apply_to<T: Default>(
    map: &mut Aggregates<T>,
    id: &str,
    at: DateTime<Utc>,
    apply: impl FnOnce(&mut T),
) -> Arc<str> {
    // One probe for an aggregate already held (most events), which hands over the key
    // beside the value.
    if let Some((key, tracked)) = map.get_key_value_mut(id) {
        apply(&mut tracked.state);
        return key.clone();
    }
    let key = ensure(map, id, at);
    if let Some(tracked) = map.get_mut(id) {
        apply(&mut tracked.state);
    }
    key
}

/// `map` rebuilt from its entries in order, with full nodes.
fn packed<K: Ord, V>(map: BTreeMap<K, V>) -> BTreeMap<K, V> {
    map.into_iter().collect()
}

impl ReadModel {
    /// Rebuilds the model's ordered maps with full nodes. A B-tree filled in key order
    /// (ids are UUID v7, so most of a log's arrive so) splits its last node and leaves
    /// the left half behind: after a catch-up nearly every node is half full. Built at
    /// once from its entries in order, each node is full. On 100,000 organizations with
    /// their closed setup links this let go of 12 to 19 MiB (bench/FINDINGS.md, round
    /// 21). The projection calls it once it has caught up at start; later entries fill
    /// the right edge as before.
    pub fn pack(&mut self) {
        self.organizations.pack();
        self.connections.pack();
        self.setup_links.pack();
        self.api_tokens.pack();
        self.draft_connections = packed(std::mem::take(&mut self.draft_connections));
        self.closed_links = packed(std::mem::take(&mut self.closed_links));
        self.open_links = std::mem::take(&mut self.open_links).into_iter().collect();
    }

    /// Applies one committed event. Envelopes must come in position order.
    pub fn apply(&mut self, envelope: &EventEnvelope, event: &Event) {
        self.position = envelope.position;
        let at = from_timestamp(envelope.recorded_at.as_ref());
        let Some((kind, id)) = split_stream(&envelope.stream_id) else {
            return;
        };
        match kind {
            "organization-" => {
                if let (Event::OrganizationCreated(_), Some((key, organization))) =
                    (event, self.organizations.get_key_value(id))
                {
                    // Entered again after the event, which may name another external id.
                    self.external_ids
                        .remove(&organization.state.external_id, key);
                }
                let key = apply_to(&mut self.organizations, id, at, |o| o.apply(event));
                if matches!(
                    event,
                    Event::OrganizationCreated(_)
                        | Event::ConnectionActivated(_)
                        | Event::ProviderSwitched(_)
                ) {
                    self.share_organization_ids(&key);
                }
                self.index_organization_event(key, envelope, event, at);
            }
            "connection-" => {
                if let Event::ConnectionConfigured(configured) = event {
                    if let Some((key, organization)) = self.draft_connections.remove_entry(id) {
                        self.drafts_by_organization.remove(&organization, &key);
                    }
                    if let Some((key, connection)) = self.connections.get_key_value(id) {
                        if let Some(previous) = saml_entity_id(&connection.state) {
                            self.entity_ids.remove(previous, key);
                        }
                        // Entered again below, under the organization the event names.
                        self.connections_by_organization
                            .remove(&connection.state.organization_id, key);
                    }
                    let key = ensure(&mut self.connections, id, at);
                    if configured.saml.is_some() {
                        self.certificates_at.insert(key, envelope.position);
                    } else {
                        self.certificates_at.remove(id);
                    }
                }
                // A SAML connection's state keeps its certificates without DER
                // (`SamlIdp`): views read it from the event at `certificates_at`.
                let key = apply_to(&mut self.connections, id, at, |c| c.apply(event));
                if let Event::ConnectionConfigured(_) = event {
                    self.share_connection_ids(&key);
                    let connections = &self.connections;
                    if let Some(entity_id) = entity_id_of(connections, &key) {
                        self.entity_ids
                            .insert(entity_id, key.clone(), |id| entity_id_of(connections, id));
                    }
                    if let Some(organization) = organization_of(connections, &key) {
                        self.connections_by_organization
                            .add(organization, key, |id| organization_of(connections, id));
                    }
                }
            }
            "setup-link-" => {
                if let Some((key, closed)) = self.closed_links.remove_entry(id) {
                    // No command appends to a closed link's stream; a log could (a link
                    // issued again). The event applies to what the model kept.
                    let state = closed.state_of(&key);
                    let created_at_nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
                    self.setup_links.insert(
                        key,
                        Box::new(Tracked {
                            state,
                            created_at_nanos,
                        }),
                    );
                }
                if let Some((key, link)) = self.setup_links.get_key_value(id) {
                    if link.state.is_open() {
                        // Entered again below if it is still open.
                        self.open_links
                            .remove(&(expiry_nanos(&link.state), key.clone()));
                    }
                    if SetupLink::changes_token(event) {
                        // A closed link forgets its token; entered again below when
                        // it holds one.
                        self.link_by_token.remove(&link.state.token_sha256, key);
                    }
                    if let Event::SetupLinkIssued(_) = event {
                        // Issued again (no command does it; a log could): entered
                        // again below, under its new organization.
                        self.links_by_organization
                            .remove(&link.state.organization_id, key);
                    }
                }
                let key = apply_to(&mut self.setup_links, id, at, |l| l.apply(event));
                let links = &self.setup_links;
                if let Some(link) = links.get(&key) {
                    if link.state.is_open() {
                        self.open_links
                            .insert((expiry_nanos(&link.state), key.clone()));
                    }
                    if SetupLink::changes_token(event) && !link.state.token_sha256.is_empty() {
                        self.link_by_token
                            .add(&link.state.token_sha256, key.clone(), |id| {
                                link_token_of(links, id)
                            });
                    }
                }
                if let Event::SetupLinkIssued(issued) = event {
                    let Some(link) = self.setup_links.get_mut(&key) else {
                        return;
                    };
                    let link = &mut link.state;
                    share(&mut link.id, &key);
                    link.organization_id = shared(&self.organizations, &link.organization_id);
                    link.connection_id = shared(&self.connections, &link.connection_id);
                    let (organization, connection) =
                        (link.organization_id.clone(), link.connection_id.clone());
                    let (links, closed) = (&self.setup_links, &self.closed_links);
                    self.links_by_organization.add(&organization, key, |id| {
                        link_organization_of(links, closed, id)
                    });
                    if issued.intent() != schema::SetupIntent::UpdateConnection
                        && !self.connections.contains_key(&connection)
                    {
                        self.draft(connection, organization);
                    }
                }
                self.keep_if_closed(id);
            }
            "api-token-" => {
                if let (Event::ApiTokenIssued(_), Some((key, token))) =
                    (event, self.api_tokens.get_key_value(id))
                {
                    self.api_token_by_hash
                        .remove(&token.state.token_sha256, key);
                }
                let key = apply_to(&mut self.api_tokens, id, at, |t| t.apply(event));
                if let Event::ApiTokenIssued(issued) = event {
                    if let Some(token) = self.api_tokens.get_mut(&key) {
                        share(&mut token.state.id, &key);
                    }
                    let tokens = &self.api_tokens;
                    self.api_token_by_hash.add(&issued.token_sha256, key, |id| {
                        api_token_hash_of(tokens, id)
                    });
                }
            }
            _ => {}
        }
    }

    /// Moves link `id` to the closed links when it is closed, keeping what
    /// [`ClosedLink`] says. Its index entries stay (by organization: read from either
    /// map); it holds no token, and the open links' index left it when it closed.
    fn keep_if_closed(&mut self, id: &str) {
        let closed = self
            .setup_links
            .get(id)
            .is_some_and(|link| link.state.state.is_closed());
        if !closed {
            return;
        }
        let Some((key, link)) = self.setup_links.remove_entry(id) else {
            return;
        };
        let link = link.state;
        self.closed_links.insert(
            key,
            ClosedLink {
                organization_id: link.organization_id,
                version: u32::try_from(link.version).unwrap_or(u32::MAX),
                state: link.state,
            },
        );
    }

    /// The state of setup link `id` a command decides on: the open link's own, a closed
    /// link's as [`ClosedLink::state_of`] gives it, a fresh one when there is none.
    pub fn setup_link_state(&self, id: &str) -> std::borrow::Cow<'_, SetupLink> {
        match self.closed_links.get_key_value(id) {
            Some((key, closed)) => std::borrow::Cow::Owned(closed.state_of(key)),
            None => state_of(&self.setup_links, id),
        }
    }

    /// Records draft connection `id` of `organization` (in place of an earlier draft of
    /// that id, which only a link naming another link's new connection could make).
    fn draft(&mut self, id: Id, organization: Id) {
        if let Some((key, earlier)) = self.draft_connections.remove_entry(&*id) {
            self.drafts_by_organization.remove(&earlier, &key);
        }
        self.draft_connections
            .insert(id.clone(), organization.clone());
        let drafts = &self.draft_connections;
        self.drafts_by_organization
            .add(&organization, id, |id| draft_organization_of(drafts, id));
    }

    /// Points organization `key`'s ids at the maps' keys. A connection and its link
    /// recorded before their organization hold copies of its id: they are shared once the
    /// organization activates the connection.
    fn share_organization_ids(&mut self, key: &Id) {
        let Some(org) = self.organizations.get_mut(key) else {
            return;
        };
        let org = &mut org.state;
        share(&mut org.id, key);
        for id in org
            .active_connection_id
            .iter_mut()
            .chain(org.previously_active.iter_mut())
        {
            *id = shared(&self.connections, id);
        }
        let Some(connection) = org
            .active_connection_id
            .as_deref()
            .and_then(|id| self.connections.get_mut(id))
        else {
            return;
        };
        share(&mut connection.state.organization_id, key);
        let link_id = &*connection.state.setup_link_id;
        if let Some(link) = self.setup_links.get_mut(link_id) {
            share(&mut link.state.organization_id, key);
        } else if let Some(link) = self.closed_links.get_mut(link_id) {
            share(&mut link.organization_id, key);
        }
    }

    /// Points configured connection `key`'s ids at the maps' keys, and the id of the
    /// connection in the link that created it (which named it first, with a copy).
    fn share_connection_ids(&mut self, key: &Id) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let connection = &mut connection.state;
        share(&mut connection.id, key);
        connection.organization_id = shared(&self.organizations, &connection.organization_id);
        let link_id = &connection.setup_link_id;
        let link_id = match self.closed_links.get_key_value(&**link_id) {
            Some((key, _)) => key.clone(),
            None => shared(&self.setup_links, link_id),
        };
        connection.setup_link_id = link_id;
        let preset = &connection.provider_preset;
        connection.provider_preset = self.texts.share(preset, || preset.clone());
        let mapping = &connection.claim_mapping;
        connection.claim_mapping = self.claim_mappings.share(mapping, || mapping.clone());
        if let Some(link) = self.setup_links.get_mut(&connection.setup_link_id) {
            share(&mut link.state.connection_id, key);
        }
    }

    fn index_organization_event(
        &mut self,
        organization_id: Arc<str>,
        envelope: &EventEnvelope,
        event: &Event,
        at: DateTime<Utc>,
    ) {
        match event {
            Event::OrganizationCreated(_) => {
                let organizations = &self.organizations;
                if let Some(external_id) = external_id_of(organizations, &organization_id) {
                    self.external_ids
                        .insert(external_id, organization_id.clone(), |id| {
                            external_id_of(organizations, id)
                        });
                }
            }
            Event::DomainClaimed(e) => {
                let domain = self.domain_key(&e.domain);
                if let Some(organization) = self.organizations.get_mut(&organization_id) {
                    organization.state.domains.share_key(&domain);
                }
                self.domain_record(&domain).owner = Some(organization_id);
            }
            Event::DomainVerified(e) => {
                let actor = envelope.actor.clone().unwrap_or_default();
                let verified_by = if actor.on_behalf_of.is_empty() {
                    format!("{} ({})", actor.display_name, actor.id)
                } else {
                    format!(
                        "{} ({}) for {}",
                        actor.display_name, actor.id, actor.on_behalf_of
                    )
                };
                let verified_by = self.verifier(verified_by);
                self.domain_record(&e.domain).verifications.insert(
                    organization_id,
                    VerificationRecord {
                        verified_by,
                        verified_at: at,
                    },
                );
            }
            Event::DomainReleased(e) => {
                if let Some(record) = self.domains.get_mut(e.domain.as_str()) {
                    record.owner = None;
                    record.verifications.remove(&*organization_id);
                    if record.is_empty() {
                        self.domains.remove(e.domain.as_str());
                    }
                }
            }
            _ => {}
        }
    }

    /// The index's own copy of `domain`, which the organizations that claim it share.
    fn domain_key(&mut self, domain: &str) -> Id {
        if let Some((key, _)) = self.domains.get_key_value(domain) {
            return key.clone();
        }
        let key: Id = domain.into();
        self.domains.insert(key.clone(), DomainRecord::default());
        key
    }

    /// The record of `domain` (an empty one made when there is none).
    fn domain_record(&mut self, domain: &str) -> &mut DomainRecord {
        let key = self.domain_key(domain);
        self.domains.get_mut(&*key).expect("domain_key made it")
    }

    /// The shared copy of a `verified_by` text.
    fn verifier(&mut self, verified_by: String) -> Arc<str> {
        self.texts
            .share(&verified_by, || verified_by.as_str().into())
    }

    /// The organization that claims `domain`, if any.
    pub fn domain_owner(&self, domain: &str) -> Option<&str> {
        self.domains.get(domain)?.owner.as_deref()
    }

    /// Who verified `organization_id`'s claim on `domain`, and when.
    pub fn verification(&self, organization_id: &str, domain: &str) -> Option<Verification> {
        let record = self
            .domains
            .get(domain)?
            .verifications
            .get(organization_id)?;
        Some(Verification {
            verified_by: record.verified_by.to_string(),
            verified_at: record.verified_at,
        })
    }

    /// The organization with this external id, if any.
    pub fn external_id_owner(&self, external_id: &str) -> Option<&str> {
        self.external_ids
            .get(external_id, |id| external_id_of(&self.organizations, id))
            .map(|id| &**id)
    }

    /// The connection configured with this SAML IdP entity id, if any.
    pub fn entity_id_owner(&self, entity_id: &str) -> Option<&Tracked<Connection>> {
        let id = self
            .entity_ids
            .get(entity_id, |id| entity_id_of(&self.connections, id))?;
        self.connections.get(id)
    }

    /// The setup link whose token hashes to `sha256`.
    pub fn setup_link_by_token(&self, sha256: &[u8]) -> Option<&Tracked<SetupLink>> {
        let links = &self.setup_links;
        let id = self
            .link_by_token
            .get(sha256, |id| link_token_of(links, id))?;
        links.get(id)
    }

    /// The API token whose token hashes to `sha256`.
    pub fn api_token_by_hash(&self, sha256: &[u8]) -> Option<&Tracked<ApiToken>> {
        let tokens = &self.api_tokens;
        let id = self
            .api_token_by_hash
            .get(sha256, |id| api_token_hash_of(tokens, id))?;
        tokens.get(id)
    }

    /// The ids of organization `organization_id`'s connections, configured and drafts,
    /// sorted (found through an index: the organization's own count, not every
    /// organization's).
    pub fn organization_connection_ids(&self, organization_id: &str) -> Vec<&str> {
        let connections = &self.connections;
        let drafts = &self.draft_connections;
        let mut ids: Vec<&str> = self
            .connections_by_organization
            .all(organization_id, |id| organization_of(connections, id))
            .chain(
                self.drafts_by_organization
                    .all(organization_id, |id| draft_organization_of(drafts, id)),
            )
            .map(|id| &**id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The open setup links whose expiry is `now` or earlier, the soonest first (found
    /// through an index of the open links alone).
    pub fn open_links_expired_by(
        &self,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = &Tracked<SetupLink>> {
        let now = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        self.open_links
            .iter()
            .take_while(move |(expiry, _)| *expiry <= now)
            .filter_map(|(_, id)| self.setup_links.get(id))
    }

    /// The ids of organization `organization_id`'s setup links, open and closed, sorted
    /// (through an index: the organization's own count, not every organization's).
    pub fn organization_link_ids(&self, organization_id: &str) -> Vec<&Id> {
        let (links, closed) = (&self.setup_links, &self.closed_links);
        let mut ids: Vec<&Id> = self
            .links_by_organization
            .all(organization_id, |id| {
                link_organization_of(links, closed, id)
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Organization `organization_id`'s setup links but the closed ones, by id.
    pub fn organization_setup_links(&self, organization_id: &str) -> Vec<&Tracked<SetupLink>> {
        self.organization_link_ids(organization_id)
            .into_iter()
            .filter_map(|id| self.setup_links.get(id))
            .collect()
    }

    /// The position of the event holding the DER of SAML connection `connection_id`'s
    /// signing certificates (the model keeps everything else about them).
    pub fn certificates_at(&self, connection_id: &str) -> Option<u64> {
        self.certificates_at.get(connection_id).copied()
    }

    /// The organization a connection (configured or draft) belongs to.
    pub fn connection_organization(&self, connection_id: &str) -> Option<&str> {
        self.connections
            .get(connection_id)
            .map(|c| &*c.state.organization_id)
            .or_else(|| {
                self.draft_connections
                    .get(connection_id)
                    .map(|organization| &**organization)
            })
    }
}

fn saml_entity_id(connection: &Connection) -> Option<&str> {
    match &connection.settings {
        Some(ConnectionSettings::Saml(saml)) => Some(saml.entity_id()),
        _ => None,
    }
}

/// The IdP entity id of SAML connection `id` in `connections`.
fn entity_id_of<'a>(connections: &'a Aggregates<Connection>, id: &Id) -> Option<&'a str> {
    saml_entity_id(&connections.get(id)?.state)
}

/// When `link` expires, in nanoseconds since the Unix epoch (past 2262: never).
fn expiry_nanos(link: &SetupLink) -> i64 {
    link.expires_at.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The organization of configured connection `id` in `connections`.
fn organization_of<'a>(connections: &'a Aggregates<Connection>, id: &Id) -> Option<&'a str> {
    Some(&connections.get(id)?.state.organization_id)
}

/// The organization of draft connection `id` in `drafts`.
fn draft_organization_of<'a>(drafts: &'a BTreeMap<Id, Id>, id: &Id) -> Option<&'a str> {
    drafts.get(&**id).map(|organization| &**organization)
}

/// The organization of setup link `id`, open (in `links`) or closed (in `closed`).
fn link_organization_of<'a>(
    links: &'a Aggregates<SetupLink>,
    closed: &'a BTreeMap<Id, ClosedLink>,
    id: &Id,
) -> Option<&'a str> {
    match links.get(id) {
        Some(link) => Some(&link.state.organization_id),
        None => Some(&closed.get(&**id)?.organization_id),
    }
}

/// The token hash setup link `id` in `links` holds (empty once it is closed).
fn link_token_of<'a>(links: &'a Aggregates<SetupLink>, id: &Id) -> Option<&'a [u8]> {
    Some(&links.get(id)?.state.token_sha256)
}

/// The token hash of API token `id` in `tokens`.
fn api_token_hash_of<'a>(tokens: &'a Aggregates<ApiToken>, id: &Id) -> Option<&'a [u8]> {
    Some(&tokens.get(id)?.state.token_sha256)
}

/// The external id of organization `id` in `organizations`.
fn external_id_of<'a>(organizations: &'a Aggregates<Organization>, id: &Id) -> Option<&'a str> {
    Some(&organizations.get(id)?.state.external_id)
}

/// Aggregate ids found by a key each aggregate holds (an organization's external id, a
/// SAML connection's IdP entity id, a token's hash, the organization a connection or a
/// link belongs to), like a `HashMap<key, id>` (or `HashMap<key, Vec<id>>`) whose keys are
/// read from the aggregates: an entry is the shared id alone (16 bytes) instead of a map
/// entry and a copy of the key. Every method that may rehash is given `key_of`, which
/// reads an id's key from its aggregate, to compare and to rehash.
///
/// One rule keeps it whole, and the model follows it: an entry is made after its
/// aggregate holds the key, and removed before that key changes (a configuration
/// replaced). Used as a map ([`Self::insert`]), a key has one entry: entering it again
/// replaces the id. Used as a multimap ([`Self::add`]), a key has any number of ids, each
/// once, found with [`Self::all`].
#[derive(Debug)]
struct IdIndex<K: ?Sized> {
    table: HashTable<Id>,
    /// SipHash with a random key: the keys come from outside.
    hasher: std::collections::hash_map::RandomState,
    key: std::marker::PhantomData<fn(&K)>,
}

/// Ids by a text their aggregates hold.
type TextIndex = IdIndex<str>;

impl<K: ?Sized> Clone for IdIndex<K> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            hasher: self.hasher.clone(),
            key: std::marker::PhantomData,
        }
    }
}

impl<K: ?Sized> Default for IdIndex<K> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: Default::default(),
            key: std::marker::PhantomData,
        }
    }
}

impl<K: ?Sized + std::hash::Hash + Eq> IdIndex<K> {
    /// The id entered under `key` (the first, in a multimap).
    fn get<'a>(&self, key: &K, key_of: impl Fn(&Id) -> Option<&'a K>) -> Option<&Id>
    where
        K: 'a,
    {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |id| key_of(id) == Some(key))
    }

    /// Every id entered under `key`, in no particular order.
    fn all<'s: 'k, 'k, 'a: 'k>(
        &'s self,
        key: &'k K,
        key_of: impl Fn(&Id) -> Option<&'a K> + 'k,
    ) -> impl Iterator<Item = &'s Id> + 'k
    where
        K: 'a,
    {
        let hash = self.hasher.hash_one(key);
        self.table
            .iter_hash(hash)
            .filter(move |id| key_of(id) == Some(key))
    }

    /// Enters `id`, whose aggregate holds `key`, under it, in place of any other id.
    fn insert<'a>(&mut self, key: &K, id: Id, key_of: impl Fn(&Id) -> Option<&'a K>)
    where
        K: 'a,
    {
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hasher.hash_one(key),
            |held| key_of(held) == Some(key),
            |held| Self::rehash(hasher, key_of(held)),
        );
        match entry {
            hash_table::Entry::Occupied(mut occupied) => *occupied.get_mut() = id,
            hash_table::Entry::Vacant(vacant) => {
                vacant.insert(id);
            }
        }
    }

    /// Enters `id`, whose aggregate holds `key`, under it beside the ids already there
    /// (once: entering it again changes nothing).
    fn add<'a>(&mut self, key: &K, id: Id, key_of: impl Fn(&Id) -> Option<&'a K>)
    where
        K: 'a,
    {
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hasher.hash_one(key),
            |held| **held == *id,
            |held| Self::rehash(hasher, key_of(held)),
        );
        if let hash_table::Entry::Vacant(vacant) = entry {
            vacant.insert(id);
        }
    }

    /// Removes `id`'s entry, which its aggregate holds `key` for (if it is entered:
    /// another aggregate entered under the same key since keeps its entry).
    fn remove(&mut self, key: &K, id: &str) {
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.table.find_entry(hash, |held| **held == *id) {
            entry.remove();
        }
    }

    /// An entry's hash when the table grows. Every entered id's aggregate holds its key
    /// (the rule above); one that did not would only be found no more.
    fn rehash(hasher: &std::collections::hash_map::RandomState, key: Option<&K>) -> u64 {
        match key {
            Some(key) => hasher.hash_one(key),
            None => 0,
        }
    }
}

/// Two indexes are equal when they hold the same ids (keys are the aggregates').
impl<K: ?Sized> PartialEq for IdIndex<K> {
    fn eq(&self, other: &Self) -> bool {
        let sorted = |index: &IdIndex<K>| {
            let mut ids: Vec<Id> = index.table.iter().cloned().collect();
            ids.sort();
            ids
        };
        self.table.len() == other.table.len() && sorted(self) == sorted(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(position: u64, saml: Option<schema::SamlSettings>) -> (EventEnvelope, Event) {
        let oidc = saml.is_none().then(schema::OidcSettings::default);
        let event = Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
            connection_id: "c1".into(),
            organization_id: "o1".into(),
            saml,
            oidc,
            ..Default::default()
        }));
        let envelope = EventEnvelope {
            position,
            stream_id: "connection-c1".into(),
            ..Default::default()
        };
        (envelope, event)
    }

    fn saml(entity_id: &str, der: &[u8]) -> schema::SamlSettings {
        schema::SamlSettings {
            idp_entity_id: entity_id.into(),
            signing_certificates: vec![schema::Certificate {
                der: der.to_vec(),
                sha256_fingerprint: "ab".repeat(32),
                subject: "CN=idp".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn certificates(model: &ReadModel) -> Vec<schema::Certificate> {
        match &model.connections["c1"].state.settings {
            Some(ConnectionSettings::Saml(saml)) => saml.settings().signing_certificates,
            _ => Vec::new(),
        }
    }

    #[test]
    fn certificate_der_is_left_in_the_log_and_its_position_kept() {
        let mut model = ReadModel::default();
        let (envelope, event) = configured(3, Some(saml("https://idp/1", b"first der")));
        model.apply(&envelope, &event);
        let kept = certificates(&model);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].der.is_empty(), "no DER in memory");
        assert_eq!(
            kept[0].sha256_fingerprint,
            "ab".repeat(32),
            "the rest is kept"
        );
        assert_eq!(kept[0].subject, "CN=idp");
        assert_eq!(model.certificates_at("c1"), Some(3));

        // Configured again: the newer event holds them.
        let (envelope, event) = configured(7, Some(saml("https://idp/2", b"second der")));
        model.apply(&envelope, &event);
        assert_eq!(model.certificates_at("c1"), Some(7));
        assert!(certificates(&model)[0].der.is_empty());

        // OIDC now: no certificates to find.
        let (envelope, event) = configured(9, None);
        model.apply(&envelope, &event);
        assert_eq!(model.certificates_at("c1"), None);
        assert_eq!(model.certificates_at("c2"), None);
    }

    fn at(position: u64, stream: &str) -> EventEnvelope {
        EventEnvelope {
            position,
            stream_id: stream.into(),
            ..Default::default()
        }
    }

    /// Applies an organization's events, its connection's first or last.
    fn one_organization(connection_first: bool) -> ReadModel {
        let created = Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: "o1".into(),
            display_name: "One".into(),
            external_id: "x1".into(),
        });
        let issued = Event::SetupLinkIssued(schema::SetupLinkIssued {
            setup_link_id: "l1".into(),
            organization_id: "o1".into(),
            connection_id: "c1".into(),
            ..Default::default()
        });
        let configured = Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
            connection_id: "c1".into(),
            organization_id: "o1".into(),
            setup_link_id: "l1".into(),
            oidc: Some(schema::OidcSettings::default()),
            ..Default::default()
        }));
        let activated = Event::ConnectionActivated(schema::ConnectionActivated {
            connection_id: "c1".into(),
        });
        let mut events = [
            ("organization-o1", created),
            ("setup-link-l1", issued),
            ("connection-c1", configured),
            ("organization-o1", activated),
        ];
        if connection_first {
            events.rotate_left(1);
            events.swap(2, 3);
        }
        let mut model = ReadModel::default();
        for (position, (stream, event)) in events.iter().enumerate() {
            model.apply(&at(position as u64 + 1, stream), event);
        }
        model
    }

    #[test]
    fn ids_named_by_state_are_the_maps_own_keys() {
        for connection_first in [false, true] {
            let model = one_organization(connection_first);
            fn key<T>(map: &Aggregates<T>, id: &str) -> Id {
                map.get_key_value(id).unwrap().0.clone()
            }
            let (o1, c1, l1) = (
                key(&model.organizations, "o1"),
                key(&model.connections, "c1"),
                key(&model.setup_links, "l1"),
            );
            let org = &model.organizations["o1"].state;
            let connection = &model.connections["c1"].state;
            let link = &model.setup_links["l1"].state;
            let same = |a: &Id, b: &Id| Arc::ptr_eq(a, b);
            assert!(same(&org.id, &o1), "connection first: {connection_first}");
            assert!(same(org.active_connection_id.as_ref().unwrap(), &c1));
            assert!(same(&org.previously_active[0], &c1));
            assert!(same(&connection.id, &c1));
            assert!(same(&connection.organization_id, &o1), "{connection_first}");
            assert!(same(&connection.setup_link_id, &l1));
            assert!(same(&link.id, &l1));
            assert!(same(&link.organization_id, &o1), "{connection_first}");
            assert!(same(&link.connection_id, &c1));
            // Shared or not, the model is the same state.
            assert_eq!(&*connection.organization_id, "o1");
        }
        // State keeps what its event said, even in a stream of another id.
        let mut model = one_organization(false);
        let odd = Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
            connection_id: "c9".into(),
            organization_id: "o1".into(),
            ..Default::default()
        }));
        model.apply(&at(5, "connection-c2"), &odd);
        assert_eq!(&*model.connections["c2"].state.id, "c9");
    }

    fn configure(model: &mut ReadModel, position: u64, connection: &str, email_claim: &str) {
        let event = Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
            connection_id: connection.into(),
            organization_id: "o1".into(),
            claim_mapping: Some(schema::ClaimMapping {
                email: email_claim.into(),
                groups: "groups".into(),
                ..Default::default()
            }),
            provider_preset: "okta".into(),
            ..Default::default()
        }));
        model.apply(&at(position, &format!("connection-{connection}")), &event);
    }

    #[test]
    fn connections_share_equal_claim_mappings_and_presets_and_the_pool_stays_bounded() {
        let mut model = ReadModel::default();
        configure(&mut model, 1, "c1", "email");
        configure(&mut model, 2, "c2", "email");
        configure(&mut model, 3, "c3", "mail");
        let state = |model: &ReadModel, id: &str| model.connections[id].state.clone();
        let (c1, c2, c3) = (
            state(&model, "c1"),
            state(&model, "c2"),
            state(&model, "c3"),
        );
        assert!(Arc::ptr_eq(&c1.claim_mapping, &c2.claim_mapping));
        assert!(Arc::ptr_eq(&c1.provider_preset, &c3.provider_preset));
        assert!(!Arc::ptr_eq(&c1.claim_mapping, &c3.claim_mapping));
        assert_eq!(c3.claim_mapping.email, "mail");
        assert_eq!(&*c2.provider_preset, "okta");

        // One connection reconfigured a thousand times, each with a new mapping: the
        // mappings it no longer holds leave the pool.
        for round in 0..1_000 {
            configure(&mut model, 10 + round, "c4", &format!("claim-{round}"));
        }
        let held = model.claim_mappings.values.len();
        assert!(held <= 2 * POOL_MIN_PRUNE, "{held} mappings pooled");
        assert!(model
            .claim_mappings
            .values
            .contains(&model.connections["c4"].state.claim_mapping));
        assert!(model.claim_mappings.values.contains(&c1.claim_mapping));
        assert_eq!(
            model.connections["c4"].state.claim_mapping.email,
            "claim-999"
        );
    }

    #[test]
    fn a_claimed_domain_is_the_domain_index_own_key() {
        let mut model = ReadModel::default();
        let claim = |domain: &str| {
            Event::DomainClaimed(schema::DomainClaimed {
                domain: domain.into(),
                ..Default::default()
            })
        };
        let events = [
            ("organization-o1", created("o1")),
            ("organization-o1", claim("acme.com")),
            ("organization-o2", created("o2")),
            (
                "organization-o1",
                Event::DomainReleased(schema::DomainReleased {
                    domain: "acme.com".into(),
                }),
            ),
            ("organization-o2", claim("acme.com")),
            ("organization-o2", claim("beta.com")),
        ];
        for (position, (stream, event)) in events.iter().enumerate() {
            model.apply(&at(position as u64 + 1, stream), event);
        }
        let o2 = &model.organizations["o2"].state;
        for domain in ["acme.com", "beta.com"] {
            let (index_key, _) = model.domains.get_key_value(domain).unwrap();
            let (claim_key, _) = o2.domains.get_key_value(domain).unwrap();
            assert!(Arc::ptr_eq(index_key, claim_key), "{domain}");
        }
        assert!(model.organizations["o1"].state.domains.is_empty());
        assert_eq!(model.domain_owner("acme.com"), Some("o2"));
    }

    fn created(id: &str) -> Event {
        Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: id.into(),
            ..Default::default()
        })
    }

    fn configure_saml(
        model: &mut ReadModel,
        position: u64,
        connection: &str,
        entity: Option<&str>,
    ) {
        let event = Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
            connection_id: connection.into(),
            organization_id: "o1".into(),
            saml: entity.map(|entity| saml(entity, b"der")),
            oidc: entity.is_none().then(schema::OidcSettings::default),
            ..Default::default()
        }));
        model.apply(&at(position, &format!("connection-{connection}")), &event);
    }

    #[test]
    fn entity_and_external_ids_find_their_aggregates_through_growth_and_changes() {
        let mut model = ReadModel::default();
        let owner = |model: &ReadModel, entity: &str| {
            model
                .entity_id_owner(entity)
                .map(|c| c.state.id.to_string())
        };
        // Enough entries for the table to grow several times (its hashes are recomputed
        // from the aggregates' texts then).
        for i in 0..2_000 {
            configure_saml(
                &mut model,
                i + 1,
                &format!("c{i}"),
                Some(&format!("https://idp{i}/e")),
            );
            let created = Event::OrganizationCreated(schema::OrganizationCreated {
                organization_id: format!("o{i}"),
                external_id: format!("ext-{i}"),
                ..Default::default()
            });
            model.apply(&at(i + 1, &format!("organization-o{i}")), &created);
        }
        for i in [0, 1, 999, 1_999] {
            assert_eq!(
                owner(&model, &format!("https://idp{i}/e")),
                Some(format!("c{i}"))
            );
            assert_eq!(
                model.external_id_owner(&format!("ext-{i}")),
                Some(&*format!("o{i}"))
            );
        }
        assert_eq!(owner(&model, "https://idp2000/e"), None);
        assert_eq!(model.external_id_owner("ext-2000"), None);

        // Reconfigured with another entity id: found by the new one only.
        configure_saml(&mut model, 3_000, "c5", Some("https://new/e"));
        assert_eq!(owner(&model, "https://new/e").as_deref(), Some("c5"));
        assert_eq!(owner(&model, "https://idp5/e"), None);
        // Reconfigured as OIDC: found by none.
        configure_saml(&mut model, 3_001, "c6", None);
        assert_eq!(owner(&model, "https://idp6/e"), None);
        // A second connection entered under an entity id replaces the first; the first's
        // reconfiguration then leaves the second's entry alone.
        configure_saml(&mut model, 3_002, "c8", Some("https://idp7/e"));
        assert_eq!(owner(&model, "https://idp7/e").as_deref(), Some("c8"));
        configure_saml(&mut model, 3_003, "c7", Some("https://other/e"));
        assert_eq!(owner(&model, "https://idp7/e").as_deref(), Some("c8"));
        assert_eq!(owner(&model, "https://other/e").as_deref(), Some("c7"));

        // An organization created again (a tampered log) under another external id.
        let again = Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: "o3".into(),
            external_id: "ext-new".into(),
            ..Default::default()
        });
        model.apply(&at(3_004, "organization-o3"), &again);
        assert_eq!(model.external_id_owner("ext-new"), Some("o3"));
        assert_eq!(model.external_id_owner("ext-3"), None);
        assert_eq!(model.external_id_owner("ext-4"), Some("o4"));
    }

    /// One step of the organization-index property below (ids drawn from small sets,
    /// so that steps meet the same aggregates).
    #[derive(Debug, Clone)]
    enum IndexStep {
        /// A setup link (id, organization, connection, token, a new connection or not).
        IssueLink(u8, u8, u8, u8, bool),
        /// A connection configured (id, organization).
        Configure(u8, u8),
        /// An API token issued (id, token).
        IssueToken(u8, u8),
        /// A setup link closed (id; revoked, spent or expired).
        CloseLink(u8, u8),
    }

    fn index_step() -> impl proptest::strategy::Strategy<Value = IndexStep> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..6, 0u8..4, 0u8..6, 0u8..8, any::<bool>())
                .prop_map(|(l, o, c, t, new)| IndexStep::IssueLink(l, o, c, t, new)),
            (0u8..6, 0u8..4).prop_map(|(c, o)| IndexStep::Configure(c, o)),
            (0u8..4, 0u8..8).prop_map(|(k, t)| IndexStep::IssueToken(k, t)),
            (0u8..6, 0u8..3).prop_map(|(l, how)| IndexStep::CloseLink(l, how)),
        ]
    }

    fn token(t: u8) -> Vec<u8> {
        vec![t; 32]
    }

    fn apply_index_step(model: &mut ReadModel, position: u64, step: &IndexStep) {
        let (stream, event) = match *step {
            IndexStep::IssueLink(l, o, c, t, new) => (
                format!("setup-link-l{l}"),
                Event::SetupLinkIssued(schema::SetupLinkIssued {
                    setup_link_id: format!("l{l}"),
                    organization_id: format!("o{o}"),
                    connection_id: format!("c{c}"),
                    token_sha256: token(t),
                    // Expiries an hour apart, some shared.
                    expires_at: Some(prost_types::Timestamp {
                        seconds: 1_795_000_000 + i64::from(t % 4) * 3_600,
                        nanos: 0,
                    }),
                    intent: if new {
                        schema::SetupIntent::NewConnection
                    } else {
                        schema::SetupIntent::UpdateConnection
                    } as i32,
                    ..Default::default()
                }),
            ),
            IndexStep::Configure(c, o) => (
                format!("connection-c{c}"),
                Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
                    connection_id: format!("c{c}"),
                    organization_id: format!("o{o}"),
                    oidc: Some(schema::OidcSettings::default()),
                    ..Default::default()
                })),
            ),
            IndexStep::CloseLink(l, how) => (
                format!("setup-link-l{l}"),
                match how {
                    0 => Event::SetupLinkRevoked(Default::default()),
                    1 => Event::SetupLinkSpent(Default::default()),
                    _ => Event::SetupLinkExpired(Default::default()),
                },
            ),
            IndexStep::IssueToken(k, t) => (
                format!("api-token-k{k}"),
                Event::ApiTokenIssued(schema::ApiTokenIssued {
                    token_id: format!("k{k}"),
                    token_sha256: token(t),
                    ..Default::default()
                }),
            ),
        };
        model.apply(&at(position, &stream), &event);
    }

    /// What the indexes must answer, found by walking every aggregate.
    fn organization_connections_by_walk(model: &ReadModel, organization: &str) -> Vec<String> {
        let mut ids: Vec<String> = model
            .connections
            .iter()
            .filter(|(_, c)| *c.state.organization_id == *organization)
            .map(|(id, _)| id.to_string())
            .chain(
                model
                    .draft_connections
                    .iter()
                    .filter(|(_, o)| ***o == *organization)
                    .map(|(id, _)| id.to_string()),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn check_indexes_against_walks(model: &ReadModel, organizations: usize, tokens: u8) {
        // One entry per aggregate: an entry left behind by a change would still be
        // filtered out of every answer, but would stay in memory (and be entered twice).
        let entries = |index: &IdIndex<str>| index.table.len();
        assert_eq!(
            entries(&model.connections_by_organization),
            model.connections.len()
        );
        assert_eq!(
            entries(&model.drafts_by_organization),
            model.draft_connections.len()
        );
        // (A link's later event before its issue makes an aggregate naming nothing; a
        // closed link holds no token.)
        let issued = model
            .setup_links
            .values()
            .filter(|l| !l.state.organization_id.is_empty())
            .count()
            + model
                .closed_links
                .values()
                .filter(|l| !l.organization_id.is_empty())
                .count();
        assert_eq!(entries(&model.links_by_organization), issued);
        // Closed links are kept apart, and only they are.
        assert!(model
            .setup_links
            .values()
            .all(|l| !l.state.state.is_closed()));
        assert!(model.closed_links.values().all(|l| l.state.is_closed()));
        let holding_tokens = model
            .setup_links
            .values()
            .filter(|l| !l.state.token_sha256.is_empty())
            .count();
        assert_eq!(model.link_by_token.table.len(), holding_tokens);
        assert_eq!(model.api_token_by_hash.table.len(), model.api_tokens.len());
        for o in 0..organizations {
            let organization = format!("o{o}");
            assert_eq!(
                model.organization_connection_ids(&organization),
                organization_connections_by_walk(model, &organization),
                "connections of {organization}"
            );
            let links: Vec<&str> = model
                .organization_setup_links(&organization)
                .iter()
                .map(|l| &*l.state.id)
                .collect();
            let walked: Vec<&str> = model
                .setup_links
                .iter()
                .filter(|(_, l)| *l.state.organization_id == *organization)
                .map(|(id, _)| &**id)
                .collect();
            assert_eq!(links, walked, "setup links of {organization}");
            let all: Vec<&str> = model
                .organization_link_ids(&organization)
                .into_iter()
                .map(|id| &**id)
                .collect();
            let mut walked_all: Vec<&str> = walked
                .into_iter()
                .chain(
                    model
                        .closed_links
                        .iter()
                        .filter(|(_, l)| *l.organization_id == *organization)
                        .map(|(id, _)| &**id),
                )
                .collect();
            walked_all.sort_unstable();
            assert_eq!(
                all, walked_all,
                "open and closed setup links of {organization}"
            );
        }
        // The open links due by each moment, soonest first, as a walk finds them.
        for hours in 0..5 {
            let now = DateTime::from_timestamp(1_795_000_000 + hours * 3_600, 0).unwrap();
            let mut walked: Vec<(DateTime<Utc>, &str)> = model
                .setup_links
                .iter()
                .filter(|(_, l)| l.state.is_open() && l.state.expires_at <= now)
                .map(|(id, l)| (l.state.expires_at, &**id))
                .collect();
            walked.sort();
            let due: Vec<(DateTime<Utc>, &str)> = model
                .open_links_expired_by(now)
                .map(|l| (l.state.expires_at, &*l.state.id))
                .collect();
            assert_eq!(due, walked, "links due by {now}");
        }
        assert_eq!(
            model.open_links.len(),
            model
                .setup_links
                .values()
                .filter(|l| l.state.is_open())
                .count()
        );
        for t in 0..tokens {
            let hash = token(t);
            let link = model.setup_link_by_token(&hash).map(|l| &*l.state.id);
            let holding = holders(&model.setup_links, |l| &l.token_sha256[..], &hash);
            found_when_held(link, &holding, &format!("link of token {t}"));
            let api_token = model.api_token_by_hash(&hash).map(|k| &*k.state.id);
            let holding = holders(&model.api_tokens, |k| &k.token_sha256[..], &hash);
            found_when_held(api_token, &holding, &format!("API token {t}"));
        }
    }

    /// The ids of the aggregates in `map` whose token hash is `hash`.
    fn holders<'a, T>(
        map: &'a Aggregates<T>,
        hash_of: impl Fn(&T) -> &[u8],
        hash: &[u8],
    ) -> Vec<&'a str> {
        map.iter()
            .filter(|(_, a)| hash_of(&a.state) == hash)
            .map(|(id, _)| &**id)
            .collect()
    }

    /// A look-up by hash finds something exactly when an aggregate holds the hash, and
    /// then one that does.
    fn found_when_held(found: Option<&str>, holding: &[&str], what: &str) {
        assert_eq!(found.is_some(), !holding.is_empty(), "{what}");
        assert!(found.is_none_or(|id| holding.contains(&id)), "{what}");
    }

    proptest::proptest! {
        #[test]
        fn organization_and_token_indexes_answer_what_a_walk_finds(
            steps in proptest::collection::vec(index_step(), 1..40)
        ) {
            let mut model = ReadModel::default();
            for (position, step) in steps.iter().enumerate() {
                apply_index_step(&mut model, position as u64 + 1, step);
                check_indexes_against_walks(&model, 5, 8);
            }
            // Packed (as at the end of a catch-up), the model holds and finds the same,
            // and goes on the same.
            let mut packed = model.clone();
            packed.pack();
            proptest::prop_assert_eq!(&packed, &model);
            check_indexes_against_walks(&packed, 5, 8);
            for (position, step) in steps.iter().enumerate() {
                let position = steps.len() as u64 + position as u64 + 1;
                apply_index_step(&mut model, position, step);
                apply_index_step(&mut packed, position, step);
            }
            proptest::prop_assert_eq!(&packed, &model);
            check_indexes_against_walks(&packed, 5, 8);
        }
    }

    /// A change to [`Aggregates`] or a page read from it.
    #[derive(Debug, Clone)]
    enum AggregateStep {
        Insert(u8, u32),
        Remove(u8),
        /// A page after the id numbered so (none: the first page).
        Page(Option<u8>),
    }

    fn aggregate_step() -> impl proptest::strategy::Strategy<Value = AggregateStep> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..24, any::<u32>()).prop_map(|(k, v)| AggregateStep::Insert(k, v)),
            (0u8..24).prop_map(AggregateStep::Remove),
            proptest::option::of(0u8..24).prop_map(AggregateStep::Page),
        ]
    }

    proptest::proptest! {
        /// Found by hash, listed in order: `Aggregates` answers what an ordered map
        /// holding the same does, whatever the inserts and removals before.
        #[test]
        fn aggregates_find_and_list_what_an_ordered_map_holds(
            steps in proptest::collection::vec(aggregate_step(), 1..80)
        ) {
            let id = |k: u8| format!("id-{k:02}");
            let mut aggregates = Aggregates::<u32>::default();
            let mut oracle = BTreeMap::<String, u32>::new();
            for step in &steps {
                match *step {
                    AggregateStep::Insert(k, v) => {
                        let tracked = Box::new(Tracked { state: v, created_at_nanos: 0 });
                        let replaced = aggregates.insert(id(k).into(), tracked);
                        proptest::prop_assert_eq!(replaced.map(|t| t.state), oracle.insert(id(k), v));
                    }
                    AggregateStep::Remove(k) => {
                        let removed = aggregates.remove_entry(&id(k));
                        proptest::prop_assert_eq!(
                            removed.map(|(key, t)| (key.to_string(), t.state)),
                            oracle.remove_entry(&id(k))
                        );
                    }
                    AggregateStep::Page(after) => {
                        let after = after.map(id).unwrap_or_default();
                        let listed: Vec<(String, u32)> = aggregates
                            .after(&after)
                            .map(|(key, t)| (key.to_string(), t.state))
                            .collect();
                        let expected: Vec<(String, u32)> = oracle
                            .iter()
                            .filter(|(key, _)| after.is_empty() || key.as_str() > after.as_str())
                            .map(|(key, v)| (key.clone(), *v))
                            .collect();
                        proptest::prop_assert_eq!(listed, expected);
                    }
                }
                proptest::prop_assert_eq!(aggregates.len(), oracle.len());
                for k in 0..24 {
                    proptest::prop_assert_eq!(
                        aggregates.get(&id(k)).map(|t| t.state),
                        oracle.get(&id(k)).copied()
                    );
                }
                proptest::prop_assert!(aggregates.keys().map(|k| k.to_string()).eq(oracle.keys().cloned()));
            }
        }
    }

    #[test]
    fn organization_indexes_hold_through_growth() {
        // Enough entries for the tables to grow several times (each entry's hash is
        // recomputed from the organization its aggregate names then).
        let mut model = ReadModel::default();
        let mut position = 0;
        for i in 0..1_500u32 {
            for (stream, event) in [
                (
                    format!("setup-link-l{i}"),
                    Event::SetupLinkIssued(schema::SetupLinkIssued {
                        setup_link_id: format!("l{i}"),
                        organization_id: format!("o{}", i % 97),
                        connection_id: format!("c{i}"),
                        token_sha256: i.to_be_bytes().repeat(8),
                        intent: schema::SetupIntent::NewConnection as i32,
                        ..Default::default()
                    }),
                ),
                (
                    format!("connection-c{}", i / 2),
                    Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
                        connection_id: format!("c{}", i / 2),
                        organization_id: format!("o{}", (i / 2) % 97),
                        oidc: Some(schema::OidcSettings::default()),
                        ..Default::default()
                    })),
                ),
            ] {
                position += 1;
                model.apply(&at(position, &stream), &event);
            }
        }
        check_indexes_against_walks(&model, 98, 0);
        assert_eq!(model.organization_connection_ids("o5").len(), 16);
        assert_eq!(model.organization_setup_links("o5").len(), 16);
        for i in [0u32, 749, 1_499] {
            let link = model.setup_link_by_token(&i.to_be_bytes().repeat(8));
            assert_eq!(link.map(|l| l.state.id.to_string()), Some(format!("l{i}")));
        }
    }

    #[test]
    fn a_tracked_organization_fits_the_128_byte_allocation_class() {
        // One per organization: past 128 bytes each costs 160, 3 MiB more per 100,000.
        assert!(std::mem::size_of::<Tracked<Organization>>() <= 128);
    }

    #[test]
    fn a_tracked_setup_link_fits_the_128_byte_allocation_class() {
        // Every link ever issued stays in the model (one per connection at least): past
        // 128 bytes each costs 160, 3 MiB more per 100,000 links.
        assert!(std::mem::size_of::<Tracked<SetupLink>>() <= 128);
    }

    #[test]
    fn a_tracked_connection_fits_the_160_byte_allocation_class() {
        // One connection per organization is boxed in the model. Its SAML settings are
        // one encoded allocation (`SamlIdp`, 16 bytes here), not a message of strings and
        // vectors (about 100 bytes here): 160 bytes where it took 224, 6 MiB less per
        // 100,000 organizations; past 160 it would cost 192.
        assert!(std::mem::size_of::<Tracked<Connection>>() <= 160);
    }

    #[test]
    fn created_at_keeps_the_first_event_time_to_the_nanosecond() {
        let mut model = ReadModel::default();
        let mut first = at(1, "organization-o1");
        first.recorded_at = Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 123_456_789,
        });
        model.apply(&first, &created("o1"));
        let mut later = at(2, "organization-o1");
        later.recorded_at = Some(prost_types::Timestamp {
            seconds: 1_795_000_100,
            nanos: 0,
        });
        model.apply(&later, &created("o1"));
        let created_at = model.organizations["o1"].created_at();
        assert_eq!(created_at.timestamp(), 1_795_000_000);
        assert_eq!(created_at.timestamp_subsec_nanos(), 123_456_789);
    }
}
