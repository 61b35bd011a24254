//! The fold: one envelope in, the rows it adds to the audit database out.
//!
//! An event's rows are a pure function of the admin [`ReadModel`] just before it and just
//! after it (every aggregate, folded with the domain's own `apply`):
//! - [`before`]: the entry (action, target, summary, before / after details, from
//!   `describe.rs`), its index postings, and, for an organization's own event, what the
//!   organization claimed;
//! - [`after`]: the domains the event made the organization claim or stop claiming, and
//!   the organization of a connection it made known. Routes are not folded here: how a
//!   domain routed at a point in time is computed when asked, from the organizations
//!   that claimed it (`point_in_time.rs`), so a rebuild computes no route at all.
//!
//! The models come from one of two places (see `projection.rs`): the control plane's read
//! model task, through [`crate::AuditFeed`] (the server's way: one read model, the
//! catch-up at start included), or the audit task's own [`OwnFold`] (a projection started
//! without a feed, or one whose feed let go or that starts far behind, until it hands the
//! events back to the feed at the head). Both call the same two functions, so
//! replaying the log from position 1 rebuilds the same rows either way.

use std::collections::{BTreeSet, HashMap};

use signpost_control::read_model::ReadModel;
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;

use crate::describe::{describe_with, organization_local, terms, Terms};
use crate::keys::{DomainChange, Index};

/// What one envelope adds to the database (every key derived from its position).
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Its position and the entry, encoded as stored ([`crate::keys::encode_entry`],
    /// without the position and the action, which reads derive again): encoded by
    /// whoever folds, so the entry's many small allocations are made and freed on one
    /// thread, and a step handed to the audit task carries one buffer.
    pub entry: Option<(u64, Vec<u8>)>,
    /// The ids the entry is indexed under.
    pub postings: IdKeys,
    /// The indexed time (the running maximum of `recorded_at`), nanoseconds.
    pub time_nanos: i64,
    /// The domains whose owner or route the event changed, and how.
    pub changes: Vec<DomainChange>,
}

/// The ids an entry is indexed under, as id keys (`keys::id_key`) one after the other:
/// one buffer an event rather than a `String` an id, and the keys the store looks up.
#[derive(Debug, Default)]
pub(crate) struct IdKeys(Vec<u8>);

/// Room for an event's usual postings (organization, connection, actor, event type: a
/// byte, a length and an id each), so the buffer is allocated once.
const ID_KEYS_ROOM: usize = 192;

impl IdKeys {
    /// An empty buffer with room for an event's usual postings.
    fn for_event() -> Self {
        Self(Vec::with_capacity(ID_KEYS_ROOM))
    }

    /// Adds `id` in `index`.
    pub(crate) fn push(&mut self, index: Index, id: &str) {
        crate::keys::append_id_key(&mut self.0, index, id);
    }

    /// The id keys, in the order pushed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.0.as_slice();
        std::iter::from_fn(move || {
            let len = crate::keys::id_key_len(rest)?;
            let (key, tail) = rest.split_at(len);
            rest = tail;
            Some(key)
        })
    }
}

/// The indexed time: the running maximum of `recorded_at`, so times are indexed
/// non-decreasing whatever the clocks did. Kept from position 1 by whoever folds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexedTime {
    last_nanos: i64,
}

impl Default for IndexedTime {
    fn default() -> Self {
        Self {
            last_nanos: i64::MIN,
        }
    }
}

impl IndexedTime {
    /// Moves past `envelope` and returns its indexed time.
    pub(crate) fn advance(&mut self, envelope: &EventEnvelope) -> i64 {
        let time = envelope
            .recorded_at
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos))
            })
            .unwrap_or(0);
        self.last_nanos = self.last_nanos.max(time);
        self.last_nanos
    }
}

/// An event's rows as far as the state before it determines them.
#[derive(Debug)]
pub(crate) struct Before {
    rows: Rows,
    /// An organization's own event: the organization, and the domains it claimed before.
    claims: Option<(String, BTreeSet<signpost_domain::Id>)>,
    /// A connection's event while the model did not know the connection yet.
    new_connection: Option<String>,
}

/// The domains `organization_id` claims in `model` (pending or verified).
fn claimed(model: &ReadModel, organization_id: &str) -> BTreeSet<signpost_domain::Id> {
    model
        .organizations
        .get(organization_id)
        .map(|organization| organization.state.domains.keys().cloned().collect())
        .unwrap_or_default()
}

/// The organization whose routes an event on `envelope`'s stream may change, read from
/// `model` (the state after the event): the stream's own organization, or its
/// (configured) connection's.
pub(crate) fn organization_of(envelope: &EventEnvelope, model: &ReadModel) -> Option<String> {
    let stream = envelope.stream_id.as_str();
    if let Some(id) = stream.strip_prefix("organization-") {
        return Some(id.to_owned());
    }
    let id = stream.strip_prefix("connection-")?;
    model
        .connections
        .get(id)
        .map(|connection| connection.state.organization_id.to_string())
}

/// Whether `stream` holds connections or setup links: the streams an organization's
/// history takes in beside its own, when their first event names it.
pub(crate) fn named_stream(stream: &str) -> bool {
    stream.starts_with("connection-") || stream.starts_with("setup-link-")
}

/// Whether `envelope` is the first event of a connection or setup-link stream: where
/// the stream joins the organization it names (`Index::OrgStream`).
fn opens_named_stream(envelope: &EventEnvelope) -> bool {
    envelope.stream_version == 1 && named_stream(&envelope.stream_id)
}

