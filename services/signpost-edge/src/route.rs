//! [`Route`]: a validated route, converted from the wire form at the boundary.
//!
//! The edge never serves a route it has not checked: every route of an update
//! (and of the state file) goes through [`Route::try_from`], and one bad route
//! makes the whole update invalid. The wire form is kept verbatim next to the
//! parsed fields so that the state file stores exactly what the control plane
//! sent.

use signpost_api::log::v1 as log;
use signpost_api::routing::v1 as wire;
use signpost_names::DomainName;
use url::Url;

/// Why a route from the control plane (or the state file) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain is not in its normalized form.
    #[error("route domain `{domain}` is not normalized ({reason})")]
    DomainNotNormalized {
        /// The domain as received.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The protocol is unspecified or unknown.
    #[error("route for `{domain}` has no known protocol ({protocol})")]
    UnknownProtocol {
        /// The route's domain.
        domain: String,
        /// The protocol number received.
        protocol: i32,
    },
    /// The protocol's settings message is absent.
    #[error("route for `{domain}` is missing field `{field}`")]
    MissingField {
        /// The route's domain.
        domain: String,
        /// The missing field.
        field: &'static str,
    },
    /// A field that must be an absolute `https` URL is not one.
    #[error(
        "route for `{domain}` has field `{field}` that is not an absolute https url: {reason}"
    )]
    NotHttpsUrl {
        /// The route's domain.
        domain: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The organization's SSO policy for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoPolicy {
    /// Users may sign in with SSO or a password.
    Optional,
    /// Password sign-in is refused.
    Enforced,
}

impl SsoPolicy {
    /// `optional` or `enforced`, as the discover response spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoPolicy::Optional => "optional",
            SsoPolicy::Enforced => "enforced",
        }
    }
}

/// Where a route sends the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A SAML 2.0 IdP.
    Saml(SamlTarget),
    /// An OpenID Connect provider.
    Oidc(OidcTarget),
}

/// What the edge needs to build a SAML AuthnRequest redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlTarget {
    /// The IdP's SSO URL (absolute, https).
    pub idp_sso_url: Url,
    /// Our SP entity id for this connection (the AuthnRequest's Issuer).
    pub sp_entity_id: String,
    /// Our assertion consumer service URL.
    pub acs_url: String,
}

/// What the edge needs to build an OIDC authorization redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcTarget {
    /// The provider's authorization endpoint (absolute, https).
    pub authorization_endpoint: Url,
    /// Our client id at the provider.
    pub client_id: String,
    /// Scopes to ask for (`openid` is added when absent).
    pub scopes: Vec<String>,
    /// Our redirect URI for this connection.
    pub redirect_uri: String,
}

/// A validated route: one email domain and where its users sign in.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The normalized domain.
    pub domain: String,
    /// The organization's id in Signpost.
    pub organization_id: String,
    /// The platform's own id for the organization.
    pub organization_external_id: String,
    /// The active connection's id.
    pub connection_id: String,
    /// The organization's SSO policy.
    pub sso_policy: SsoPolicy,
    /// The IdP to send users to.
    pub target: Target,
    wire: wire::Route,
}

impl Route {
    /// The route exactly as the control plane sent it (for the state file).
    pub fn as_wire(&self) -> &wire::Route {
        &self.wire
    }

    /// `saml` or `oidc`.
    pub fn protocol_name(&self) -> &'static str {
        match self.target {
            Target::Saml(_) => "saml",
            Target::Oidc(_) => "oidc",
        }
    }
}

impl TryFrom<wire::Route> for Route {
    type Error = RouteError;

