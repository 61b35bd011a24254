//! Point-in-time answers: how a domain routed, and what a connection looked like, at a
//! log position or a time.
//!
//! Routing uses the domain changes the fold records whenever a domain's owner or route
//! changes (routes computed by `signpost_routing::routes::organization_routes`), stored
//! with the entry of the event that caused them and indexed by domain: the answer at
//! position *p* is the domain's last change at or before *p*, and its cause is that
//! entry. An organization's domains are those it newly claimed at or before *p* (indexed
//! too) that it still owned then. A connection's state is folded on demand from its own
//! stream and its organization's stream up to *p* (with the domain's `apply`), so it is
//! exactly what the control plane would have shown then.

use chrono::{DateTime, Utc};
use prost::Message;
use signpost_api::audit::v1::AuditEntry;
use signpost_api::routing::v1 as wire;
use signpost_control::views::{ConnectionView, ServiceProvider};
use signpost_domain::connection::Connection;
use signpost_domain::organization::Organization;
use signpost_domain::streams;
use signpost_eventlog::{EventEnvelope, StreamId};

use crate::error::AuditError;
use crate::keys::Index;
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
    pub fn routing_at(
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
                let record = self.domain_record(&domain, position)?;
                if let Some(scope) = scope {
                    if record.as_ref().map(|r| r.organization_id.as_str()) != Some(scope) {
                        return Err(not_found_domain(&domain));
                    }
                }
                vec![self.domain_routing(domain, record)?]
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
                // The domains it newly claimed until then, from the changes those events
                // recorded: a domain it owns then is one of them.
                let mut claimed = std::collections::BTreeSet::new();
                let mut reader = EntryReader::default();
                let tree = self.shared.timeline.tree()?;
                let mut failed = None;
                self.shared.timeline.positions(
                    Index::OrgDomain,
                    organization_id,
                    1,
                    position,
                    crate::query::Order::Ascending,
                    |at| {
                        match reader.changes(&tree, at) {
                            Ok(changes) => claimed.extend(
                                changes
                                    .into_iter()
                                    .flat_map(|c| c.changes)
                                    .filter(|c| &c.organization_id == organization_id)
                                    .map(|c| c.domain),
                            ),
                            Err(error) => failed = Some(error),
                        }
                        Ok(failed.is_none())
                    },
                )?;
                if let Some(error) = failed {
                    return Err(error);
                }
                let mut domains = Vec::new();
                for domain in claimed {
                    let record = self.domain_record(&domain, position)?;
                    if record.as_ref().map(|r| r.organization_id.as_str())
                        == Some(organization_id.as_str())
                    {
                        domains.push(self.domain_routing(domain, record)?);
                    }
                }
                domains
            }
        };
        Ok(RoutingAt { position, domains })
    }

    /// The domain's state after its last change at or before `position`.
    fn domain_record(
        &self,
        domain: &str,
        position: u64,
    ) -> Result<Option<DomainRecord>, AuditError> {
        let Some(at) = self.last_indexed(Index::Domain, domain, position)? else {
            return Ok(None);
        };
        let changes = EntryReader::default()
            .changes(&*self.shared.timeline.tree()?, at)?
            .unwrap_or_default();
        let change = changes
            .changes
            .into_iter()
            .find(|c| c.domain == domain)
            .ok_or_else(|| {
                AuditError::Corrupt(format!("no change of {domain} at position {at}"))
            })?;
        let route = change
            .route
            .map(wire::Route::decode)
            .transpose()
            .map_err(|e| AuditError::Corrupt(format!("route of {domain} at position {at}: {e}")))?;
        Ok(Some(DomainRecord {
            organization_id: change.organization_id,
            route,
            cause_position: at,
        }))
    }

    fn domain_routing(
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
            cause: self.entry(record.cause_position)?,
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
            .last_connection_entry(connection_id, position)?
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
        for (_, event) in self
            .stream_until(&streams::connection(connection_id), position)
            .await?
        {
            connection.apply(&event);
            if let signpost_domain::Event::ConnectionConfigured(configured) = event {
                certificates = configured.saml.map(|saml| saml.signing_certificates.into());
            }
        }
        let mut organization = Organization::default();
        for (_, event) in self
            .stream_until(&streams::organization(&organization_id), position)
            .await?
        {
            organization.apply(&event);
        }
        let configured = connection.is_configured().then_some(connection);
        let status = signpost_domain::connection::connection_status(
            connection_id,
            configured.as_ref(),
            Some(&organization),
        );
        let urls = signpost_idp::ServiceProviderUrls::for_connection(
            &self.shared.public_base_url,
            connection_id,
        );
        let view = ConnectionView {
            connection_id: connection_id.to_owned(),
            organization_id,
            status,
            connection: configured,
            certificates,
            service_provider: ServiceProvider {
                metadata_xml: urls.metadata_xml(),
                entity_id: urls.entity_id,
                acs_url: urls.acs_url,
                oidc_redirect_uri: urls.oidc_redirect_uri,
            },
        };
        Ok(ConnectionAt {
            position,
            view,
            last_change,
        })
    }

    /// The events of `stream` at positions `<= position`, decoded.
    async fn stream_until(
        &self,
        stream: &str,
        position: u64,
    ) -> Result<Vec<(EventEnvelope, signpost_domain::Event)>, AuditError> {
        let stream = StreamId::new(stream)?;
        let mut out = Vec::new();
        let mut version = 1;
        loop {
            let page = self
                .shared
                .store
                .read_stream(&stream, version, STREAM_PAGE)
                .await?;
            let full = page.len() == STREAM_PAGE;
            for envelope in page {
                if envelope.position > position {
                    return Ok(out);
                }
                version = envelope.stream_version + 1;
                let event = signpost_domain::decode_event(&envelope.payload).map_err(|e| {
                    AuditError::Corrupt(format!("position {}: {e}", envelope.position))
                })?;
                out.push((envelope, event));
            }
            if !full {
                return Ok(out);
            }
        }
    }
}
