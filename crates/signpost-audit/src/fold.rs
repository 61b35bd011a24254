//! The fold: one envelope in, the rows it adds to the audit database out.
//!
//! It keeps, in memory, the state *before* each event: the admin [`ReadModel`] (every
//! aggregate, folded with the domain's own `apply`) for before / after in entries, and
//! each domain's current owner and route (routes come from
//! [`signpost_routing::routes::organization_routes`], the function the live routing table
//! uses). Everything it emits is a pure function of the log prefix, so replaying the log
//! from position 1 rebuilds the same state and the same rows.

use std::collections::{BTreeSet, HashMap};

use signpost_api::audit::v1::AuditEntry;
use signpost_api::routing::v1 as wire;
use signpost_control::read_model::ReadModel;
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;
use signpost_routing::routes::organization_routes;

use crate::describe::{describe, Described};
use crate::keys::{DomainChange, Index};

/// What one envelope adds to the database (every key derived from its position).
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// The entry and its position.
    pub entry: Option<(u64, AuditEntry)>,
    /// The ids the entry is indexed under.
    pub postings: Vec<(Index, String)>,
    /// The indexed time (the running maximum of `recorded_at`), nanoseconds.
    pub time_nanos: i64,
    /// The domains whose owner or route the event changed, and how.
    pub changes: Vec<DomainChange>,
}

/// A domain's current owner and route, as last recorded in a [`DomainChange`].
#[derive(Debug, Clone, PartialEq)]
struct DomainNow {
    organization_id: String,
    route: Option<wire::Route>,
}

/// The fold's in-memory state.
pub(crate) struct Fold {
    public_base_url: String,
    pub(crate) model: ReadModel,
    domains: HashMap<String, DomainNow>,
    /// Domains each organization claims now (to notice releases).
    claimed: HashMap<String, BTreeSet<String>>,
    /// The time index value of the last event: times are indexed non-decreasing.
    last_time_nanos: i64,
}

impl Fold {
    pub(crate) fn new(public_base_url: &str) -> Self {
        Self {
            public_base_url: public_base_url.to_owned(),
            model: ReadModel::default(),
            domains: HashMap::new(),
            claimed: HashMap::new(),
            last_time_nanos: i64::MIN,
        }
    }

    /// Applies one envelope and returns the rows it adds (none when `rows` is false:
    /// replaying an already-written prefix needs the state, not the rows).
    pub(crate) fn apply(&mut self, envelope: &EventEnvelope, event: &Event, rows: bool) -> Rows {
        let mut out = Rows::default();
        let time = envelope
            .recorded_at
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos))
            })
            .unwrap_or(0);
        self.last_time_nanos = self.last_time_nanos.max(time);
        if rows {
            let Described { entry, connections } = describe(envelope, event, &self.model);
            let position = envelope.position;
            let target = entry.target.as_ref();
            if let Some(organization_id) = target
                .map(|t| t.organization_id.as_str())
                .filter(|id| !id.is_empty())
            {
                out.postings
                    .push((Index::Organization, organization_id.to_owned()));
            }
            let mut seen = BTreeSet::new();
            for connection in connections.into_iter().filter(|c| !c.is_empty()) {
                if seen.insert(connection.clone()) {
                    out.postings.push((Index::Connection, connection));
                }
            }
            let actor_id = entry.actor.as_ref().map(|a| a.id.as_str()).unwrap_or("");
            if !actor_id.is_empty() {
                out.postings.push((Index::Actor, actor_id.to_owned()));
            }
            out.postings
                .push((Index::EventType, envelope.event_type.clone()));
            out.time_nanos = self.last_time_nanos;
            out.entry = Some((position, entry));
        }

        self.model.apply(envelope, event);
        let stream = envelope.stream_id.as_str();
        let organization_id = if let Some(id) = stream.strip_prefix("organization-") {
            Some(id.to_owned())
        } else if let Some(id) = stream.strip_prefix("connection-") {
            self.model
                .connections
                .get(id)
                .map(|c| c.state.organization_id.clone())
        } else {
            None
        };
        if let Some(organization_id) = organization_id {
            self.recompute(&organization_id, rows, &mut out);
        }
        out
    }

    /// Recomputes an organization's routes and domain ownership after an event; records a
    /// change for every domain whose state changed.
    fn recompute(&mut self, organization_id: &str, rows: bool, out: &mut Rows) {
        let Some(organization) = self.model.organizations.get(organization_id) else {
            return;
        };
        let organization = &organization.state;
        let active = organization
            .active_connection_id
            .as_ref()
            .and_then(|id| self.model.connections.get(id))
            .map(|c| &c.state);
        let routes = organization_routes(organization, active, &self.public_base_url);
        let now_claimed: BTreeSet<String> = organization.domains.keys().cloned().collect();
        let before_claimed = self
            .claimed
            .insert(organization_id.to_owned(), now_claimed.clone())
            .unwrap_or_default();
        for domain in now_claimed.union(&before_claimed) {
            let state = DomainNow {
                organization_id: if now_claimed.contains(domain) {
                    organization_id.to_owned()
                } else {
                    String::new()
                },
                route: routes.get(domain).map(|r| wire::Route::clone(r)),
            };
            if self.domains.get(domain) == Some(&state) {
                continue;
            }
            if rows {
                if !state.organization_id.is_empty() && !before_claimed.contains(domain) {
                    out.postings
                        .push((Index::OrgDomain, organization_id.to_owned()));
                }
                out.postings.push((Index::Domain, domain.clone()));
                out.changes.push(DomainChange {
                    domain: domain.clone(),
                    organization_id: state.organization_id.clone(),
                    route: state.route.clone(),
                });
            }
            self.domains.insert(domain.clone(), state);
        }
    }
}
