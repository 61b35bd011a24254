//! How an organization's state becomes routes: one per verified domain when
//! the organization has an active, configured connection; none otherwise.

use std::sync::Arc;

use prost::encoding::{
    decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint, key_len, WireType,
};
use prost::Message;
use signpost_api::routing::v1 as wire;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::organization::Organization;
use signpost_domain::{schema, VecMap};
use signpost_idp::sp_metadata::{ACS_SUFFIX, OIDC_CALLBACK_SUFFIX, OIDC_PATH, SAML_PATH};
use signpost_idp::ServiceProviderUrls;

/// The routes of one organization, by domain, in domain order. A [`VecMap`]: the
/// routing fold keeps one per routed organization, and most route one domain.
pub type OrganizationRoutes = VecMap<signpost_domain::Id, EncodedRoute>;

/// One route as it is sent: prost's encoding of a [`wire::Route`], shared by the
/// table, the deltas, the audit's records and every reply (a clone is a reference
/// count). Encoding is deterministic (the one map, `group_roles`, is a `BTreeMap`, and
/// the fold writes it from the connection's sorted map in the same key order), so equal
/// routes have equal bytes and the fold compares routes by their bytes.
///
/// An `Arc<[u8]>`, 16 bytes where it is held (the table, the fold's map of each
/// organization, deltas): `bytes::Bytes` would be 32, and 100,000 routes are held twice.
///
/// Held without the URLs of our own side (the SAML SP entity id and ACS URL, the OIDC
/// redirect URI): they are the public base URL and the connection id put together
/// ([`ServiceProviderUrls`]), about a third of a route, so a route keeps the base URL's
/// number in a small process-wide list instead and they are written where the route is
/// ([`EncodedRoute::encode_field`], [`EncodedRoute::to_wire`]): the bytes sent are
/// still prost's, field for field. A route whose URLs are not the derived ones is kept
/// as it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncodedRoute(Arc<[u8]>);

/// The first byte of an [`EncodedRoute`]'s storage: the prost bytes follow as they are.
const VERBATIM: u8 = 0;
/// The first byte of a route whose `saml` message lacks `sp_entity_id` and `acs_url`
/// (then: the base URL's number, the offsets of the `saml` field and of the
/// `connection_id` field in the body, and the body).
const SAML_DERIVED: u8 = 1;
/// Like [`SAML_DERIVED`], for an `oidc` message without its `redirect_uri`.
const OIDC_DERIVED: u8 = 2;

/// The `saml` / `oidc` fields of a `Route`, and the URL fields of their messages.
const SAML_FIELD: u32 = 6;
const OIDC_FIELD: u32 = 7;
const CONNECTION_ID_FIELD: u32 = 4;
/// The key of a `Route`'s `domain` (field 1, length-delimited): its first byte when set.
const DOMAIN_KEY: u8 = 1 << 3 | 2;
/// The `Route` fields [`encode_tail`] writes.
const GROUP_ROLES_FIELD: u32 = 9;
const REQUIRE_GROUP_FIELD: u32 = 10;
const SSO_POLICY_FIELD: u32 = 11;
const SP_ENTITY_ID_FIELD: u32 = 5;
const ACS_URL_FIELD: u32 = 6;
const REDIRECT_URI_FIELD: u32 = 5;

/// The public base URLs routes refer to by number (one per server; a test process runs
/// a few). Append-only, and bounded: past [`MAX_BASES`], routes are kept verbatim.
mod bases {
    use std::sync::RwLock;

    static BASES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

    /// More distinct base URLs than a process has any use for.
    const MAX_BASES: usize = 64;

    /// The number of `base` (`None`: the list is full).
    pub(super) fn intern(base: &str) -> Option<u64> {
        let find = |bases: &[&'static str]| bases.iter().position(|b| *b == base);
        if let Some(index) = find(&BASES.read().expect("bases lock")) {
            return Some(index as u64);
        }
        let mut bases = BASES.write().expect("bases lock");
        if let Some(index) = find(&bases) {
            return Some(index as u64);
        }
        if bases.len() >= MAX_BASES {
            return None;
        }
        bases.push(Box::leak(base.to_owned().into_boxed_str()));
        Some(bases.len() as u64 - 1)
    }

    /// The base URL numbered `index` by [`intern`].
    pub(super) fn get(index: u64) -> &'static str {
        BASES.read().expect("bases lock")[index as usize]
    }
}

