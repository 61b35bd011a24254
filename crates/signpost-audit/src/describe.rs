//! Turning one event into one [`AuditEntry`]: a stable action name, the target, a one-line
//! summary and structured details with before / after.
//!
//! Before / after come from the state *before* the event (the admin [`ReadModel`], folded
//! with the domain's own `apply`, passed in by the fold). Secrets never leave this module:
//! an OIDC client secret is described as `"set"` / `"changed"` / `"unchanged"` by
//! comparing ciphertexts, and token hashes (API tokens, setup links) are never read at all.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use signpost_api::audit::v1::{AuditActor, AuditEntry, AuditTarget};
use signpost_control::read_model::ReadModel;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::event::from_timestamp;
use signpost_domain::{schema, Event};
use signpost_eventlog::EventEnvelope;

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

/// An entry and the connections it concerns (a switch concerns two).
pub(crate) struct Described {
    pub entry: AuditEntry,
    pub connections: Vec<String>,
}

/// Describes `event` (at `envelope`) given the state before it.
pub(crate) fn describe(envelope: &EventEnvelope, event: &Event, before: &ReadModel) -> Described {
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
                link.organization_id.clone(),
                link.connection_id.clone(),
                link.recipient_email.clone(),
            ),
            (_, None) => Default::default(),
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
                schema::VerificationMethod::DnsTxt => ("dns_txt", "by DNS TXT record".to_owned()),
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

fn describe_connection_event(event: &Event, previous: Option<&Connection>) -> (String, Value) {
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
                    Some(old) => format!("group \"{}\" unassigned (was role {old})", e.idp_group),
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

impl<'a> From<&'a ConnectionSettings> for Settings<'a> {
    fn from(settings: &'a ConnectionSettings) -> Self {
        match settings {
            ConnectionSettings::Saml(saml) => Settings::Saml(saml),
            ConnectionSettings::Oidc(oidc) => Settings::Oidc(oidc),
        }
    }
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
        (Some(old), Some(new)) if old.ciphertext == new.ciphertext && old.nonce == new.nonce => {
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
    let after = configuration_fields(new_settings, &claim_mapping, e.role(), &e.provider_preset);
    let previous = previous.filter(|c| c.is_configured());
    let before = previous.map(|c| {
        configuration_fields(
            c.settings.as_ref().map(Settings::from),
            &c.claim_mapping,
            c.role,
            &c.provider_preset,
        )
    });
    let secret = client_secret_change(previous.and_then(|c| c.settings.as_ref()), e.oidc.as_ref());
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

/// A JSON object as a `google.protobuf.Struct`.
pub(crate) fn to_struct(value: Value) -> prost_types::Struct {
    match to_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn to_value(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
