//! Conversions between control-plane views and wire messages. Prost types
//! stop here: nothing past this module sees them as the domain model.

use signpost_control::setup_form::PresetProtocol;
use signpost_control::views::{
    ApiTokenView, ConnectionDetail, ConnectionStatus, ConnectionView, DomainClaimView,
    OrganizationView, ServiceProvider, SetupLinkStatus, SetupLinkView,
};
use signpost_control::SetupFormView;
use signpost_domain::connection::ConnectionSettings;
use signpost_domain::event::timestamp;
use signpost_domain::organization::ClaimStatus;

use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;

/// Converts a control-plane value to its wire message.
pub trait ToWire {
    /// The wire message.
    type Wire;
    /// Converts.
    fn to_wire(self) -> Self::Wire;
}

impl ToWire for OrganizationView {
    type Wire = pb::Organization;

    fn to_wire(self) -> pb::Organization {
        let view = self;
        let org = view.organization;
        Self::Wire {
            organization_id: org.id.to_string(),
            display_name: org.display_name.into(),
            external_id: org.external_id.into(),
            domains: view.domains.into_iter().map(ToWire::to_wire).collect(),
            sso_policy: org.sso_policy as i32,
            active_connection_id: org
                .active_connection_id
                .as_deref()
                .unwrap_or_default()
                .to_owned(),
            version: org.version,
            create_time: Some(timestamp(view.created_at)),
        }
    }
}

impl ToWire for DomainClaimView {
    type Wire = pb::DomainClaim;

    fn to_wire(self) -> pb::DomainClaim {
        let view = self;
        let status = match view.claim.status {
            ClaimStatus::Pending => pb::DomainStatus::Pending,
            ClaimStatus::Verified => pb::DomainStatus::Verified,
        };
        let verification_record_name = view.claim.verification_record_name(&view.domain);
        Self::Wire {
            domain: view.domain,
            status: status as i32,
            verification_record_name,
            verification_value: view.claim.verification_value,
            verification_method: view.claim.verification_method as i32,
            verified_by: view
                .verification
                .as_ref()
                .map(|v| v.verified_by.clone())
                .unwrap_or_default(),
            verify_time: view.verification.map(|v| timestamp(v.verified_at)),
        }
    }
}

impl ToWire for ServiceProvider {
    type Wire = pb::ServiceProviderDetails;

    fn to_wire(self) -> pb::ServiceProviderDetails {
        let sp = self;
        Self::Wire {
            entity_id: sp.entity_id,
            acs_url: sp.acs_url,
            oidc_redirect_uri: sp.oidc_redirect_uri,
            metadata_xml: sp.metadata_xml,
        }
    }
}

fn connection_status(status: ConnectionStatus) -> pb::ConnectionStatus {
    match status {
        ConnectionStatus::Draft => pb::ConnectionStatus::Draft,
        ConnectionStatus::Configured => pb::ConnectionStatus::Configured,
        ConnectionStatus::Standby => pb::ConnectionStatus::Standby,
        ConnectionStatus::Active => pb::ConnectionStatus::Active,
        ConnectionStatus::Inactive => pb::ConnectionStatus::Inactive,
    }
}

/// The wire form of a connection status.
pub fn connection_status_i32(status: ConnectionStatus) -> i32 {
    connection_status(status) as i32
}

impl ToWire for ConnectionView {
    type Wire = pb::Connection;

