//! Point-in-time answers: how a domain routed, and what a connection looked like, at a
//! log position or a time.
//!
//! Routing is folded when asked. The fold records, with the entry of each event that
//! made an organization claim a domain or stop claiming it, which organization and which
//! domain (indexed by domain, and by organization for new claims), and the event that
//! made each connection of an organization known. A domain's answer at position *p*
//! reads the streams of the organizations that claimed it by then (their own and their
//! connections'), folds them in log order with a read model of its own, and computes
//! the routes after each of their events as the routing table does: the answer is the
//! owner and route of the domain's last change at or before *p*, and its cause is that
//! event's entry, exactly what a plain fold of the whole log finds. Routes carry our SP
//! URLs under the server's public base URL as configured now: it is configuration, not in
//! the log (a format-3 database held the URL of when it was built). (Up to format 3 the
//! fold computed every route change of every event and stored the routes whole, which
//! was half of a rebuild's CPU on a log in lifecycle order.) A connection's state is
//! folded on demand from its own stream and its organization's stream up to *p* (with
//! the domain's `apply`), so it is exactly what the control plane would have shown then.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use signpost_api::audit::v1::AuditEntry;
use signpost_api::routing::v1 as wire;
use signpost_control::read_model::ReadModel;
use signpost_control::views::{ConnectionDetail, ConnectionView, ServiceProvider};
use signpost_domain::connection::Connection;
use signpost_domain::organization::Organization;
use signpost_domain::streams;
use signpost_eventlog::{EventEnvelope, EventStore, StreamId};

use signpost_routing::routes::organization_routes;
use signpost_routing::EncodedRoute;

use crate::error::AuditError;
use crate::keys::{DomainChange, Index};
use crate::projection::AuditProjection;
use crate::store::EntryReader;

/// A moment to answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    /// Now: the projection's current position.
    Now,
    /// Just after the event at this log position (0: before the first event).
    Position(u64),
    /// The last event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// What a routing question is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingSubject {
    /// One email domain (normalized before the lookup).
    Domain(String),
    /// Every domain an organization claimed then.
    Organization(String),
}

/// How one domain routed, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRouting {
    /// The normalized domain.
    pub domain: String,
    /// The route then; `None` routes to password.
    pub route: Option<wire::Route>,
    /// The event that made it so; `None` when the domain had no history yet.
    pub cause: Option<AuditEntry>,
}

/// The answer to a routing question.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingAt {
    /// The log position the answer is computed at.
    pub position: u64,
    /// One per domain.
    pub domains: Vec<DomainRouting>,
}

/// A connection as it was.
#[derive(Debug, Clone)]
pub struct ConnectionAt {
    /// The log position the answer is computed at.
    pub position: u64,
    /// The connection then (status derived as the control plane does).
    pub view: ConnectionView,
    /// The last entry about the connection at or before that position.
    pub last_change: AuditEntry,
}

/// A domain's owner and route from one event on.
struct DomainRecord {
    /// Empty: nobody.
    organization_id: String,
    route: Option<wire::Route>,
    cause_position: u64,
}

/// How many events a stream read takes at once.
const STREAM_PAGE: usize = 1024;

fn not_found_domain(domain: &str) -> AuditError {
    AuditError::not_found(
        "DOMAIN_NOT_FOUND",
        "domain",
        format!("no domain {domain} of your organization at that point"),
    )
}

impl AuditProjection {
    /// The log position `at` stands for (never beyond the applied position).
    pub fn resolve_point(&self, at: PointInTime) -> Result<u64, AuditError> {
        let applied = self.position();
        Ok(match at {
            PointInTime::Now => applied,
            PointInTime::Position(position) => position.min(applied),
            PointInTime::Time(time) => self.position_at_time(time)?,
        })
    }

