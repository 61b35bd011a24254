//! The setup form: what `SetupFormService` exposes, authorized by a setup
//! link's token alone.
//!
//! Submitting turns hostile input into checked connection settings: SAML
//! metadata (fetched through the SSRF-safe fetcher or pasted) or a by-hand
//! configuration, or an OIDC issuer whose discovery document is fetched.
//! Parsing and checking live in `signpost-idp`; the client secret is sealed
//! with the data key before it reaches an event.

use signpost_domain::connection::{ConnectionCommand, SubmittedSettings};
use signpost_domain::setup_link::{unusable_link, SetupLinkCommand};
use signpost_domain::{schema, streams, DomainError};
use signpost_eventlog::ExpectedVersion;
use signpost_idp::{IdpError, ProviderPreset};

/// The protocol of a provider preset.
pub use signpost_idp::Protocol as PresetProtocol;

use crate::credentials::{self, SETUP_LINK_TOKEN_PREFIX};
use crate::error::ControlError;
use crate::plane::{fingerprint, ControlPlane, Outcome, Plan, PlannedWrite, RequestMeta};
use crate::principal::Principal;
use crate::read_model::state_of;
use crate::views::{ConnectionDetail, ConnectionStatus, ConnectionView, ServiceProvider};

/// Default OIDC scopes.
pub const DEFAULT_OIDC_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// The IdP settings as typed into the form.
#[derive(Clone)]
pub enum SettingsInput {
    /// SAML: fetch the metadata from this https URL.
    SamlMetadataUrl(String),
    /// SAML: pasted metadata XML.
    SamlMetadataXml(String),
    /// SAML by hand.
    SamlManual {
        /// IdP entity id.
        entity_id: String,
        /// IdP SSO URL (HTTP-Redirect).
        sso_url: String,
        /// IdP signing certificate.
        certificate_pem: String,
    },
    /// OIDC by issuer.
    Oidc {
        /// The issuer URL; its discovery document is fetched.
        issuer: String,
        /// Our client id at the IdP.
        client_id: String,
        /// Our client secret at the IdP (sealed before storing).
        client_secret: String,
        /// Scopes; empty for the defaults.
        scopes: Vec<String>,
    },
}

/// Debug never prints pasted material (it could hold a key or a secret).
impl std::fmt::Debug for SettingsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = |text: &str| {
            hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())[..16])
        };
        match self {
            Self::SamlMetadataUrl(url) => f.debug_tuple("SamlMetadataUrl").field(url).finish(),
            Self::SamlMetadataXml(xml) => f
                .debug_tuple("SamlMetadataXml")
                .field(&digest(xml))
                .finish(),
            Self::SamlManual {
                entity_id,
                sso_url,
                certificate_pem,
            } => f
                .debug_struct("SamlManual")
                .field("entity_id", entity_id)
                .field("sso_url", sso_url)
                .field("certificate_pem", &digest(certificate_pem))
                .finish(),
            Self::Oidc {
                issuer,
                client_id,
                scopes,
                ..
            } => f
                .debug_struct("Oidc")
                .field("issuer", issuer)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("scopes", scopes)
                .finish(),
        }
    }
}

/// A submitted setup form.
#[derive(Debug, Clone)]
pub struct SetupFormInput {
    /// The preset the admin picked (informational).
    pub provider_preset: String,
    /// The IdP settings.
    pub settings: SettingsInput,
    /// Claim names; email required.
    pub claim_mapping: schema::ClaimMapping,
}

/// What the form needs to render.
#[derive(Debug, Clone)]
pub struct SetupFormView {
    /// The firm's name.
    pub organization_display_name: String,
    /// What the link is for.
    pub intent: schema::SetupIntent,
    /// The connection it configures.
    pub connection_id: String,
    /// What to enter in the IdP.
    pub service_provider: ServiceProvider,
    /// Default claim names per IdP.
    pub presets: &'static [ProviderPreset],
    /// When the link stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// For update links: the connection as it is.
    pub current: Option<ConnectionView>,
}

/// What a submission did.
#[derive(Debug, Clone)]
pub struct SubmittedForm {
    /// The connection configured.
    pub connection_id: String,
    /// Its status now.
    pub status: ConnectionStatus,
    /// Which submission through this link it was.
    pub submission: u32,
    /// The log position reached.
    pub position: u64,
}

