//! Reading an encoded `signpost.routing.v1.Route` in place, without decoding it.
//!
//! The edge keeps every route as the protobuf bytes the control plane sent
//! (see [`crate::route`]). [`RouteFields::read`] walks those bytes once and
//! returns the fields the sign-in path needs as slices of them. It refuses
//! exactly what `prost` refuses when decoding a `Route` (bad keys and wire
//! types, truncated or overlong fields, invalid UTF-8 in any string, nesting
//! deeper than prost's recursion limit), so bytes it accepts always decode
//! with `wire::Route::decode`; property tests check both directions. Field
//! values follow prost's rules too: the last occurrence of a field wins, and
//! unknown fields are skipped.
//!
//! The schema below must follow `proto/signpost/routing/v1/routing.proto`; a
//! test compares it with the descriptor set of `signpost-api`.

use prost::encoding::{decode_key, decode_varint, WireType};

/// Nesting prost allows when decoding a message (its `RECURSION_LIMIT`).
const RECURSION_LIMIT: u32 = 100;

/// How a field of a known message is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// `string` (or `repeated string`): length-delimited UTF-8.
    Text,
    /// An enum, `bool` or integer: a varint.
    Varint,
    /// A message (or `repeated` message) with these fields.
    Message(&'static [(u32, FieldType)]),
    /// `map<string, string>`: each entry a message of a `key = 1` and a
    /// `value = 2` string.
    TextMap,
}

use FieldType::{Message, Text, TextMap, Varint};

/// `signpost.routing.v1.Route`.
pub(crate) const ROUTE: &[(u32, FieldType)] = &[
    (1, Text),                   // domain
    (2, Text),                   // organization_id
    (3, Text),                   // organization_external_id
    (4, Text),                   // connection_id
    (5, Varint),                 // protocol
    (6, Message(SAML_ROUTE)),    // saml
    (7, Message(OIDC_ROUTE)),    // oidc
    (8, Message(CLAIM_MAPPING)), // claim_mapping
    (9, TextMap),                // group_roles
    (10, Varint),                // require_group
    (11, Varint),                // sso_policy
];

/// `signpost.routing.v1.SamlRoute`.
pub(crate) const SAML_ROUTE: &[(u32, FieldType)] = &[
    (1, Text),                             // idp_entity_id
    (2, Text),                             // idp_sso_url
    (3, Varint),                           // idp_sso_binding
    (4, Message(CERTIFICATE_FINGERPRINT)), // signing_certificates
    (5, Text),                             // sp_entity_id
    (6, Text),                             // acs_url
];

/// `signpost.routing.v1.CertificateFingerprint`.
pub(crate) const CERTIFICATE_FINGERPRINT: &[(u32, FieldType)] = &[
    (1, Text),   // sha256_fingerprint
    (2, Varint), // not_after_unix
];

/// `signpost.routing.v1.OidcRoute`.
pub(crate) const OIDC_ROUTE: &[(u32, FieldType)] = &[
    (1, Text), // issuer
    (2, Text), // authorization_endpoint
    (3, Text), // client_id
    (4, Text), // scopes (repeated)
    (5, Text), // redirect_uri
];

/// `signpost.log.v1.ClaimMapping`.
pub(crate) const CLAIM_MAPPING: &[(u32, FieldType)] = &[
    (1, Text), // email
    (2, Text), // given_name
    (3, Text), // family_name
    (4, Text), // groups
];

/// Why encoded bytes are not a valid `Route` (prost refuses them too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub(crate) String);

impl Malformed {
    fn new(reason: &str) -> Self {
        Malformed(reason.to_owned())
    }
}

impl From<prost::DecodeError> for Malformed {
    fn from(error: prost::DecodeError) -> Self {
        Malformed(error.to_string())
    }
}

