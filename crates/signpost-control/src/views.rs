//! What reads return: aggregate state plus what is derived from other
//! aggregates or the clock (statuses, our SP details). Never a secret.

use chrono::{DateTime, Utc};
use signpost_domain::api_token::ApiToken;
use signpost_domain::connection::Connection;
use signpost_domain::organization::{DomainClaim, Organization};
use signpost_domain::setup_link::SetupLink;

use crate::read_model::Verification;

/// An organization and its domain claims.
#[derive(Debug, Clone)]
pub struct OrganizationView {
    /// State.
    pub organization: Organization,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Each claim with who verified it.
    pub domains: Vec<DomainClaimView>,
}

/// One domain claim.
#[derive(Debug, Clone)]
pub struct DomainClaimView {
    /// Normalized domain.
    pub domain: String,
    /// Claim state.
    pub claim: DomainClaim,
    /// Who verified it and when, once verified.
    pub verification: Option<Verification>,
}

pub use signpost_domain::connection::ConnectionStatus;

/// What the IT admin enters in their IdP, derived from the public base URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceProvider {
    /// Our SAML SP entity id.
    pub entity_id: String,
    /// Our SAML ACS URL.
    pub acs_url: String,
    /// Our OIDC redirect URI.
    pub oidc_redirect_uri: String,
    /// Our SP metadata XML.
    pub metadata_xml: String,
}

/// A connection as admins see it.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    /// Its id.
    pub connection_id: String,
    /// Its organization.
    pub organization_id: String,
    /// Lifecycle status.
    pub status: ConnectionStatus,
    /// State; `None` while a draft.
    pub connection: Option<Connection>,
    /// Our side's details.
    pub service_provider: ServiceProvider,
}

/// Where a setup link is in its life, the clock included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupLinkStatus {
    /// Usable.
    Open,
    /// Past its expiry.
    Expired,
    /// Revoked or superseded.
    Revoked,
    /// Its connection was activated.
    Spent,
}

/// A setup link as admins see it (no token: only its hash exists).
#[derive(Debug, Clone)]
pub struct SetupLinkView {
    /// State.
    pub link: SetupLink,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// Status at the time of reading.
    pub status: SetupLinkStatus,
}

/// An API token as admins see it (no token).
#[derive(Debug, Clone)]
pub struct ApiTokenView {
    /// State.
    pub token: ApiToken,
    /// When it was minted.
    pub created_at: DateTime<Utc>,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Token for the next page; empty at the end.
    pub next_page_token: String,
}

/// A mutation's result: the resource as it is now, and the log position reached.
#[derive(Debug, Clone)]
pub struct Mutated<T> {
    /// The resource after the mutation.
    pub value: T,
    /// The log position the mutation reached (pass it as `min_revision` to read your write).
    pub position: u64,
}
