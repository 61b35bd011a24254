//! How an organization's state becomes routes: one per verified domain when
//! the organization has an active, configured connection; none otherwise.

use std::sync::Arc;

use signpost_api::routing::v1 as wire;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::organization::Organization;
use signpost_domain::{schema, VecMap};
use signpost_idp::ServiceProviderUrls;

/// The routes of one organization, by domain, in domain order. A [`VecMap`]: the
/// routing fold keeps one per routed organization, and most route one domain.
pub type OrganizationRoutes = VecMap<String, Arc<wire::Route>>;

/// Computes the routes of `organization` given its active connection (if any).
pub fn organization_routes(
    organization: &Organization,
    active: Option<&Connection>,
    public_base_url: &str,
) -> OrganizationRoutes {
    let Some(connection) =
        active.filter(|c| c.is_configured() && c.organization_id == organization.id)
    else {
        return OrganizationRoutes::new();
    };
    let template = route_template(organization, connection, public_base_url);
    organization
        .verified_domains()
        .map(|domain| {
            let mut route = template.clone();
            route.domain = domain.to_owned();
            (domain.to_owned(), Arc::new(route))
        })
        .collect()
}

fn route_template(
    organization: &Organization,
    connection: &Connection,
    public_base_url: &str,
) -> wire::Route {
    let sp = ServiceProviderUrls::for_connection(public_base_url, &connection.id);
    let (saml, oidc) = match &connection.settings {
        Some(ConnectionSettings::Saml(saml)) => {
            let endpoint = saml
                .sso_endpoints
                .iter()
                .find(|e| e.binding() == schema::SamlBinding::HttpRedirect)
                .or_else(|| saml.sso_endpoints.first());
            let saml = wire::SamlRoute {
                idp_entity_id: saml.idp_entity_id.clone(),
                idp_sso_url: endpoint.map(|e| e.location.clone()).unwrap_or_default(),
                idp_sso_binding: endpoint.map(|e| e.binding).unwrap_or_default(),
                signing_certificates: saml
                    .signing_certificates
                    .iter()
                    .map(|cert| wire::CertificateFingerprint {
                        sha256_fingerprint: cert.sha256_fingerprint.clone(),
                        not_after_unix: cert
                            .not_after
                            .as_ref()
                            .map(|t| t.seconds)
                            .unwrap_or_default(),
                    })
                    .collect(),
                sp_entity_id: sp.entity_id,
                acs_url: sp.acs_url,
            };
            (Some(saml), None)
        }
        Some(ConnectionSettings::Oidc(oidc)) => {
            // The client secret never enters a route.
            let oidc = wire::OidcRoute {
                issuer: oidc.issuer.clone(),
                authorization_endpoint: oidc.authorization_endpoint.clone(),
                client_id: oidc.client_id.clone(),
                scopes: oidc.scopes.clone(),
                redirect_uri: sp.oidc_redirect_uri,
            };
            (None, Some(oidc))
        }
        None => (None, None),
    };
    wire::Route {
        domain: String::new(),
        organization_id: organization.id.clone(),
        organization_external_id: organization.external_id.clone(),
        connection_id: connection.id.clone(),
        protocol: connection.protocol() as i32,
        saml,
        oidc,
        claim_mapping: Some(connection.claim_mapping.clone()),
        group_roles: connection
            .groups
            .iter()
            .map(|(g, r)| (g.clone(), r.clone()))
            .collect(),
        require_group: connection.require_group,
        sso_policy: organization.sso_policy as i32,
    }
}