/// The one answer for unknown, expired, revoked and spent setup tokens.
fn link_refused() -> ControlError {
    let refusal = unusable_link();
    ControlError::Unauthenticated {
        reason: refusal.reason,
        message: refusal.message,
    }
}

fn idp_error(error: IdpError) -> ControlError {
    ControlError::invalid(error.reason(), error.field(), error.message().to_owned())
}

fn fetch_error(error: signpost_outbound::FetchError, field: &'static str) -> ControlError {
    let reason = error.reason();
    let message = format!("could not fetch the document: {error}");
    match reason {
        "URL_INVALID" | "URL_NOT_HTTPS" | "ADDRESS_FORBIDDEN" | "REDIRECT_REFUSED" => {
            ControlError::InvalidArgument {
                reason,
                field,
                message,
            }
        }
        _ => ControlError::External {
            reason,
            field,
            message,
        },
    }
}

impl ControlPlane {
    /// Resolves a setup link token. Unknown, expired, revoked and spent tokens
    /// all get the same answer.
    pub fn authenticate_setup_link(&self, bearer: &str) -> Result<Principal, ControlError> {
        if !bearer.starts_with(SETUP_LINK_TOKEN_PREFIX) || bearer.len() > credentials::MAX_TOKEN_LEN
        {
            return Err(link_refused());
        }
        let hash = credentials::hash(bearer);
        let now = self.now();
        self.projection().read(|model| {
            let link = model
                .setup_link_by_token(&hash)
                .filter(|l| l.state.is_usable(now))
                .ok_or_else(link_refused)?;
            Ok(Principal::SetupLink {
                setup_link_id: link.state.id.to_string(),
                organization_id: link.state.organization_id.to_string(),
                recipient_email: link.state.recipient_email.clone(),
            })
        })
    }

    /// What the form needs for the link `principal` holds.
    pub async fn setup_form(&self, principal: &Principal) -> Result<SetupFormView, ControlError> {
        let Principal::SetupLink { setup_link_id, .. } = principal else {
            return Err(ControlError::PermissionDenied(
                "this call needs a setup link token".into(),
            ));
        };
        let now = self.now();
        let (link, org_name) = self
            .read_current(|model| {
                let link = model
                    .setup_links
                    .get(setup_link_id.as_str())
                    .map(|l| l.state.clone())?;
                let org = model
                    .organizations
                    .get(&link.organization_id)?
                    .state
                    .display_name
                    .clone();
                Some((link, org))
            })
            .await?
            .filter(|(link, _)| link.is_usable(now))
            .ok_or_else(link_refused)?;
        let current = if link.intent == schema::SetupIntent::UpdateConnection {
            self.connection_view(&link.connection_id, ConnectionDetail::Full)
                .await
                .ok()
        } else {
            None
        };
        Ok(SetupFormView {
            organization_display_name: org_name.into(),
            intent: link.intent,
            service_provider: self.service_provider(&link.connection_id),
            connection_id: link.connection_id.to_string(),
            presets: signpost_idp::provider_presets(),
            expires_at: link.expires_at,
            current,
        })
    }

