//! [`Route`]: a validated route, kept in the form the control plane sent it.
//!
//! The edge never serves a route it has not checked: every route of an update
//! (and of the state file) goes through [`Route::from_encoded`] (or
//! [`Route::try_from`] for a decoded one), and one bad route makes the whole
//! update invalid.
//!
//! A `Route` is the route's protobuf encoding in one shared allocation and
//! nothing else: the state file stores exactly those bytes, [`Route::as_wire`]
//! decodes them on demand, and the accessors ([`Route::connection_id`],
//! [`Route::target`], ...) read the fields in place (module `encoded`). The
//! domain, the one field every lookup compares, is always the first field,
//! so a lookup reads it without walking the route. With 100,000 routes this
//! keeps the table about as large as the routes on the wire.

use std::sync::Arc;

use prost::Message;
use signpost_api::log::v1 as log;
use signpost_api::routing::v1 as wire;
use signpost_names::DomainName;
use url::Url;

use crate::encoded::{self, RouteFields};

/// Why a route from the control plane (or the state file) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The bytes are not an encoded `Route`.
    #[error("route is not a valid encoded route: {reason}")]
    Malformed {
        /// What is wrong with the encoding.
        reason: String,
    },
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

impl From<encoded::Malformed> for RouteError {
    fn from(malformed: encoded::Malformed) -> Self {
        RouteError::Malformed {
            reason: malformed.0,
        }
    }
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

    /// An unspecified policy is the control plane's default (optional); a
    /// policy number this edge does not know yet fails closed, so a newer
    /// control plane can never open password sign-in by accident.
    fn from_wire(number: i32) -> SsoPolicy {
        match log::SsoPolicy::try_from(number) {
            Ok(log::SsoPolicy::Unspecified | log::SsoPolicy::Optional) => SsoPolicy::Optional,
            Ok(log::SsoPolicy::Enforced) | Err(_) => SsoPolicy::Enforced,
        }
    }
}

/// Where a route sends the user (borrowed from the [`Route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// A SAML 2.0 IdP.
    Saml(SamlTarget<'a>),
    /// An OpenID Connect provider.
    Oidc(OidcTarget<'a>),
}

/// What the edge needs to build a SAML AuthnRequest redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlTarget<'a> {
    /// The IdP's SSO URL (absolute, https: checked when the route was accepted).
    pub idp_sso_url: &'a str,
    /// Our SP entity id for this connection (the AuthnRequest's Issuer).
    pub sp_entity_id: &'a str,
    /// Our assertion consumer service URL.
    pub acs_url: &'a str,
}

/// What the edge needs to build an OIDC authorization redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcTarget<'a> {
    /// The provider's authorization endpoint (absolute, https: checked when
    /// the route was accepted).
    pub authorization_endpoint: &'a str,
    /// Our client id at the provider.
    pub client_id: &'a str,
    /// Scopes to ask for (`openid` is added when absent).
    pub scopes: Vec<&'a str>,
    /// Our redirect URI for this connection.
    pub redirect_uri: &'a str,
}

/// Every field of a route the sign-in path uses, borrowed from the route
/// ([`Route::view`] reads them in one pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView<'a> {
    /// The normalized domain.
    pub domain: &'a str,
    /// The organization's id in Signpost.
    pub organization_id: &'a str,
    /// The platform's own id for the organization.
    pub organization_external_id: &'a str,
    /// The active connection's id.
    pub connection_id: &'a str,
    /// The organization's SSO policy.
    pub sso_policy: SsoPolicy,
    /// The IdP to send users to.
    pub target: Target<'a>,
}

impl RouteView<'_> {
    /// `saml` or `oidc`.
    pub fn protocol_name(&self) -> &'static str {
        match self.target {
            Target::Saml(_) => "saml",
            Target::Oidc(_) => "oidc",
        }
    }
}