/// One field value of the message being read (nested messages are reported
/// as their bytes, then read themselves).
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    /// A string field's bytes, checked to be UTF-8 (see [`text`]).
    Str(&'a [u8]),
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The text of a [`Value::Str`] (checked when it was read; only the fields
/// the edge uses pay for the conversion).
fn text(checked: &[u8]) -> &str {
    std::str::from_utf8(checked).unwrap_or_default()
}

/// A cursor over encoded bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn key(&mut self) -> Result<(u32, WireType), Malformed> {
        // Keys of tags 1 to 15 are one byte: read those here, the rest with prost.
        if let Some((&key, rest)) = self.bytes.split_first() {
            if (1 << 3..0x80).contains(&key) {
                let wire_type = WireType::try_from(u64::from(key & 0x07))?;
                self.bytes = rest;
                return Ok((u32::from(key >> 3), wire_type));
            }
        }
        Ok(decode_key(&mut self.bytes)?)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        // Lengths under 128 and small numbers are one byte.
        if let Some((&byte, rest)) = self.bytes.split_first() {
            if byte < 0x80 {
                self.bytes = rest;
                return Ok(u64::from(byte));
            }
        }
        Ok(decode_varint(&mut self.bytes)?)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.bytes.len())
            .ok_or_else(|| Malformed::new("a field runs past the end of its message"))?;
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.varint()?;
        self.take(len)
    }

    /// Skips an unknown field like `prost::encoding::skip_field`.
    fn skip(&mut self, wire_type: WireType, tag: u32, depth: u32) -> Result<(), Malformed> {
        if depth == 0 {
            return Err(Malformed::new("fields are nested too deeply"));
        }
        match wire_type {
            WireType::Varint => {
                self.varint()?;
            }
            WireType::ThirtyTwoBit => {
                self.take(4)?;
            }
            WireType::SixtyFourBit => {
                self.take(8)?;
            }
            WireType::LengthDelimited => {
                self.length_delimited()?;
            }
            WireType::StartGroup => loop {
                let (inner_tag, inner_wire_type) = self.key()?;
                if inner_wire_type == WireType::EndGroup {
                    if inner_tag != tag {
                        return Err(Malformed::new("a group ends with another tag"));
                    }
                    break;
                }
                self.skip(inner_wire_type, inner_tag, depth - 1)?;
            },
            WireType::EndGroup => return Err(Malformed::new("a group ends that never started")),
        }
        Ok(())
    }
}

fn expect_wire_type(actual: WireType, expected: WireType) -> Result<(), Malformed> {
    if actual == expected {
        Ok(())
    } else {
        Err(Malformed(format!(
            "a field has wire type {actual:?} where {expected:?} is expected"
        )))
    }
}

/// Reads every field of one message with `fields`, the way prost's
/// `merge_field` does at recursion budget `depth`: known fields are checked
/// against their type (nested messages recursively), unknown ones skipped.
/// `visit` sees the fields of this message only, in order.
fn read_message<'a, V: FnMut(u32, Value<'a>)>(
    bytes: &'a [u8],
    fields: &[(u32, FieldType)],
    depth: u32,
    visit: &mut V,
) -> Result<(), Malformed> {
    let mut reader = Reader { bytes };
    while !reader.is_empty() {
        let (tag, wire_type) = reader.key()?;
        let Some(&(_, field_type)) = fields.iter().find(|(known, _)| *known == tag) else {
            reader.skip(wire_type, tag, depth)?;
            continue;
        };
        match field_type {
            FieldType::Text => {
                expect_wire_type(wire_type, WireType::LengthDelimited)?;
                let bytes = reader.length_delimited()?;
                if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
                    return Err(Malformed::new("a string field is not UTF-8"));
                }
                visit(tag, Value::Str(bytes));
            }
            FieldType::Varint => {
                expect_wire_type(wire_type, WireType::Varint)?;
                visit(tag, Value::Varint(reader.varint()?));
            }
            FieldType::Message(inner) => {
                expect_wire_type(wire_type, WireType::LengthDelimited)?;
                if depth == 0 {
                    return Err(Malformed::new("messages are nested too deeply"));
                }
                let message = reader.length_delimited()?;
                read_message(message, inner, depth - 1, &mut ignore)?;
                visit(tag, Value::Bytes(message));
            }
            FieldType::TextMap => {
                expect_wire_type(wire_type, WireType::LengthDelimited)?;
                if depth == 0 {
                    return Err(Malformed::new("messages are nested too deeply"));
                }
                let entry = reader.length_delimited()?;
                read_message(entry, MAP_ENTRY, depth - 1, &mut ignore)?;
            }
        }
    }
    Ok(())
}