    fn try_from(route: wire::Route) -> Result<Self, Self::Error> {
        check_domain(&route.domain)?;
        let domain = route.domain.as_str();
        let missing = |field| RouteError::MissingField {
            domain: domain.to_owned(),
            field,
        };
        let target = match log::Protocol::try_from(route.protocol) {
            Ok(log::Protocol::Saml) => {
                let saml = route.saml.as_ref().ok_or_else(|| missing("saml"))?;
                let idp_sso_url = https_url(domain, "saml.idp_sso_url", &saml.idp_sso_url)?;
                if saml.sp_entity_id.trim().is_empty() {
                    return Err(missing("saml.sp_entity_id"));
                }
                if saml.acs_url.trim().is_empty() {
                    return Err(missing("saml.acs_url"));
                }
                Target::Saml(SamlTarget {
                    idp_sso_url,
                    sp_entity_id: saml.sp_entity_id.clone(),
                    acs_url: saml.acs_url.clone(),
                })
            }
            Ok(log::Protocol::Oidc) => {
                let oidc = route.oidc.as_ref().ok_or_else(|| missing("oidc"))?;
                let authorization_endpoint = https_url(
                    domain,
                    "oidc.authorization_endpoint",
                    &oidc.authorization_endpoint,
                )?;
                if oidc.client_id.trim().is_empty() {
                    return Err(missing("oidc.client_id"));
                }
                if oidc.redirect_uri.trim().is_empty() {
                    return Err(missing("oidc.redirect_uri"));
                }
                Target::Oidc(OidcTarget {
                    authorization_endpoint,
                    client_id: oidc.client_id.clone(),
                    scopes: oidc.scopes.clone(),
                    redirect_uri: oidc.redirect_uri.clone(),
                })
            }
            Ok(log::Protocol::Unspecified) | Err(_) => {
                return Err(RouteError::UnknownProtocol {
                    domain: domain.to_owned(),
                    protocol: route.protocol,
                })
            }
        };
        // An unspecified policy is the control plane's default (optional); a
        // policy number this edge does not know yet fails closed, so a newer
        // control plane can never open password sign-in by accident.
        let sso_policy = match log::SsoPolicy::try_from(route.sso_policy) {
            Ok(log::SsoPolicy::Unspecified | log::SsoPolicy::Optional) => SsoPolicy::Optional,
            Ok(log::SsoPolicy::Enforced) | Err(_) => SsoPolicy::Enforced,
        };
        Ok(Route {
            domain: route.domain.clone(),
            organization_id: route.organization_id.clone(),
            organization_external_id: route.organization_external_id.clone(),
            connection_id: route.connection_id.clone(),
            sso_policy,
            target,
            wire: route,
        })
    }
}

/// Checks that `domain` is already in the form `DomainName::parse` gives, so
/// that a lookup of the normalized email domain finds it.
pub(crate) fn check_domain(domain: &str) -> Result<(), RouteError> {
    match DomainName::parse(domain) {
        Ok(parsed) if parsed.as_str() == domain => Ok(()),
        Ok(parsed) => Err(RouteError::DomainNotNormalized {
            domain: domain.to_owned(),
            reason: format!("it normalizes to `{parsed}`"),
        }),
        Err(error) => Err(RouteError::DomainNotNormalized {
            domain: domain.to_owned(),
            reason: error.to_string(),
        }),
    }
}