/// A validated route: one email domain and where its users sign in.
///
/// Cloning is cheap (one shared allocation). Two routes are equal when their
/// encodings are.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's protobuf encoding, in the stored form: see
    /// [`encoded::RouteFields::canonical`].
    encoded: Arc<[u8]>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = self.fields();
        f.debug_struct("Route")
            .field("domain", &fields.domain)
            .field("organization_id", &fields.organization_id)
            .field("connection_id", &fields.connection_id)
            .field("protocol", &self.protocol_name())
            .field("encoded_len", &self.encoded.len())
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Checks an encoded `signpost.routing.v1.Route` (as it arrives on the
    /// stream or sits in the state file) and keeps it. Bytes that prost
    /// would decode but that are not in the stored form (fields out of order,
    /// repeated messages to merge) are decoded and re-encoded by prost first.
    pub fn from_encoded(encoded: &[u8]) -> Result<Route, RouteError> {
        let fields = RouteFields::read(encoded)?;
        if fields.canonical {
            validate(&fields)?;
            return Ok(Route {
                encoded: Arc::from(encoded),
            });
        }
        // Rare (no prost encoder writes it): let prost merge and reorder.
        let canonical = wire::Route::decode(encoded)
            .map_err(encoded::Malformed::from)?
            .encode_to_vec();
        let fields = RouteFields::read(&canonical)?;
        validate(&fields)?;
        // prost writes the domain first and each message once; a route with
        // an empty domain, the only exception, was refused just above.
        if !fields.canonical {
            return Err(RouteError::Malformed {
                reason: "the route has no domain field".to_owned(),
            });
        }
        Ok(Route {
            encoded: Arc::from(canonical),
        })
    }

    /// The route's protobuf encoding (what the control plane sent).
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The route decoded by prost (for callers that want the wire form: it
    /// decodes the whole route and allocates).
    pub fn as_wire(&self) -> wire::Route {
        wire::Route::decode(&*self.encoded)
            .expect("a Route holds bytes that were read like prost reads them when it was built")
    }

    /// Every field the edge uses, read in place.
    fn fields(&self) -> RouteFields<'_> {
        RouteFields::read(&self.encoded)
            .expect("a Route holds bytes that were read without error when it was built")
    }

    /// Whether both are the same allocation (not only equal bytes).
    #[cfg(test)]
    pub(crate) fn shares_allocation_with(&self, other: &Route) -> bool {
        Arc::ptr_eq(&self.encoded, &other.encoded)
    }

    /// The normalized domain, as bytes: the first field, read without walking
    /// the route (what every lookup compares).
    pub(crate) fn domain_bytes(&self) -> &[u8] {
        encoded::leading_domain(&self.encoded).unwrap_or_default()
    }

    /// The normalized domain.
    pub fn domain(&self) -> &str {
        // The domain was checked to be normalized (ASCII) when the route was built.
        std::str::from_utf8(self.domain_bytes()).unwrap_or_default()
    }

    /// The organization's id in Signpost.
    pub fn organization_id(&self) -> &str {
        self.fields().organization_id
    }

    /// The platform's own id for the organization.
    pub fn organization_external_id(&self) -> &str {
        self.fields().organization_external_id
    }

    /// The active connection's id.
    pub fn connection_id(&self) -> &str {
        self.fields().connection_id
    }

    /// The organization's SSO policy.
    pub fn sso_policy(&self) -> SsoPolicy {
        SsoPolicy::from_wire(self.fields().sso_policy)
    }

    /// The IdP to send users to.
    pub fn target(&self) -> Target<'_> {
        target(&self.fields())
    }

    /// `saml` or `oidc`.
    pub fn protocol_name(&self) -> &'static str {
        if self.fields().protocol == log::Protocol::Saml as i32 {
            "saml"
        } else {
            "oidc"
        }
    }

    /// Every field the sign-in path uses, in one pass over the route.
    pub fn view(&self) -> RouteView<'_> {
        let fields = self.fields();
        RouteView {
            domain: fields.domain,
            organization_id: fields.organization_id,
            organization_external_id: fields.organization_external_id,
            connection_id: fields.connection_id,
            sso_policy: SsoPolicy::from_wire(fields.sso_policy),
            target: target(&fields),
        }
    }
}

/// The target of a validated route, which has the message of its protocol
/// (SAML or OIDC).
fn target<'a>(fields: &RouteFields<'a>) -> Target<'a> {
    match fields
        .saml
        .filter(|_| fields.protocol == log::Protocol::Saml as i32)
    {
        Some(saml) => Target::Saml(SamlTarget {
            idp_sso_url: saml.idp_sso_url,
            sp_entity_id: saml.sp_entity_id,
            acs_url: saml.acs_url,
        }),
        None => {
            let oidc = fields.oidc.unwrap_or_default();
            Target::Oidc(OidcTarget {
                authorization_endpoint: oidc.authorization_endpoint,
                client_id: oidc.client_id,
                scopes: oidc.scopes(),
                redirect_uri: oidc.redirect_uri,
            })
        }
    }
}

impl TryFrom<wire::Route> for Route {
    type Error = RouteError;

    fn try_from(route: wire::Route) -> Result<Self, Self::Error> {
        Route::from_encoded(&route.encode_to_vec())
    }
}