/// A `map<string, string>` entry.
const MAP_ENTRY: &[(u32, FieldType)] = &[(1, Text), (2, Text)];

/// The visitor of nested messages that are only checked.
fn ignore(_: u32, _: Value<'_>) {}

/// The fields of an encoded route that the edge uses, borrowed from it.
/// Absent fields read as their protobuf defaults (empty, zero).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteFields<'a> {
    pub domain: &'a str,
    pub organization_id: &'a str,
    pub organization_external_id: &'a str,
    pub connection_id: &'a str,
    pub protocol: i32,
    pub sso_policy: i32,
    /// The `saml` message, when present (even empty).
    pub saml: Option<SamlFields<'a>>,
    /// The `oidc` message, when present (even empty).
    pub oidc: Option<OidcFields<'a>>,
    /// Whether the bytes are in the form [`crate::route::Route`] stores: the
    /// domain is the first field and occurs once, `saml` and `oidc` at most
    /// once each (so a lookup finds the domain at a fixed place, and no
    /// message needs merging). Every encoder that writes fields in tag order,
    /// prost included, produces it.
    pub canonical: bool,
}

/// The SAML fields the edge uses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SamlFields<'a> {
    pub idp_sso_url: &'a str,
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
}

/// The OIDC fields the edge uses.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OidcFields<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The encoded `OidcRoute`, to read the (repeated) scopes from.
    pub encoded: &'a [u8],
}

impl<'a> OidcFields<'a> {
    /// The `scopes`, in order.
    pub fn scopes(&self) -> Vec<&'a str> {
        let mut scopes = Vec::new();
        // The bytes were read once already, so this cannot fail.
        let _ = read_message(
            self.encoded,
            OIDC_ROUTE,
            RECURSION_LIMIT,
            &mut |tag, value| {
                if let (4, Value::Str(scope)) = (tag, value) {
                    scopes.push(text(scope));
                }
            },
        );
        scopes
    }
}

impl<'a> RouteFields<'a> {
    /// Reads (and fully checks) an encoded `Route`.
    pub fn read(encoded: &'a [u8]) -> Result<RouteFields<'a>, Malformed> {
        let mut fields = RouteFields::default();
        let (mut domains, mut samls, mut oidcs) = (0, 0, 0);
        let mut saml_bytes = None;
        let mut oidc_bytes = None;
        read_message(encoded, ROUTE, RECURSION_LIMIT, &mut |tag, value| {
            match (tag, value) {
                (1, Value::Str(bytes)) => {
                    domains += 1;
                    fields.domain = text(bytes);
                }
                (2, Value::Str(bytes)) => fields.organization_id = text(bytes),
                (3, Value::Str(bytes)) => fields.organization_external_id = text(bytes),
                (4, Value::Str(bytes)) => fields.connection_id = text(bytes),
                // prost reads an `int32` by truncating the varint.
                (5, Value::Varint(number)) => fields.protocol = number as i32,
                (6, Value::Bytes(message)) => {
                    samls += 1;
                    saml_bytes = Some(message);
                }
                (7, Value::Bytes(message)) => {
                    oidcs += 1;
                    oidc_bytes = Some(message);
                }
                (11, Value::Varint(number)) => fields.sso_policy = number as i32,
                _ => {}
            }
        })?;
        // A key byte without its continuation bit is a whole key.
        let domain_first = encoded.first() == Some(&DOMAIN_KEY);
        fields.canonical = domain_first && domains == 1 && samls <= 1 && oidcs <= 1;
        if let Some(message) = saml_bytes {
            let mut saml = SamlFields::default();
            read_message(
                message,
                SAML_ROUTE,
                RECURSION_LIMIT - 1,
                &mut |tag, value| match (tag, value) {
                    (2, Value::Str(bytes)) => saml.idp_sso_url = text(bytes),
                    (5, Value::Str(bytes)) => saml.sp_entity_id = text(bytes),
                    (6, Value::Str(bytes)) => saml.acs_url = text(bytes),
                    _ => {}
                },
            )?;
            fields.saml = Some(saml);
        }
        if let Some(message) = oidc_bytes {
            let mut oidc = OidcFields {
                encoded: message,
                ..OidcFields::default()
            };
            read_message(
                message,
                OIDC_ROUTE,
                RECURSION_LIMIT - 1,
                &mut |tag, value| match (tag, value) {
                    (2, Value::Str(bytes)) => oidc.authorization_endpoint = text(bytes),
                    (3, Value::Str(bytes)) => oidc.client_id = text(bytes),
                    (5, Value::Str(bytes)) => oidc.redirect_uri = text(bytes),
                    _ => {}
                },
            )?;
            fields.oidc = Some(oidc);
        }
        Ok(fields)
    }
}

/// The key of field 1 (`domain`), length-delimited.
const DOMAIN_KEY: u8 = (1 << 3) | WireType::LengthDelimited as u8;

/// The domain of a route in the stored form (see [`RouteFields::canonical`]):
/// the first field, read without walking the rest. `None` when the bytes do
/// not start with a domain.
pub(crate) fn leading_domain(encoded: &[u8]) -> Option<&[u8]> {
    let (&key, mut rest) = encoded.split_first()?;
    if key != DOMAIN_KEY {
        return None;
    }
    // Domains are at most 253 bytes: one or two length bytes.
    let len = decode_varint(&mut rest).ok()?;
    rest.get(..usize::try_from(len).ok()?)
}

/// Writes the key and length of a length-delimited field `tag` holding `len` bytes.
pub(crate) fn length_delimited_header(tag: u32, len: usize, out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, out);
    prost::encoding::encode_varint(len as u64, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};
    use proptest::prelude::*;
    use prost::Message as _;
    use signpost_api::log::v1 as log;
    use signpost_api::routing::v1 as wire;

