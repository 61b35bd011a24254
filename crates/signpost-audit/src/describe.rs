//! Turning one event into one [`AuditEntry`]: a stable action name, the target, a one-line
//! summary and structured details with before / after.
//!
//! Before / after come from the state *before* the event (the admin [`ReadModel`], folded
//! with the domain's own `apply`, passed in by the fold). Secrets never leave this module:
//! an OIDC client secret is described as `"set"` / `"changed"` / `"unchanged"` by
//! comparing ciphertexts, and token hashes (API tokens, setup links) are never read at all.
//!
//! Details are written directly in the protobuf encoding of a `google.protobuf.Struct`
//! (the `pb` helpers; [`encode_entry`] puts them into the entry's stored form) and a
//! configuration's before / after is compared field by field on borrowed settings
//! (`Configuration`, `FieldValue`): a rebuild describes every event of the log, and
//! building `serde_json` values, then `prost_types` messages, to encode them cost several
//! times the rest. The entries are the ones the JSON version produced, byte for byte: the
//! test module keeps that version as its oracle.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use signpost_api::audit::v1::{AuditActor, AuditEntry, AuditTarget};
use signpost_control::read_model::ReadModel;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::event::from_timestamp;
use signpost_domain::{schema, Event};
use signpost_eventlog::EventEnvelope;

use pb::{Struct, Value};

/// Every envelope event type with its stable audit action name.
pub const ACTIONS: [(&str, &str); 19] = [
    ("organization_created", "organization.created"),
    ("domain_claimed", "domain.claimed"),
    ("domain_verified", "domain.verified"),
    ("domain_released", "domain.released"),
    ("sso_policy_changed", "sso_policy.changed"),
    ("connection_activated", "connection.activated"),
    ("connection_deactivated", "connection.deactivated"),
    ("provider_switched", "provider.switched"),
    ("setup_link_issued", "setup_link.issued"),
    ("setup_form_submitted", "setup_link.submitted"),
    ("setup_link_revoked", "setup_link.revoked"),
    ("setup_link_spent", "setup_link.spent"),
    ("setup_link_expired", "setup_link.expired"),
    ("connection_configured", "connection.configured"),
    ("group_assigned", "group.assigned"),
    ("group_unassigned", "group.unassigned"),
    ("group_requirement_changed", "group_requirement.changed"),
    ("api_token_issued", "api_token.issued"),
    ("api_token_revoked", "api_token.revoked"),
];

/// The audit action name of an envelope event type (`None` for an unknown type).
pub fn action_name(event_type: &str) -> Option<&'static str> {
    ACTIONS
        .iter()
        .find(|(kind, _)| *kind == event_type)
        .map(|(_, action)| *action)
}

/// An entry, its details apart.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    /// The entry without its details (`details` holds them).
    pub entry: AuditEntry,
    /// The entry's `details`, built straight into their encoding.
    pub details: Struct,
}

impl Described {
    /// The entry's stored form ([`encode_entry`]), without the position and the action:
    /// a read derives them again (the position from where the entry is, the action from
    /// the event type).
    pub(crate) fn stored(self) -> Vec<u8> {
        let Self { mut entry, details } = self;
        entry.position = 0;
        entry.action.clear();
        encode_entry(entry, details)
    }

    /// The encoding of the entry as a read gives it (what [`Described::into_entry`]
    /// gives, encoded).
    pub(crate) fn encoded(self) -> Vec<u8> {
        let Self { entry, details } = self;
        let mut stored = encode_entry(entry, details);
        let length = {
            let mut rest = &stored[..];
            let _ = prost::encoding::decode_varint(&mut rest);
            stored.len() - rest.len()
        };
        stored.drain(..length);
        stored
    }

    /// The entry as a read gives it (what decoding [`Described::stored`] gives, with the
    /// position and the action): only the details go through their encoding.
    pub(crate) fn into_entry(self) -> Result<AuditEntry, prost::DecodeError> {
        use prost::Message as _;
        let Self { mut entry, details } = self;
        let mut encoded = Vec::with_capacity(details.encoded_len());
        details.encode(&mut encoded);
        entry.details = Some(prost_types::Struct::decode(encoded.as_slice())?);
        Ok(entry)
    }
}

/// The stored form of `entry` with `details` as its `details` field (`entry`'s own is
/// ignored): what [`crate::keys::encode_entry`] makes of the entry holding them as a
/// `prost_types::Struct`, byte for byte.
pub(crate) fn encode_entry(mut entry: AuditEntry, details: Struct) -> Vec<u8> {
    use prost::encoding::{encode_varint, encoded_len_varint, string};
    use prost::Message as _;
    entry.details = None;
    // Fields in number order: the entry's up to `details` (7), `details`, then 8 and 9.
    let correlation_id = std::mem::take(&mut entry.correlation_id);
    let event_type = std::mem::take(&mut entry.event_type);
    let text_len = |tag: u32, text: &String| {
        if text.is_empty() {
            0
        } else {
            string::encoded_len(tag, text)
        }
    };
    let details_len = details.encoded_len();
    let length = entry.encoded_len()
        + 1
        + encoded_len_varint(details_len as u64)
        + details_len
        + text_len(8, &correlation_id)
        + text_len(9, &event_type);
    let mut out = Vec::with_capacity(length + 5);
    encode_varint(length as u64, &mut out);
    entry.encode_raw(&mut out);
    out.push((7 << 3) | 2);
    encode_varint(details_len as u64, &mut out);
    details.encode(&mut out);
    for (tag, text) in [(8, &correlation_id), (9, &event_type)] {
        if !text.is_empty() {
            string::encode(tag, text, &mut out);
        }
    }
    debug_assert_eq!(out.len(), length + encoded_len_varint(length as u64));
    out
}

/// `google.protobuf.Value`s and `Struct`s written straight into their protobuf encoding.
///
/// What prost writes for the same messages, byte for byte (map entries in key order, each
/// its key then its value; a oneof written even when it holds a default), so the stored
/// entries are the ones a `prost_types::Struct` gave: describing an event fills a few byte
/// vectors instead of building a tree of messages, maps and owned keys, encoding it and
/// dropping it (about a fifth of a first start's CPU went there, bench/FINDINGS.md round
/// 11). The test module checks every entry against the oracle's encoding.
mod pb {
    use prost::encoding::{encode_varint, encoded_len_varint};

    /// `Value`'s fields (`kind`): null 1, number 2, string 3, bool 4, struct 5, list 6.
    const NULL: u8 = 1 << 3;
    const NUMBER: u8 = (2 << 3) | 1;
    const STRING: u8 = (3 << 3) | 2;
    const BOOL: u8 = 4 << 3;
    const STRUCT: u8 = (5 << 3) | 2;
    const LIST: u8 = (6 << 3) | 2;
    /// `Struct.fields` (map entries), `ListValue.values`, and a map entry's key: field 1.
    const FIELD_1: u8 = (1 << 3) | 2;
    /// A map entry's value: field 2.
    const FIELD_2: u8 = (2 << 3) | 2;

    /// An encoded `google.protobuf.Value` (its fields, without tag or length).
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Value(Vec<u8>);

    /// A `google.protobuf.Struct` being built: its fields, encoded in key order at the end.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub(crate) struct Struct {
        fields: Vec<(&'static str, Value)>,
    }

    fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn bytes_len(bytes: usize) -> usize {
        1 + encoded_len_varint(bytes as u64) + bytes
    }

    /// A field `tag` of `len` bytes, opened: the caller appends its contents.
    fn opened(tag: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes_len(len));
        out.push(tag);
        encode_varint(len as u64, &mut out);
        out
    }

    impl Struct {
        /// The fields given, in any order.
        pub(crate) fn from_fields(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Self {
            let mut built = Struct::default();
            for (name, value) in fields {
                built.insert(name, value);
            }
            built
        }

        /// Sets `name` (replacing a value it had).
        pub(crate) fn insert(&mut self, name: &'static str, value: Value) {
            match self.fields.iter_mut().find(|(held, _)| *held == name) {
                Some(slot) => slot.1 = value,
                None => self.fields.push((name, value)),
            }
        }

        fn entry_len(name: &str, value: &Value) -> usize {
            bytes_len(name.len()) + bytes_len(value.0.len())
        }

        /// The length of the encoded message.
        pub(crate) fn encoded_len(&self) -> usize {
            self.fields
                .iter()
                .map(|(name, value)| bytes_len(Self::entry_len(name, value)))
                .sum()
        }

        /// Appends the encoded message (without tag or length).
        pub(crate) fn encode(mut self, out: &mut Vec<u8>) {
            self.fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (name, value) in &self.fields {
                out.push(FIELD_1);
                encode_varint(Self::entry_len(name, value) as u64, out);
                put_bytes(out, FIELD_1, name.as_bytes());
                put_bytes(out, FIELD_2, &value.0);
            }
        }
    }

    fn wrapped(tag: u8, bytes: &[u8]) -> Value {
        let mut out = opened(tag, bytes.len());
        out.extend_from_slice(bytes);
        Value(out)
    }

    pub(super) fn text(text: &str) -> Value {
        wrapped(STRING, text.as_bytes())
    }

    pub(super) fn string(text: String) -> Value {
        self::text(&text)
    }

    pub(super) fn null() -> Value {
        Value(vec![NULL, 0])
    }

    pub(super) fn boolean(flag: bool) -> Value {
        Value(vec![BOOL, u8::from(flag)])
    }

    /// Numbers are doubles in a `Struct`, as JSON numbers were.
    pub(super) fn number(number: f64) -> Value {
        let mut out = Vec::with_capacity(9);
        out.push(NUMBER);
        out.extend_from_slice(&number.to_le_bytes());
        Value(out)
    }

    pub(super) fn list(values: Vec<Value>) -> Value {
        let inner: usize = values.iter().map(|v| bytes_len(v.0.len())).sum();
        let mut out = opened(LIST, inner);
        for value in &values {
            put_bytes(&mut out, FIELD_1, &value.0);
        }
        Value(out)
    }

    pub(super) fn texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Value {
        list(texts.into_iter().map(text).collect())
    }

    pub(super) fn object<const N: usize>(fields: [(&'static str, Value); N]) -> Struct {
        Struct::from_fields(fields)
    }

    pub(super) fn nested<const N: usize>(fields: [(&'static str, Value); N]) -> Value {
        structure(object(fields))
    }

    pub(super) fn structure(fields: Struct) -> Value {
        let mut out = opened(STRUCT, fields.encoded_len());
        fields.encode(&mut out);
        Value(out)
    }

    /// `{"before": …, "after": …}`.
    pub(super) fn change(before: Value, after: Value) -> Value {
        nested([("before", before), ("after", after)])
    }

    /// A text, or null for none.
    pub(super) fn optional(text: Option<&str>) -> Value {
        text.map_or_else(null, self::text)
    }
}

/// Whom an event's entry is about, decided from the state before it without describing
/// it: the organization and the connections the fold indexes the entry under (the
/// organization is the entry's target's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Terms<'a> {
    /// The target organization; empty: none.
    pub organization_id: &'a str,
    /// The connections it concerns, in the entry's order (a switch: the new one, then the
    /// previous one), as the event names them (so possibly empty).
    pub connections: Vec<&'a str>,
    /// On a connection's stream, the connection as the model holds it before the event
    /// (looked up once for all who ask).
    pub held: Option<&'a Connection>,
}

/// A setup link's (organization, connection, recipient) as an event on its stream sees
/// them: the issuing event's own, else the open link's, else what a closed link keeps
/// (its organization alone: no command appends to a closed link's stream; a log could).
fn link_parties<'a>(
    event: &'a Event,
    before: &'a ReadModel,
    id: &str,
) -> (&'a str, &'a str, &'a str) {
    match (event, before.setup_links.get(id).map(|l| &l.state)) {
        (Event::SetupLinkIssued(e), _) => (
            e.organization_id.as_str(),
            e.connection_id.as_str(),
            e.recipient_email.as_str(),
        ),
        (_, Some(link)) => (
            &*link.organization_id,
            &*link.connection_id,
            link.recipient_email.as_str(),
        ),
        (_, None) => (
            before
                .closed_links
                .get(id)
                .map_or("", |closed| &*closed.organization_id),
            "",
            "",
        ),
    }
}

/// The [`Terms`] of `event` (at `envelope`) given the state before it.
pub(crate) fn terms<'a>(
    envelope: &'a EventEnvelope,
    event: &'a Event,
    before: &'a ReadModel,
) -> Terms<'a> {
    let stream = envelope.stream_id.as_str();
    let mut connections = Vec::new();
    let mut held = None;
    let organization_id = if let Some(id) = stream.strip_prefix("organization-") {
        match event {
            Event::ConnectionActivated(e) => connections.push(e.connection_id.as_str()),
            Event::ConnectionDeactivated(e) => connections.push(e.connection_id.as_str()),
            Event::ProviderSwitched(e) => {
                connections.push(e.connection_id.as_str());
                connections.push(e.previous_connection_id.as_str());
            }
            _ => {}
        }
        id
    } else if let Some(id) = stream.strip_prefix("connection-") {
        connections.push(id);
        held = before.connections.get(id).map(|c| &c.state);
        match event {
            Event::ConnectionConfigured(e) => e.organization_id.as_str(),
            // `connection_organization`, without looking the connection up twice.
            _ => held
                .map(|c| &*c.organization_id)
                .or_else(|| before.connection_organization(id))
                .unwrap_or_default(),
        }
    } else if let Some(id) = stream.strip_prefix("setup-link-") {
        let (organization_id, connection_id, _) = link_parties(event, before, id);
        if !connection_id.is_empty() {
            connections.push(connection_id);
        }
        organization_id
    } else {
        ""
    };
    Terms {
        organization_id,
        connections,
        held,
    }
}

