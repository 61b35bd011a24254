//! The fold: one envelope in, the rows it adds to the audit database out.
//!
//! An event's rows are a pure function of the admin [`ReadModel`] just before it and just
//! after it (every aggregate, folded with the domain's own `apply`):
//! - [`before`]: the entry (action, target, summary, before / after details, from
//!   `describe.rs`), its index postings, and what the organization the event touches
//!   claimed and how its domains routed;
//! - [`after`]: the domains whose owner or route the event changed. The route changes
//!   are the live routing table's own for the event when the caller drives one (the
//!   read model's task does) or the [`OwnFold`]'s `RouteChanges` (the same fold); a
//!   caller with neither (a read model driving no routing table) gets them computed
//!   here with [`signpost_routing::routes::organization_routes`], the function the
//!   routing table uses, on both sides of the event and compared.
//!
//! The models come from one of two places (see `projection.rs`): the control plane's read
//! model task, through [`crate::AuditFeed`] (the server's way: one read model, the
//! catch-up at start included), or the audit task's own [`OwnFold`] (a projection started
//! without a feed, or one whose feed let go or that starts far behind, until it hands the
//! events back to the feed at the head). Both call the same two functions, so
//! replaying the log from position 1 rebuilds the same rows either way.

use std::collections::BTreeSet;

use signpost_control::read_model::ReadModel;
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;
use signpost_routing::routes::{organization_routes, OrganizationRoutes};
use signpost_routing::{EncodedRoute, RouteChange, RouteChanges};

use crate::describe::{describe, Described};
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
    pub postings: Vec<(Index, String)>,
    /// The indexed time (the running maximum of `recorded_at`), nanoseconds.
    pub time_nanos: i64,
    /// The domains whose owner or route the event changed, and how.
    pub changes: Vec<DomainChange>,
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
    /// The organization whose routes the event may change, as it was before the event.
    organization: Option<OrganizationSide>,
}

/// What an organization claimed and how its domains routed, on one side of an event.
#[derive(Debug, Default)]
struct OrganizationSide {
    organization_id: String,
    claimed: BTreeSet<signpost_domain::Id>,
    /// `None` when the event's route changes come from the routing table instead.
    routes: Option<OrganizationRoutes>,
    /// The event keeps the claims as they are (`claimed` is not filled in then).
    claims_kept: bool,
}

impl OrganizationSide {
    /// The organization's side in `model`; its routes only when `public_base_url` is
    /// given.
    fn of(model: &ReadModel, organization_id: &str, public_base_url: Option<&str>) -> Self {
        let Some(organization) = model.organizations.get(organization_id) else {
            return Self {
                organization_id: organization_id.to_owned(),
                ..Self::default()
            };
        };
        let organization = &organization.state;
        let active = organization
            .active_connection_id
            .as_deref()
            .and_then(|id| model.connections.get(id))
            .map(|c| &c.state);
        Self {
            organization_id: organization_id.to_owned(),
            claimed: organization.domains.keys().cloned().collect(),
            routes: public_base_url.map(|url| organization_routes(organization, active, url)),
            claims_kept: false,
        }
    }
}

/// The organization whose routes an event on `envelope`'s stream may change, read from
/// `model`: the stream's own organization, or its (configured) connection's. A
/// connection's first event names its organization itself.
fn organization_of(
    envelope: &EventEnvelope,
    event: Option<&Event>,
    model: &ReadModel,
) -> Option<String> {
    let stream = envelope.stream_id.as_str();
    if let Some(id) = stream.strip_prefix("organization-") {
        return Some(id.to_owned());
    }
    let id = stream.strip_prefix("connection-")?;
    match (model.connections.get(id), event) {
        (Some(connection), _) => Some(connection.state.organization_id.to_string()),
        (None, Some(Event::ConnectionConfigured(configured))) => {
            Some(configured.organization_id.clone())
        }
        (None, _) => None,
    }
}

/// The rows of `event` that the state before it determines (`model`, not yet applied).
/// `time_nanos` is its [`IndexedTime`]; `route_changes_follow`: whether [`after`] will be
/// given the event's route changes (else the routes are computed on both sides).
pub(crate) fn before(
    envelope: &EventEnvelope,
    event: &Event,
    model: &ReadModel,
    time_nanos: i64,
    public_base_url: &str,
    route_changes_follow: bool,
) -> Before {
    let mut rows = Rows::default();
    let Described {
        mut entry,
        details,
        connections,
    } = describe(envelope, event, model);
    let position = envelope.position;
    let target = entry.target.as_ref();
    if let Some(organization_id) = target
        .map(|t| t.organization_id.as_str())
        .filter(|id| !id.is_empty())
    {
        rows.postings
            .push((Index::Organization, organization_id.to_owned()));
    }
    let mut seen = BTreeSet::new();
    for connection in connections.into_iter().filter(|c| !c.is_empty()) {
        if seen.insert(connection.clone()) {
            rows.postings.push((Index::Connection, connection));
        }
    }
    let actor_id = entry.actor.as_ref().map(|a| a.id.as_str()).unwrap_or("");
    if !actor_id.is_empty() {
        rows.postings.push((Index::Actor, actor_id.to_owned()));
    }
    rows.postings
        .push((Index::EventType, envelope.event_type.clone()));
    rows.time_nanos = time_nanos;
    // Derived again on read: the position from the chunk, the action from the type.
    entry.position = 0;
    entry.action.clear();
    rows.entry = Some((position, crate::describe::encode_entry(entry, details)));
    let organization = organization_of(envelope, Some(event), model).map(|id| {
        if route_changes_follow && envelope.stream_id.starts_with("connection-") {
            // A connection's event never changes its organization's claims, and its
            // route changes will be given: nothing to copy from this side.
            OrganizationSide {
                organization_id: id,
                claims_kept: true,
                ..OrganizationSide::default()
            }
        } else {
            let url = (!route_changes_follow).then_some(public_base_url);
            OrganizationSide::of(model, &id, url)
        }
    });
    Before { rows, organization }
}