    fn agrees_with_prost(bytes: &[u8]) -> Result<(), TestCaseError> {
        let ours = RouteFields::read(bytes);
        let prost = wire::Route::decode(bytes);
        prop_assert_eq!(
            ours.is_ok(),
            prost.is_ok(),
            "ours: {:?}, prost: {:?}",
            ours.as_ref().err(),
            prost.as_ref().err()
        );
        if let (Ok(ours), Ok(prost)) = (ours, prost) {
            prop_assert_eq!(ours.domain, prost.domain.as_str());
            prop_assert_eq!(ours.organization_id, prost.organization_id.as_str());
            prop_assert_eq!(
                ours.organization_external_id,
                prost.organization_external_id.as_str()
            );
            prop_assert_eq!(ours.connection_id, prost.connection_id.as_str());
            prop_assert_eq!(ours.protocol, prost.protocol);
            prop_assert_eq!(ours.sso_policy, prost.sso_policy);
            prop_assert_eq!(ours.saml.is_some(), prost.saml.is_some());
            prop_assert_eq!(ours.oidc.is_some(), prost.oidc.is_some());
            if ours.canonical {
                // The stored form: whatever prost merges, a canonical route has
                // one saml and one oidc message, read as a whole.
                if let (Some(ours), Some(prost)) = (ours.saml, &prost.saml) {
                    prop_assert_eq!(ours.idp_sso_url, prost.idp_sso_url.as_str());
                    prop_assert_eq!(ours.sp_entity_id, prost.sp_entity_id.as_str());
                    prop_assert_eq!(ours.acs_url, prost.acs_url.as_str());
                }
                if let (Some(ours), Some(prost)) = (ours.oidc, &prost.oidc) {
                    prop_assert_eq!(
                        ours.authorization_endpoint,
                        prost.authorization_endpoint.as_str()
                    );
                    prop_assert_eq!(ours.client_id, prost.client_id.as_str());
                    prop_assert_eq!(ours.redirect_uri, prost.redirect_uri.as_str());
                    prop_assert_eq!(ours.scopes(), prost.scopes.clone());
                }
                prop_assert_eq!(leading_domain(bytes), Some(prost.domain.as_bytes()));
            }
        }
        Ok(())
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9.:/_-]{0,20}", "\\PC{0,6}", Just(String::new()),]
    }

    prop_compose! {
        fn any_route()(
            domain in text(),
            ids in (text(), text(), text()),
            protocol in -2i32..4,
            sso_policy in prop_oneof![Just(0i32), Just(1), Just(2), any::<i32>()],
            saml in proptest::option::of((text(), text(), 0i32..3, proptest::collection::vec((text(), any::<i64>()), 0..3), text(), text())),
            oidc in proptest::option::of((text(), text(), text(), proptest::collection::vec(text(), 0..4), text())),
            claim_mapping in proptest::option::of((text(), text(), text(), text())),
            group_roles in proptest::collection::btree_map(text(), text(), 0..3),
            require_group in any::<bool>(),
        ) -> wire::Route {
            wire::Route {
                domain,
                organization_id: ids.0,
                organization_external_id: ids.1,
                connection_id: ids.2,
                protocol,
                saml: saml.map(|s| wire::SamlRoute {
                    idp_entity_id: s.0,
                    idp_sso_url: s.1,
                    idp_sso_binding: s.2,
                    signing_certificates: s.3.into_iter().map(|(sha256_fingerprint, not_after_unix)| {
                        wire::CertificateFingerprint { sha256_fingerprint, not_after_unix }
                    }).collect(),
                    sp_entity_id: s.4,
                    acs_url: s.5,
                }),
                oidc: oidc.map(|o| wire::OidcRoute {
                    issuer: o.0,
                    authorization_endpoint: o.1,
                    client_id: o.2,
                    scopes: o.3,
                    redirect_uri: o.4,
                }),
                claim_mapping: claim_mapping.map(|c| log::ClaimMapping {
                    email: c.0,
                    given_name: c.1,
                    family_name: c.2,
                    groups: c.3,
                }),
                group_roles,
                require_group,
                sso_policy,
            }
        }
    }

    /// A byte-level change of an encoded route.
    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, Vec<u8>),
        Remove(usize, usize),
        Truncate(usize),
    }

    fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for mutation in mutations {
            let len = bytes.len();
            match mutation {
                Mutation::Set(at, byte) if len > 0 => bytes[at % len] = *byte,
                Mutation::Insert(at, inserted) => {
                    let at = at % (len + 1);
                    bytes.splice(at..at, inserted.iter().copied());
                }
                Mutation::Remove(at, count) if len > 0 => {
                    let at = at % len;
                    let end = (at + count).min(len);
                    bytes.drain(at..end);
                }
                Mutation::Truncate(keep) => bytes.truncate(keep % (len + 1)),
                _ => {}
            }
        }
        bytes
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
            2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
                .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            // Well-formed unknown or duplicated fields of every wire type.
            // (Keys: tag 12 varint 0x60, tag 13 fixed32 0x6d, tag 14 fixed64
            // 0x71, tag 15 length-delimited 0x7a, group 15 0x7b .. 0x7c.)
            2 => (any::<usize>(), prop_oneof![
                Just(vec![0x60, 0x01]),
                Just(vec![0x6d, 1, 2, 3, 4]),
                Just(vec![0x71, 1, 2, 3, 4, 5, 6, 7, 8]),
                Just(vec![0x7a, 0x02, b'h', b'i']),
                Just(vec![0x7b, 0x60, 0x01, 0x7c]),
                Just(vec![0x0a, 0x03, b'a', b'.', b'b']),
                Just(vec![0x32, 0x00]),
                Just(vec![0x4a, 0x04, 0x0a, 0x00, 0x12, 0x00]),
                Just(vec![0x48, 0x02, 0x0a, 0x00]),
            ]).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
            1 => (any::<usize>(), 1usize..4).prop_map(|(at, count)| Mutation::Remove(at, count)),
            1 => any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn reading_an_encoded_route_gives_what_prost_decodes(route in any_route()) {
            let bytes = route.encode_to_vec();
            let fields = RouteFields::read(&bytes).unwrap();
            prop_assert!(fields.canonical || route.domain.is_empty());
            agrees_with_prost(&bytes)?;
        }

        #[test]
        fn damaged_routes_are_refused_exactly_when_prost_refuses_them(
            route in any_route(),
            mutations in proptest::collection::vec(mutation(), 1..4),
        ) {
            agrees_with_prost(&mutate(route.encode_to_vec(), &mutations))?;
        }

        #[test]
        fn random_bytes_are_refused_exactly_when_prost_refuses_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            agrees_with_prost(&bytes)?;
        }
    }

    #[test]
    fn prost_quirks_and_limits_are_followed() {
        let base = saml_route("acme.com").encode_to_vec();
        let with = |suffix: &[u8]| {
            let mut bytes = base.clone();
            bytes.extend_from_slice(suffix);
            bytes
        };
        // Start group 15 (0x7b) nested 120 deep.
        let deep_group = vec![0x7b; 120];
        let cases: Vec<Vec<u8>> = vec![
            // A map entry with another wire type; a map entry with an unknown field.
            with(&[0x48, 0x04, 0x0a, 0x00, 0x12, 0x00]),
            with(&[0x4a, 0x06, 0x0a, 0x00, 0x12, 0x00, 0x18, 0x01]),
            // A known string field with a varint wire type.
            with(&[0x10, 0x01]),
            // Tag zero, wire types 6 and 7.
            with(&[0x00, 0x00]),
            with(&[0x7e, 0x00]),
            with(&[0x7f, 0x00]),
            // An end group with no start, a group ended by another tag.
            with(&[0x7c]),
            with(&[0x7b, 0x74]),
            // A group nested within the limit, with fields.
            with(&[0x7b, 0x7b, 0x60, 0x01, 0x7c, 0x7c]),
            // Groups nested past prost's recursion limit.
            with(&deep_group),
            // Invalid UTF-8 in a field the edge does not use.
            with(&[0x42, 0x03, 0x0a, 0x01, 0xff]),
            // An overlong varint.
            with(&[
                0x58, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ]),
            // A nested field running past its message.
            with(&[0x32, 0x02, 0x0a, 0x05]),
        ];
        for bytes in cases {
            agrees_with_prost(&bytes).unwrap();
        }
        // Prost merges a repeated `saml`; the stored form needs one.
        let twice = with(&saml_route("acme.com").encode_to_vec()[..]);
        assert!(!RouteFields::read(&twice).unwrap().canonical);
        assert!(
            RouteFields::read(&oidc_route("acme.com").encode_to_vec())
                .unwrap()
                .canonical
        );
    }

    #[test]
    fn the_schema_follows_the_descriptor_set() {
        use prost_types::field_descriptor_proto::{Label, Type};
        let set =
            prost_types::FileDescriptorSet::decode(signpost_api::FILE_DESCRIPTOR_SET).unwrap();
        let message = |full_name: &str| {
            let (package, name) = full_name.rsplit_once('.').unwrap();
            set.file
                .iter()
                .filter(|file| file.package() == package)
                .flat_map(|file| file.message_type.iter())
                .find(|message| message.name() == name)
                .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"))
                .clone()
        };
        fn check(
            set_message: &dyn Fn(&str) -> prost_types::DescriptorProto,
            name: &str,
            schema: &[(u32, FieldType)],
        ) {
            let descriptor = set_message(name);
            assert_eq!(descriptor.field.len(), schema.len(), "{name}: field count");
            for field in &descriptor.field {
                let tag = field.number() as u32;
                let (_, ours) = schema
                    .iter()
                    .find(|(known, _)| *known == tag)
                    .unwrap_or_else(|| panic!("{name}.{} is in the schema", field.name()));
                let is_map = field.label() == Label::Repeated
                    && field.r#type() == Type::Message
                    && descriptor.nested_type.iter().any(|nested| {
                        nested.options.as_ref().is_some_and(|o| o.map_entry())
                            && field.type_name().ends_with(&format!(".{}", nested.name()))
                    });
                match (field.r#type(), ours) {
                    (Type::String, FieldType::Text) => {}
                    (Type::Enum | Type::Bool | Type::Int32 | Type::Int64, FieldType::Varint) => {
                        assert_ne!(field.label(), Label::Repeated, "{name}.{}", field.name());
                    }
                    (Type::Message, FieldType::TextMap) if is_map => {}
                    (Type::Message, FieldType::Message(inner)) if !is_map => {
                        check(
                            set_message,
                            field.type_name().trim_start_matches('.'),
                            inner,
                        );
                    }
                    (other, ours) => {
                        panic!("{name}.{}: {other:?} read as {ours:?}", field.name())
                    }
                }
            }
        }
        check(&message, "signpost.routing.v1.Route", ROUTE);
    }
}