    /// How `subject` routed at `at`. A scoped auditor (`scope`) gets `NotFound` for
    /// anything not its organization's then: the answer does not reveal whether it exists.
    pub async fn routing_at(
        &self,
        subject: &RoutingSubject,
        at: PointInTime,
        scope: Option<&str>,
    ) -> Result<RoutingAt, AuditError> {
        let position = self.resolve_point(at)?;
        let domains = match subject {
            RoutingSubject::Domain(domain) => {
                let domain = signpost_names::DomainName::parse(domain)
                    .map_err(|e| AuditError::invalid(e.reason(), "domain", e.to_string()))?
                    .as_str()
                    .to_owned();
                let mut records = self
                    .domain_records(BTreeSet::from([domain.clone()]), position)
                    .await?;
                let record = records.remove(&domain);
                if let Some(scope) = scope {
                    if record.as_ref().map(|r| r.organization_id.as_str()) != Some(scope) {
                        return Err(not_found_domain(&domain));
                    }
                }
                vec![self.domain_routing(domain, record).await?]
            }
            RoutingSubject::Organization(organization_id) => {
                let hidden = scope.is_some_and(|scope| scope != organization_id);
                if hidden || !self.organization_known(organization_id, position)? {
                    return Err(AuditError::not_found(
                        "ORGANIZATION_NOT_FOUND",
                        "organization_id",
                        "no such organization at that point",
                    ));
                }
                // The domains it newly claimed until then, from the claims those events
                // recorded: a domain it owns then is one of them.
                let mut claimed = BTreeSet::new();
                self.recorded_claims(Index::OrgDomain, organization_id, position, |change| {
                    if &change.organization_id == organization_id {
                        claimed.insert(change.domain);
                    }
                })?;
                let mut domains = Vec::new();
                for (domain, record) in self.domain_records(claimed, position).await? {
                    if record.organization_id == *organization_id {
                        domains.push(self.domain_routing(domain, Some(record)).await?);
                    }
                }
                domains
            }
        };
        Ok(RoutingAt { position, domains })
    }

    /// Calls `each` with every claim recorded at the positions indexed under `id` in
    /// `index`, up to `position`.
    fn recorded_claims(
        &self,
        index: Index,
        id: &str,
        position: u64,
        mut each: impl FnMut(DomainChange),
    ) -> Result<(), AuditError> {
        let mut reader = EntryReader::default();
        let tree = self.shared.timeline.tree()?;
        let mut failed = None;
        self.shared.timeline.positions(
            index,
            id,
            1,
            position,
            crate::query::Order::Ascending,
            |at| {
                match reader.changes(&tree, at) {
                    Ok(changes) => changes
                        .into_iter()
                        .flat_map(|c| c.changes)
                        .for_each(&mut each),
                    Err(error) => failed = Some(error),
                }
                Ok(failed.is_none())
            },
        )?;
        failed.map_or(Ok(()), Err)
    }