/// Every rule a route must pass, in the order the errors are reported.
fn validate(route: &RouteFields<'_>) -> Result<(), RouteError> {
    check_domain(route.domain)?;
    let domain = route.domain;
    let missing = |field| RouteError::MissingField {
        domain: domain.to_owned(),
        field,
    };
    match log::Protocol::try_from(route.protocol) {
        Ok(log::Protocol::Saml) => {
            let saml = route.saml.ok_or_else(|| missing("saml"))?;
            https_url(domain, "saml.idp_sso_url", saml.idp_sso_url)?;
            if saml.sp_entity_id.trim().is_empty() {
                return Err(missing("saml.sp_entity_id"));
            }
            if saml.acs_url.trim().is_empty() {
                return Err(missing("saml.acs_url"));
            }
        }
        Ok(log::Protocol::Oidc) => {
            let oidc = route.oidc.ok_or_else(|| missing("oidc"))?;
            https_url(
                domain,
                "oidc.authorization_endpoint",
                oidc.authorization_endpoint,
            )?;
            if oidc.client_id.trim().is_empty() {
                return Err(missing("oidc.client_id"));
            }
            if oidc.redirect_uri.trim().is_empty() {
                return Err(missing("oidc.redirect_uri"));
            }
        }
        Ok(log::Protocol::Unspecified) | Err(_) => {
            return Err(RouteError::UnknownProtocol {
                domain: domain.to_owned(),
                protocol: route.protocol,
            })
        }
    }
    Ok(())
}