    /// Submits the form for the link `principal` holds.
    pub async fn submit_setup_form(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        form: SetupFormInput,
    ) -> Result<SubmittedForm, ControlError> {
        let Principal::SetupLink {
            setup_link_id,
            organization_id,
            ..
        } = principal
        else {
            return Err(ControlError::PermissionDenied(
                "this call needs a setup link token".into(),
            ));
        };
        let fp = fingerprint("submit_setup_form", &form);
        let connection_id = self
            .read_current(|model| {
                model
                    .setup_links
                    .get(setup_link_id.as_str())
                    .map(|l| l.state.connection_id.to_string())
            })
            .await?
            .ok_or_else(link_refused)?;
        // Replays skip the (slow, external) checks: the first outcome stands.
        let settings = match self.replayable(principal, meta).await? {
            true => None,
            false => Some(
                self.checked_settings(&form.settings, &connection_id)
                    .await?,
            ),
        };
        let now = self.now();
        let _unique = self.uniqueness_guard().await;
        // Its turns on the two streams it writes, so that it decides on the state the
        // commands before it left, instead of racing them: the connection's (taken by
        // the connection's commands, none of which waits for the uniqueness lock), then
        // the link's (taken by this command alone).
        let _connection_turn = self.stream_turn(&streams::connection(&connection_id)).await;
        let _link_turn = self.stream_turn(&streams::setup_link(setup_link_id)).await;
        let done = self
            .execute(principal, meta, fp, |model| {
                let settings = settings.clone().ok_or_else(|| {
                    ControlError::Internal("replayed submission without a stored outcome".into())
                })?;
                let link = model.setup_link_state(setup_link_id);
                let submitted = link.handle(SetupLinkCommand::Submit { now })?;
                if let SubmittedSettings::Saml(saml) = &settings {
                    if let Some(owner) = model.entity_id_owner(&saml.idp_entity_id) {
                        if *owner.state.organization_id != **organization_id {
                            return Err(DomainError::already_exists(
                                "IDP_ENTITY_ID_TAKEN",
                                "entity_id",
                                "this IdP entity id is already used by another organization",
                            )
                            .into());
                        }
                    }
                }
                let connection = state_of(&model.connections, &connection_id);
                let role = match link.intent {
                    schema::SetupIntent::StageSwitch => schema::ConnectionRole::Standby,
                    schema::SetupIntent::UpdateConnection => connection.role,
                    _ => schema::ConnectionRole::Primary,
                };
                let configured = connection.handle(ConnectionCommand::Configure {
                    connection_id: connection_id.clone(),
                    organization_id: organization_id.clone(),
                    setup_link_id: setup_link_id.clone(),
                    role,
                    settings,
                    claim_mapping: form.claim_mapping.clone(),
                    provider_preset: form.provider_preset.trim().to_owned(),
                })?;
                let submission = match submitted.first() {
                    Some(signpost_domain::Event::SetupFormSubmitted(e)) => e.submission,
                    _ => 0,
                };
                Ok(Plan {
                    writes: vec![
                        PlannedWrite {
                            stream: streams::setup_link(setup_link_id),
                            expected: ExpectedVersion::Exact(link.version),
                            events: submitted,
                        },
                        PlannedWrite {
                            stream: streams::connection(&connection_id),
                            expected: if connection.version == 0 {
                                ExpectedVersion::NoStream
                            } else {
                                ExpectedVersion::Exact(connection.version)
                            },
                            events: configured,
                        },
                    ],
                    outcome: Outcome {
                        ids: vec![submission.to_string()],
                        ..Default::default()
                    },
                })
            })
            .await?;
        // Only its status is answered: a basic view reads no certificates and builds no
        // SP metadata.
        let view = self
            .connection_view(&connection_id, ConnectionDetail::Basic)
            .await?;
        Ok(SubmittedForm {
            connection_id,
            status: view.status,
            submission: done
                .outcome
                .ids
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
            position: done.position,
        })
    }

    /// Whether this request is an idempotent retry of a committed one.
    async fn replayable(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
    ) -> Result<bool, ControlError> {
        let Some(request_id) = &meta.request_id else {
            return Ok(false);
        };
        let key = signpost_eventlog::IdempotencyKey {
            principal: principal.id(),
            request_id: request_id.clone(),
        };
        Ok(self.store().lookup_idempotency(&key).await?.is_some())
    }