/// A stored route, read back.
enum Stored<'a> {
    Verbatim(&'a [u8]),
    Derived(Derived<'a>),
}

/// A route kept without its derived URLs.
struct Derived<'a> {
    saml: bool,
    base: &'static str,
    /// UTF-8 (it was a `String`), written as it is.
    connection_id: &'a [u8],
    /// The body up to the `saml` / `oidc` field, that field's message, the rest.
    head: &'a [u8],
    message: &'a [u8],
    tail: &'a [u8],
}

impl Derived<'_> {
    /// The derived fields' bytes, appended to the message (they are its last fields).
    fn extra_len(&self) -> usize {
        let url = self.base.len() + self.connection_id.len();
        if self.saml {
            let entity_id = url + SAML_PATH.len();
            string_field_len(SP_ENTITY_ID_FIELD, entity_id)
                + string_field_len(ACS_URL_FIELD, entity_id + ACS_SUFFIX.len())
        } else {
            string_field_len(
                REDIRECT_URI_FIELD,
                url + OIDC_PATH.len() + OIDC_CALLBACK_SUFFIX.len(),
            )
        }
    }

    fn message_len(&self) -> usize {
        self.message.len() + self.extra_len()
    }

    fn wire_len(&self) -> usize {
        let message = self.message_len();
        self.head.len() + 1 + encoded_len_varint(message as u64) + message + self.tail.len()
    }

    fn write(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(self.head);
        let tag = if self.saml { SAML_FIELD } else { OIDC_FIELD };
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.message_len() as u64, buf);
        buf.put_slice(self.message);
        let (base, id) = (self.base.as_bytes(), self.connection_id);
        if self.saml {
            let path = SAML_PATH.as_bytes();
            put_text(buf, SP_ENTITY_ID_FIELD, &[base, path, id]);
            put_text(buf, ACS_URL_FIELD, &[base, path, id, ACS_SUFFIX.as_bytes()]);
        } else {
            let (path, callback) = (OIDC_PATH.as_bytes(), OIDC_CALLBACK_SUFFIX.as_bytes());
            put_text(buf, REDIRECT_URI_FIELD, &[base, path, id, callback]);
        }
        buf.put_slice(self.tail);
    }
}

/// Appends prost's bytes of `route` followed by `tail` (its fields 9 to 11, when `route`
/// leaves them at their defaults: see [`encode_tail`]).
fn put_body(out: &mut Vec<u8>, route: &wire::Route, tail: &[u8]) {
    out.reserve(route.encoded_len() + tail.len());
    route.encode(out).expect("a Vec grows");
    out.extend_from_slice(tail);
}

/// Writes the string field `tag` holding `parts` put together.
fn put_text(buf: &mut impl bytes::BufMut, tag: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    for part in parts {
        buf.put_slice(part);
    }
}

fn string_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Reads a varint the route's storage holds (we wrote it).
fn stored_varint(bytes: &mut &[u8]) -> u64 {
    decode_varint(bytes).expect("a stored route's header decodes: we wrote it")
}

/// The offsets in `body` (prost's bytes of a `Route`) of its `connection_id` field and
/// of its field `message_tag`.
fn field_offsets(body: &[u8], message_tag: u32) -> Option<(usize, usize)> {
    let mut rest = body;
    let (mut connection_id, mut message) = (None, None);
    while !rest.is_empty() {
        let offset = body.len() - rest.len();
        let (tag, wire_type) = decode_key(&mut rest).ok()?;
        if tag == CONNECTION_ID_FIELD {
            connection_id = Some(offset);
        } else if tag == message_tag {
            message = Some(offset);
        }
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).ok()?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
                rest = rest.get(len..)?;
            }
            _ => return None,
        }
    }
    Some((connection_id?, message?))
}

/// The length-delimited field at the start of `bytes`: (its contents, the bytes after it).
fn split_field(mut bytes: &[u8]) -> (&[u8], &[u8]) {
    decode_key(&mut bytes).expect("a stored route's field decodes: we wrote it");
    let len = stored_varint(&mut bytes) as usize;
    bytes.split_at(len)
}

/// `route` without its own URLs (`sp_entity_id` and `acs_url`, or `redirect_uri`).
fn without_urls(route: &wire::Route) -> wire::Route {
    let mut route = route.clone();
    if let Some(saml) = route.saml.as_mut() {
        saml.sp_entity_id.clear();
        saml.acs_url.clear();
    }
    if let Some(oidc) = route.oidc.as_mut() {
        oidc.redirect_uri.clear();
    }
    route
}