    fn to_wire(self) -> pb::Connection {
        let view = self;
        let full = view.detail == ConnectionDetail::Full;
        let saml = if full { view.saml_settings() } else { None };
        let mut message = pb::Connection {
            connection_id: view.connection_id,
            organization_id: view.organization_id,
            status: connection_status(view.status) as i32,
            service_provider: full.then(|| view.service_provider.to_wire()),
            ..Default::default()
        };
        message.saml = saml;
        let Some(connection) = view.connection else {
            return message;
        };
        message.protocol = connection.protocol() as i32;
        match connection.settings {
            Some(ConnectionSettings::Saml(_)) | None => {}
            Some(ConnectionSettings::Oidc(_)) if !full => {}
            Some(ConnectionSettings::Oidc(oidc)) => {
                message.oidc = Some(pb::OidcSettingsView {
                    issuer: oidc.issuer,
                    authorization_endpoint: oidc.authorization_endpoint,
                    token_endpoint: oidc.token_endpoint,
                    jwks_uri: oidc.jwks_uri,
                    userinfo_endpoint: oidc.userinfo_endpoint,
                    client_id: oidc.client_id,
                    client_secret_set: oidc.client_secret.is_some(),
                    scopes: oidc.scopes,
                })
            }
        }
        message.claim_mapping =
            full.then(|| std::sync::Arc::unwrap_or_clone(connection.claim_mapping));
        message.groups = connection
            .groups
            .into_iter()
            .map(|(idp_group, role)| pb::GroupAssignment { idp_group, role })
            .collect();
        message.require_group = connection.require_group;
        message.provider_preset = connection.provider_preset.to_string();
        message.version = connection.version;
        message
    }
}

impl ToWire for SetupLinkView {
    type Wire = pb::SetupLink;

    fn to_wire(self) -> pb::SetupLink {
        let view = self;
        let status = match view.status {
            SetupLinkStatus::Open => pb::SetupLinkStatus::Open,
            SetupLinkStatus::Expired => pb::SetupLinkStatus::Expired,
            SetupLinkStatus::Revoked => pb::SetupLinkStatus::Revoked,
            SetupLinkStatus::Spent => pb::SetupLinkStatus::Spent,
        };
        let link = view.link;
        Self::Wire {
            setup_link_id: link.id.to_string(),
            organization_id: link.organization_id.to_string(),
            intent: link.intent as i32,
            connection_id: link.connection_id.to_string(),
            recipient_email: link.recipient_email,
            status: status as i32,
            create_time: Some(timestamp(view.created_at)),
            expire_time: Some(timestamp(link.expires_at)),
            submissions: link.submissions,
        }
    }
}

impl ToWire for ApiTokenView {
    type Wire = pb::ApiToken;

    fn to_wire(self) -> pb::ApiToken {
        let view = self;
        let token = view.token;
        let status = if token.revoked {
            pb::ApiTokenStatus::Revoked
        } else {
            pb::ApiTokenStatus::Active
        };
        Self::Wire {
            token_id: token.id.to_string(),
            name: token.name,
            role: token.role as i32,
            organization_scope: token.organization_scope,
            status: status as i32,
            create_time: Some(timestamp(view.created_at)),
        }
    }
}

impl ToWire for SetupFormView {
    type Wire = pb::GetSetupFormResponse;

    fn to_wire(self) -> pb::GetSetupFormResponse {
        let view = self;
        Self::Wire {
            organization_display_name: view.organization_display_name,
            intent: view.intent as i32,
            connection_id: view.connection_id,
            service_provider: Some(view.service_provider.to_wire()),
            provider_presets: view
                .presets
                .iter()
                .map(|preset| pb::ProviderPreset {
                    id: preset.id.into(),
                    display_name: preset.display_name.into(),
                    protocol: match preset.protocol {
                        PresetProtocol::Saml => schema::Protocol::Saml,
                        PresetProtocol::Oidc => schema::Protocol::Oidc,
                    } as i32,
                    claim_mapping: Some(schema::ClaimMapping {
                        email: preset.email_claim.into(),
                        given_name: preset.given_name_claim.into(),
                        family_name: preset.family_name_claim.into(),
                        groups: preset.groups_claim.into(),
                    }),
                    notes: preset.notes.into(),
                })
                .collect(),
            expire_time: Some(timestamp(view.expires_at)),
            current: view.current.map(ToWire::to_wire),
        }
    }
}