    /// How each of `domains` stood just after `position`: who claimed it, how it routed
    /// and the event that made it so (absent: no history yet).
    ///
    /// Folded when asked, as a plain fold of the whole log would find it, from the
    /// streams of the organizations that claimed any of them by then (their own stream
    /// and their connections'): after each event of such an organization its routes
    /// are computed (`organization_routes`, as the routing table does), and a domain it
    /// claims, or claimed just before, takes its owner and route from there whenever
    /// they differ from what the domain had. The events of other organizations never
    /// touch these domains, so leaving them out changes nothing.
    async fn domain_records(
        &self,
        domains: BTreeSet<String>,
        position: u64,
    ) -> Result<BTreeMap<String, DomainRecord>, AuditError> {
        let mut organizations = BTreeSet::new();
        for domain in &domains {
            self.recorded_claims(Index::Domain, domain, position, |change| {
                if &change.domain == domain && !change.organization_id.is_empty() {
                    organizations.insert(change.organization_id);
                }
            })?;
        }
        let mut stream_ids = Vec::new();
        for organization_id in &organizations {
            stream_ids.push(streams::organization(organization_id));
            let connections = self
                .indexed_streams(Index::OrgConnection, organization_id, position, |stream| {
                    stream.starts_with("connection-")
                })
                .await?;
            stream_ids.extend(connections);
        }
        let mut events = StreamsUntil::new(&stream_ids, position)?;

        let mut model = ReadModel::default();
        let mut claimed: HashMap<String, BTreeSet<signpost_domain::Id>> = HashMap::new();
        let mut records: BTreeMap<String, (String, Option<EncodedRoute>, u64)> = BTreeMap::new();
        while let Some((envelope, event)) = events.next(&*self.shared.store).await? {
            model.apply(&envelope, &event);
            let Some(organization_id) = crate::fold::organization_of(&envelope, &model) else {
                continue;
            };
            let Some(organization) = model.organizations.get(organization_id.as_str()) else {
                continue;
            };
            let organization = &organization.state;
            let now = organization.domains.keys().cloned().collect();
            let before = claimed
                .insert(organization_id.clone(), now)
                .unwrap_or_default();
            let now = &claimed[&organization_id];
            let touched: Vec<&String> = domains
                .iter()
                .filter(|d| now.contains(d.as_str()) || before.contains(d.as_str()))
                .collect();
            if touched.is_empty() {
                continue;
            }
            let active = organization
                .active_connection_id
                .as_deref()
                .and_then(|id| model.connections.get(id))
                .map(|c| &c.state);
            let routes = organization_routes(organization, active, &self.shared.public_base_url);
            for domain in touched {
                let owner = if now.contains(domain.as_str()) {
                    organization_id.clone()
                } else {
                    String::new()
                };
                let route = routes.get(domain.as_str());
                let changed = records
                    .get(domain)
                    .is_none_or(|(o, r, _)| (o, r.as_ref()) != (&owner, route));
                if changed {
                    records.insert(domain.clone(), (owner, route.cloned(), envelope.position));
                }
            }
        }
        Ok(records
            .into_iter()
            .map(|(domain, (organization_id, route, cause_position))| {
                let record = DomainRecord {
                    organization_id,
                    route: route.map(|r| r.decode()),
                    cause_position,
                };
                (domain, record)
            })
            .collect())
    }

    /// The streams of `organization_id`'s history up to `position` (at most the applied
    /// one): its own, then every connection and setup-link stream whose first event, at
    /// or before `position`, named it, in the order of those events. An organization's
    /// entries are described from these alone (`describe::organization_local`).
    pub async fn organization_streams(
        &self,
        organization_id: &str,
        position: u64,
    ) -> Result<Vec<String>, AuditError> {
        let position = position.min(self.position());
        let mut stream_ids = vec![streams::organization(organization_id)];
        let named = self
            .indexed_streams(
                Index::OrgStream,
                organization_id,
                position,
                crate::fold::named_stream,
            )
            .await?;
        stream_ids.extend(named);
        Ok(stream_ids)
    }

