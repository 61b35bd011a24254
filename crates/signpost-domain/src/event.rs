//! Domain events are the log schema's payloads (`signpost.log.v1.Event`).
//!
//! The schema is the contract with the log, so the domain speaks it directly
//! rather than keeping a parallel set of Rust types; aggregate *state* is
//! domain-owned (see each aggregate module).

use prost::Message;
pub use signpost_schema::log::v1 as schema;
pub use signpost_schema::log::v1::event::Kind as Event;

/// The stable name of an event, as stored in the envelope's `event_type`.
pub fn event_type(event: &Event) -> &'static str {
    match event {
        Event::OrganizationCreated(_) => "organization_created",
        Event::DomainClaimed(_) => "domain_claimed",
        Event::DomainVerified(_) => "domain_verified",
        Event::DomainReleased(_) => "domain_released",
        Event::SsoPolicyChanged(_) => "sso_policy_changed",
        Event::ConnectionActivated(_) => "connection_activated",
        Event::ConnectionDeactivated(_) => "connection_deactivated",
        Event::ProviderSwitched(_) => "provider_switched",
        Event::SetupLinkIssued(_) => "setup_link_issued",
        Event::SetupFormSubmitted(_) => "setup_form_submitted",
        Event::SetupLinkRevoked(_) => "setup_link_revoked",
        Event::SetupLinkSpent(_) => "setup_link_spent",
        Event::SetupLinkExpired(_) => "setup_link_expired",
        Event::ConnectionConfigured(_) => "connection_configured",
        Event::GroupAssigned(_) => "group_assigned",
        Event::GroupUnassigned(_) => "group_unassigned",
        Event::GroupRequirementChanged(_) => "group_requirement_changed",
        Event::ApiTokenIssued(_) => "api_token_issued",
        Event::ApiTokenRevoked(_) => "api_token_revoked",
    }
}

/// Encodes an event as the envelope payload.
pub fn encode_event(event: &Event) -> Vec<u8> {
    schema::Event {
        kind: Some(event.clone()),
    }
    .encode_to_vec()
}

/// Why a stored payload could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a `signpost.log.v1.Event`.
    #[error("event payload does not decode: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The payload decodes but names no event this build knows (written by a newer build).
    #[error("event payload holds no known event")]
    Unknown,
}

/// Decodes an envelope payload.
pub fn decode_event(payload: &[u8]) -> Result<Event, DecodeError> {
    schema::Event::decode(payload)?
        .kind
        .ok_or(DecodeError::Unknown)
}

/// Stream names: one stream per aggregate, `<kind>-<id>`.
pub mod streams {
    /// `prefix` then `id`, in one allocation of the right size.
    fn named(prefix: &str, id: &str) -> String {
        let mut name = String::with_capacity(prefix.len() + id.len());
        name.push_str(prefix);
        name.push_str(id);
        name
    }

    /// The organization's stream.
    pub fn organization(id: &str) -> String {
        named("organization-", id)
    }
    /// The connection's stream.
    pub fn connection(id: &str) -> String {
        named("connection-", id)
    }
    /// The setup link's stream.
    pub fn setup_link(id: &str) -> String {
        named("setup-link-", id)
    }
    /// The API token's stream.
    pub fn api_token(id: &str) -> String {
        named("api-token-", id)
    }
}

/// Converts a UTC time to a protobuf timestamp.
pub fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// Converts a protobuf timestamp to UTC (the epoch when out of range).
pub fn from_timestamp(ts: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default()
}