impl EncodedRoute {
    /// Encodes `route`.
    pub fn encode(route: &wire::Route) -> Self {
        let base = match (&route.saml, &route.oidc) {
            (Some(saml), None) => saml
                .sp_entity_id
                .strip_suffix(route.connection_id.as_str())
                .and_then(|rest| rest.strip_suffix(SAML_PATH))
                .filter(|_| {
                    saml.acs_url.strip_suffix(ACS_SUFFIX) == Some(saml.sp_entity_id.as_str())
                }),
            (None, Some(oidc)) => oidc
                .redirect_uri
                .strip_suffix(OIDC_CALLBACK_SUFFIX)
                .and_then(|rest| rest.strip_suffix(route.connection_id.as_str()))
                .and_then(|rest| rest.strip_suffix(OIDC_PATH)),
            _ => None,
        };
        match base {
            Some(base) if !route.connection_id.is_empty() => {
                Self::derived_or_verbatim(&without_urls(route), &[], base)
                    .unwrap_or_else(|| Self::verbatim(route, &[]))
            }
            _ => Self::verbatim(route, &[]),
        }
    }

    /// Encodes `route`, whose own URLs (`sp_entity_id` and `acs_url`, or `redirect_uri`)
    /// are left empty, as if they were set from `public_base_url` and its connection id.
    pub fn with_service_provider_urls(route: &wire::Route, public_base_url: &str) -> Self {
        Self::with_urls_and_tail(route, &[], public_base_url)
    }

    /// [`EncodedRoute::with_service_provider_urls`] of `head` with `tail` (fields 9 to 11
    /// as [`encode_tail`] writes them; `head` leaves them at their defaults) after it:
    /// the bytes prost writes for the whole route.
    fn with_urls_and_tail(head: &wire::Route, tail: &[u8], public_base_url: &str) -> Self {
        let base = public_base_url.trim_end_matches('/');
        Self::derived_or_verbatim(head, tail, base).unwrap_or_else(|| {
            let urls = ServiceProviderUrls::for_connection(base, &head.connection_id);
            let mut route = head.clone();
            if let Some(saml) = route.saml.as_mut() {
                saml.sp_entity_id = urls.entity_id;
                saml.acs_url = urls.acs_url;
            }
            if let Some(oidc) = route.oidc.as_mut() {
                oidc.redirect_uri = urls.oidc_redirect_uri;
            }
            Self::verbatim(&route, tail)
        })
    }

    fn verbatim(route: &wire::Route, tail: &[u8]) -> Self {
        let mut bytes = vec![VERBATIM];
        put_body(&mut bytes, route, tail);
        Self(Arc::from(bytes))
    }

    /// `route` (its derived URLs empty) kept without them; `None` when that cannot be:
    /// no connection id, neither or both protocol messages, or too many base URLs.
    fn derived_or_verbatim(route: &wire::Route, tail: &[u8], base: &str) -> Option<Self> {
        let (form, tag) = match (&route.saml, &route.oidc) {
            (Some(_), None) => (SAML_DERIVED, SAML_FIELD),
            (None, Some(_)) => (OIDC_DERIVED, OIDC_FIELD),
            (None, None) => return Some(Self::verbatim(route, tail)),
            (Some(_), Some(_)) => return None,
        };
        if route.connection_id.is_empty() {
            return None;
        }
        let mut body = Vec::new();
        put_body(&mut body, route, tail);
        let (connection_at, message_at) = field_offsets(&body, tag)?;
        let index = bases::intern(base)?;
        let mut bytes = Vec::with_capacity(body.len() + 8);
        bytes.push(form);
        encode_varint(index, &mut bytes);
        encode_varint(message_at as u64, &mut bytes);
        encode_varint(connection_at as u64, &mut bytes);
        bytes.extend_from_slice(&body);
        Some(Self(Arc::from(bytes)))
    }

