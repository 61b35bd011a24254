//! What reads return: aggregate state plus what is derived from other
//! aggregates or the clock (statuses, our SP details). Never a secret.

use chrono::{DateTime, Utc};
use signpost_domain::api_token::ApiToken;
use signpost_domain::connection::{Connection, ConnectionSettings};
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

/// How much of a connection a view carries (the API's `ConnectionView` enum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnectionDetail {
    /// Ids, status, protocol, groups and version: no IdP settings, no claim mapping and
    /// no SP details, so neither the certificates nor the SP metadata are built for it.
    Basic,
    /// Everything, certificates whole, our SP details with their metadata XML.
    #[default]
    Full,
}

impl ServiceProvider {
    /// Our details for `connection_id` under the public base URL, metadata XML built.
    pub fn for_connection(public_base_url: &str, connection_id: &str) -> Self {
        let urls =
            signpost_idp::ServiceProviderUrls::for_connection(public_base_url, connection_id);
        ServiceProvider {
            metadata_xml: urls.metadata_xml(),
            entity_id: urls.entity_id,
            acs_url: urls.acs_url,
            oidc_redirect_uri: urls.oidc_redirect_uri,
        }
    }
}

/// A connection as admins see it.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    /// How much of it the view carries; a `Basic` view leaves `certificates` and
    /// `service_provider` unset, and its wire form has no settings.
    pub detail: ConnectionDetail,
    /// Its id.
    pub connection_id: String,
    /// Its organization.
    pub organization_id: String,
    /// Lifecycle status.
    pub status: ConnectionStatus,
    /// State; `None` while a draft. A SAML connection's state keeps its certificates
    /// without their DER (`SamlIdp`).
    pub connection: Option<Connection>,
    /// A SAML connection's signing certificates, DER included, read from the event that
    /// set them when the view is finished; `None` before (or for OIDC).
    pub certificates: Option<std::sync::Arc<[signpost_domain::schema::Certificate]>>,
    /// Our side's details.
    pub service_provider: ServiceProvider,
}

impl ConnectionView {
    /// A SAML connection's settings as a view shows them: decoded from the state, with
    /// the certificates read from the log when the view holds them.
    pub fn saml_settings(&self) -> Option<signpost_domain::schema::SamlSettings> {
        let Some(ConnectionSettings::Saml(saml)) =
            self.connection.as_ref().and_then(|c| c.settings.as_ref())
        else {
            return None;
        };
        let mut settings = saml.settings();
        if let Some(certificates) = &self.certificates {
            settings.signing_certificates = certificates.to_vec();
        }
        Some(settings)
    }
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