/// The organization the first event of each connection and setup-link stream named
/// (empty: none), kept from position 1 by a fold that writes stubs: an entry is
/// organization-local only on a stream that is one of its organization's
/// (`describe::organization_local`).
#[derive(Debug, Default)]
pub(crate) struct FirstNamed {
    streams: HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>,
}

impl FirstNamed {
    /// Notes `envelope`'s stream if this is its first event (`terms`: the event's).
    fn note(&mut self, envelope: &EventEnvelope, terms: &Terms<'_>) {
        if opens_named_stream(envelope) {
            self.streams.insert(
                envelope.stream_id.as_str().into(),
                terms.organization_id.into(),
            );
        }
    }

    /// Notes `envelope`'s stream if this is its first event, given the state before it
    /// (for an event whose rows are not made).
    pub(crate) fn note_before(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        model: &ReadModel,
    ) {
        if opens_named_stream(envelope) {
            self.note(envelope, &terms(envelope, event, model));
        }
    }

    /// Whether the first event of `stream` named `organization_id`.
    fn names(&self, stream: &str, organization_id: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|named| **named == *organization_id)
    }
}

/// The rows of `event` that the state before it determines (`model`, not yet applied).
/// `time_nanos` is its [`IndexedTime`]. With `stubs` (the streams' first organizations,
/// from position 1), an organization-local entry is written as a stub, described when
/// read; otherwise, and for every other entry, it is described now.
pub(crate) fn before(
    envelope: &EventEnvelope,
    event: &Event,
    model: &ReadModel,
    time_nanos: i64,
    stubs: Option<&mut FirstNamed>,
) -> Before {
    let mut rows = Rows {
        postings: IdKeys::for_event(),
        ..Rows::default()
    };
    let terms = terms(envelope, event, model);
    let position = envelope.position;
    let stream = envelope.stream_id.as_str();
    let organization_id = terms.organization_id;
    if !organization_id.is_empty() {
        rows.postings.push(Index::Organization, organization_id);
        if opens_named_stream(envelope) {
            rows.postings.push(Index::OrgStream, organization_id);
        }
    }
    for (i, connection) in terms.connections.iter().enumerate() {
        if !connection.is_empty() && !terms.connections[..i].contains(connection) {
            rows.postings.push(Index::Connection, connection);
        }
    }
    let actor_id = envelope.actor.as_ref().map_or("", |a| a.id.as_str());
    if !actor_id.is_empty() {
        rows.postings.push(Index::Actor, actor_id);
    }
    rows.postings.push(Index::EventType, &envelope.event_type);
    rows.time_nanos = time_nanos;
    let stub = stubs.is_some_and(|first| {
        first.note(envelope, &terms);
        organization_local(envelope, event, model, &terms, |stream| {
            first.names(stream, organization_id)
        })
    });
    let stored = if stub {
        crate::keys::encode_stub(organization_id)
    } else {
        describe_with(envelope, event, model, &terms).stored()
    };
    rows.entry = Some((position, stored));
    let claims = stream
        .strip_prefix("organization-")
        .map(|id| (id.to_owned(), claimed(model, id)));
    let new_connection = stream
        .strip_prefix("connection-")
        .filter(|_| terms.held.is_none())
        .map(str::to_owned);
    Before {
        rows,
        claims,
        new_connection,
    }
}

/// Completes `before` given the state after the event (`model`, applied): records every
/// domain the event made an organization claim or stop claiming (only an organization's
/// own events change its claims), and the organization of a connection the event made
/// known. How a domain routed is not recorded: point-in-time routing folds the
/// organizations that claimed it when asked (`point_in_time.rs`).
pub(crate) fn after(before: Before, model: &ReadModel) -> Rows {
    let Before {
        mut rows,
        claims,
        new_connection,
    } = before;
    if let Some(connection) = new_connection.and_then(|id| model.connections.get(id.as_str())) {
        rows.postings
            .push(Index::OrgConnection, &connection.state.organization_id);
    }
    let Some((organization_id, was)) = claims else {
        return rows;
    };
    let now = claimed(model, &organization_id);
    for domain in was.symmetric_difference(&now) {
        let owned = now.contains(domain);
        if owned {
            rows.postings.push(Index::OrgDomain, &organization_id);
        }
        rows.postings.push(Index::Domain, domain);
        rows.changes.push(DomainChange {
            domain: domain.to_string(),
            organization_id: if owned {
                organization_id.clone()
            } else {
                String::new()
            },
        });
    }
    rows
}

/// The audit task's own fold, when no feed describes the events (a projection started
/// without one, or while its feed is let go): a read model of its own and the indexed
/// time; with `stubs`, what writing organization-local entries as stubs needs (kept from
/// position 1, the already-written prefix included).
#[derive(Default)]
pub(crate) struct OwnFold {
    model: ReadModel,
    time: IndexedTime,
    stubs: Option<FirstNamed>,
}

impl OwnFold {
    /// A fold that writes organization-local entries as stubs (`stubs`), or describes
    /// every entry.
    pub(crate) fn new(stubs: bool) -> Self {
        Self {
            stubs: stubs.then(FirstNamed::default),
            ..Self::default()
        }
    }

    /// Applies one envelope and returns the rows it adds (none when `rows` is false:
    /// replaying an already-written prefix needs the state, not the rows).
    pub(crate) fn apply(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        rows: bool,
    ) -> Option<Rows> {
        let time_nanos = self.time.advance(envelope);
        if !rows {
            if let Some(first) = &mut self.stubs {
                first.note_before(envelope, event, &self.model);
            }
            self.model.apply(envelope, event);
            return None;
        }
        let described = before(
            envelope,
            event,
            &self.model,
            time_nanos,
            self.stubs.as_mut(),
        );
        self.model.apply(envelope, event);
        Some(after(described, &self.model))
    }
}