/// Whether `event`'s entry (with `terms`, given the state before it) is described alike
/// from its organization's streams alone: the organization's own stream and every
/// connection and setup-link stream whose first event named the organization
/// (`organizations_stream` tells those; the organization's own stream need not be asked).
/// Folded from those alone, a model holds the same state as the whole log's for each of
/// them (an aggregate is its stream's fold; a connection's draft organization comes from
/// the organization's own links) and nothing of any other stream. So the entry is the
/// same when every aggregate `describe` reads is one of those streams' or absent:
/// - the event has an organization and is on one of its streams (a connection's, once
///   the model holds the connection: before that its organization is a draft's, from
///   whichever link named it last);
/// - each connection it labels ("c-1 (okta, SAML)") is unconfigured (labelled by its id
///   alone either way), or one of its streams.
///
/// API tokens and streams of no known kind name no organization: their entries are not
/// organization-local.
pub(crate) fn organization_local(
    envelope: &EventEnvelope,
    event: &Event,
    before: &ReadModel,
    terms: &Terms<'_>,
    organizations_stream: impl Fn(&str) -> bool,
) -> bool {
    let organization_id = terms.organization_id;
    if organization_id.is_empty() {
        return false;
    }
    let stream = envelope.stream_id.as_str();
    let submitted;
    let labelled: &[&str] = if stream.strip_prefix("organization-") == Some(organization_id) {
        &terms.connections
    } else if stream.starts_with("connection-") {
        // A connection the model does not hold is its draft organization's, which comes
        // from whichever link named it last: not necessarily one of these streams.
        let held = matches!(event, Event::ConnectionConfigured(_)) || terms.held.is_some();
        if !held || !organizations_stream(stream) {
            return false;
        }
        &[]
    } else if stream.starts_with("setup-link-") && organizations_stream(stream) {
        match event {
            Event::SetupFormSubmitted(e) => {
                submitted = [e.connection_id.as_str()];
                &submitted
            }
            _ => &[],
        }
    } else {
        return false;
    };
    labelled.iter().all(|id| {
        let configured = before
            .connections
            .get(id)
            .is_some_and(|c| c.state.is_configured());
        !configured || organizations_stream(&format!("connection-{id}"))
    })
}

/// Describes `event` (at `envelope`) given the state before it.
pub(crate) fn describe(envelope: &EventEnvelope, event: &Event, before: &ReadModel) -> Described {
    describe_with(envelope, event, before, &terms(envelope, event, before))
}

/// [`describe`], given the event's [`terms`].
pub(crate) fn describe_with(
    envelope: &EventEnvelope,
    event: &Event,
    before: &ReadModel,
    terms: &Terms<'_>,
) -> Described {
    let stream = envelope.stream_id.as_str();
    let actor = envelope.actor.as_ref();
    let mut target = AuditTarget {
        organization_id: terms.organization_id.to_owned(),
        ..AuditTarget::default()
    };
    let (summary, details) = if let Some(id) = stream.strip_prefix("organization-") {
        describe_organization_event(event, id, before, &mut target)
    } else if let Some(id) = stream.strip_prefix("connection-") {
        target.connection_id = id.to_owned();
        describe_connection_event(event, terms.held)
    } else if let Some(id) = stream.strip_prefix("setup-link-") {
        target.setup_link_id = id.to_owned();
        let (_, connection_id, recipient) = link_parties(event, before, id);
        if !connection_id.is_empty() {
            target.connection_id = connection_id.to_owned();
        }
        let by = actor_phrase(actor);
        describe_setup_link_event(event, &by, recipient, connection_id, before)
    } else if let Some(id) = stream.strip_prefix("api-token-") {
        target.token_id = id.to_owned();
        let token = before.api_tokens.get(id).map(|t| &t.state);
        describe_api_token_event(event, token)
    } else {
        (
            format!("{} recorded", envelope.event_type),
            Struct::default(),
        )
    };
    let entry = AuditEntry {
        position: envelope.position,
        time: envelope.recorded_at,
        actor: Some(actor.map_or_else(AuditActor::default, |actor| AuditActor {
            kind: actor.kind,
            id: actor.id.clone(),
            display_name: actor.display_name.clone(),
            on_behalf_of: actor.on_behalf_of.clone(),
        })),
        action: action_name(&envelope.event_type)
            .unwrap_or("unknown")
            .to_owned(),
        target: Some(target),
        summary,
        details: None,
        correlation_id: envelope.correlation_id.clone(),
        event_type: envelope.event_type.clone(),
    };
    Described { entry, details }
}

/// "Onboarding service for alice@firm.com", "setup link for it@acme.com", "Signpost".
fn actor_phrase(actor: Option<&schema::Actor>) -> String {
    let Some(actor) = actor else {
        return String::new();
    };
    let name = if actor.display_name.is_empty() {
        &actor.id
    } else {
        &actor.display_name
    };
    if actor.on_behalf_of.is_empty() {
        name.clone()
    } else {
        format!("{name} for {}", actor.on_behalf_of)
    }
}

fn policy_name(policy: schema::SsoPolicy) -> &'static str {
    match policy {
        schema::SsoPolicy::Optional => "optional",
        schema::SsoPolicy::Enforced => "enforced",
        schema::SsoPolicy::Unspecified => "unspecified",
    }
}

fn protocol_name(protocol: schema::Protocol) -> &'static str {
    match protocol {
        schema::Protocol::Saml => "SAML",
        schema::Protocol::Oidc => "OIDC",
        schema::Protocol::Unspecified => "unconfigured",
    }
}

/// "c-123 (okta, SAML)" for a configured connection, the bare id otherwise (written into
/// the summary, not allocated on its own).
fn connection_label<'a>(model: &'a ReadModel, connection_id: &'a str) -> ConnectionLabel<'a> {
    ConnectionLabel {
        connection_id,
        connection: model
            .connections
            .get(connection_id)
            .map(|c| &c.state)
            .filter(|c| c.is_configured()),
    }
}

struct ConnectionLabel<'a> {
    connection_id: &'a str,
    /// The connection when it is configured.
    connection: Option<&'a Connection>,
}

impl std::fmt::Display for ConnectionLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.connection_id;
        match self.connection {
            Some(connection) => {
                let protocol = protocol_name(connection.protocol());
                if connection.provider_preset.is_empty() {
                    write!(f, "{id} ({protocol})")
                } else {
                    write!(f, "{id} ({}, {protocol})", connection.provider_preset)
                }
            }
            None => f.write_str(id),
        }
    }
}

fn describe_organization_event(
    event: &Event,
    organization_id: &str,
    before: &ReadModel,
    target: &mut AuditTarget,
) -> (String, Struct) {
    match event {
        Event::OrganizationCreated(e) => (
            format!(
                "organization \"{}\" created (external id {})",
                e.display_name, e.external_id
            ),
            pb::object([
                ("display_name", pb::text(&e.display_name)),
                ("external_id", pb::text(&e.external_id)),
            ]),
        ),
        Event::DomainClaimed(e) => {
            target.domain = e.domain.clone();
            (
                format!("domain {} claimed, pending verification", e.domain),
                pb::object([
                    ("domain", pb::text(&e.domain)),
                    (
                        "verification_record_name",
                        pb::text(&e.verification_record_name),
                    ),
                ]),
            )
        }
        Event::DomainVerified(e) => {
            target.domain = e.domain.clone();
            let method = match e.method() {
                schema::VerificationMethod::DnsTxt => "dns_txt",
                schema::VerificationMethod::Manual => "manual",
                schema::VerificationMethod::Unspecified => "unspecified",
            };
            let mut summary = match e.method() {
                schema::VerificationMethod::DnsTxt => {
                    format!("domain {} verified by DNS TXT record", e.domain)
                }
                schema::VerificationMethod::Manual if e.note.is_empty() => {
                    format!("domain {} verified manually", e.domain)
                }
                schema::VerificationMethod::Manual => {
                    format!("domain {} verified manually (\"{}\")", e.domain, e.note)
                }
                schema::VerificationMethod::Unspecified => format!("domain {} verified ", e.domain),
            };
            // Trailing whitespace is trimmed (the unspecified method leaves a space).
            summary.truncate(summary.trim_end().len());
            (
                summary,
                pb::object([
                    ("domain", pb::text(&e.domain)),
                    ("method", pb::text(method)),
                    ("note", pb::text(&e.note)),
                ]),
            )
        }
        Event::DomainReleased(e) => {
            target.domain = e.domain.clone();
            (
                format!("domain {} released", e.domain),
                pb::object([("domain", pb::text(&e.domain))]),
            )
        }
        Event::SsoPolicyChanged(e) => {
            let (previous, policy) = (policy_name(e.previous()), policy_name(e.policy()));
            (
                format!("SSO policy changed from {previous} to {policy}"),
                pb::object([(
                    "sso_policy",
                    pb::change(pb::text(previous), pb::text(policy)),
                )]),
            )
        }
        Event::ConnectionActivated(e) => {
            target.connection_id = e.connection_id.clone();
            let active_before = before
                .organizations
                .get(organization_id)
                .and_then(|o| o.state.active_connection_id.as_deref());
            (
                format!(
                    "connection {} activated",
                    connection_label(before, &e.connection_id)
                ),
                pb::object([
                    ("connection_id", pb::text(&e.connection_id)),
                    (
                        "active_connection",
                        pb::change(pb::optional(active_before), pb::text(&e.connection_id)),
                    ),
                ]),
            )
        }
        Event::ConnectionDeactivated(e) => {
            target.connection_id = e.connection_id.clone();
            (
                format!(
                    "connection {} deactivated; the organization's domains route to password",
                    connection_label(before, &e.connection_id)
                ),
                pb::object([
                    ("connection_id", pb::text(&e.connection_id)),
                    (
                        "active_connection",
                        pb::change(pb::text(&e.connection_id), pb::null()),
                    ),
                ]),
            )
        }
        Event::ProviderSwitched(e) => {
            target.connection_id = e.connection_id.clone();
            (
                format!(
                    "provider switched from {} to {}",
                    connection_label(before, &e.previous_connection_id),
                    connection_label(before, &e.connection_id)
                ),
                pb::object([
                    (
                        "previous_connection_id",
                        pb::text(&e.previous_connection_id),
                    ),
                    ("connection_id", pb::text(&e.connection_id)),
                    (
                        "active_connection",
                        pb::change(
                            pb::text(&e.previous_connection_id),
                            pb::text(&e.connection_id),
                        ),
                    ),
                ]),
            )
        }
        _ => (String::from("organization event"), Struct::default()),
    }
}

fn intent_name(intent: schema::SetupIntent) -> &'static str {
    match intent {
        schema::SetupIntent::NewConnection => "new_connection",
        schema::SetupIntent::UpdateConnection => "update_connection",
        schema::SetupIntent::StageSwitch => "stage_switch",
        schema::SetupIntent::Unspecified => "unspecified",
    }
}

/// [`intent_name`] for a sentence.
fn intent_phrase(intent: schema::SetupIntent) -> &'static str {
    match intent {
        schema::SetupIntent::NewConnection => "new connection",
        schema::SetupIntent::UpdateConnection => "update connection",
        schema::SetupIntent::StageSwitch => "stage switch",
        schema::SetupIntent::Unspecified => "unspecified",
    }
}

