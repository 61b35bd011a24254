//! How an organization's state becomes routes: one per verified domain when
//! the organization has an active, configured connection; none otherwise.

use std::sync::Arc;

use prost::Message;
use signpost_api::routing::v1 as wire;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::organization::Organization;
use signpost_domain::{schema, VecMap};
use signpost_idp::ServiceProviderUrls;

/// The routes of one organization, by domain, in domain order. A [`VecMap`]: the
/// routing fold keeps one per routed organization, and most route one domain.
pub type OrganizationRoutes = VecMap<signpost_domain::Id, EncodedRoute>;

/// One route as it is sent: prost's encoding of a [`wire::Route`], shared by the
/// table, the deltas, the audit's records and every reply (a clone is a reference
/// count). Encoding is deterministic (the one map, `group_roles`, is a `BTreeMap`),
/// so equal routes have equal bytes and the fold compares routes by their bytes.
///
/// An `Arc<[u8]>`, 16 bytes where it is held (the table, the fold's map of each
/// organization, deltas): `bytes::Bytes` would be 32, and 100,000 routes are held twice.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncodedRoute(Arc<[u8]>);

impl EncodedRoute {
    /// Encodes `route`.
    pub fn encode(route: &wire::Route) -> Self {
        Self(Arc::from(route.encode_to_vec()))
    }

    /// The encoded `signpost.routing.v1.Route`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length of the route written as the message field `tag` of an enclosing message.
    pub fn field_len(&self, tag: u32) -> usize {
        let len = self.0.len();
        prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
    }

    /// Writes the route as the message field `tag` of an enclosing message: the bytes
    /// prost writes for that field holding the decoded route.
    pub fn encode_field(&self, tag: u32, buf: &mut impl bytes::BufMut) {
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(self.0.len() as u64, buf);
        buf.put_slice(&self.0);
    }

    /// The route as a message (a copy: for tests, tools and the rare reader that
    /// needs its fields).
    pub fn decode(&self) -> wire::Route {
        wire::Route::decode(self.as_bytes()).expect("an encoded route decodes: we encoded it")
    }
}

impl std::fmt::Debug for EncodedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.decode().fmt(f)
    }
}

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
    let mut route = route_template(organization, connection, public_base_url);
    organization
        .verified_domains()
        .map(|domain| {
            route.domain.clear();
            route.domain.push_str(domain);
            (domain.clone(), EncodedRoute::encode(&route))
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
        organization_id: organization.id.to_string(),
        organization_external_id: organization.external_id.clone(),
        connection_id: connection.id.to_string(),
        protocol: connection.protocol() as i32,
        saml,
        oidc,
        claim_mapping: Some((*connection.claim_mapping).clone()),
        group_roles: connection
            .groups
            .iter()
            .map(|(g, r)| (g.clone(), r.clone()))
            .collect(),
        require_group: connection.require_group,
        sso_policy: organization.sso_policy as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ./:-]{0,24}"
    }

    prop_compose! {
        fn any_route()(
            domain in text(),
            organization_id in text(),
            connection_id in text(),
            protocol in 0..3i32,
            saml in proptest::option::of((text(), text(), 0..3i32, text(), any::<i64>())),
            group_roles in proptest::collection::vec((text(), text()), 0..6),
            require_group in any::<bool>(),
        ) -> wire::Route {
            wire::Route {
                domain,
                organization_id,
                connection_id,
                protocol,
                saml: saml.map(|(entity, url, binding, fingerprint, not_after_unix)| {
                    wire::SamlRoute {
                        idp_entity_id: entity,
                        idp_sso_url: url,
                        idp_sso_binding: binding,
                        signing_certificates: vec![wire::CertificateFingerprint {
                            sha256_fingerprint: fingerprint,
                            not_after_unix,
                        }],
                        ..Default::default()
                    }
                }),
                group_roles: group_roles.into_iter().collect(),
                require_group,
                ..Default::default()
            }
        }
    }

    proptest! {
        /// The bytes are prost's, they decode to the route, and as a field of an
        /// enclosing message they are what prost writes for the message field.
        #[test]
        fn encoded_routes_are_prosts_bytes(route in any_route(), tag in 1u32..40) {
            let encoded = EncodedRoute::encode(&route);
            prop_assert_eq!(encoded.as_bytes().to_vec(), route.encode_to_vec());
            prop_assert_eq!(encoded.decode(), route.clone());
            let mut field = Vec::new();
            encoded.encode_field(tag, &mut field);
            let mut expected = Vec::new();
            prost::encoding::message::encode(tag, &route, &mut expected);
            prop_assert_eq!(field.len(), encoded.field_len(tag));
            prop_assert_eq!(field, expected);
        }

        /// Equal routes have equal bytes however their group roles were gathered: the
        /// fold compares routes by their bytes, so a map written in another order would
        /// publish a change that is none.
        #[test]
        fn equal_routes_encode_equal(
            route in any_route(),
            roles in proptest::collection::hash_map(text(), text(), 0..8),
        ) {
            let mut forward = route.clone();
            forward.group_roles = roles.iter().map(|(g, r)| (g.clone(), r.clone())).collect();
            let mut backward = route;
            let mut reversed: Vec<_> = roles.into_iter().collect();
            reversed.sort();
            reversed.reverse();
            backward.group_roles = reversed.into_iter().collect();
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(EncodedRoute::encode(&forward), EncodedRoute::encode(&backward));
        }
    }
}