    /// The streams of the events indexed under `organization_id` in `index` up to
    /// `position`, in log order (each read from the log; `expected` says which streams
    /// the index may point at).
    async fn indexed_streams(
        &self,
        index: Index,
        organization_id: &str,
        position: u64,
        expected: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, AuditError> {
        let mut indexed = Vec::new();
        self.shared.timeline.positions(
            index,
            organization_id,
            1,
            position,
            crate::query::Order::Ascending,
            |at| {
                indexed.push(at);
                Ok(true)
            },
        )?;
        let mut stream_ids = Vec::with_capacity(indexed.len());
        for at in indexed {
            let envelope = self.shared.store.read_range(at, 1).await?;
            let stream = envelope
                .into_iter()
                .next()
                .filter(|e| e.position == at && expected(&e.stream_id))
                .ok_or_else(|| {
                    AuditError::Corrupt(format!(
                        "position {at} is indexed under {} for {organization_id}, but its \
                         event is not on a stream that index holds",
                        index.name()
                    ))
                })?;
            stream_ids.push(stream.stream_id);
        }
        Ok(stream_ids)
    }

    async fn domain_routing(
        &self,
        domain: String,
        record: Option<DomainRecord>,
    ) -> Result<DomainRouting, AuditError> {
        let Some(record) = record else {
            return Ok(DomainRouting {
                domain,
                route: None,
                cause: None,
            });
        };
        Ok(DomainRouting {
            domain,
            route: record.route,
            cause: self.entry(record.cause_position).await?,
        })
    }

    /// A connection's configuration, groups and status at `at`, with the last entry about
    /// it. A scoped auditor gets `NotFound` for another organization's connection.
    pub async fn connection_at(
        &self,
        connection_id: &str,
        at: PointInTime,
        scope: Option<&str>,
    ) -> Result<ConnectionAt, AuditError> {
        let not_found = || {
            AuditError::not_found(
                "CONNECTION_NOT_FOUND",
                "connection_id",
                "no such connection at that point",
            )
        };
        let position = self.resolve_point(at)?;
        let last_change = self
            .last_connection_entry(connection_id, position)
            .await?
            .ok_or_else(not_found)?;
        let organization_id = last_change
            .target
            .as_ref()
            .map(|t| t.organization_id.clone())
            .unwrap_or_default();
        if scope.is_some_and(|scope| scope != organization_id) {
            return Err(not_found());
        }
        let mut connection = Connection::default();
        // The state keeps certificates without their DER; the view shows the DER of
        // the configuration event that set them.
        let mut certificates = None;
        let mut events = StreamsUntil::new(&[streams::connection(connection_id)], position)?;
        while let Some((_, event)) = events.next(&*self.shared.store).await? {
            connection.apply(&event);
            if let signpost_domain::Event::ConnectionConfigured(configured) = event {
                certificates = configured.saml.map(|saml| saml.signing_certificates.into());
            }
        }
        let mut organization = Organization::default();
        let mut events = StreamsUntil::new(&[streams::organization(&organization_id)], position)?;
        while let Some((_, event)) = events.next(&*self.shared.store).await? {
            organization.apply(&event);
        }
        let configured = connection.is_configured().then_some(connection);
        let status = signpost_domain::connection::connection_status(
            connection_id,
            configured.as_ref(),
            Some(&organization),
        );
        let view = ConnectionView {
            detail: ConnectionDetail::Full,
            connection_id: connection_id.to_owned(),
            organization_id,
            status,
            connection: configured,
            certificates,
            service_provider: ServiceProvider::for_connection(
                &self.shared.public_base_url,
                connection_id,
            ),
        };
        Ok(ConnectionAt {
            position,
            view,
            last_change,
        })
    }
}

/// The events of some streams at positions `<= position`, decoded, in log order: read a
/// page of each stream at a time, so that however long their history, what is held is a
/// page per stream.
pub(crate) struct StreamsUntil {
    position: u64,
    cursors: Vec<StreamCursor>,
}

struct StreamCursor {
    stream: StreamId,
    next_version: u64,
    page: std::collections::VecDeque<EventEnvelope>,
    /// Nothing more to read: the stream ended, or went past the position.
    read_all: bool,
}

impl StreamsUntil {
    pub(crate) fn new(streams: &[String], position: u64) -> Result<Self, AuditError> {
        let cursors = streams
            .iter()
            .map(|stream| {
                Ok(StreamCursor {
                    stream: StreamId::new(stream.clone())?,
                    next_version: 1,
                    page: Default::default(),
                    read_all: false,
                })
            })
            .collect::<Result<_, AuditError>>()?;
        Ok(Self { position, cursors })
    }

    /// The next event of any of the streams, in log order; `None` after the last.
    pub(crate) async fn next(
        &mut self,
        store: &dyn EventStore,
    ) -> Result<Option<(EventEnvelope, signpost_domain::Event)>, AuditError> {
        for cursor in &mut self.cursors {
            if !cursor.page.is_empty() || cursor.read_all {
                continue;
            }
            let page = store
                .read_stream(&cursor.stream, cursor.next_version, STREAM_PAGE)
                .await?;
            cursor.read_all = page.len() < STREAM_PAGE;
            if let Some(last) = page.last() {
                cursor.next_version = last.stream_version + 1;
            }
            for envelope in page {
                if envelope.position > self.position {
                    cursor.read_all = true;
                    break;
                }
                cursor.page.push_back(envelope);
            }
        }
        let next = self
            .cursors
            .iter_mut()
            .filter_map(|c| c.page.front().map(|e| e.position).zip(Some(c)))
            .min_by_key(|(position, _)| *position)
            .and_then(|(_, cursor)| cursor.page.pop_front());
        let Some(envelope) = next else {
            return Ok(None);
        };
        let event = crate::lazy::decode(&envelope)?;
        Ok(Some((envelope, event)))
    }
}
