//! The admin read model: every aggregate's current state plus the indexes the
//! control plane needs (domain → organization, token hash → token, ...).
//!
//! It is a projection: folded from the log by [`crate::projection`], one
//! envelope at a time, with the aggregates' own `apply`, so it cannot drift
//! from what a command handler would rebuild from the streams. It records the
//! position it has applied.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use signpost_domain::api_token::ApiToken;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::event::from_timestamp;
use signpost_domain::organization::Organization;
use signpost_domain::setup_link::SetupLink;
use signpost_domain::{schema, Event};
use signpost_eventlog::EventEnvelope;

/// An aggregate's state with when its stream began.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked<T> {
    /// Current state.
    pub state: T,
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
}

/// Who verified a domain claim, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The actor id, with the person it acted for when given.
    pub verified_by: String,
    /// When.
    pub verified_at: DateTime<Utc>,
}

/// Current state of everything, as of [`ReadModel::position`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadModel {
    /// The last log position applied.
    pub position: u64,
    /// Organizations by id.
    pub organizations: BTreeMap<String, Tracked<Organization>>,
    /// Configured connections by id.
    pub connections: BTreeMap<String, Tracked<Connection>>,
    /// Connections allocated by a setup link but not configured yet: id → organization.
    pub draft_connections: BTreeMap<String, String>,
    /// Setup links by id.
    pub setup_links: BTreeMap<String, Tracked<SetupLink>>,
    /// API tokens by id.
    pub api_tokens: BTreeMap<String, Tracked<ApiToken>>,
    /// Who verified each (organization, domain).
    pub verifications: HashMap<(String, String), Verification>,
    domain_owner: HashMap<String, String>,
    external_id_owner: HashMap<String, String>,
    entity_id_owner: HashMap<String, String>,
    link_by_token: HashMap<Vec<u8>, String>,
    api_token_by_hash: HashMap<Vec<u8>, String>,
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
    map: &'a BTreeMap<String, Tracked<T>>,
    id: &str,
) -> std::borrow::Cow<'a, T> {
    match map.get(id) {
        Some(tracked) => std::borrow::Cow::Borrowed(&tracked.state),
        None => std::borrow::Cow::Owned(T::default()),
    }
}

fn tracked<'a, T: Default>(
    map: &'a mut BTreeMap<String, Tracked<T>>,
    id: &str,
    at: DateTime<Utc>,
) -> &'a mut T {
    &mut map
        .entry(id.to_owned())
        .or_insert_with(|| Tracked {
            state: T::default(),
            created_at: at,
        })
        .state
}

impl ReadModel {
    /// Applies one committed event. Envelopes must come in position order.
    pub fn apply(&mut self, envelope: &EventEnvelope, event: &Event) {
        self.position = envelope.position;
        let at = from_timestamp(envelope.recorded_at.as_ref());
        let Some((kind, id)) = split_stream(&envelope.stream_id) else {
            return;
        };
        match kind {
            "organization-" => {
                self.index_organization_event(id, envelope, event, at);
                tracked(&mut self.organizations, id, at).apply(event);
            }
            "connection-" => {
                if let Event::ConnectionConfigured(configured) = event {
                    self.draft_connections.remove(id);
                    let previous = self
                        .connections
                        .get(id)
                        .and_then(|c| saml_entity_id(&c.state));
                    if let Some(previous) = previous {
                        self.entity_id_owner.remove(&previous);
                    }
                    if let Some(saml) = &configured.saml {
                        self.entity_id_owner
                            .insert(saml.idp_entity_id.clone(), id.to_owned());
                    }
                }
                tracked(&mut self.connections, id, at).apply(event);
            }
            "setup-link-" => {
                if let Event::SetupLinkIssued(issued) = event {
                    self.link_by_token
                        .insert(issued.token_sha256.clone(), id.to_owned());
                    if issued.intent() != schema::SetupIntent::UpdateConnection
                        && !self.connections.contains_key(&issued.connection_id)
                    {
                        self.draft_connections
                            .insert(issued.connection_id.clone(), issued.organization_id.clone());
                    }
                }
                tracked(&mut self.setup_links, id, at).apply(event);
            }
            "api-token-" => {
                if let Event::ApiTokenIssued(issued) = event {
                    self.api_token_by_hash
                        .insert(issued.token_sha256.clone(), id.to_owned());
                }
                tracked(&mut self.api_tokens, id, at).apply(event);
            }
            _ => {}
        }
    }

    fn index_organization_event(
        &mut self,
        organization_id: &str,
        envelope: &EventEnvelope,
        event: &Event,
        at: DateTime<Utc>,
    ) {
        let key = |domain: &str| (organization_id.to_owned(), domain.to_owned());
        match event {
            Event::OrganizationCreated(e) => {
                self.external_id_owner
                    .insert(e.external_id.clone(), organization_id.to_owned());
            }
            Event::DomainClaimed(e) => {
                self.domain_owner
                    .insert(e.domain.clone(), organization_id.to_owned());
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
                self.verifications.insert(
                    key(&e.domain),
                    Verification {
                        verified_by,
                        verified_at: at,
                    },
                );
            }
            Event::DomainReleased(e) => {
                self.domain_owner.remove(&e.domain);
                self.verifications.remove(&key(&e.domain));
            }
            _ => {}
        }
    }

    /// The organization that claims `domain`, if any.
    pub fn domain_owner(&self, domain: &str) -> Option<&str> {
        self.domain_owner.get(domain).map(String::as_str)
    }

    /// The organization with this external id, if any.
    pub fn external_id_owner(&self, external_id: &str) -> Option<&str> {
        self.external_id_owner.get(external_id).map(String::as_str)
    }

    /// The connection configured with this SAML IdP entity id, if any.
    pub fn entity_id_owner(&self, entity_id: &str) -> Option<&Tracked<Connection>> {
        self.entity_id_owner
            .get(entity_id)
            .and_then(|id| self.connections.get(id))
    }

    /// The setup link whose token hashes to `sha256`.
    pub fn setup_link_by_token(&self, sha256: &[u8]) -> Option<&Tracked<SetupLink>> {
        self.link_by_token
            .get(sha256)
            .and_then(|id| self.setup_links.get(id))
    }

    /// The API token whose token hashes to `sha256`.
    pub fn api_token_by_hash(&self, sha256: &[u8]) -> Option<&Tracked<ApiToken>> {
        self.api_token_by_hash
            .get(sha256)
            .and_then(|id| self.api_tokens.get(id))
    }

    /// The organization a connection (configured or draft) belongs to.
    pub fn connection_organization(&self, connection_id: &str) -> Option<&str> {
        self.connections
            .get(connection_id)
            .map(|c| c.state.organization_id.as_str())
            .or_else(|| {
                self.draft_connections
                    .get(connection_id)
                    .map(String::as_str)
            })
    }
}

fn saml_entity_id(connection: &Connection) -> Option<String> {
    match &connection.settings {
        Some(ConnectionSettings::Saml(saml)) => Some(saml.idp_entity_id.clone()),
        _ => None,
    }
}