    fn stored(&self) -> Stored<'_> {
        let (&form, mut rest) = self.0.split_first().expect("a stored route has a header");
        if form == VERBATIM {
            return Stored::Verbatim(rest);
        }
        let base = bases::get(stored_varint(&mut rest));
        let message_at = stored_varint(&mut rest) as usize;
        let connection_at = stored_varint(&mut rest) as usize;
        let body = rest;
        let (connection_id, _) = split_field(&body[connection_at..]);
        let (message, tail) = split_field(&body[message_at..]);
        Stored::Derived(Derived {
            saml: form == SAML_DERIVED,
            base,
            connection_id,
            head: &body[..message_at],
            message,
            tail,
        })
    }

    /// The route's domain, read from its encoding (prost writes it first, as field 1).
    pub fn domain(&self) -> &[u8] {
        let (&form, mut body) = self.0.split_first().expect("a stored route has a header");
        if form != VERBATIM {
            // The base URL's number and the two offsets come before the body.
            for _ in 0..3 {
                stored_varint(&mut body);
            }
        }
        match body.split_first() {
            Some((&DOMAIN_KEY, mut rest)) => {
                let len = stored_varint(&mut rest) as usize;
                &rest[..len]
            }
            _ => &[],
        }
    }

    /// Length of prost's encoding of the route.
    pub fn wire_len(&self) -> usize {
        match self.stored() {
            Stored::Verbatim(bytes) => bytes.len(),
            Stored::Derived(derived) => derived.wire_len(),
        }
    }

    /// Writes prost's encoding of the route.
    pub fn write_wire(&self, buf: &mut impl bytes::BufMut) {
        match self.stored() {
            Stored::Verbatim(bytes) => buf.put_slice(bytes),
            Stored::Derived(derived) => derived.write(buf),
        }
    }

    /// Prost's encoding of the route, in a buffer of its own.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.wire_len());
        self.write_wire(&mut bytes);
        bytes
    }

    /// Length of the route written as the message field `tag` of an enclosing message.
    pub fn field_len(&self, tag: u32) -> usize {
        let len = self.wire_len();
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    /// Writes the route as the message field `tag` of an enclosing message: the bytes
    /// prost writes for that field holding the decoded route.
    pub fn encode_field(&self, tag: u32, buf: &mut impl bytes::BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        match self.stored() {
            Stored::Verbatim(bytes) => {
                encode_varint(bytes.len() as u64, buf);
                buf.put_slice(bytes);
            }
            Stored::Derived(derived) => {
                encode_varint(derived.wire_len() as u64, buf);
                derived.write(buf);
            }
        }
    }

    /// The route as a message (a copy: for tests, tools and the rare reader that
    /// needs its fields).
    pub fn decode(&self) -> wire::Route {
        wire::Route::decode(self.to_wire().as_slice())
            .expect("an encoded route decodes: we encoded it")
    }

    /// The route with its fields 9 to 11 (`group_roles`, `require_group`, `sso_policy`)
    /// replaced by `tail`, written by [`encode_tail`]: every other byte is kept as it is.
    /// Prost writes a message's fields in the order of their numbers, so those three are
    /// the last bytes of the body, after every offset the header holds.
    fn with_tail(&self, tail: &[u8]) -> Self {
        let (&form, mut body) = self.0.split_first().expect("a stored route has a header");
        if form != VERBATIM {
            // The base URL's number and the two offsets come before the body.
            for _ in 0..3 {
                stored_varint(&mut body);
            }
        }
        let kept = self.0.len() - body.len() + tail_offset(body);
        let mut bytes = Vec::with_capacity(kept + tail.len());
        bytes.extend_from_slice(&self.0[..kept]);
        bytes.extend_from_slice(tail);
        Self(Arc::from(bytes))
    }

    /// Bytes the route takes where it is held (for tests of its size).
    pub fn stored_len(&self) -> usize {
        self.0.len()
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
    let mut route = route_template(organization, connection);
    let tail = group_fields(organization, connection);
    organization
        .verified_domains()
        .map(|domain| {
            route.domain.clear();
            route.domain.push_str(domain);
            let encoded = EncodedRoute::with_urls_and_tail(&route, &tail, public_base_url);
            (domain.clone(), encoded)
        })
        .collect()
}

/// The offset in `body` (prost's bytes of a `Route`, as a stored route holds them) of
/// its first field numbered [`GROUP_ROLES_FIELD`] or above; its length when it has none.
fn tail_offset(body: &[u8]) -> usize {
    let mut rest = body;
    while !rest.is_empty() {
        let offset = body.len() - rest.len();
        let (tag, wire_type) = decode_key(&mut rest).expect("a stored route's field decodes");
        if tag >= GROUP_ROLES_FIELD {
            return offset;
        }
        match wire_type {
            WireType::Varint => {
                stored_varint(&mut rest);
            }
            WireType::LengthDelimited => {
                let len = stored_varint(&mut rest) as usize;
                rest = &rest[len..];
            }
            _ => unreachable!("a Route's fields up to claim_mapping are varints or messages"),
        }
    }
    body.len()
}

/// The routes of `organization` after an event that changed nothing but the group roles
/// or the group requirement of `connection`, its active connection: each of `routes`
/// (what [`organization_routes`] computed before the event) with fields 9 to 11 written
/// again ([`EncodedRoute`]'s tail). Equal to what [`organization_routes`] computes after
/// the event, since nothing before field 9 depends on groups, without decoding the
/// connection's IdP settings or encoding the rest of each route again. Calls `changed`
/// with each route whose bytes changed.
pub fn rewrite_group_fields(
    routes: &mut OrganizationRoutes,
    organization: &Organization,
    connection: &Connection,
    mut changed: impl FnMut(&signpost_domain::Id, &EncodedRoute),
) {
    let tail = group_fields(organization, connection);
    for (domain, route) in routes.iter_mut() {
        let regrouped = route.with_tail(&tail);
        if regrouped != *route {
            *route = regrouped;
            changed(domain, route);
        }
    }
}

/// Fields 9 to 11 of the routes of `organization` through `connection` ([`encode_tail`]):
/// the group roles written from the connection's own map (sorted like prost's), instead
/// of copied into the message's `BTreeMap` for every route of every change.
fn group_fields(organization: &Organization, connection: &Connection) -> Vec<u8> {
    let mut tail = Vec::new();
    encode_tail(
        connection
            .groups
            .iter()
            .map(|(g, r)| (g.as_str(), r.as_str())),
        connection.require_group,
        organization.sso_policy as i32,
        &mut tail,
    );
    tail
}

/// The fields after `claim_mapping` (8) of a `Route`: `group_roles` (9),
/// `require_group` (10) and `sso_policy` (11), as prost writes them (map entries in
/// key order, each without its key or value when that is empty; defaults left out).
fn encode_tail<'a>(
    group_roles: impl Iterator<Item = (&'a str, &'a str)>,
    require_group: bool,
    sso_policy: i32,
    out: &mut Vec<u8>,
) {
    // A map entry: key (1) and value (2), each left out when empty.
    let present = |text: &str| !text.is_empty();
    for (group, role) in group_roles {
        let entry = [(1, group), (2, role)];
        let len: usize = entry
            .iter()
            .filter(|(_, text)| present(text))
            .map(|(tag, text)| string_field_len(*tag, text.len()))
            .sum();
        encode_key(GROUP_ROLES_FIELD, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        for (tag, text) in entry.into_iter().filter(|(_, text)| present(text)) {
            put_text(out, tag, &[text.as_bytes()]);
        }
    }
    if require_group {
        prost::encoding::bool::encode(REQUIRE_GROUP_FIELD, &true, out);
    }
    if sso_policy != 0 {
        prost::encoding::int32::encode(SSO_POLICY_FIELD, &sso_policy, out);
    }
}

/// The route of `connection` for `organization`, without a domain, without our own
/// URLs (set by [`EncodedRoute::with_service_provider_urls`]), and without fields 9 to
/// 11 ([`encode_tail`] writes them).
fn route_template(organization: &Organization, connection: &Connection) -> wire::Route {
    let (saml, oidc) = match &connection.settings {
        Some(ConnectionSettings::Saml(saml)) => {
            let saml = saml.settings();
            let endpoint = saml
                .sso_endpoints
                .iter()
                .find(|e| e.binding() == schema::SamlBinding::HttpRedirect)
                .or_else(|| saml.sso_endpoints.first());
            let saml = wire::SamlRoute {
                idp_sso_url: endpoint.map(|e| e.location.clone()).unwrap_or_default(),
                idp_sso_binding: endpoint.map(|e| e.binding).unwrap_or_default(),
                idp_entity_id: saml.idp_entity_id,
                signing_certificates: saml
                    .signing_certificates
                    .into_iter()
                    .map(|cert| wire::CertificateFingerprint {
                        sha256_fingerprint: cert.sha256_fingerprint,
                        not_after_unix: cert
                            .not_after
                            .as_ref()
                            .map(|t| t.seconds)
                            .unwrap_or_default(),
                    })
                    .collect(),
                sp_entity_id: String::new(),
                acs_url: String::new(),
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
                redirect_uri: String::new(),
            };
            (None, Some(oidc))
        }
        None => (None, None),
    };
    wire::Route {
        domain: String::new(),
        organization_id: organization.id.to_string(),
        organization_external_id: organization.external_id.to_string(),
        connection_id: connection.id.to_string(),
        protocol: connection.protocol() as i32,
        saml,
        oidc,
        claim_mapping: Some((*connection.claim_mapping).clone()),
        // Fields 9 to 11 follow as bytes ([`encode_tail`]).
        group_roles: Default::default(),
        require_group: false,
        sso_policy: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ./:-]{0,24}"
    }

    /// How a generated route's own URLs are set.
    #[derive(Debug, Clone, Copy)]
    enum Urls {
        /// Empty.
        None,
        /// Derived from a base URL and the connection id.
        Derived(usize),
        /// Something else.
        Other,
    }

    const BASES: [&str; 3] = [
        "https://signpost.test",
        "http://127.0.0.1:8080/prefix",
        "https://sso.example.com:8443",
    ];

    fn urls() -> impl Strategy<Value = Urls> {
        prop_oneof![
            Just(Urls::None),
            (0..BASES.len()).prop_map(Urls::Derived),
            Just(Urls::Other),
        ]
    }

    prop_compose! {
        fn any_route()(
            domain in text(),
            organization_id in text(),
            connection_id in text(),
            protocol in 0..3i32,
            saml in proptest::option::of((text(), text(), 0..3i32, text(), any::<i64>())),
            oidc in proptest::option::of((text(), text(), proptest::collection::vec(text(), 0..3))),
            urls in urls(),
            group_roles in proptest::collection::vec((text(), text()), 0..6),
            require_group in any::<bool>(),
            sso_policy in 0..3i32,
        ) -> wire::Route {
            let derived = match urls {
                Urls::Derived(base) => {
                    Some(ServiceProviderUrls::for_connection(BASES[base], &connection_id))
                }
                Urls::Other => Some(ServiceProviderUrls {
                    entity_id: format!("urn:{connection_id}"),
                    acs_url: format!("https://acs.example/{connection_id}"),
                    oidc_redirect_uri: "https://other.example/callback".to_owned(),
                }),
                Urls::None => None,
            }
            .unwrap_or(ServiceProviderUrls {
                entity_id: String::new(),
                acs_url: String::new(),
                oidc_redirect_uri: String::new(),
            });
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
                        sp_entity_id: derived.entity_id.clone(),
                        acs_url: derived.acs_url.clone(),
                    }
                }),
                oidc: oidc.map(|(issuer, client_id, scopes)| wire::OidcRoute {
                    issuer,
                    authorization_endpoint: "https://idp.example/authorize".to_owned(),
                    client_id,
                    scopes,
                    redirect_uri: derived.oidc_redirect_uri.clone(),
                }),
                group_roles: group_roles.into_iter().collect(),
                require_group,
                sso_policy,
                ..Default::default()
            }
        }
    }

    proptest! {
        /// The bytes written are prost's, they decode to the route, and as a field of an
        /// enclosing message they are what prost writes for the message field, whether
        /// the route's own URLs are derived (and kept out of its storage) or not.
        #[test]
        fn encoded_routes_write_prosts_bytes(route in any_route(), tag in 1u32..40) {
            let encoded = EncodedRoute::encode(&route);
            let expected = route.encode_to_vec();
            prop_assert_eq!(encoded.to_wire(), expected.clone());
            prop_assert_eq!(encoded.wire_len(), expected.len());
            prop_assert_eq!(encoded.decode(), route.clone());
            prop_assert_eq!(encoded.domain(), route.domain.as_bytes());
            let mut field = Vec::new();
            encoded.encode_field(tag, &mut field);
            let mut expected = Vec::new();
            prost::encoding::message::encode(tag, &route, &mut expected);
            prop_assert_eq!(field.len(), encoded.field_len(tag));
            prop_assert_eq!(field, expected);
        }

        /// A route whose URLs are derived from a base URL is held without them (smaller
        /// by about their length), and encoding it from a template without them (as the
        /// routing fold does) gives the same route.
        #[test]
        fn derived_urls_are_not_held(route in any_route(), base in 0..BASES.len()) {
            let template = without_urls(&route);
            let derived = EncodedRoute::with_service_provider_urls(&template, BASES[base]);
            let urls = ServiceProviderUrls::for_connection(BASES[base], &route.connection_id);
            let mut full = template.clone();
            if let Some(saml) = full.saml.as_mut() {
                saml.sp_entity_id = urls.entity_id.clone();
                saml.acs_url = urls.acs_url.clone();
            }
            if let Some(oidc) = full.oidc.as_mut() {
                oidc.redirect_uri = urls.oidc_redirect_uri.clone();
            }
            prop_assert_eq!(derived.to_wire(), full.encode_to_vec());
            prop_assert_eq!(&derived, &EncodedRoute::encode(&full));
            prop_assert_eq!(derived.domain(), route.domain.as_bytes());
            let one_protocol = full.saml.is_some() != full.oidc.is_some();
            if one_protocol && !full.connection_id.is_empty() {
                let urls_len = if full.saml.is_some() {
                    urls.entity_id.len() + urls.acs_url.len()
                } else {
                    urls.oidc_redirect_uri.len()
                };
                prop_assert!(
                    derived.stored_len() + urls_len <= full.encoded_len() + 8,
                    "held {} bytes for a route of {}",
                    derived.stored_len(),
                    full.encoded_len()
                );
            }
        }

        /// A route encoded as the fold encodes it (its fields 9 to 11 written by
        /// `encode_tail` after the rest) is the route with them as prost holds them, URLs
        /// derived or not: same stored bytes, same wire bytes. `text()` makes empty
        /// groups and roles too, which prost leaves out of a map entry; negative
        /// policies take ten-byte varints.
        #[test]
        fn a_route_with_its_tail_written_as_bytes_is_prosts(
            route in any_route(),
            base in 0..BASES.len(),
            sso_policy in prop_oneof![Just(0), Just(1), Just(-3), any::<i32>()],
        ) {
            let mut full = without_urls(&route);
            full.sso_policy = sso_policy;
            let mut head = full.clone();
            head.group_roles.clear();
            head.require_group = false;
            head.sso_policy = 0;
            let mut tail = Vec::new();
            encode_tail(
                full.group_roles.iter().map(|(g, r)| (g.as_str(), r.as_str())),
                full.require_group,
                full.sso_policy,
                &mut tail,
            );
            let with_tail = EncodedRoute::with_urls_and_tail(&head, &tail, BASES[base]);
            let whole = EncodedRoute::with_service_provider_urls(&full, BASES[base]);
            prop_assert_eq!(&with_tail, &whole);
            prop_assert_eq!(with_tail.to_wire(), whole.to_wire());
            let mut expected_tail = full.encode_to_vec();
            let head_bytes = head.encode_to_vec();
            prop_assert_eq!(&expected_tail[..head_bytes.len()], &head_bytes[..]);
            prop_assert_eq!(expected_tail.split_off(head_bytes.len()), tail);
        }

        /// A route's group fields written again (`with_tail`, as the fold does after a
        /// group event) give the route encoded whole with those fields, whether its URLs
        /// are derived or kept verbatim, with or without a claim mapping (field 8, the
        /// last field kept).
        #[test]
        fn a_route_with_its_group_fields_rewritten_is_the_route_encoded_whole(
            route in any_route(),
            groups_from in any_route(),
            claim_email in proptest::option::of(text()),
            base in proptest::option::of(0..BASES.len()),
        ) {
            let mut before = route;
            before.claim_mapping = claim_email.map(|email| signpost_domain::schema::ClaimMapping {
                email,
                ..Default::default()
            });
            let mut after = before.clone();
            after.group_roles = groups_from.group_roles;
            after.require_group = groups_from.require_group;
            after.sso_policy = groups_from.sso_policy;
            let mut tail = Vec::new();
            encode_tail(
                after.group_roles.iter().map(|(g, r)| (g.as_str(), r.as_str())),
                after.require_group,
                after.sso_policy,
                &mut tail,
            );
            let encode = |route: &wire::Route| match base {
                Some(base) => {
                    EncodedRoute::with_service_provider_urls(&without_urls(route), BASES[base])
                }
                None => EncodedRoute::encode(route),
            };
            let rewritten = encode(&before).with_tail(&tail);
            prop_assert_eq!(&rewritten, &encode(&after));
            prop_assert_eq!(rewritten.to_wire(), encode(&after).to_wire());
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