    /// Parses, fetches and checks the IdP settings of a form.
    async fn checked_settings(
        &self,
        input: &SettingsInput,
        connection_id: &str,
    ) -> Result<SubmittedSettings, ControlError> {
        let now = self.now();
        let test_http = self.config().allow_loopback_http_idp_for_tests;
        match input {
            SettingsInput::SamlMetadataUrl(url) => {
                let document = self
                    .fetcher()
                    .fetch(url.trim())
                    .await
                    .map_err(|e| fetch_error(e, "metadata_url"))?;
                let xml = std::str::from_utf8(&document.body).map_err(|_| {
                    ControlError::invalid(
                        "XML_INVALID",
                        "metadata_url",
                        "the metadata is not UTF-8 text",
                    )
                })?;
                let metadata = signpost_idp::parse_idp_metadata(xml, now).map_err(|e| {
                    // The document came from the URL: that is the field to fix.
                    let field = if e.field() == signpost_idp::field::METADATA_XML {
                        "metadata_url"
                    } else {
                        e.field()
                    };
                    ControlError::invalid(e.reason(), field, e.message().to_owned())
                })?;
                Ok(saml_settings(
                    metadata,
                    schema::SamlSource::MetadataUrl,
                    url.trim(),
                ))
            }
            SettingsInput::SamlMetadataXml(xml) => {
                let metadata = signpost_idp::parse_idp_metadata(xml, now).map_err(idp_error)?;
                Ok(saml_settings(metadata, schema::SamlSource::MetadataXml, ""))
            }
            SettingsInput::SamlManual {
                entity_id,
                sso_url,
                certificate_pem,
            } => {
                let metadata =
                    signpost_idp::manual_idp_config(entity_id, sso_url, certificate_pem, now)
                        .map_err(idp_error)?;
                Ok(saml_settings(metadata, schema::SamlSource::Manual, ""))
            }
            SettingsInput::Oidc {
                issuer,
                client_id,
                client_secret,
                scopes,
            } => {
                let client_id = non_empty(client_id, "client_id", 512)?;
                let client_secret = non_empty(client_secret, "client_secret", 4096)?;
                let scopes = check_scopes(scopes)?;
                let issuer =
                    signpost_idp::normalize_issuer(issuer, test_http).map_err(idp_error)?;
                let document = self
                    .fetcher()
                    .fetch(&signpost_idp::discovery_url(&issuer))
                    .await
                    .map_err(|e| fetch_error(e, "issuer"))?;
                let provider = signpost_idp::oidc_discovery::parse_discovery_document_with_options(
                    &document.body,
                    &issuer,
                    signpost_idp::oidc_discovery::DiscoveryOptions {
                        allow_http_for_tests: test_http,
                    },
                )
                .map_err(idp_error)?;
                Ok(SubmittedSettings::Oidc(Box::new(schema::OidcSettings {
                    issuer: provider.issuer,
                    authorization_endpoint: provider.authorization_endpoint,
                    token_endpoint: provider.token_endpoint,
                    jwks_uri: provider.jwks_uri,
                    userinfo_endpoint: provider.userinfo_endpoint.unwrap_or_default(),
                    client_id,
                    client_secret: Some(
                        self.secrets().seal(client_secret.as_bytes(), connection_id),
                    ),
                    scopes,
                })))
            }
        }
    }
}

fn saml_settings(
    metadata: signpost_idp::SamlIdpMetadata,
    source: schema::SamlSource,
    metadata_url: &str,
) -> SubmittedSettings {
    SubmittedSettings::Saml(schema::SamlSettings {
        idp_entity_id: metadata.entity_id,
        sso_endpoints: metadata
            .sso_endpoints
            .into_iter()
            .map(|endpoint| schema::SamlEndpoint {
                binding: match endpoint.binding {
                    signpost_idp::SamlBinding::HttpRedirect => schema::SamlBinding::HttpRedirect,
                    signpost_idp::SamlBinding::HttpPost => schema::SamlBinding::HttpPost,
                } as i32,
                location: endpoint.location,
            })
            .collect(),
        signing_certificates: metadata
            .signing_certificates
            .into_iter()
            .map(|cert| schema::Certificate {
                sha256_fingerprint: cert.sha256_fingerprint,
                subject: cert.subject,
                not_before: Some(signpost_domain::event::timestamp(cert.not_before)),
                not_after: Some(signpost_domain::event::timestamp(cert.not_after)),
                der: cert.der,
            })
            .collect(),
        source: source as i32,
        metadata_url: metadata_url.to_owned(),
    })
}

fn non_empty(value: &str, field: &'static str, max: usize) -> Result<String, ControlError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ControlError::invalid(
            "FIELD_REQUIRED",
            field,
            format!("`{field}` is required"),
        ));
    }
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ControlError::invalid(
            "FIELD_INVALID",
            field,
            format!("`{field}` must be at most {max} printable characters"),
        ));
    }
    Ok(value.to_owned())
}

fn check_scopes(scopes: &[String]) -> Result<Vec<String>, ControlError> {
    if scopes.is_empty() {
        return Ok(DEFAULT_OIDC_SCOPES.iter().map(|s| s.to_string()).collect());
    }
    if scopes.len() > 32 {
        return Err(ControlError::invalid(
            "FIELD_INVALID",
            "scopes",
            "at most 32 scopes",
        ));
    }
    let mut checked = Vec::new();
    for scope in scopes {
        let scope = scope.trim();
        if scope.is_empty()
            || scope.len() > 128
            || !scope
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        {
            return Err(ControlError::invalid(
                "FIELD_INVALID",
                "scopes",
                "a scope is empty or has characters OAuth does not allow",
            ));
        }
        checked.push(scope.to_owned());
    }
    if !checked.iter().any(|s| s == "openid") {
        checked.insert(0, "openid".to_owned());
    }
    Ok(checked)
}