/// Checks that `domain` is already in the form `DomainName::parse` gives, so
/// that a lookup of the normalized email domain finds it.
pub(crate) fn check_domain(domain: &str) -> Result<(), RouteError> {
    match DomainName::normalize(domain) {
        Ok(normalized) if normalized == domain => Ok(()),
        Ok(normalized) => Err(RouteError::DomainNotNormalized {
            domain: domain.to_owned(),
            reason: format!("it normalizes to `{normalized}`"),
        }),
        Err(error) => Err(RouteError::DomainNotNormalized {
            domain: domain.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// Checks that `value` is an absolute https URL with a host and no fragment.
fn https_url(domain: &str, field: &'static str, value: &str) -> Result<(), RouteError> {
    if is_plain_https_url(value) {
        return Ok(());
    }
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
    Ok(())
}

/// A quick acceptance test for the usual shape of an IdP URL,
/// `https://host[/path][?query]` with a host of lowercase ASCII labels whose
/// last label has a letter and does not start with `0x` (so it is not read
/// as an IPv4 address) and no label starts with `xn--`, and a path and query
/// of printable ASCII without `#` or `\`. `Url::parse` accepts every such
/// string as an absolute https URL with that host and no fragment (a property
/// test checks it), so only other shapes pay for a full parse: the bulk of a
/// route's validation otherwise.
fn is_plain_https_url(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("https://") else {
        return false;
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let plain_label = |label: &str| {
        !label.is_empty()
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let last = host.rsplit('.').next().unwrap_or_default();
    host.split('.').all(plain_label)
        && last.bytes().any(|b| b.is_ascii_lowercase())
        && !last.starts_with("0x")
        && tail
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'\\')
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
        assert_eq!(saml.sso_policy(), SsoPolicy::Optional);
        assert_eq!(saml.domain(), "acme.com");
        assert_eq!(saml.organization_id(), "org_1");
        assert_eq!(saml.organization_external_id(), "ext-1");
        assert_eq!(saml.connection_id(), "conn_saml");
        assert_eq!(
            saml.target(),
            Target::Saml(SamlTarget {
                idp_sso_url: "https://idp.example/sso?tenant=acme",
                sp_entity_id: "https://signpost.example/saml/conn_saml",
                acs_url: "https://signpost.example/saml/conn_saml/acs",
            })
        );
        let view = saml.view();
        assert_eq!(
            (view.domain, view.organization_id, view.connection_id),
            ("acme.com", "org_1", "conn_saml")
        );
        assert_eq!(view.organization_external_id, "ext-1");
        assert_eq!(view.sso_policy, SsoPolicy::Optional);
        assert_eq!(view.protocol_name(), "saml");
        assert_eq!(view.target, saml.target());
        let oidc = Route::try_from(oidc_route("globex.com")).unwrap();
        assert_eq!(oidc.protocol_name(), "oidc");
        assert_eq!(oidc.view().protocol_name(), "oidc");
        assert_eq!(oidc.sso_policy(), SsoPolicy::Enforced);
        assert_eq!(oidc.as_wire(), oidc_route("globex.com"));
        assert_eq!(oidc.encoded(), oidc_route("globex.com").encode_to_vec());
        assert_eq!(
            oidc.target(),
            Target::Oidc(OidcTarget {
                authorization_endpoint: "https://login.example/authorize",
                client_id: "client-1",
                scopes: vec!["openid", "email"],
                redirect_uri: "https://signpost.example/oidc/conn_oidc/callback",
            })
        );
    }

    #[test]
    fn encoded_routes_are_kept_as_sent() {
        let mut sent = saml_route("acme.com").encode_to_vec();
        // An unknown field (tag 15) a newer control plane might add.
        sent.extend_from_slice(&[0x7a, 0x02, b'h', b'i']);
        let route = Route::from_encoded(&sent).unwrap();
        assert_eq!(route.encoded(), sent.as_slice());
        assert_eq!(route.as_wire(), saml_route("acme.com"));
    }

    #[test]
    fn encodings_out_of_order_are_stored_as_prost_writes_them() {
        let canonical = saml_route("acme.com").encode_to_vec();
        // The domain field (2 + 8 bytes) moved to the end, and a second,
        // partial `saml` message that prost merges into the first.
        let mut shuffled = canonical[10..].to_vec();
        shuffled.extend_from_slice(&canonical[..10]);
        let acs = b"https://other.example/acs";
        shuffled.extend_from_slice(&[0x32, acs.len() as u8 + 2, 0x32, acs.len() as u8]);
        shuffled.extend_from_slice(acs);
        let route = Route::from_encoded(&shuffled).unwrap();
        let mut expected = saml_route("acme.com");
        expected.saml.as_mut().unwrap().acs_url = "https://other.example/acs".to_owned();
        assert_eq!(route.encoded(), expected.encode_to_vec());
        assert_eq!(route.domain(), "acme.com");
        assert!(
            matches!(route.target(), Target::Saml(saml) if saml.acs_url == "https://other.example/acs")
        );
    }

    #[test]
    fn malformed_encodings_are_refused() {
        let mut truncated = saml_route("acme.com").encode_to_vec();
        truncated.pop();
        for bytes in [&b"\xff\xff"[..], &truncated, &[0x0a, 0x02, 0xc3, 0x28]] {
            assert!(
                matches!(
                    Route::from_encoded(bytes),
                    Err(RouteError::Malformed { .. })
                ),
                "{bytes:?}"
            );
        }
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

    proptest::proptest! {
        #[test]
        fn plain_https_urls_are_ones_url_accepts(
            value in "https://([a-z0-9-]{0,4}(xn--)?[.]?){1,4}(0x|[a-z0-9]){0,3}([/?][!-~]{0,12})?"
        ) {
            if is_plain_https_url(&value) {
                proptest::prop_assert!(https_url("acme.com", "field", &value).is_ok(), "{}", value);
                let url = Url::parse(&value).unwrap();
                proptest::prop_assert_eq!(url.host_str(), value[8..].split(['/', '?']).next());
            }
        }

        #[test]
        fn plain_https_urls_are_ones_url_accepts_on_any_input(value in "https://\\PC{0,30}") {
            if is_plain_https_url(&value) {
                proptest::prop_assert!(https_url("acme.com", "field", &value).is_ok(), "{}", value);
            }
        }
    }

    #[test]
    fn the_quick_url_check_takes_the_usual_shapes_and_leaves_the_rest_to_the_parser() {
        for plain in [
            "https://idp.example/sso?tenant=acme",
            "https://login.microsoftonline.com/0b9c/oauth2/v2.0/authorize",
            "https://firm-1.okta.com/app/x/sso/saml?a=%20b&c=d",
            "https://localhost",
        ] {
            assert!(is_plain_https_url(plain), "{plain}");
        }
        for other in [
            "http://idp.example/sso",
            "https://IDP.example/sso",
            "https://idp.example:8443/sso",
            "https://idp.example/sso#top",
            "https://1.2.3.4/sso",
            "https://idp.0x7f/sso",
            "https://xn--bcher-kva.example/",
            "https://user@idp.example/",
            "https://idp..example/",
            "https://idp.example./",
            "https:///sso",
            "https://idp.example/a b",
        ] {
            assert!(!is_plain_https_url(other), "{other}");
        }
        // Those still pass when `Url` says so.
        assert!(https_url("acme.com", "f", "https://IDP.example:8443/sso").is_ok());
        assert!(https_url("acme.com", "f", "https://idp.example/sso#top").is_err());
    }

    #[test]
    fn unknown_sso_policy_fails_closed() {
        let mut route = saml_route("acme.com");
        route.sso_policy = 42;
        assert_eq!(
            Route::try_from(route).unwrap().sso_policy(),
            SsoPolicy::Enforced
        );
    }
}