/// A log time as the summaries and details write it: RFC 3339, whole seconds, `Z`.
fn rfc3339(time: Option<&prost_types::Timestamp>) -> String {
    from_timestamp(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn describe_setup_link_event(
    event: &Event,
    by: &str,
    recipient: &str,
    connection_id: &str,
    before: &ReadModel,
) -> (String, Struct) {
    match event {
        Event::SetupLinkIssued(e) => {
            let expires = rfc3339(e.expires_at.as_ref());
            (
                format!(
                    "setup link issued to {} by {by} ({}, connection {}, expires {expires})",
                    e.recipient_email,
                    intent_phrase(e.intent()),
                    e.connection_id
                ),
                // Never the token hash: it is the link's credential in another form.
                pb::object([
                    ("recipient_email", pb::text(&e.recipient_email)),
                    ("intent", pb::text(intent_name(e.intent()))),
                    ("connection_id", pb::text(&e.connection_id)),
                    ("expires_at", pb::string(expires)),
                ]),
            )
        }
        Event::SetupFormSubmitted(e) => (
            format!(
                "setup form submitted through the link sent to {recipient} (submission {}) for connection {}",
                e.submission,
                connection_label(before, &e.connection_id)
            ),
            pb::object([
                ("submission", pb::number(f64::from(e.submission))),
                ("connection_id", pb::text(&e.connection_id)),
            ]),
        ),
        Event::SetupLinkRevoked(e) => match e.reason() {
            schema::RevocationReason::Superseded => (
                format!(
                    "setup link sent to {recipient} superseded by link {}",
                    e.superseded_by
                ),
                pb::object([
                    ("reason", pb::text("superseded")),
                    ("superseded_by", pb::text(&e.superseded_by)),
                ]),
            ),
            _ => (
                format!("setup link sent to {recipient} revoked by {by}"),
                pb::object([("reason", pb::text("revoked"))]),
            ),
        },
        Event::SetupLinkSpent(e) => (
            format!(
                "setup link sent to {recipient} spent: connection {} was activated",
                e.connection_id
            ),
            pb::object([("connection_id", pb::text(&e.connection_id))]),
        ),
        Event::SetupLinkExpired(e) => {
            let at = rfc3339(e.expired_at.as_ref());
            (
                format!("setup link sent to {recipient} expired at {at}"),
                pb::object([
                    ("expired_at", pb::string(at)),
                    ("connection_id", pb::text(connection_id)),
                ]),
            )
        }
        _ => (String::from("setup link event"), Struct::default()),
    }
}

fn describe_api_token_event(
    event: &Event,
    token: Option<&signpost_domain::api_token::ApiToken>,
) -> (String, Struct) {
    match event {
        Event::ApiTokenIssued(e) => {
            let role = match e.role() {
                schema::TokenRole::Admin => "admin",
                schema::TokenRole::Edge => "edge",
                schema::TokenRole::Auditor => "auditor",
                schema::TokenRole::Unspecified => "unspecified",
            };
            let summary = if e.organization_scope.is_empty() {
                format!("API token \"{}\" issued with role {role}", e.name)
            } else {
                format!(
                    "API token \"{}\" issued with role {role}, scoped to organization {}",
                    e.name, e.organization_scope
                )
            };
            (
                summary,
                // Never the token hash.
                pb::object([
                    ("name", pb::text(&e.name)),
                    ("role", pb::text(role)),
                    ("organization_scope", pb::text(&e.organization_scope)),
                ]),
            )
        }
        Event::ApiTokenRevoked(_) => {
            let name = token.map(|t| t.name.as_str()).unwrap_or_default();
            (
                format!("API token \"{name}\" revoked"),
                pb::object([("name", pb::text(name))]),
            )
        }
        _ => (String::from("API token event"), Struct::default()),
    }
}

fn describe_connection_event(event: &Event, previous: Option<&Connection>) -> (String, Struct) {
    match event {
        Event::ConnectionConfigured(e) => describe_configuration(e, previous),
        Event::GroupAssigned(e) => {
            let old = previous.and_then(|c| c.groups.get(&e.idp_group));
            let summary = match old {
                Some(old) => format!(
                    "group \"{}\" role changed from {old} to {}",
                    e.idp_group, e.role
                ),
                None => format!("group \"{}\" assigned role {}", e.idp_group, e.role),
            };
            (
                summary,
                pb::object([
                    ("idp_group", pb::text(&e.idp_group)),
                    (
                        "role",
                        pb::change(pb::optional(old.map(String::as_str)), pb::text(&e.role)),
                    ),
                ]),
            )
        }
        Event::GroupUnassigned(e) => {
            let old = previous.and_then(|c| c.groups.get(&e.idp_group));
            (
                match old {
                    Some(old) => format!("group \"{}\" unassigned (was role {old})", e.idp_group),
                    None => format!("group \"{}\" unassigned", e.idp_group),
                },
                pb::object([
                    ("idp_group", pb::text(&e.idp_group)),
                    (
                        "role",
                        pb::change(pb::optional(old.map(String::as_str)), pb::null()),
                    ),
                ]),
            )
        }
        Event::GroupRequirementChanged(e) => {
            let old = previous.map(|c| c.require_group).unwrap_or_default();
            (
                if e.require_group {
                    "membership of an assigned group is now required to sign in".to_owned()
                } else {
                    "membership of an assigned group is no longer required".to_owned()
                },
                pb::object([(
                    "require_group",
                    pb::change(pb::boolean(old), pb::boolean(e.require_group)),
                )]),
            )
        }
        _ => (String::from("connection event"), Struct::default()),
    }
}

/// A connection's settings, borrowed (from an event or from the state before it).
#[derive(Clone, Copy)]
enum Settings<'a> {
    Saml(&'a schema::SamlSettings),
    Oidc(&'a schema::OidcSettings),
}

/// A state's settings as `Settings` read them: a SAML connection's decoded from its
/// state (`SamlIdp`, certificates without DER), an OIDC one's borrowed.
enum StateSettings<'a> {
    Saml(schema::SamlSettings),
    Oidc(&'a schema::OidcSettings),
}

impl<'a> StateSettings<'a> {
    fn of(settings: &'a ConnectionSettings) -> Self {
        match settings {
            ConnectionSettings::Saml(saml) => StateSettings::Saml(saml.settings()),
            ConnectionSettings::Oidc(oidc) => StateSettings::Oidc(oidc),
        }
    }

    fn borrowed(&self) -> Settings<'_> {
        match self {
            StateSettings::Saml(saml) => Settings::Saml(saml),
            StateSettings::Oidc(oidc) => Settings::Oidc(oidc),
        }
    }
}

/// One non-secret field of a configuration, as the details name it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Protocol,
    IdpEntityId,
    SsoUrl,
    SsoUrls,
    SigningCertificates,
    MetadataUrl,
    Issuer,
    ClientId,
    Scopes,
    AuthorizationEndpoint,
    TokenEndpoint,
    JwksUri,
    UserinfoEndpoint,
    ClaimMapping,
    Role,
    ProviderPreset,
}

/// The fields of a SAML configuration, in the order changes are phrased.
const SAML_FIELDS: &[Field] = &[
    Field::Protocol,
    Field::IdpEntityId,
    Field::SsoUrl,
    Field::SsoUrls,
    Field::SigningCertificates,
    Field::MetadataUrl,
    Field::ClaimMapping,
    Field::Role,
    Field::ProviderPreset,
];

/// The fields of an OIDC configuration, in the order changes are phrased.
const OIDC_FIELDS: &[Field] = &[
    Field::Protocol,
    Field::Issuer,
    Field::ClientId,
    Field::Scopes,
    Field::AuthorizationEndpoint,
    Field::TokenEndpoint,
    Field::JwksUri,
    Field::UserinfoEndpoint,
    Field::ClaimMapping,
    Field::Role,
    Field::ProviderPreset,
];

/// The fields of a configuration without settings.
const BARE_FIELDS: &[Field] = &[Field::ClaimMapping, Field::Role, Field::ProviderPreset];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Protocol => "protocol",
            Field::IdpEntityId => "idp_entity_id",
            Field::SsoUrl => "sso_url",
            Field::SsoUrls => "sso_urls",
            Field::SigningCertificates => "signing_certificates",
            Field::MetadataUrl => "metadata_url",
            Field::Issuer => "issuer",
            Field::ClientId => "client_id",
            Field::Scopes => "scopes",
            Field::AuthorizationEndpoint => "authorization_endpoint",
            Field::TokenEndpoint => "token_endpoint",
            Field::JwksUri => "jwks_uri",
            Field::UserinfoEndpoint => "userinfo_endpoint",
            Field::ClaimMapping => "claim_mapping",
            Field::Role => "role",
            Field::ProviderPreset => "provider_preset",
        }
    }

    /// The name with spaces for underscores ("sso urls"), as a change without a label is
    /// phrased.
    fn spaced_name(self) -> SpacedName {
        SpacedName(self.name())
    }

    /// How a change of a text field is phrased ("SSO URL changed from … to …"); fields
    /// without a label are phrased by name ("scopes changed").
    fn label(self) -> Option<&'static str> {
        match self {
            Field::SsoUrl => Some("SSO URL"),
            Field::IdpEntityId => Some("IdP entity id"),
            Field::Issuer => Some("issuer"),
            Field::ClientId => Some("client id"),
            Field::Protocol => Some("protocol"),
            Field::MetadataUrl => Some("metadata URL"),
            Field::Role => Some("role"),
            Field::ProviderPreset => Some("provider preset"),
            _ => None,
        }
    }
}

/// A field name written with spaces for underscores.
struct SpacedName(&'static str);

impl std::fmt::Display for SpacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, word) in self.0.split('_').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(word)?;
        }
        Ok(())
    }
}

/// A configuration's non-secret settings, borrowed, for before / after.
struct Configuration<'a> {
    settings: Option<Settings<'a>>,
    claim_mapping: &'a schema::ClaimMapping,
    role: schema::ConnectionRole,
    provider_preset: &'a str,
}

/// One field's value, borrowed. Equality is the equality of the values the details show
/// (an endpoint's binding by name, a certificate by fingerprint).
#[derive(Clone, Copy)]
enum FieldValue<'a> {
    /// The other configuration has the field, this one does not: null.
    Missing,
    Text(&'a str),
    Endpoints(&'a [schema::SamlEndpoint]),
    Certificates(&'a [schema::Certificate]),
    Texts(&'a [String]),
    Claims(&'a schema::ClaimMapping),
}

impl PartialEq for FieldValue<'_> {
    fn eq(&self, other: &Self) -> bool {
        use FieldValue as V;
        match (self, other) {
            (V::Missing, V::Missing) => true,
            (V::Text(a), V::Text(b)) => a == b,
            (V::Endpoints(a), V::Endpoints(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b.iter()).all(|(a, b)| {
                        binding_name(a.binding()) == binding_name(b.binding())
                            && a.location == b.location
                    })
            }
            (V::Certificates(a), V::Certificates(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|(a, b)| a.sha256_fingerprint == b.sha256_fingerprint)
            }
            (V::Texts(a), V::Texts(b)) => a == b,
            (V::Claims(a), V::Claims(b)) => {
                a.email == b.email
                    && a.given_name == b.given_name
                    && a.family_name == b.family_name
                    && a.groups == b.groups
            }
            _ => false,
        }
    }
}

impl<'a> FieldValue<'a> {
    fn text(self) -> Option<&'a str> {
        match self {
            FieldValue::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The fingerprints of a certificate list (none for a missing one).
    fn fingerprints(self) -> BTreeSet<&'a str> {
        match self {
            FieldValue::Certificates(certificates) => certificates
                .iter()
                .map(|c| c.sha256_fingerprint.as_str())
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    fn to_value(self) -> Value {
        match self {
            FieldValue::Missing => pb::null(),
            FieldValue::Text(text) => pb::text(text),
            FieldValue::Endpoints(endpoints) => pb::list(
                endpoints
                    .iter()
                    .map(|e| {
                        pb::nested([
                            ("binding", pb::text(binding_name(e.binding()))),
                            ("location", pb::text(&e.location)),
                        ])
                    })
                    .collect(),
            ),
            FieldValue::Certificates(certificates) => {
                pb::texts(certificates.iter().map(|c| c.sha256_fingerprint.as_str()))
            }
            FieldValue::Texts(texts) => pb::texts(texts.iter().map(String::as_str)),
            FieldValue::Claims(claims) => pb::nested([
                ("email", pb::text(&claims.email)),
                ("given_name", pb::text(&claims.given_name)),
                ("family_name", pb::text(&claims.family_name)),
                ("groups", pb::text(&claims.groups)),
            ]),
        }
    }
}

impl<'a> Configuration<'a> {
    fn fields(&self) -> &'static [Field] {
        match self.settings {
            Some(Settings::Saml(_)) => SAML_FIELDS,
            Some(Settings::Oidc(_)) => OIDC_FIELDS,
            None => BARE_FIELDS,
        }
    }

    fn get(&self, field: Field) -> FieldValue<'a> {
        use FieldValue as V;
        let saml = match self.settings {
            Some(Settings::Saml(saml)) => Some(saml),
            _ => None,
        };
        let oidc = match self.settings {
            Some(Settings::Oidc(oidc)) => Some(oidc),
            _ => None,
        };
        match field {
            Field::Protocol => match self.settings {
                Some(Settings::Saml(_)) => V::Text("SAML"),
                Some(Settings::Oidc(_)) => V::Text("OIDC"),
                None => V::Missing,
            },
            Field::IdpEntityId => saml.map_or(V::Missing, |s| V::Text(&s.idp_entity_id)),
            Field::SsoUrl => saml.map_or(V::Missing, |s| V::Text(primary_sso_url(s))),
            Field::SsoUrls => saml.map_or(V::Missing, |s| V::Endpoints(&s.sso_endpoints)),
            Field::SigningCertificates => {
                saml.map_or(V::Missing, |s| V::Certificates(&s.signing_certificates))
            }
            Field::MetadataUrl => saml.map_or(V::Missing, |s| V::Text(&s.metadata_url)),
            Field::Issuer => oidc.map_or(V::Missing, |o| V::Text(&o.issuer)),
            Field::ClientId => oidc.map_or(V::Missing, |o| V::Text(&o.client_id)),
            Field::Scopes => oidc.map_or(V::Missing, |o| V::Texts(&o.scopes)),
            Field::AuthorizationEndpoint => {
                oidc.map_or(V::Missing, |o| V::Text(&o.authorization_endpoint))
            }
            Field::TokenEndpoint => oidc.map_or(V::Missing, |o| V::Text(&o.token_endpoint)),
            Field::JwksUri => oidc.map_or(V::Missing, |o| V::Text(&o.jwks_uri)),
            Field::UserinfoEndpoint => oidc.map_or(V::Missing, |o| V::Text(&o.userinfo_endpoint)),
            Field::ClaimMapping => V::Claims(self.claim_mapping),
            Field::Role => V::Text(match self.role {
                schema::ConnectionRole::Primary => "primary",
                schema::ConnectionRole::Standby => "standby",
                schema::ConnectionRole::Unspecified => "unspecified",
            }),
            Field::ProviderPreset => V::Text(self.provider_preset),
        }
    }

    /// Every field by name (the details' `configuration`).
    fn to_struct(&self) -> Struct {
        Struct::from_fields(
            self.fields()
                .iter()
                .map(|field| (field.name(), self.get(*field).to_value())),
        )
    }
}

fn binding_name(binding: schema::SamlBinding) -> &'static str {
    match binding {
        schema::SamlBinding::HttpRedirect => "HTTP-Redirect",
        schema::SamlBinding::HttpPost => "HTTP-POST",
        schema::SamlBinding::Unspecified => "unspecified",
    }
}

/// The SSO URL edges send users to: HTTP-Redirect when offered (as the routing table picks).
fn primary_sso_url(saml: &schema::SamlSettings) -> &str {
    saml.sso_endpoints
        .iter()
        .find(|e| e.binding() == schema::SamlBinding::HttpRedirect)
        .or_else(|| saml.sso_endpoints.first())
        .map(|e| e.location.as_str())
        .unwrap_or_default()
}

/// What happened to the client secret: compared by ciphertext, never decrypted.
fn client_secret_change(
    before: Option<&ConnectionSettings>,
    after: Option<&schema::OidcSettings>,
) -> Option<&'static str> {
    let old = match before {
        Some(ConnectionSettings::Oidc(oidc)) => oidc.client_secret.as_ref(),
        _ => None,
    };
    let new = after.and_then(|oidc| oidc.client_secret.as_ref());
    match (old, new) {
        (None, None) => None,
        (None, Some(_)) => Some("set"),
        (Some(_), None) => Some("removed"),
        (Some(old), Some(new)) if old.ciphertext == new.ciphertext && old.nonce == new.nonce => {
            Some("unchanged")
        }
        (Some(_), Some(_)) => Some("changed"),
    }
}

fn short_fingerprint(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(16)]
}