fn https_url(domain: &str, field: &'static str, value: &str) -> Result<Url, RouteError> {
    let invalid = |reason: String| RouteError::NotHttpsUrl {
        domain: domain.to_owned(),
        field,
        reason,
    };
    let url = Url::parse(value).map_err(|e| invalid(e.to_string()))?;
    if url.scheme() != "https" {
        return Err(invalid(format!("the scheme is `{}`", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    if url.fragment().is_some() {
        return Err(invalid("it has a fragment".to_owned()));
    }
    Ok(url)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid SAML route for `domain`.
    pub(crate) fn saml_route(domain: &str) -> wire::Route {
        wire::Route {
            domain: domain.to_owned(),
            organization_id: "org_1".to_owned(),
            organization_external_id: "ext-1".to_owned(),
            connection_id: "conn_saml".to_owned(),
            protocol: log::Protocol::Saml as i32,
            saml: Some(wire::SamlRoute {
                idp_entity_id: "https://idp.example/entity".to_owned(),
                idp_sso_url: "https://idp.example/sso?tenant=acme".to_owned(),
                idp_sso_binding: log::SamlBinding::HttpRedirect as i32,
                signing_certificates: vec![],
                sp_entity_id: "https://signpost.example/saml/conn_saml".to_owned(),
                acs_url: "https://signpost.example/saml/conn_saml/acs".to_owned(),
            }),
            sso_policy: log::SsoPolicy::Optional as i32,
            ..Default::default()
        }
    }

    /// A valid OIDC route for `domain`.
    pub(crate) fn oidc_route(domain: &str) -> wire::Route {
        wire::Route {
            domain: domain.to_owned(),
            organization_id: "org_2".to_owned(),
            organization_external_id: "ext-2".to_owned(),
            connection_id: "conn_oidc".to_owned(),
            protocol: log::Protocol::Oidc as i32,
            oidc: Some(wire::OidcRoute {
                issuer: "https://login.example".to_owned(),
                authorization_endpoint: "https://login.example/authorize".to_owned(),
                client_id: "client-1".to_owned(),
                scopes: vec!["openid".to_owned(), "email".to_owned()],
                redirect_uri: "https://signpost.example/oidc/conn_oidc/callback".to_owned(),
            }),
            sso_policy: log::SsoPolicy::Enforced as i32,
            ..Default::default()
        }
    }

    #[test]
    fn valid_routes_convert() {
        let saml = Route::try_from(saml_route("acme.com")).unwrap();
        assert_eq!(saml.protocol_name(), "saml");
        assert_eq!(saml.sso_policy, SsoPolicy::Optional);
        let oidc = Route::try_from(oidc_route("globex.com")).unwrap();
        assert_eq!(oidc.protocol_name(), "oidc");
        assert_eq!(oidc.sso_policy, SsoPolicy::Enforced);
        assert_eq!(oidc.as_wire(), &oidc_route("globex.com"));
    }

    #[test]
    fn unnormalized_domains_are_refused() {
        for domain in ["Acme.com", "acme.com.", "acme", "bücher.example", ""] {
            let error = Route::try_from(saml_route(domain)).unwrap_err();
            assert!(
                matches!(error, RouteError::DomainNotNormalized { .. }),
                "{domain}: {error}"
            );
        }
    }

    #[test]
    fn saml_route_needs_an_https_sso_url_and_sp_details() {
        let mut route = saml_route("acme.com");
        route.saml.as_mut().unwrap().idp_sso_url = "http://idp.example/sso".to_owned();
        assert!(matches!(
            Route::try_from(route).unwrap_err(),
            RouteError::NotHttpsUrl { .. }
        ));
        let mut route = saml_route("acme.com");
        route.saml.as_mut().unwrap().idp_sso_url = "/sso".to_owned();
        assert!(Route::try_from(route).is_err());
        let mut route = saml_route("acme.com");
        route.saml.as_mut().unwrap().sp_entity_id.clear();
        assert!(Route::try_from(route).is_err());
        let mut route = saml_route("acme.com");
        route.saml.as_mut().unwrap().acs_url.clear();
        assert!(Route::try_from(route).is_err());
        let mut route = saml_route("acme.com");
        route.saml = None;
        assert!(matches!(
            Route::try_from(route).unwrap_err(),
            RouteError::MissingField { field: "saml", .. }
        ));
    }

    #[test]
    fn oidc_route_needs_an_https_endpoint_and_client_details() {
        let mut route = oidc_route("acme.com");
        route.oidc.as_mut().unwrap().authorization_endpoint = "ftp://x.example/a".to_owned();
        assert!(Route::try_from(route).is_err());
        let mut route = oidc_route("acme.com");
        route.oidc.as_mut().unwrap().client_id.clear();
        assert!(Route::try_from(route).is_err());
        let mut route = oidc_route("acme.com");
        route.oidc.as_mut().unwrap().redirect_uri.clear();
        assert!(Route::try_from(route).is_err());
        let mut route = oidc_route("acme.com");
        route.protocol = 0;
        assert!(matches!(
            Route::try_from(route).unwrap_err(),
            RouteError::UnknownProtocol { .. }
        ));
    }

    #[test]
    fn unknown_sso_policy_fails_closed() {
        let mut route = saml_route("acme.com");
        route.sso_policy = 42;
        assert_eq!(
            Route::try_from(route).unwrap().sso_policy,
            SsoPolicy::Enforced
        );
    }
}