/// Completes `before` given the state after the event (`model`, applied): records a
/// change for every domain whose owner or route the event changed. `route_changes`: the
/// routing table's changes for this event, when [`before`] was told they follow.
pub(crate) fn after(
    before: Before,
    envelope: &EventEnvelope,
    model: &ReadModel,
    public_base_url: &str,
    route_changes: Option<&[RouteChange]>,
) -> Rows {
    let Before {
        mut rows,
        organization,
    } = before;
    let Some(organization_id) = organization_of(envelope, None, model) else {
        return rows;
    };
    if !model.organizations.contains_key(organization_id.as_str()) {
        return rows;
    }
    // The side before is of the same organization (a connection never changes hands;
    // if one did, every domain of the new organization is recorded afresh).
    let was = organization
        .filter(|side| side.organization_id == organization_id)
        .unwrap_or_default();
    if let (true, Some(changes)) = (was.claims_kept, route_changes) {
        // Every domain whose route changed is still the organization's; in domain order.
        let mut changes: Vec<&RouteChange> = changes.iter().collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        for (domain, route) in changes {
            rows.postings.push((Index::Domain, domain.to_string()));
            rows.changes.push(DomainChange {
                domain: domain.to_string(),
                organization_id: organization_id.clone(),
                route: route.as_ref().map(stored_route),
            });
        }
        return rows;
    }
    let computed = was.routes.is_some() || route_changes.is_none();
    let now = OrganizationSide::of(model, &organization_id, computed.then_some(public_base_url));
    let no_routes = OrganizationRoutes::new();
    for domain in now.claimed.union(&was.claimed) {
        let owned = now.claimed.contains(domain);
        // The route after the event, and whether the event changed it.
        let (route, route_changed) = match (&now.routes, route_changes) {
            (Some(now_routes), _) => {
                let route = now_routes.get(domain);
                let before = was.routes.as_ref().unwrap_or(&no_routes).get(domain);
                (route, route != before)
            }
            // Not computed: the routing table's changes were given. A domain the event
            // changed the ownership of and not the route has none on either side: routes
            // exist for claimed domains only.
            (None, changes) => match changes
                .unwrap_or_default()
                .iter()
                .find(|(d, _)| d == domain)
            {
                Some((_, route)) => (route.as_ref(), true),
                None => (None, false),
            },
        };
        if owned == was.claimed.contains(domain) && !route_changed {
            continue;
        }
        if owned && !was.claimed.contains(domain) {
            rows.postings
                .push((Index::OrgDomain, organization_id.clone()));
        }
        rows.postings.push((Index::Domain, domain.to_string()));
        rows.changes.push(DomainChange {
            domain: domain.to_string(),
            organization_id: if owned {
                organization_id.clone()
            } else {
                String::new()
            },
            route: route.map(stored_route),
        });
    }
    rows
}

/// A route as a [`DomainChange`] stores it: the bytes sent for it.
fn stored_route(route: &EncodedRoute) -> bytes::Bytes {
    bytes::Bytes::from(route.to_wire())
}

/// The audit task's own fold, when no feed describes the events (a projection started
/// without one, or while its feed is let go): a read model of its own, each
/// organization's routes (so an event's route changes are computed on its side only,
/// against the routes kept, as the routing table does), and the indexed time.
pub(crate) struct OwnFold {
    public_base_url: String,
    model: ReadModel,
    routes: RouteChanges,
    time: IndexedTime,
}

impl OwnFold {
    pub(crate) fn new(public_base_url: &str) -> Self {
        Self {
            public_base_url: public_base_url.to_owned(),
            model: ReadModel::default(),
            routes: RouteChanges::new(public_base_url),
            time: IndexedTime::default(),
        }
    }

    /// Applies one envelope and returns the rows it adds (none when `rows` is false:
    /// replaying an already-written prefix needs the state, not the rows; the routes of
    /// what it touches are computed once, before the first event with rows).
    pub(crate) fn apply(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        rows: bool,
    ) -> Option<Rows> {
        let time_nanos = self.time.advance(envelope);
        if !rows {
            self.model.apply(envelope, event);
            self.routes.put_off(envelope, &self.model);
            return None;
        }
        self.routes.settle(&self.model);
        let described = before(
            envelope,
            event,
            &self.model,
            time_nanos,
            &self.public_base_url,
            true,
        );
        self.model.apply(envelope, event);
        let changes = self.routes.apply(envelope, &self.model);
        Some(after(
            described,
            envelope,
            &self.model,
            &self.public_base_url,
            Some(changes),
        ))
    }
}