fn or_none(value: &str) -> &str {
    if value.is_empty() {
        "(none)"
    } else {
        value
    }
}

fn describe_configuration(
    e: &schema::ConnectionConfigured,
    previous: Option<&Connection>,
) -> (String, Struct) {
    // Borrowed: the settings hold every certificate's DER.
    let new_settings = match (&e.saml, &e.oidc) {
        (Some(saml), _) => Some(Settings::Saml(saml)),
        (None, Some(oidc)) => Some(Settings::Oidc(oidc)),
        (None, None) => None,
    };
    let no_claim_mapping = schema::ClaimMapping::default();
    let after = Configuration {
        settings: new_settings,
        claim_mapping: e.claim_mapping.as_ref().unwrap_or(&no_claim_mapping),
        role: e.role(),
        provider_preset: &e.provider_preset,
    };
    let previous = previous.filter(|c| c.is_configured());
    let secret = client_secret_change(previous.and_then(|c| c.settings.as_ref()), e.oidc.as_ref());
    let mut configuration = after.to_struct();
    let Some(previous) = previous else {
        if let Some(secret) = secret {
            configuration.insert("client_secret", pb::text(secret));
        }
        let summary = match new_settings {
            Some(Settings::Saml(saml)) => format!(
                "connection configured: SAML, IdP entity id {}, SSO URL {}, {} signing certificate{}",
                saml.idp_entity_id,
                primary_sso_url(saml),
                saml.signing_certificates.len(),
                if saml.signing_certificates.len() == 1 { "" } else { "s" }
            ),
            Some(Settings::Oidc(oidc)) => format!(
                "connection configured: OIDC, issuer {}, client id {}, client secret {}",
                oidc.issuer,
                oidc.client_id,
                secret.unwrap_or("not set")
            ),
            None => "connection configured".to_owned(),
        };
        let details = pb::object([
            ("setup_link_id", pb::text(&e.setup_link_id)),
            ("first_configuration", pb::boolean(true)),
            ("configuration", pb::structure(configuration)),
        ]);
        return (summary, details);
    };
    let previous_settings = previous.settings.as_ref().map(StateSettings::of);
    let before = Configuration {
        settings: previous_settings.as_ref().map(StateSettings::borrowed),
        claim_mapping: &previous.claim_mapping,
        role: previous.role,
        provider_preset: &previous.provider_preset,
    };

    let mut changes = Struct::default();
    // The phrases, "; "-separated, written straight into the summary.
    let mut summary = String::new();
    let mut phrase = |args: std::fmt::Arguments<'_>| {
        if !summary.is_empty() {
            summary.push_str("; ");
        }
        // Writing into a `String` cannot fail.
        let _ = summary.write_fmt(args);
    };
    // The fields before, then the new ones: changes are phrased in that order.
    let before_fields = before.fields();
    let new_fields = after
        .fields()
        .iter()
        .filter(|field| !before_fields.contains(field));
    for &field in before_fields.iter().chain(new_fields) {
        let (was, now) = (before.get(field), after.get(field));
        if was == now {
            continue;
        }
        if field == Field::SigningCertificates {
            let (was_set, now_set) = (was.fingerprints(), now.fingerprints());
            let added: Vec<&str> = now_set.difference(&was_set).copied().collect();
            let removed: Vec<&str> = was_set.difference(&now_set).copied().collect();
            for fingerprint in &added {
                phrase(format_args!(
                    "signing certificate {} added",
                    short_fingerprint(fingerprint)
                ));
            }
            for fingerprint in &removed {
                phrase(format_args!(
                    "signing certificate {} removed",
                    short_fingerprint(fingerprint)
                ));
            }
            if added.is_empty() && removed.is_empty() {
                phrase(format_args!("signing certificates reordered"));
            }
            changes.insert(
                field.name(),
                pb::nested([
                    ("before", was.to_value()),
                    ("after", now.to_value()),
                    ("added", pb::texts(added)),
                    ("removed", pb::texts(removed)),
                ]),
            );
            continue;
        }
        match (field.label(), was.text(), now.text()) {
            (Some(label), Some(a), Some(b)) => phrase(format_args!(
                "{label} changed from {} to {}",
                or_none(a),
                or_none(b)
            )),
            _ => phrase(format_args!("{} changed", field.spaced_name())),
        }
        changes.insert(field.name(), pb::change(was.to_value(), now.to_value()));
    }
    if let Some(secret) = secret {
        if secret != "unchanged" {
            phrase(format_args!("client secret {secret}"));
        }
        changes.insert("client_secret", pb::text(secret));
    }
    if summary.is_empty() {
        summary.push_str("connection re-submitted without changes");
    }
    let details = pb::object([
        ("setup_link_id", pb::text(&e.setup_link_id)),
        ("first_configuration", pb::boolean(false)),
        ("changes", pb::structure(changes)),
        ("configuration", pb::structure(configuration)),
    ]);
    (summary, details)
}

/// A JSON object as a `google.protobuf.Struct` (numbers as doubles; anything but an
/// object gives an empty `Struct`). `describe` no longer goes through JSON; the test
/// oracle still does.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn to_struct(value: serde_json::Value) -> prost_types::Struct {
    match to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

#[cfg_attr(not(test), allow(dead_code))]
fn to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as Json;
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use signpost_domain::event_type;

    use super::*;

    /// The JSON version of `describe`, kept as the oracle the rewrite is checked against:
    /// the entries it produced are the stored audit database, so `describe` must produce
    /// them byte for byte. Not to be edited, except to follow a deliberate change of the
    /// entries (made in both).
    mod reference {
        use std::collections::BTreeSet;

        use serde_json::{json, Map, Value};
        use signpost_api::audit::v1::{AuditActor, AuditEntry, AuditTarget};
        use signpost_control::read_model::ReadModel;
        use signpost_domain::connection::{Connection, ConnectionSettings};
        use signpost_domain::event::from_timestamp;
        use signpost_domain::{schema, Event};
        use signpost_eventlog::EventEnvelope;

        use crate::describe::{action_name, to_struct};

        /// The oracle's entry (details included) and connections.
        pub(crate) struct Described {
            pub entry: AuditEntry,
            pub connections: Vec<String>,
        }

        /// Describes `event` (at `envelope`) given the state before it.
        pub(crate) fn describe_reference(
            envelope: &EventEnvelope,
            event: &Event,
            before: &ReadModel,
        ) -> Described {
            let stream = envelope.stream_id.as_str();
            let actor = envelope.actor.clone().unwrap_or_default();
            let mut target = AuditTarget::default();
            let mut connections = Vec::new();
            let by = actor_phrase(&actor);
            let (summary, details) = if let Some(id) = stream.strip_prefix("organization-") {
                target.organization_id = id.to_owned();
                describe_organization_event(event, id, before, &mut target, &mut connections)
            } else if let Some(id) = stream.strip_prefix("connection-") {
                target.connection_id = id.to_owned();
                connections.push(id.to_owned());
                let previous = before.connections.get(id).map(|c| &c.state);
                target.organization_id = match event {
                    Event::ConnectionConfigured(e) => e.organization_id.clone(),
                    _ => before
                        .connection_organization(id)
                        .unwrap_or_default()
                        .to_owned(),
                };
                describe_connection_event(event, previous)
            } else if let Some(id) = stream.strip_prefix("setup-link-") {
                target.setup_link_id = id.to_owned();
                let link = before.setup_links.get(id).map(|l| &l.state);
                let (organization_id, connection_id, recipient) = match (event, link) {
                    (Event::SetupLinkIssued(e), _) => (
                        e.organization_id.clone(),
                        e.connection_id.clone(),
                        e.recipient_email.clone(),
                    ),
                    (_, Some(link)) => (
                        link.organization_id.to_string(),
                        link.connection_id.to_string(),
                        link.recipient_email.clone(),
                    ),
                    (_, None) => (
                        before
                            .closed_links
                            .get(id)
                            .map_or(String::new(), |closed| closed.organization_id.to_string()),
                        String::new(),
                        String::new(),
                    ),
                };
                target.organization_id = organization_id;
                if !connection_id.is_empty() {
                    target.connection_id = connection_id.clone();
                    connections.push(connection_id.clone());
                }
                describe_setup_link_event(event, &by, &recipient, &connection_id, before)
            } else if let Some(id) = stream.strip_prefix("api-token-") {
                target.token_id = id.to_owned();
                let token = before.api_tokens.get(id).map(|t| &t.state);
                describe_api_token_event(event, token)
            } else {
                (format!("{} recorded", envelope.event_type), json!({}))
            };
            let entry = AuditEntry {
                position: envelope.position,
                time: envelope.recorded_at,
                actor: Some(AuditActor {
                    kind: actor.kind,
                    id: actor.id,
                    display_name: actor.display_name,
                    on_behalf_of: actor.on_behalf_of,
                }),
                action: action_name(&envelope.event_type)
                    .unwrap_or("unknown")
                    .to_owned(),
                target: Some(target),
                summary,
                details: Some(to_struct(details)),
                correlation_id: envelope.correlation_id.clone(),
                event_type: envelope.event_type.clone(),
            };
            Described { entry, connections }
        }

        /// "Onboarding service for alice@firm.com", "setup link for it@acme.com", "Signpost".
        fn actor_phrase(actor: &schema::Actor) -> String {
            let name = if actor.display_name.is_empty() {
                actor.id.clone()
            } else {
                actor.display_name.clone()
            };
            if actor.on_behalf_of.is_empty() {
                name
            } else {
                format!("{name} for {}", actor.on_behalf_of)
            }
        }

        fn change(before: impl Into<Value>, after: impl Into<Value>) -> Value {
            json!({ "before": before.into(), "after": after.into() })
        }

        fn optional(value: Option<&str>) -> Value {
            value.map_or(Value::Null, |v| Value::String(v.to_owned()))
        }

        fn policy_name(policy: schema::SsoPolicy) -> &'static str {
            match policy {
                schema::SsoPolicy::Optional => "optional",
                schema::SsoPolicy::Enforced => "enforced",
                schema::SsoPolicy::Unspecified => "unspecified",
            }
        }

        fn protocol_name(protocol: schema::Protocol) -> &'static str {
            match protocol {
                schema::Protocol::Saml => "SAML",
                schema::Protocol::Oidc => "OIDC",
                schema::Protocol::Unspecified => "unconfigured",
            }
        }

        /// "c-123 (okta, SAML)" for a configured connection, the bare id otherwise.
        fn connection_label(model: &ReadModel, connection_id: &str) -> String {
            match model.connections.get(connection_id).map(|c| &c.state) {
                Some(connection) if connection.is_configured() => {
                    let protocol = protocol_name(connection.protocol());
                    if connection.provider_preset.is_empty() {
                        format!("{connection_id} ({protocol})")
                    } else {
                        format!(
                            "{connection_id} ({}, {protocol})",
                            connection.provider_preset
                        )
                    }
                }
                _ => connection_id.to_owned(),
            }
        }

        fn describe_organization_event(
            event: &Event,
            organization_id: &str,
            before: &ReadModel,
            target: &mut AuditTarget,
            connections: &mut Vec<String>,
        ) -> (String, Value) {
            let organization = before.organizations.get(organization_id).map(|o| &o.state);
            let active_before = organization.and_then(|o| o.active_connection_id.as_deref());
            match event {
                Event::OrganizationCreated(e) => (
                    format!(
                        "organization \"{}\" created (external id {})",
                        e.display_name, e.external_id
                    ),
                    json!({ "display_name": e.display_name, "external_id": e.external_id }),
                ),
                Event::DomainClaimed(e) => {
                    target.domain = e.domain.clone();
                    (
                        format!("domain {} claimed, pending verification", e.domain),
                        json!({ "domain": e.domain, "verification_record_name": e.verification_record_name }),
                    )
                }
                Event::DomainVerified(e) => {
                    target.domain = e.domain.clone();
                    let (method, how) = match e.method() {
                        schema::VerificationMethod::DnsTxt => {
                            ("dns_txt", "by DNS TXT record".to_owned())
                        }
                        schema::VerificationMethod::Manual if e.note.is_empty() => {
                            ("manual", "manually".to_owned())
                        }
                        schema::VerificationMethod::Manual => {
                            ("manual", format!("manually (\"{}\")", e.note))
                        }
                        schema::VerificationMethod::Unspecified => ("unspecified", String::new()),
                    };
                    (
                        format!("domain {} verified {how}", e.domain)
                            .trim_end()
                            .to_owned(),
                        json!({ "domain": e.domain, "method": method, "note": e.note }),
                    )
                }
                Event::DomainReleased(e) => {
                    target.domain = e.domain.clone();
                    (
                        format!("domain {} released", e.domain),
                        json!({ "domain": e.domain }),
                    )
                }
                Event::SsoPolicyChanged(e) => (
                    format!(
                        "SSO policy changed from {} to {}",
                        policy_name(e.previous()),
                        policy_name(e.policy())
                    ),
                    json!({ "sso_policy": change(policy_name(e.previous()), policy_name(e.policy())) }),
                ),
                Event::ConnectionActivated(e) => {
                    target.connection_id = e.connection_id.clone();
                    connections.push(e.connection_id.clone());
                    (
                        format!(
                            "connection {} activated",
                            connection_label(before, &e.connection_id)
                        ),
                        json!({
                            "connection_id": e.connection_id,
                            "active_connection": change(optional(active_before), e.connection_id.as_str()),
                        }),
                    )
                }
                Event::ConnectionDeactivated(e) => {
                    target.connection_id = e.connection_id.clone();
                    connections.push(e.connection_id.clone());
                    (
                        format!(
                            "connection {} deactivated; the organization's domains route to password",
                            connection_label(before, &e.connection_id)
                        ),
                        json!({
                            "connection_id": e.connection_id,
                            "active_connection": change(e.connection_id.as_str(), Value::Null),
                        }),
                    )
                }
                Event::ProviderSwitched(e) => {
                    target.connection_id = e.connection_id.clone();
                    connections.push(e.connection_id.clone());
                    connections.push(e.previous_connection_id.clone());
                    (
                        format!(
                            "provider switched from {} to {}",
                            connection_label(before, &e.previous_connection_id),
                            connection_label(before, &e.connection_id)
                        ),
                        json!({
                            "previous_connection_id": e.previous_connection_id,
                            "connection_id": e.connection_id,
                            "active_connection": change(e.previous_connection_id.as_str(), e.connection_id.as_str()),
                        }),
                    )
                }
                _ => (String::from("organization event"), json!({})),
            }
        }

        fn intent_name(intent: schema::SetupIntent) -> &'static str {
            match intent {
                schema::SetupIntent::NewConnection => "new_connection",
                schema::SetupIntent::UpdateConnection => "update_connection",
                schema::SetupIntent::StageSwitch => "stage_switch",
                schema::SetupIntent::Unspecified => "unspecified",
            }
        }

        fn describe_setup_link_event(
            event: &Event,
            by: &str,
            recipient: &str,
            connection_id: &str,
            before: &ReadModel,
        ) -> (String, Value) {
            match event {
                Event::SetupLinkIssued(e) => {
                    let expires = from_timestamp(e.expires_at.as_ref())
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let intent = intent_name(e.intent());
                    (
                        format!(
                            "setup link issued to {} by {by} ({}, connection {}, expires {expires})",
                            e.recipient_email,
                            intent.replace('_', " "),
                            e.connection_id
                        ),
                        // Never the token hash: it is the link's credential in another form.
                        json!({
                            "recipient_email": e.recipient_email,
                            "intent": intent,
                            "connection_id": e.connection_id,
                            "expires_at": expires,
                        }),
                    )
                }
                Event::SetupFormSubmitted(e) => (
                    format!(
                        "setup form submitted through the link sent to {recipient} (submission {}) for connection {}",
                        e.submission,
                        connection_label(before, &e.connection_id)
                    ),
                    json!({ "submission": e.submission, "connection_id": e.connection_id }),
                ),
                Event::SetupLinkRevoked(e) => match e.reason() {
                    schema::RevocationReason::Superseded => (
                        format!(
                            "setup link sent to {recipient} superseded by link {}",
                            e.superseded_by
                        ),
                        json!({ "reason": "superseded", "superseded_by": e.superseded_by }),
                    ),
                    _ => (
                        format!("setup link sent to {recipient} revoked by {by}"),
                        json!({ "reason": "revoked" }),
                    ),
                },
                Event::SetupLinkSpent(e) => (
                    format!(
                        "setup link sent to {recipient} spent: connection {} was activated",
                        e.connection_id
                    ),
                    json!({ "connection_id": e.connection_id }),
                ),
                Event::SetupLinkExpired(e) => {
                    let at = from_timestamp(e.expired_at.as_ref())
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    (
                        format!("setup link sent to {recipient} expired at {at}"),
                        json!({ "expired_at": at, "connection_id": connection_id }),
                    )
                }
                _ => (String::from("setup link event"), json!({})),
            }
        }

        fn describe_api_token_event(
            event: &Event,
            token: Option<&signpost_domain::api_token::ApiToken>,
        ) -> (String, Value) {
            match event {
                Event::ApiTokenIssued(e) => {
                    let role = match e.role() {
                        schema::TokenRole::Admin => "admin",
                        schema::TokenRole::Edge => "edge",
                        schema::TokenRole::Auditor => "auditor",
                        schema::TokenRole::Unspecified => "unspecified",
                    };
                    let scope = if e.organization_scope.is_empty() {
                        String::new()
                    } else {
                        format!(", scoped to organization {}", e.organization_scope)
                    };
                    (
                        format!("API token \"{}\" issued with role {role}{scope}", e.name),
                        // Never the token hash.
                        json!({ "name": e.name, "role": role, "organization_scope": e.organization_scope }),
                    )
                }
                Event::ApiTokenRevoked(_) => {
                    let name = token.map(|t| t.name.as_str()).unwrap_or_default();
                    (
                        format!("API token \"{name}\" revoked"),
                        json!({ "name": name }),
                    )
                }
                _ => (String::from("API token event"), json!({})),
            }
        }

        fn describe_connection_event(
            event: &Event,
            previous: Option<&Connection>,
        ) -> (String, Value) {
            match event {
                Event::ConnectionConfigured(e) => describe_configuration(e, previous),
                Event::GroupAssigned(e) => {
                    let old = previous.and_then(|c| c.groups.get(&e.idp_group));
                    let summary = match old {
                        Some(old) => format!(
                            "group \"{}\" role changed from {old} to {}",
                            e.idp_group, e.role
                        ),
                        None => format!("group \"{}\" assigned role {}", e.idp_group, e.role),
                    };
                    (
                        summary,
                        json!({ "idp_group": e.idp_group, "role": change(optional(old.map(String::as_str)), e.role.as_str()) }),
                    )
                }
                Event::GroupUnassigned(e) => {
                    let old = previous.and_then(|c| c.groups.get(&e.idp_group));
                    (
                        match old {
                            Some(old) => {
                                format!("group \"{}\" unassigned (was role {old})", e.idp_group)
                            }
                            None => format!("group \"{}\" unassigned", e.idp_group),
                        },
                        json!({ "idp_group": e.idp_group, "role": change(optional(old.map(String::as_str)), Value::Null) }),
                    )
                }
                Event::GroupRequirementChanged(e) => {
                    let old = previous.map(|c| c.require_group).unwrap_or_default();
                    (
                        if e.require_group {
                            "membership of an assigned group is now required to sign in".to_owned()
                        } else {
                            "membership of an assigned group is no longer required".to_owned()
                        },
                        json!({ "require_group": change(old, e.require_group) }),
                    )
                }
                _ => (String::from("connection event"), json!({})),
            }
        }

        /// The non-secret settings of a configuration, field by field, for before / after.
        /// A connection's settings, borrowed (from an event or from the state before it).
        #[derive(Clone, Copy)]
        enum Settings<'a> {
            Saml(&'a schema::SamlSettings),
            Oidc(&'a schema::OidcSettings),
        }

        fn configuration_fields(
            settings: Option<Settings<'_>>,
            claim_mapping: &schema::ClaimMapping,
            role: schema::ConnectionRole,
            provider_preset: &str,
        ) -> Vec<(&'static str, Value)> {
            let mut fields = Vec::new();
            match settings {
                Some(Settings::Saml(saml)) => {
                    fields.push(("protocol", json!("SAML")));
                    fields.push(("idp_entity_id", json!(saml.idp_entity_id)));
                    fields.push(("sso_url", json!(primary_sso_url(saml))));
                    fields.push((
                        "sso_urls",
                        Value::Array(
                            saml.sso_endpoints
                                .iter()
                                .map(|e| json!({ "binding": binding_name(e.binding()), "location": e.location }))
                                .collect(),
                        ),
                    ));
                    fields.push((
                        "signing_certificates",
                        json!(saml
                            .signing_certificates
                            .iter()
                            .map(|c| c.sha256_fingerprint.clone())
                            .collect::<Vec<_>>()),
                    ));
                    fields.push(("metadata_url", json!(saml.metadata_url)));
                }
                Some(Settings::Oidc(oidc)) => {
                    fields.push(("protocol", json!("OIDC")));
                    fields.push(("issuer", json!(oidc.issuer)));
                    fields.push(("client_id", json!(oidc.client_id)));
                    fields.push(("scopes", json!(oidc.scopes)));
                    fields.push(("authorization_endpoint", json!(oidc.authorization_endpoint)));
                    fields.push(("token_endpoint", json!(oidc.token_endpoint)));
                    fields.push(("jwks_uri", json!(oidc.jwks_uri)));
                    fields.push(("userinfo_endpoint", json!(oidc.userinfo_endpoint)));
                }
                None => {}
            }
            fields.push((
                "claim_mapping",
                json!({
                    "email": claim_mapping.email,
                    "given_name": claim_mapping.given_name,
                    "family_name": claim_mapping.family_name,
                    "groups": claim_mapping.groups,
                }),
            ));
            fields.push((
                "role",
                json!(match role {
                    schema::ConnectionRole::Primary => "primary",
                    schema::ConnectionRole::Standby => "standby",
                    schema::ConnectionRole::Unspecified => "unspecified",
                }),
            ));
            fields.push(("provider_preset", json!(provider_preset)));
            fields
        }

        fn binding_name(binding: schema::SamlBinding) -> &'static str {
            match binding {
                schema::SamlBinding::HttpRedirect => "HTTP-Redirect",
                schema::SamlBinding::HttpPost => "HTTP-POST",
                schema::SamlBinding::Unspecified => "unspecified",
            }
        }

        /// The SSO URL edges send users to: HTTP-Redirect when offered (as the routing table picks).
        fn primary_sso_url(saml: &schema::SamlSettings) -> String {
            saml.sso_endpoints
                .iter()
                .find(|e| e.binding() == schema::SamlBinding::HttpRedirect)
                .or_else(|| saml.sso_endpoints.first())
                .map(|e| e.location.clone())
                .unwrap_or_default()
        }

        /// What happened to the client secret: compared by ciphertext, never decrypted.
        fn client_secret_change(
            before: Option<&ConnectionSettings>,
            after: Option<&schema::OidcSettings>,
        ) -> Option<&'static str> {
            let old = match before {
                Some(ConnectionSettings::Oidc(oidc)) => oidc.client_secret.as_ref(),
                _ => None,
            };
            let new = after.and_then(|oidc| oidc.client_secret.as_ref());
            match (old, new) {
                (None, None) => None,
                (None, Some(_)) => Some("set"),
                (Some(_), None) => Some("removed"),
                (Some(old), Some(new))
                    if old.ciphertext == new.ciphertext && old.nonce == new.nonce =>
                {
                    Some("unchanged")
                }
                (Some(_), Some(_)) => Some("changed"),
            }
        }

        fn short_fingerprint(fingerprint: &str) -> &str {
            &fingerprint[..fingerprint.len().min(16)]
        }

        fn describe_configuration(
            e: &schema::ConnectionConfigured,
            previous: Option<&Connection>,
        ) -> (String, Value) {
            // Borrowed: the settings hold every certificate's DER.
            let new_settings = match (&e.saml, &e.oidc) {
                (Some(saml), _) => Some(Settings::Saml(saml)),
                (None, Some(oidc)) => Some(Settings::Oidc(oidc)),
                (None, None) => None,
            };
            let claim_mapping = e.claim_mapping.clone().unwrap_or_default();
            let after =
                configuration_fields(new_settings, &claim_mapping, e.role(), &e.provider_preset);
            let previous = previous.filter(|c| c.is_configured());
            let before = previous.map(|c| {
                let saml = match &c.settings {
                    Some(ConnectionSettings::Saml(saml)) => Some(saml.settings()),
                    _ => None,
                };
                let settings = match (&c.settings, &saml) {
                    (_, Some(saml)) => Some(Settings::Saml(saml)),
                    (Some(ConnectionSettings::Oidc(oidc)), None) => Some(Settings::Oidc(oidc)),
                    _ => None,
                };
                configuration_fields(settings, &c.claim_mapping, c.role, &c.provider_preset)
            });
            let secret =
                client_secret_change(previous.and_then(|c| c.settings.as_ref()), e.oidc.as_ref());
            let mut details = Map::new();
            details.insert("setup_link_id".into(), json!(e.setup_link_id));
            details.insert("first_configuration".into(), json!(before.is_none()));
            let configuration: Map<String, Value> = after
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let Some(before) = before else {
                let mut configuration = configuration;
                if let Some(secret) = secret {
                    configuration.insert("client_secret".into(), json!(secret));
                }
                let summary = match new_settings {
                    Some(Settings::Saml(saml)) => format!(
                        "connection configured: SAML, IdP entity id {}, SSO URL {}, {} signing certificate{}",
                        saml.idp_entity_id,
                        primary_sso_url(saml),
                        saml.signing_certificates.len(),
                        if saml.signing_certificates.len() == 1 { "" } else { "s" }
                    ),
                    Some(Settings::Oidc(oidc)) => format!(
                        "connection configured: OIDC, issuer {}, client id {}, client secret {}",
                        oidc.issuer,
                        oidc.client_id,
                        secret.unwrap_or("not set")
                    ),
                    None => "connection configured".to_owned(),
                };
                details.insert("configuration".into(), Value::Object(configuration));
                return (summary, Value::Object(details));
            };

            let old: Map<String, Value> = before
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let mut changes = Map::new();
            let mut phrases = Vec::new();
            let mut keys: Vec<&str> = before.iter().map(|(k, _)| *k).collect();
            for (key, _) in &after {
                if !keys.contains(key) {
                    keys.push(key);
                }
            }
            for key in keys {
                let was = old.get(key).cloned().unwrap_or(Value::Null);
                let now = configuration.get(key).cloned().unwrap_or(Value::Null);
                if was == now {
                    continue;
                }
                if key == "signing_certificates" {
                    let set = |v: &Value| -> BTreeSet<String> {
                        v.as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let (was_set, now_set) = (set(&was), set(&now));
                    let added: Vec<&String> = now_set.difference(&was_set).collect();
                    let removed: Vec<&String> = was_set.difference(&now_set).collect();
                    for fingerprint in &added {
                        phrases.push(format!(
                            "signing certificate {} added",
                            short_fingerprint(fingerprint)
                        ));
                    }
                    for fingerprint in &removed {
                        phrases.push(format!(
                            "signing certificate {} removed",
                            short_fingerprint(fingerprint)
                        ));
                    }
                    if added.is_empty() && removed.is_empty() {
                        phrases.push("signing certificates reordered".to_owned());
                    }
                    changes.insert(
                        key.to_owned(),
                        json!({ "before": was, "after": now, "added": added, "removed": removed }),
                    );
                    continue;
                }
                let label = match key {
                    "sso_url" => Some("SSO URL"),
                    "idp_entity_id" => Some("IdP entity id"),
                    "issuer" => Some("issuer"),
                    "client_id" => Some("client id"),
                    "protocol" => Some("protocol"),
                    "metadata_url" => Some("metadata URL"),
                    "role" => Some("role"),
                    "provider_preset" => Some("provider preset"),
                    _ => None,
                };
                match (label, was.as_str(), now.as_str()) {
                    (Some(label), Some(a), Some(b)) => phrases.push(format!(
                        "{label} changed from {} to {}",
                        or_none(a),
                        or_none(b)
                    )),
                    _ => phrases.push(format!("{} changed", key.replace('_', " "))),
                }
                changes.insert(key.to_owned(), change(was, now));
            }
            if let Some(secret) = secret {
                if secret != "unchanged" {
                    phrases.push(format!("client secret {secret}"));
                }
                changes.insert("client_secret".into(), json!(secret));
            }
            let summary = if phrases.is_empty() {
                "connection re-submitted without changes".to_owned()
            } else {
                phrases.join("; ")
            };
            details.insert("changes".into(), Value::Object(changes));
            details.insert("configuration".into(), Value::Object(configuration));
            (summary, Value::Object(details))
        }

        fn or_none(value: &str) -> &str {
            if value.is_empty() {
                "(none)"
            } else {
                value
            }
        }
    }

    /// A log under construction: envelopes in position order, with their events.
    #[derive(Default)]
    struct Log {
        events: Vec<(EventEnvelope, Event)>,
    }

    fn admin() -> Option<schema::Actor> {
        Some(schema::Actor {
            kind: schema::ActorKind::ApiToken as i32,
            id: "token-admin".into(),
            on_behalf_of: "alice@platform.example".into(),
            display_name: "Onboarding".into(),
        })
    }

    fn holder(link: &str) -> Option<schema::Actor> {
        Some(schema::Actor {
            kind: schema::ActorKind::SetupLink as i32,
            id: link.into(),
            on_behalf_of: "it@acme.com".into(),
            display_name: String::new(),
        })
    }

    fn system() -> Option<schema::Actor> {
        Some(schema::Actor {
            kind: schema::ActorKind::System as i32,
            id: "signpost".into(),
            on_behalf_of: String::new(),
            display_name: "Signpost".into(),
        })
    }

    impl Log {
        /// Appends `event` on `stream` as `actor`, with `event_type` as the envelope's type.
        fn push_typed(
            &mut self,
            stream: &str,
            actor: Option<schema::Actor>,
            event_type: &str,
            event: Event,
        ) {
            let position = self.events.len() as u64 + 1;
            let stream_version = 1 + self
                .events
                .iter()
                .filter(|(e, _)| e.stream_id == stream)
                .count() as u64;
            let envelope = EventEnvelope {
                position,
                stream_id: stream.to_owned(),
                stream_version,
                recorded_at: Some(prost_types::Timestamp {
                    seconds: 1_770_000_000 + position as i64,
                    nanos: (position as i32 % 3) * 1000,
                }),
                actor,
                correlation_id: format!("correlation-{}", position / 3),
                event_type: event_type.to_owned(),
                ..Default::default()
            };
            self.events.push((envelope, event));
        }

        fn push_as(&mut self, stream: &str, actor: Option<schema::Actor>, event: Event) {
            let kind = event_type(&event);
            self.push_typed(stream, actor, kind, event);
        }

        fn push(&mut self, stream: &str, event: Event) {
            self.push_as(stream, admin(), event);
        }
    }

    /// Folds `log` as the fold does, describing every event both ways before applying it;
    /// returns the reference's summaries.
    fn assert_same_as_reference(log: &[(EventEnvelope, Event)]) -> Vec<String> {
        let mut model = ReadModel::default();
        let mut summaries = Vec::new();
        for (envelope, event) in log {
            let fast = describe(envelope, event, &model);
            let connections = terms(envelope, event, &model).connections;
            let oracle = reference::describe_reference(envelope, event, &model);
            // The stored form: the entry's length, then the entry.
            let stored = encode_entry(fast.entry, fast.details);
            let mut expected = Vec::new();
            prost::encoding::encode_varint(oracle.entry.encoded_len() as u64, &mut expected);
            oracle.entry.encode_raw(&mut expected);
            assert_eq!(
                stored, expected,
                "encoded entry of {event:?} at {envelope:?}"
            );
            let mut entry = &stored[..];
            let length = prost::encoding::decode_varint(&mut entry).expect("length");
            assert_eq!(length as usize, entry.len());
            assert_eq!(
                AuditEntry::decode(entry).expect("an entry"),
                oracle.entry,
                "entry of {event:?}"
            );
            assert_eq!(connections, oracle.connections, "connections of {event:?}");
            summaries.push(oracle.entry.summary);
            model.apply(envelope, event);
        }
        summaries
    }

    /// Describes every organization-local event of `log` again, from a model folded from
    /// its organization's streams alone (its own, and each connection and setup-link
    /// stream whose first event, at or before it, named the organization: what a read
    /// finds through the fold's `OrgStream` postings), and checks that the entry and its
    /// connections are the ones described from the whole log. Returns how many events
    /// were organization-local, and how many not.
    fn assert_local_entries_match(log: &[(EventEnvelope, Event)]) -> (usize, usize) {
        let mut model = ReadModel::default();
        // Stream → the organization its first event named ("" none).
        let mut first_named: std::collections::HashMap<String, String> = Default::default();
        // Organization → its streams, as their first events named it.
        let mut streams: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
        let (mut local, mut not_local) = (0, 0);
        for (i, (envelope, event)) in log.iter().enumerate() {
            let named = terms(envelope, event, &model);
            let stream = envelope.stream_id.as_str();
            if envelope.stream_version == 1 {
                first_named.insert(stream.to_owned(), named.organization_id.to_owned());
                if (stream.starts_with("connection-") || stream.starts_with("setup-link-"))
                    && !named.organization_id.is_empty()
                {
                    streams
                        .entry(named.organization_id.to_owned())
                        .or_default()
                        .insert(stream.to_owned());
                }
            }
            let theirs =
                |id: &str| first_named.get(id).map(String::as_str) == Some(named.organization_id);
            if organization_local(envelope, event, &model, &named, theirs) {
                local += 1;
                let organization_id = named.organization_id;
                let own = format!("organization-{organization_id}");
                let theirs = streams.get(organization_id);
                let mut alone = ReadModel::default();
                for (earlier, earlier_event) in &log[..i] {
                    let id = &earlier.stream_id;
                    if *id == own || theirs.is_some_and(|s| s.contains(id)) {
                        alone.apply(earlier, earlier_event);
                    }
                }
                let whole = describe(envelope, event, &model);
                let apart = describe(envelope, event, &alone);
                assert_eq!(
                    terms(envelope, event, &alone),
                    terms(envelope, event, &model),
                    "terms of {event:?} at {envelope:?}"
                );
                assert_eq!(
                    apart.stored(),
                    whole.stored(),
                    "entry of {event:?} at {envelope:?}, described from organization \
                     {organization_id}'s streams alone"
                );
            } else {
                not_local += 1;
            }
            model.apply(envelope, event);
        }
        (local, not_local)
    }

    #[test]
    fn organization_local_entries_are_described_alike_from_the_organization_alone() {
        let (local, not_local) = assert_local_entries_match(&every_branch().events);
        // Both kinds occur (the log's connection `c1` begins with an event of no
        // organization, so none of its events is local): the check is not vacuous.
        assert!(
            local >= 30 && not_local >= 10,
            "{local} local, {not_local} not"
        );
    }

    fn certificate(fingerprint: &str) -> schema::Certificate {
        schema::Certificate {
            der: vec![0x30; 16],
            sha256_fingerprint: fingerprint.to_owned(),
            subject: "CN=idp".into(),
            ..Default::default()
        }
    }

    fn endpoint(binding: i32, location: &str) -> schema::SamlEndpoint {
        schema::SamlEndpoint {
            binding,
            location: location.to_owned(),
        }
    }

    const REDIRECT: i32 = schema::SamlBinding::HttpRedirect as i32;
    const POST: i32 = schema::SamlBinding::HttpPost as i32;
    const F1: &str = "1111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const F2: &str = "2222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const F3: &str = "short";

    fn saml(
        entity: &str,
        endpoints: Vec<schema::SamlEndpoint>,
        fingerprints: &[&str],
        metadata_url: &str,
    ) -> schema::SamlSettings {
        schema::SamlSettings {
            idp_entity_id: entity.to_owned(),
            sso_endpoints: endpoints,
            signing_certificates: fingerprints.iter().map(|f| certificate(f)).collect(),
            source: schema::SamlSource::MetadataUrl as i32,
            metadata_url: metadata_url.to_owned(),
        }
    }

    fn oidc(issuer: &str, secret: Option<(u8, u8)>, scopes: &[&str]) -> schema::OidcSettings {
        schema::OidcSettings {
            issuer: issuer.to_owned(),
            authorization_endpoint: format!("{issuer}/authorize"),
            token_endpoint: format!("{issuer}/token"),
            jwks_uri: format!("{issuer}/keys"),
            userinfo_endpoint: String::new(),
            client_id: "client".into(),
            client_secret: secret.map(|(nonce, ciphertext)| schema::EncryptedSecret {
                key_id: "k1".into(),
                nonce: vec![nonce; 12],
                ciphertext: vec![ciphertext; 32],
            }),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn claims(email: &str) -> Option<schema::ClaimMapping> {
        Some(schema::ClaimMapping {
            email: email.to_owned(),
            given_name: "given".into(),
            family_name: String::new(),
            groups: "groups".into(),
        })
    }

    /// A configuration of `connection` (organization o1, link l1).
    struct Configure {
        saml: Option<schema::SamlSettings>,
        oidc: Option<schema::OidcSettings>,
        claim_mapping: Option<schema::ClaimMapping>,
        role: i32,
        provider_preset: &'static str,
    }

    impl Configure {
        fn saml(settings: schema::SamlSettings) -> Self {
            Configure {
                saml: Some(settings),
                oidc: None,
                claim_mapping: claims("email"),
                role: schema::ConnectionRole::Primary as i32,
                provider_preset: "okta",
            }
        }

        fn oidc(settings: schema::OidcSettings) -> Self {
            Configure {
                saml: None,
                oidc: Some(settings),
                claim_mapping: claims("email"),
                role: schema::ConnectionRole::Standby as i32,
                provider_preset: "entra",
            }
        }

        fn event(self, connection: &str) -> Event {
            Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
                connection_id: connection.to_owned(),
                organization_id: "o1".into(),
                setup_link_id: "l1".into(),
                role: self.role,
                protocol: schema::Protocol::Unspecified as i32,
                saml: self.saml,
                oidc: self.oidc,
                claim_mapping: self.claim_mapping,
                provider_preset: self.provider_preset.to_owned(),
            }))
        }
    }

    /// A hand-built log reaching every event type and every branch of `describe`: each
    /// stream kind and mismatched ones, first configurations (SAML, OIDC with and without
    /// a secret, neither, both), re-configurations (unchanged, every field changed,
    /// certificates added / removed / reordered / duplicated, SAML ⇄ OIDC, the client
    /// secret set / unchanged / changed / removed), activation, switch, groups, setup
    /// links with and without a known link, API tokens, unknown values of every enum.
    fn every_branch() -> Log {
        let mut log = Log::default();
        let org = "organization-o1";
        let (c1, c2) = ("connection-c1", "connection-c2");
        let created = |name: &str| {
            Event::OrganizationCreated(schema::OrganizationCreated {
                organization_id: "o1".into(),
                display_name: name.into(),
                external_id: "ext-1".into(),
            })
        };
        let verified = |domain: &str, method: i32, note: &str| {
            Event::DomainVerified(schema::DomainVerified {
                domain: domain.into(),
                method,
                note: note.into(),
            })
        };
        let policy = |previous: i32, policy: i32| {
            Event::SsoPolicyChanged(schema::SsoPolicyChanged { previous, policy })
        };
        let activated = |id: &str| {
            Event::ConnectionActivated(schema::ConnectionActivated {
                connection_id: id.into(),
            })
        };
        let assigned = |group: &str, role: &str| {
            Event::GroupAssigned(schema::GroupAssigned {
                idp_group: group.into(),
                role: role.into(),
            })
        };
        let unassigned = |group: &str| {
            Event::GroupUnassigned(schema::GroupUnassigned {
                idp_group: group.into(),
            })
        };
        let require = |require_group: bool| {
            Event::GroupRequirementChanged(schema::GroupRequirementChanged { require_group })
        };
        let issued = |link: &str, connection: &str, intent: i32, expires: Option<i64>| {
            Event::SetupLinkIssued(schema::SetupLinkIssued {
                setup_link_id: link.into(),
                organization_id: "o1".into(),
                intent,
                connection_id: connection.into(),
                token_sha256: vec![7; 32],
                expires_at: expires.map(|seconds| prost_types::Timestamp { seconds, nanos: 5 }),
                recipient_email: "it@acme.com".into(),
            })
        };
        let submitted = |connection: &str, submission: u32| {
            Event::SetupFormSubmitted(schema::SetupFormSubmitted {
                setup_link_id: "l1".into(),
                connection_id: connection.into(),
                submission,
            })
        };
        let revoked = |reason: i32, by: &str| {
            Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                reason,
                superseded_by: by.into(),
            })
        };
        let expired = |at: Option<i64>| {
            Event::SetupLinkExpired(schema::SetupLinkExpired {
                expired_at: at.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            })
        };
        let token = |name: &str, role: i32, scope: &str| {
            Event::ApiTokenIssued(schema::ApiTokenIssued {
                token_id: "t".into(),
                name: name.into(),
                role,
                token_sha256: vec![9; 32],
                organization_scope: scope.into(),
            })
        };
        let standard = || {
            saml(
                "https://idp/e",
                vec![
                    endpoint(POST, "https://idp/post"),
                    endpoint(REDIRECT, "https://idp/r"),
                ],
                &[F1],
                "",
            )
        };

        // The organization, its domains and its policy.
        log.push(org, created("Acme \"Law\""));
        log.push(
            org,
            Event::DomainClaimed(schema::DomainClaimed {
                domain: "acme.com".into(),
                verification_record_name: "_signpost.acme.com".into(),
                verification_value: "v".into(),
            }),
        );
        log.push_as(org, system(), verified("acme.com", 1, ""));
        log.push(org, verified("acme.com", 2, ""));
        log.push(org, verified("acme.com", 2, "called the CIO "));
        log.push(org, verified("acme.com ", 0, ""));
        log.push(org, verified("acme.com", 9, "note"));
        log.push(org, policy(1, 2));
        log.push(org, policy(0, 1));
        log.push(org, policy(7, 2));
        log.push(
            org,
            Event::DomainReleased(schema::DomainReleased {
                domain: "acme.com".into(),
            }),
        );
        // Activating a connection nobody configured; then events on the wrong streams.
        log.push(org, activated("c-ghost"));
        log.push(org, assigned("Misplaced", "member"));
        log.push(c1, created("Misplaced"));
        log.push("setup-link-l9", created("Misplaced"));
        log.push("api-token-t9", created("Misplaced"));
        log.push("widget-1", created("Unknown stream"));
        log.push_typed(org, admin(), "bogus_type", created("Unknown type"));
        log.push_as("organization-", None, created("Empty id, no actor"));

        // A setup link and the first SAML configuration.
        log.push("setup-link-l1", issued("l1", "c1", 1, Some(1_780_000_000)));
        log.push_as("setup-link-l1", holder("l1"), submitted("c1", 1));
        log.push_as(c1, holder("l1"), assigned("Early", "member"));
        log.push_as(c1, holder("l1"), Configure::saml(standard()).event("c1"));
        log.push(org, activated("c1"));
        log.push_as("setup-link-l1", holder("l1"), submitted("c1", 2));
        // Re-configurations of c1.
        log.push(c1, Configure::saml(standard()).event("c1"));
        log.push(
            c1,
            Configure::saml(saml(
                "https://idp/e2",
                vec![
                    endpoint(POST, "https://idp/post"),
                    endpoint(REDIRECT, "https://idp/r2"),
                ],
                &[F1, F2],
                "https://idp/metadata",
            ))
            .event("c1"),
        );
        log.push(
            c1,
            Configure::saml(saml(
                "https://idp/e2",
                vec![
                    endpoint(POST, "https://idp/post"),
                    endpoint(REDIRECT, "https://idp/r2"),
                ],
                &[F2, F1],
                "https://idp/metadata",
            ))
            .event("c1"),
        );
        // A binding changes (POST → unknown, both "unspecified" afterwards).
        log.push(
            c1,
            Configure::saml(saml(
                "https://idp/e2",
                vec![
                    endpoint(0, "https://idp/post"),
                    endpoint(REDIRECT, "https://idp/r2"),
                ],
                &[F2, F1],
                "https://idp/metadata",
            ))
            .event("c1"),
        );
        log.push(
            c1,
            Configure::saml(saml(
                "https://idp/e2",
                vec![
                    endpoint(5, "https://idp/post"),
                    endpoint(REDIRECT, "https://idp/r2"),
                ],
                &[F2, F1],
                "https://idp/metadata",
            ))
            .event("c1"),
        );
        log.push(
            c1,
            Configure {
                claim_mapping: claims("mail"),
                role: schema::ConnectionRole::Standby as i32,
                provider_preset: "",
                ..Configure::saml(saml("", vec![], &[F2, F2, F3], ""))
            }
            .event("c1"),
        );
        log.push(
            c1,
            Configure {
                claim_mapping: None,
                role: 9,
                ..Configure::saml(saml("", vec![endpoint(POST, "https://idp/p")], &[], ""))
            }
            .event("c1"),
        );
        // SAML → OIDC (secret set), unchanged, changed (ciphertext, nonce), removed.
        log.push(
            c1,
            Configure::oidc(oidc("https://op", Some((1, 1)), &["openid"])).event("c1"),
        );
        log.push(
            c1,
            Configure::oidc(oidc("https://op", Some((1, 1)), &["openid"])).event("c1"),
        );
        log.push(
            c1,
            Configure::oidc(oidc("https://op2", Some((1, 2)), &["openid", "email"])).event("c1"),
        );
        log.push(
            c1,
            Configure::oidc(oidc("https://op2", Some((2, 2)), &["openid", "email"])).event("c1"),
        );
        log.push(c1, Configure::oidc(oidc("", None, &[])).event("c1"));
        // OIDC → SAML, with an OIDC secret alongside (SAML wins, the secret is compared).
        log.push(
            c1,
            Configure {
                oidc: Some(oidc("https://op", Some((3, 3)), &[])),
                ..Configure::saml(standard())
            }
            .event("c1"),
        );
        log.push(
            c1,
            Configure::oidc(oidc("https://op", Some((3, 3)), &[])).event("c1"),
        );
        // Neither SAML nor OIDC: the previous configuration is compared with bare fields,
        // and the next one is a first configuration again.
        log.push(
            c1,
            Configure {
                saml: None,
                oidc: None,
                claim_mapping: claims("email"),
                role: 0,
                provider_preset: "okta",
            }
            .event("c1"),
        );
        log.push(c1, Configure::saml(standard()).event("c1"));

        // Groups.
        log.push(c1, assigned("Lawyers", "member"));
        log.push(c1, assigned("Lawyers", "editor"));
        log.push(c1, assigned("IT", ""));
        log.push(c1, unassigned("Lawyers"));
        log.push(c1, unassigned("Nobody"));
        log.push(c1, require(true));
        log.push(c1, require(false));
        log.push("connection-c-none", require(true));
        log.push("connection-c-none", unassigned("Nobody"));

        // A standby OIDC connection, the switch, deactivation.
        log.push("setup-link-l2", issued("l2", "c2", 3, None));
        log.push_as(
            c2,
            holder("l2"),
            Configure::oidc(oidc("https://op", Some((4, 4)), &["openid"])).event("c2"),
        );
        log.push(
            "connection-c3",
            Configure::oidc(oidc("https://op", None, &[])).event("c3"),
        );
        log.push(
            "connection-c4",
            Configure {
                saml: None,
                oidc: None,
                claim_mapping: None,
                role: 0,
                provider_preset: "",
            }
            .event("c4"),
        );
        log.push(
            "connection-c5",
            Configure {
                oidc: Some(oidc("https://op", Some((1, 1)), &[])),
                claim_mapping: None,
                provider_preset: "",
                ..Configure::saml(saml("", vec![], &[], ""))
            }
            .event("c5"),
        );
        log.push(
            org,
            Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: "c1".into(),
                connection_id: "c2".into(),
            }),
        );
        log.push(
            org,
            Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: "c-ghost".into(),
                connection_id: "c4".into(),
            }),
        );
        log.push(org, activated("c3"));
        log.push(
            org,
            Event::ConnectionDeactivated(schema::ConnectionDeactivated {
                connection_id: "c3".into(),
            }),
        );

        // Setup links: every intent, revocations, spending, expiry, unknown links.
        log.push("setup-link-l3", issued("l3", "c1", 2, Some(-1)));
        log.push("setup-link-l4", issued("l4", "", 0, Some(i64::MAX)));
        log.push(
            "setup-link-l5",
            issued("l5", "c6", 7, Some(253_402_300_800)),
        );
        log.push("setup-link-l3", revoked(2, "l4"));
        log.push("setup-link-l4", revoked(1, ""));
        log.push_as("setup-link-l5", system(), revoked(0, "l9"));
        log.push_as("setup-link-l5", None, revoked(8, ""));
        log.push(
            "setup-link-l1",
            Event::SetupLinkSpent(schema::SetupLinkSpent {
                connection_id: "c1".into(),
            }),
        );
        log.push_as("setup-link-l2", system(), expired(Some(1_790_000_000)));
        log.push_as("setup-link-l4", system(), expired(None));
        log.push("setup-link-l9", expired(Some(0)));
        log.push("setup-link-l9", submitted("c1", 3));
        log.push("setup-link-l9", revoked(1, ""));
        log.push("setup-link-l9", assigned("Misplaced", "member"));

        // API tokens.
        log.push("api-token-t1", token("auditor \"eu\"", 3, "o1"));
        log.push("api-token-t2", token("admin", 1, ""));
        log.push("api-token-t3", token("edge", 2, ""));
        log.push("api-token-t4", token("", 0, "o2"));
        log.push("api-token-t5", token("odd", 6, ""));
        log.push(
            "api-token-t1",
            Event::ApiTokenRevoked(schema::ApiTokenRevoked {}),
        );
        log.push(
            "api-token-t8",
            Event::ApiTokenRevoked(schema::ApiTokenRevoked {}),
        );
        log
    }

    #[test]
    fn describe_matches_the_json_version_on_every_branch() {
        let log = every_branch();
        let summaries = assert_same_as_reference(&log.events);
        // The log reaches the branches it means to (phrases only those branches write).
        for fragment in [
            "verified by DNS TXT record",
            "verified manually (\"called the CIO \")",
            "domain acme.com  verified\u{0}",
            "domain acme.com verified\u{0}",
            "connection configured: SAML",
            "1 signing certificate\u{0}",
            "0 signing certificates",
            "client secret not set",
            "client secret set",
            "connection configured\u{0}",
            "re-submitted without changes",
            "signing certificate 2222222222222222 added",
            "signing certificate 1111111111111111 removed",
            "signing certificate short added",
            "signing certificates reordered",
            "SSO URL changed from https://idp/r to https://idp/r2",
            "metadata URL changed from (none) to https://idp/metadata",
            "sso urls changed",
            "claim mapping changed",
            "role changed from primary to standby",
            "provider preset changed from okta to (none)",
            "protocol changed from SAML to OIDC",
            "idp entity id changed",
            "scopes changed",
            "client secret changed",
            "client secret removed",
            "group \"Lawyers\" role changed from member to editor",
            "unassigned (was role editor)",
            "group \"Nobody\" unassigned",
            "now required",
            "no longer required",
            "provider switched from c1 (okta, SAML) to c2 (entra, OIDC)",
            "connection c-ghost activated",
            "deactivated",
            "stage switch",
            "superseded by link l4",
            "revoked by Signpost",
            "revoked by Onboarding for alice@platform.example",
            "setup link sent to  revoked",
            "expired at 1970-01-01T00:00:00Z",
            "spent",
            "submitted through the link sent to it@acme.com (submission 2)",
            "scoped to organization o1",
            "API token \"\" revoked",
            "organization event",
            "connection event",
            "setup link event",
            "API token event",
            "organization_created recorded",
        ] {
            let found = summaries
                .iter()
                .any(|s| format!("{s}\u{0}").contains(fragment));
            assert!(found, "no summary contains {fragment:?}: {summaries:#?}");
        }
    }

    /// Small pools, so generated events often meet equal, empty and previous values.
    fn text(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(pool).prop_map(str::to_owned)
    }

    fn fingerprint() -> impl Strategy<Value = String> {
        text(&["", F3, F1, F2])
    }

    fn saml_settings() -> impl Strategy<Value = schema::SamlSettings> {
        (
            text(&["", "e1", "e2"]),
            proptest::collection::vec((0..4i32, text(&["", "u1", "u2"])), 0..3),
            proptest::collection::vec(fingerprint(), 0..4),
            text(&["", "m1"]),
        )
            .prop_map(|(entity, endpoints, fingerprints, metadata_url)| {
                schema::SamlSettings {
                    idp_entity_id: entity,
                    sso_endpoints: endpoints
                        .into_iter()
                        .map(|(binding, location)| schema::SamlEndpoint { binding, location })
                        .collect(),
                    signing_certificates: fingerprints.iter().map(|f| certificate(f)).collect(),
                    source: 0,
                    metadata_url,
                }
            })
    }

    fn oidc_settings() -> impl Strategy<Value = schema::OidcSettings> {
        (
            text(&["", "i1", "i2"]),
            text(&["", "client"]),
            text(&["", "https://op/token"]),
            proptest::option::of((0..2u8, 0..2u8)),
            proptest::collection::vec(text(&["openid", "email"]), 0..3),
        )
            .prop_map(|(issuer, client_id, token_endpoint, secret, scopes)| {
                schema::OidcSettings {
                    issuer,
                    authorization_endpoint: "https://op/authorize".into(),
                    token_endpoint,
                    jwks_uri: String::new(),
                    userinfo_endpoint: "https://op/userinfo".into(),
                    client_id,
                    client_secret: secret.map(|(nonce, ciphertext)| schema::EncryptedSecret {
                        key_id: "k".into(),
                        nonce: vec![nonce; 12],
                        ciphertext: vec![ciphertext; 16],
                    }),
                    scopes,
                }
            })
    }

    fn configured() -> impl Strategy<Value = Event> {
        (
            (
                text(&["c1", "c2"]),
                text(&["o1", "o2", ""]),
                proptest::option::weighted(0.6, saml_settings()),
                proptest::option::weighted(0.5, oidc_settings()),
            ),
            (
                proptest::option::of((text(&["email", "mail"]), text(&["", "groups"]))),
                0..4i32,
                text(&["", "okta"]),
            ),
        )
            .prop_map(
                |((connection, organization, saml, oidc), (claims, role, preset))| {
                    Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
                        connection_id: connection,
                        organization_id: organization,
                        setup_link_id: "l1".into(),
                        role,
                        protocol: 0,
                        saml,
                        oidc,
                        claim_mapping: claims.map(|(email, groups)| schema::ClaimMapping {
                            email,
                            groups,
                            ..Default::default()
                        }),
                        provider_preset: preset,
                    }))
                },
            )
    }

    fn event() -> impl Strategy<Value = Event> {
        let connection = || text(&["c1", "c2", "c3", ""]);
        let domain = || text(&["acme.com", "acme.org "]);
        let time = || proptest::option::of(-10i64..2_000_000_000);
        prop_oneof![
            4 => configured(),
            1 => (text(&["Acme", ""]), text(&["x1", "x2"])).prop_map(|(name, external)| {
                Event::OrganizationCreated(schema::OrganizationCreated {
                    organization_id: "o1".into(),
                    display_name: name,
                    external_id: external,
                })
            }),
            1 => domain().prop_map(|domain| Event::DomainClaimed(schema::DomainClaimed {
                verification_record_name: format!("_s.{domain}"),
                domain,
                verification_value: String::new(),
            })),
            1 => (domain(), 0..4i32, text(&["", "note "])).prop_map(|(domain, method, note)| {
                Event::DomainVerified(schema::DomainVerified { domain, method, note })
            }),
            1 => domain().prop_map(|domain| Event::DomainReleased(schema::DomainReleased { domain })),
            1 => (0..4i32, 0..4i32).prop_map(|(previous, policy)| {
                Event::SsoPolicyChanged(schema::SsoPolicyChanged { previous, policy })
            }),
            2 => connection().prop_map(|connection_id| {
                Event::ConnectionActivated(schema::ConnectionActivated { connection_id })
            }),
            1 => connection().prop_map(|connection_id| {
                Event::ConnectionDeactivated(schema::ConnectionDeactivated { connection_id })
            }),
            1 => (connection(), connection()).prop_map(|(previous_connection_id, connection_id)| {
                Event::ProviderSwitched(schema::ProviderSwitched {
                    previous_connection_id,
                    connection_id,
                })
            }),
            2 => (text(&["l1", "l2"]), connection(), 0..5i32, time(), text(&["it@a.com", ""]))
                .prop_map(|(link, connection_id, intent, expires, recipient)| {
                    Event::SetupLinkIssued(schema::SetupLinkIssued {
                        setup_link_id: link,
                        organization_id: "o1".into(),
                        intent,
                        connection_id,
                        token_sha256: vec![1; 32],
                        expires_at: expires
                            .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                        recipient_email: recipient,
                    })
                }),
            1 => (connection(), 0..4u32).prop_map(|(connection_id, submission)| {
                Event::SetupFormSubmitted(schema::SetupFormSubmitted {
                    setup_link_id: "l1".into(),
                    connection_id,
                    submission,
                })
            }),
            1 => (0..4i32, text(&["", "l2"])).prop_map(|(reason, superseded_by)| {
                Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                    reason,
                    superseded_by,
                })
            }),
            1 => connection().prop_map(|connection_id| {
                Event::SetupLinkSpent(schema::SetupLinkSpent { connection_id })
            }),
            1 => time().prop_map(|at| Event::SetupLinkExpired(schema::SetupLinkExpired {
                expired_at: at.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            })),
            2 => (text(&["G1", "G2"]), text(&["member", "admin", ""])).prop_map(
                |(idp_group, role)| Event::GroupAssigned(schema::GroupAssigned { idp_group, role })
            ),
            1 => text(&["G1", "G2"]).prop_map(|idp_group| {
                Event::GroupUnassigned(schema::GroupUnassigned { idp_group })
            }),
            1 => any::<bool>().prop_map(|require_group| {
                Event::GroupRequirementChanged(schema::GroupRequirementChanged { require_group })
            }),
            1 => (text(&["t", ""]), 0..5i32, text(&["", "o1"])).prop_map(
                |(name, role, organization_scope)| {
                    Event::ApiTokenIssued(schema::ApiTokenIssued {
                        token_id: "t1".into(),
                        name,
                        role,
                        token_sha256: vec![2; 32],
                        organization_scope,
                    })
                }
            ),
            1 => Just(Event::ApiTokenRevoked(schema::ApiTokenRevoked {})),
        ]
    }

    /// The stream an event belongs on (`organization-o1`, `connection-c1`, …), or now and
    /// then any stream, known or not.
    fn stream_for(event: &Event, pick: u8) -> String {
        const ANY: [&str; 8] = [
            "organization-o1",
            "organization-o2",
            "connection-c1",
            "connection-c2",
            "setup-link-l1",
            "setup-link-l2",
            "api-token-t1",
            "widget-1",
        ];
        if pick >= 200 {
            return ANY[usize::from(pick) % ANY.len()].to_owned();
        }
        let second = pick % 2 == 1;
        match event {
            Event::ConnectionConfigured(e) => format!("connection-{}", e.connection_id),
            Event::GroupAssigned(_)
            | Event::GroupUnassigned(_)
            | Event::GroupRequirementChanged(_) => {
                format!("connection-c{}", if second { 2 } else { 1 })
            }
            Event::SetupLinkIssued(e) => format!("setup-link-{}", e.setup_link_id),
            Event::SetupFormSubmitted(_)
            | Event::SetupLinkRevoked(_)
            | Event::SetupLinkSpent(_)
            | Event::SetupLinkExpired(_) => format!("setup-link-l{}", if second { 2 } else { 1 }),
            Event::ApiTokenIssued(_) | Event::ApiTokenRevoked(_) => "api-token-t1".to_owned(),
            _ => format!("organization-o{}", if second { 2 } else { 1 }),
        }
    }

    fn log() -> impl Strategy<Value = Vec<(EventEnvelope, Event)>> {
        let actor = proptest::option::weighted(
            0.9,
            (
                0..4i32,
                text(&["", "token-1"]),
                text(&["", "a@b.c"]),
                text(&["", "Ops"]),
            ),
        );
        let step = (event(), any::<u8>(), actor, 0..20u8);
        proptest::collection::vec(step, 1..60).prop_map(|steps| {
            let mut log = Log::default();
            for (event, pick, actor, typed) in steps {
                let stream = stream_for(&event, pick);
                let actor = actor.map(|(kind, id, on_behalf_of, display_name)| schema::Actor {
                    kind,
                    id,
                    on_behalf_of,
                    display_name,
                });
                // Now and then an envelope type that is not the event's (or no known type).
                let kind = match typed {
                    0 => "bogus_type",
                    1 => "group_assigned",
                    _ => event_type(&event),
                };
                log.push_typed(&stream, actor, kind, event);
            }
            log.events
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn describe_matches_the_json_version_on_generated_logs(log in log()) {
            assert_same_as_reference(&log);
        }

        #[test]
        fn organization_local_entries_are_described_alike_on_generated_logs(log in log()) {
            assert_local_entries_match(&log);
        }
    }
}
