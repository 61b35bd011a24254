//! Admin commands and reads: what `ConnectionAdminService` exposes.
//!
//! Each method: authorize, fingerprint the input for idempotency, decide on
//! the current read model with the aggregates' `handle`, execute, and build
//! the answer from the read model at the position reached.

use std::sync::Arc;

use chrono::Duration;
use signpost_domain::api_token::ApiTokenCommand;
use signpost_domain::connection::{ConnectionCommand, ConnectionSettings};
use signpost_domain::organization::{ConnectionFacts, OrganizationCommand};
use signpost_domain::setup_link::{SetupLink, SetupLinkCommand};
use signpost_domain::{schema, streams, DomainError, Event};
use signpost_eventlog::{EventEnvelope, ExpectedVersion, StreamId};
use signpost_names::DomainName;

use crate::credentials::{self, API_TOKEN_PREFIX, SETUP_LINK_TOKEN_PREFIX};
use crate::error::ControlError;
use crate::plane::{
    after_cursor, expected_version, fingerprint, merge_sorted, page_request, paginate,
    ControlPlane, Outcome, Plan, PlannedWrite, RequestMeta,
};
use crate::principal::{Principal, Role};
use crate::read_model::{state_of, ReadModel, Tracked};
use crate::views::{
    ApiTokenView, ConnectionDetail, ConnectionView, DomainClaimView, Mutated, OrganizationView,
    Page, ServiceProvider, SetupLinkStatus, SetupLinkView,
};

const ADMIN: &[Role] = &[Role::Admin];

/// Where a `Full` view's certificates are read from; a `Basic` view has none to read.
fn certificates_at(
    model: &ReadModel,
    connection_id: &str,
    detail: ConnectionDetail,
) -> Option<u64> {
    match detail {
        ConnectionDetail::Full => model.certificates_at(connection_id),
        ConnectionDetail::Basic => None,
    }
}

/// The most setup links one expiry commit records (a sweep that finds more makes more
/// commits): a commit is one append, and one `SetupLinkExpired` is one event.
pub const EXPIRY_BATCH: usize = 500;

/// How `verify_domain` should check the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyMethod {
    /// Look the TXT record up in DNS.
    Dns,
    /// On the admin's word, with a note.
    Manual { note: String },
}

/// What to issue a setup link for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueSetupLink {
    /// The organization.
    pub organization_id: String,
    /// What the link lets its holder do.
    pub intent: schema::SetupIntent,
    /// For update links: the connection to update.
    pub connection_id: String,
    /// The IT admin it is for.
    pub recipient_email: String,
    /// Lifetime in seconds; 0 for the default (72 hours).
    pub lifetime_seconds: u64,
}

/// A setup link just issued: the only time its URL (with the token) exists.
#[derive(Clone)]
pub struct IssuedSetupLink {
    /// The link.
    pub link: SetupLinkView,
    /// The URL to send to the IT admin.
    pub url: String,
    /// Older links this one revoked.
    pub superseded: Vec<String>,
}

impl std::fmt::Debug for IssuedSetupLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSetupLink")
            .field("link", &self.link.link.id)
            .finish_non_exhaustive()
    }
}

/// An API token just minted: the only time the token exists in clear.
#[derive(Clone)]
pub struct MintedApiToken {
    /// The token's record.
    pub token: ApiTokenView,
    /// The bearer token.
    pub secret: String,
}

impl std::fmt::Debug for MintedApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedApiToken")
            .field("token", &self.token.token.id)
            .finish_non_exhaustive()
    }
}

fn parse_domain(domain: &str) -> Result<DomainName, ControlError> {
    Ok(DomainName::parse(domain).map_err(DomainError::from)?)
}

fn not_found(reason: &'static str, field: &'static str, what: &str) -> ControlError {
    DomainError::not_found(reason, field, format!("no such {what}")).into()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl ControlPlane {
    // ------------------------------------------------------------ organizations

    /// Creates an organization.
    pub async fn create_organization(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        display_name: &str,
        external_id: &str,
    ) -> Result<Mutated<OrganizationView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("create_organization", &(display_name, external_id));
        let id = new_id();
        let _unique = self.uniqueness_guard().await;
        let done = self
            .execute(principal, meta, fp, |model| {
                if let Some(owner) = model.external_id_owner(external_id.trim()) {
                    return Err(DomainError::already_exists(
                        "EXTERNAL_ID_TAKEN",
                        "external_id",
                        format!(
                            "external id `{}` belongs to organization `{owner}`",
                            external_id.trim()
                        ),
                    )
                    .into());
                }
                let org = signpost_domain::organization::Organization::default();
                let events = org.handle(OrganizationCommand::Create {
                    id: id.clone(),
                    display_name: display_name.to_owned(),
                    external_id: external_id.to_owned(),
                })?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: streams::organization(&id),
                        expected: ExpectedVersion::NoStream,
                        events,
                    }],
                    outcome: Outcome {
                        ids: vec![id.clone()],
                        ..Default::default()
                    },
                })
            })
            .await?;
        let value = self.organization_view(&done.outcome.ids[0])?;
        Ok(Mutated {
            value,
            position: done.position,
        })
    }

    /// Reads one organization.
    pub async fn get_organization(
        &self,
        principal: &Principal,
        organization_id: &str,
    ) -> Result<OrganizationView, ControlError> {
        principal.require(ADMIN)?;
        self.read_current(|_| ()).await?;
        self.organization_view(organization_id)
    }

    /// Lists organizations by id.
    pub async fn list_organizations(
        &self,
        principal: &Principal,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<OrganizationView>, ControlError> {
        principal.require(ADMIN)?;
        let (size, after) = page_request(page_size, page_token)?;
        self.read_current(|model| {
            paginate(
                model
                    .organizations
                    .after(&after)
                    .map(|(id, _)| (&**id, &**id)),
                size,
                &after,
                |id| organization_view(model, id),
            )
        })
        .await
        .map(|page| Page {
            items: page.items.into_iter().flatten().collect(),
            next_page_token: page.next_page_token,
        })
    }

    fn organization_view(&self, organization_id: &str) -> Result<OrganizationView, ControlError> {
        self.projection()
            .read(|model| organization_view(model, organization_id))
            .ok_or_else(|| not_found("ORGANIZATION_NOT_FOUND", "organization_id", "organization"))
    }

    /// Runs an organization command decided on the organization's current state.
    async fn organization_command(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        fp: [u8; 32],
        organization_id: &str,
        command: impl Fn(&ReadModel) -> Result<OrganizationCommand, ControlError>,
    ) -> Result<u64, ControlError> {
        let stream = streams::organization(organization_id);
        let _turn = self.stream_turn(&stream).await;
        let done = self
            .execute(principal, meta, fp, |model| {
                let org = state_of(&model.organizations, organization_id);
                let expected = expected_version(meta, org.version)?;
                let events = org.handle(command(model)?)?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: stream.clone(),
                        expected,
                        events,
                    }],
                    outcome: Outcome::default(),
                })
            })
            .await?;
        Ok(done.position)
    }

    /// Claims a domain for an organization.
    pub async fn claim_domain(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        organization_id: &str,
        domain: &str,
    ) -> Result<Mutated<DomainClaimView>, ControlError> {
        principal.require(ADMIN)?;
        let domain = parse_domain(domain)?;
        let fp = fingerprint("claim_domain", &(organization_id, domain.as_str()));
        let verification_value = format!("signpost-verification={}", hex_random(16));
        let _unique = self.uniqueness_guard().await;
        let position = self
            .organization_command(principal, meta, fp, organization_id, |model| {
                match model.domain_owner(domain.as_str()) {
                    Some(owner) if owner != organization_id => Err(DomainError::already_exists(
                        "DOMAIN_CLAIMED_BY_ANOTHER_ORGANIZATION",
                        "domain",
                        format!("`{domain}` is already claimed by another organization"),
                    )
                    .into()),
                    _ => Ok(OrganizationCommand::ClaimDomain {
                        domain: domain.clone(),
                        verification_value: verification_value.clone(),
                    }),
                }
            })
            .await?;
        let value = self.domain_claim_view(organization_id, domain.as_str())?;
        Ok(Mutated { value, position })
    }

    /// Verifies a pending claim by DNS or manually.
    pub async fn verify_domain(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        organization_id: &str,
        domain: &str,
        method: Option<VerifyMethod>,
    ) -> Result<Mutated<DomainClaimView>, ControlError> {
        principal.require(ADMIN)?;
        let method = method.ok_or_else(|| {
            ControlError::invalid("FIELD_REQUIRED", "method", "`method` must be DNS or MANUAL")
        })?;
        let domain = parse_domain(domain)?;
        let fp = fingerprint(
            "verify_domain",
            &(organization_id, domain.as_str(), &method),
        );
        let position = match method {
            VerifyMethod::Manual { note } => {
                self.organization_command(principal, meta, fp, organization_id, |_| {
                    Ok(OrganizationCommand::VerifyDomainManually {
                        domain: domain.clone(),
                        note: note.clone(),
                    })
                })
                .await?
            }
            VerifyMethod::Dns => {
                let record_name = self
                    .read_current(|model| {
                        model
                            .organizations
                            .get(organization_id)
                            .and_then(|org| org.state.domains.get(domain.as_str()))
                            .map(|claim| claim.verification_record_name(domain.as_str()))
                    })
                    .await?;
                let txt_records = match record_name {
                    // Let the aggregate give the precise refusal (no organization, no claim).
                    None => Vec::new(),
                    Some(name) => match self.txt_resolver().txt_records(&name).await {
                        Ok(records) => records,
                        Err(signpost_outbound::DnsError::NotFound) => Vec::new(),
                        Err(error) => {
                            return Err(ControlError::External {
                                reason: error.reason(),
                                field: "domain",
                                message: format!("could not look up `{name}`: {error}"),
                            })
                        }
                    },
                };
                self.organization_command(principal, meta, fp, organization_id, |_| {
                    Ok(OrganizationCommand::VerifyDomainByDns {
                        domain: domain.clone(),
                        txt_records: txt_records.clone(),
                    })
                })
                .await?
            }
        };
        let value = self.domain_claim_view(organization_id, domain.as_str())?;
        Ok(Mutated { value, position })
    }

    fn domain_claim_view(
        &self,
        organization_id: &str,
        domain: &str,
    ) -> Result<DomainClaimView, ControlError> {
        self.organization_view(organization_id)?
            .domains
            .into_iter()
            .find(|claim| claim.domain == domain)
            .ok_or_else(|| not_found("DOMAIN_NOT_CLAIMED", "domain", "domain claim"))
    }

    /// Releases a claimed domain.
    pub async fn release_domain(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        organization_id: &str,
        domain: &str,
    ) -> Result<u64, ControlError> {
        principal.require(ADMIN)?;
        let domain = parse_domain(domain)?;
        let fp = fingerprint("release_domain", &(organization_id, domain.as_str()));
        let _unique = self.uniqueness_guard().await;
        self.organization_command(principal, meta, fp, organization_id, |_| {
            Ok(OrganizationCommand::ReleaseDomain {
                domain: domain.clone(),
            })
        })
        .await
    }

    /// Sets the SSO policy.
    pub async fn set_sso_policy(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        organization_id: &str,
        policy: schema::SsoPolicy,
    ) -> Result<Mutated<OrganizationView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("set_sso_policy", &(organization_id, policy));
        let position = self
            .organization_command(principal, meta, fp, organization_id, |_| {
                Ok(OrganizationCommand::SetSsoPolicy { policy })
            })
            .await?;
        Ok(Mutated {
            value: self.organization_view(organization_id)?,
            position,
        })
    }

    // ------------------------------------------------------------- setup links

    /// Issues a setup link, revoking older open links of the same organization and intent.
    pub async fn issue_setup_link(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        request: &IssueSetupLink,
    ) -> Result<Mutated<IssuedSetupLink>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("issue_setup_link", request);
        let IssueSetupLink {
            organization_id,
            intent,
            connection_id,
            recipient_email,
            lifetime_seconds,
        } = request;
        let (organization_id, intent, connection_id, recipient_email, lifetime_seconds) = (
            organization_id.as_str(),
            *intent,
            connection_id.as_str(),
            recipient_email.as_str(),
            *lifetime_seconds,
        );
        let lifetime = match lifetime_seconds {
            0 => None,
            seconds => Some(Duration::seconds(
                i64::try_from(seconds)
                    .unwrap_or(i64::MAX)
                    .min(i64::from(i32::MAX)),
            )),
        };
        let link_id = new_id();
        let new_connection_id = new_id();
        let token = credentials::generate(SETUP_LINK_TOKEN_PREFIX);
        let now = self.now();
        let done = self
            .execute(principal, meta, fp, |model| {
                let org = model
                    .organizations
                    .get(organization_id)
                    .ok_or_else(|| not_found("ORGANIZATION_NOT_FOUND", "organization_id", "organization"))?;
                let target = match intent {
                    schema::SetupIntent::UpdateConnection => {
                        let connection = model
                            .connections
                            .get(connection_id)
                            .filter(|c| *c.state.organization_id == *organization_id)
                            .ok_or_else(|| {
                                not_found("CONNECTION_NOT_FOUND", "connection_id", "configured connection in this organization")
                            })?;
                        connection.state.id.to_string()
                    }
                    schema::SetupIntent::StageSwitch => {
                        if org.state.active_connection_id.is_none() {
                            return Err(DomainError::precondition(
                                "NO_ACTIVE_CONNECTION",
                                "a switch can only be staged while a connection is active; issue a NEW_CONNECTION link",
                            )
                            .into());
                        }
                        new_connection_id.clone()
                    }
                    _ => new_connection_id.clone(),
                };
                let issue = signpost_domain::setup_link::SetupLink::default().handle(
                    SetupLinkCommand::Issue {
                        id: link_id.clone(),
                        organization_id: organization_id.to_owned(),
                        intent,
                        connection_id: target,
                        token_sha256: token.sha256,
                        recipient_email: recipient_email.to_owned(),
                        lifetime,
                        now,
                    },
                )?;
                let mut writes = vec![PlannedWrite {
                    stream: streams::setup_link(&link_id),
                    expected: ExpectedVersion::NoStream,
                    events: issue,
                }];
                let mut superseded = Vec::new();
                for older in model
                    .organization_setup_links(organization_id)
                    .into_iter()
                    .filter(|l| l.state.intent == intent && l.state.is_open())
                {
                    let events = older.state.handle(SetupLinkCommand::Revoke {
                        superseded_by: Some(link_id.clone()),
                    })?;
                    superseded.push(older.state.id.to_string());
                    writes.push(PlannedWrite {
                        stream: streams::setup_link(&older.state.id),
                        expected: ExpectedVersion::Exact(older.state.version),
                        events,
                    });
                }
                let mut ids = vec![link_id.clone()];
                ids.extend(superseded);
                Ok(Plan { writes, outcome: Outcome { ids, secret: Some(token.token.clone()), ..Default::default() } })
            })
            .await?;
        let link = self.setup_link_view(&done.outcome.ids[0]).await?;
        let secret = done.outcome.secret.clone().unwrap_or_default();
        Ok(Mutated {
            value: IssuedSetupLink {
                link,
                url: self.setup_link_url(&secret),
                superseded: done.outcome.ids[1..].to_vec(),
            },
            position: done.position,
        })
    }

    /// The URL handed to the IT admin. The token travels in the fragment, so it
    /// never reaches a web server's access log; the setup portal reads it in the browser.
    pub fn setup_link_url(&self, token: &str) -> String {
        let mut url = self
            .config()
            .public_base_url
            .join("setup")
            .expect("static path joins");
        url.set_fragment(Some(token));
        url.to_string()
    }

    /// Revokes a setup link.
    pub async fn revoke_setup_link(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        setup_link_id: &str,
    ) -> Result<Mutated<SetupLinkView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("revoke_setup_link", &setup_link_id);
        let done = self
            .execute(principal, meta, fp, |model| {
                let link = model.setup_link_state(setup_link_id);
                let events = link.handle(SetupLinkCommand::Revoke {
                    superseded_by: None,
                })?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: streams::setup_link(setup_link_id),
                        expected: ExpectedVersion::Exact(link.version),
                        events,
                    }],
                    outcome: Outcome::default(),
                })
            })
            .await?;
        Ok(Mutated {
            value: self.setup_link_view(setup_link_id).await?,
            position: done.position,
        })
    }

    /// Reads one setup link.
    pub async fn get_setup_link(
        &self,
        principal: &Principal,
        setup_link_id: &str,
    ) -> Result<SetupLinkView, ControlError> {
        principal.require(ADMIN)?;
        self.read_current(|_| ()).await?;
        self.setup_link_view(setup_link_id).await
    }

    /// Lists setup links, optionally of one organization.
    pub async fn list_setup_links(
        &self,
        principal: &Principal,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<SetupLinkView>, ControlError> {
        principal.require(ADMIN)?;
        let (size, after) = page_request(page_size, page_token)?;
        let now = self.now();
        let page = self
            .read_current(|model| {
                let ids: Box<dyn Iterator<Item = &str>> = if organization_id.is_empty() {
                    // Open and closed links, each map sorted: merged from the cursor on.
                    Box::new(merge_sorted(
                        model.setup_links.after(&after).map(|(id, _)| &**id),
                        after_cursor(&model.closed_links, &after).map(|(id, _)| &**id),
                    ))
                } else {
                    // The organization's own, through the model's index.
                    Box::new(
                        model
                            .organization_link_ids(organization_id)
                            .into_iter()
                            .map(|id| &**id),
                    )
                };
                paginate(ids.map(|id| (id, id)), size, &after, |id| {
                    match model.setup_links.get(id) {
                        Some(link) => Ok(setup_link_view(link, now)),
                        // A closed link's view is read from the log, once the lock is
                        // released.
                        None => Err(id.to_owned()),
                    }
                })
            })
            .await?;
        // The closed links' views are folded from their streams, read in one pass over the
        // log once the model's lock is released, and put back in the page's order.
        let closed: Vec<&str> = page
            .items
            .iter()
            .filter_map(|item| item.as_ref().err().map(String::as_str))
            .collect();
        let mut folded = self.closed_link_views(&closed, now).await?.into_iter();
        let views: Vec<SetupLinkView> = page
            .items
            .into_iter()
            .map(|item| item.or_else(|_| folded.next().ok_or_else(missing_fold)))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items: views,
            next_page_token: page.next_page_token,
        })
    }

    /// Setup link `setup_link_id` as admins see it: an open link from the read model, a
    /// closed one (which the model keeps only the state of) from its stream in the log.
    async fn setup_link_view(&self, setup_link_id: &str) -> Result<SetupLinkView, ControlError> {
        let now = self.now();
        let (open, closed) = self.projection().read(|model| {
            (
                model
                    .setup_links
                    .get(setup_link_id)
                    .map(|l| setup_link_view(l, now)),
                model.closed_links.contains_key(setup_link_id),
            )
        });
        match open {
            Some(view) => Ok(view),
            None if closed => self
                .closed_link_views(&[setup_link_id], now)
                .await?
                .pop()
                .ok_or_else(missing_fold),
            None => Err(not_found(
                "SETUP_LINK_NOT_FOUND",
                "setup_link_id",
                "setup link",
            )),
        }
    }

    /// Closed setup links' views, folded from their streams (which the model has applied:
    /// a link closes for good, so its stream in the log is the whole of it), in the order
    /// of `setup_link_ids`. The streams are read in one call to the log.
    async fn closed_link_views(
        &self,
        setup_link_ids: &[&str],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<SetupLinkView>, ControlError> {
        if setup_link_ids.is_empty() {
            return Ok(Vec::new());
        }
        let streams = setup_link_ids
            .iter()
            .map(|id| StreamId::new(streams::setup_link(id)))
            .collect::<Result<Vec<_>, _>>()?;
        let read = self.store().read_streams(&streams).await?;
        setup_link_ids
            .iter()
            .zip(read)
            .map(|(id, envelopes)| closed_link_view(id, &envelopes, now))
            .collect()
    }

    // ------------------------------------------------------------- connections

    /// Reads one connection.
    pub async fn get_connection(
        &self,
        principal: &Principal,
        connection_id: &str,
        detail: ConnectionDetail,
    ) -> Result<ConnectionView, ControlError> {
        principal.require(ADMIN)?;
        self.read_current(|_| ()).await?;
        self.connection_view(connection_id, detail).await
    }

    /// Lists connections (drafts included), optionally of one organization.
    pub async fn list_connections(
        &self,
        principal: &Principal,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
        detail: ConnectionDetail,
    ) -> Result<Page<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let (size, after) = page_request(page_size, page_token)?;
        let (views, next_page_token) = self
            .read_current(|model| {
                let ids: Box<dyn Iterator<Item = &str>> = if organization_id.is_empty() {
                    // Configured connections and drafts, each map sorted: merged from
                    // the cursor on, not collected and sorted on every page.
                    Box::new(merge_sorted(
                        model.connections.after(&after).map(|(id, _)| &**id),
                        after_cursor(&model.draft_connections, &after).map(|(id, _)| &**id),
                    ))
                } else {
                    // The organization's own, through the model's index: a walk through
                    // every organization's connections, all under the model's lock, took
                    // milliseconds with 100,000 of them.
                    Box::new(
                        model
                            .organization_connection_ids(organization_id)
                            .into_iter(),
                    )
                };
                let page = paginate(ids.map(|id| (id, id)), size, &after, |id| {
                    let view = self.connection_view_in(model, id, detail)?;
                    Some((view, certificates_at(model, id, detail)))
                });
                (page.items, page.next_page_token)
            })
            .await?;
        let mut items = Vec::with_capacity(views.len());
        for (view, certificates_at) in views.into_iter().flatten() {
            items.push(self.finish_view(view, certificates_at).await?);
        }
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// One connection as admins see it: with `Full`, certificates whole.
    pub(crate) async fn connection_view(
        &self,
        connection_id: &str,
        detail: ConnectionDetail,
    ) -> Result<ConnectionView, ControlError> {
        let (view, certificates_at) = self.projection().read(|model| {
            (
                self.connection_view_in(model, connection_id, detail),
                certificates_at(model, connection_id, detail),
            )
        });
        let view =
            view.ok_or_else(|| not_found("CONNECTION_NOT_FOUND", "connection_id", "connection"))?;
        self.finish_view(view, certificates_at).await
    }

    /// Completes a `Full` view built under the read lock, with the lock released: our
    /// SP details (their metadata XML is built here), and the DER of a SAML connection's
    /// signing certificates, which the read model does not keep, read from the event
    /// that set them (at `certificates_at`; cached by that position). A `Basic` view
    /// carries neither and is complete as built.
    async fn finish_view(
        &self,
        mut view: ConnectionView,
        certificates_at: Option<u64>,
    ) -> Result<ConnectionView, ControlError> {
        if view.detail == ConnectionDetail::Basic {
            return Ok(view);
        }
        view.service_provider = self.service_provider(&view.connection_id);
        let saml = matches!(
            view.connection.as_ref().and_then(|c| c.settings.as_ref()),
            Some(ConnectionSettings::Saml(_))
        );
        let Some(position) = certificates_at.filter(|_| saml) else {
            return Ok(view);
        };
        let certificates = match self.certificates().get(position) {
            Some(certificates) => certificates,
            None => {
                let certificates = self
                    .certificates_set_at(position, &view.connection_id)
                    .await?;
                self.certificates().insert(position, certificates.clone());
                certificates
            }
        };
        // The model's certificates were set from this very event, DER aside.
        view.certificates = Some(certificates);
        Ok(view)
    }

    /// The signing certificates, DER included, of the SAML configuration event at
    /// `position` (which the read model names for `connection_id`).
    async fn certificates_set_at(
        &self,
        position: u64,
        connection_id: &str,
    ) -> Result<Arc<[schema::Certificate]>, ControlError> {
        let envelopes = self.store().read_range(position, 1).await?;
        let event = envelopes
            .first()
            .filter(|e| e.position == position)
            .and_then(|e| signpost_domain::decode_event(&e.payload).ok());
        let saml = match event {
            Some(Event::ConnectionConfigured(configured)) => configured.saml,
            _ => None,
        };
        match saml {
            Some(stored) => Ok(stored.signing_certificates.into()),
            None => Err(ControlError::Internal(format!(
                "no SAML settings at position {position} for connection {connection_id}"
            ))),
        }
    }

    pub(crate) fn connection_view_in(
        &self,
        model: &ReadModel,
        connection_id: &str,
        detail: ConnectionDetail,
    ) -> Option<ConnectionView> {
        let organization_id = model.connection_organization(connection_id)?.to_owned();
        let connection = model
            .connections
            .get(connection_id)
            .map(|c| c.state.clone());
        let org = model
            .organizations
            .get(organization_id.as_str())
            .map(|o| &o.state);
        let status =
            signpost_domain::connection::connection_status(connection_id, connection.as_ref(), org);
        Some(ConnectionView {
            detail,
            connection_id: connection_id.to_owned(),
            organization_id,
            status,
            connection,
            // Filled in by `finish_view`, once the read lock is released.
            certificates: None,
            service_provider: ServiceProvider::default(),
        })
    }

    /// Our SP details for a connection, derived from the public base URL.
    pub fn service_provider(&self, connection_id: &str) -> ServiceProvider {
        ServiceProvider::for_connection(self.config().public_base_url.as_str(), connection_id)
    }

    /// Runs a connection command.
    async fn connection_command(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        fp: [u8; 32],
        connection_id: &str,
        command: ConnectionCommand,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        let stream = streams::connection(connection_id);
        let turn = self.stream_turn(&stream).await;
        let done = self
            .execute(principal, meta, fp, |model| {
                let connection = state_of(&model.connections, connection_id);
                let expected = expected_version(meta, connection.version)?;
                let events = connection.handle(command.clone())?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: stream.clone(),
                        expected,
                        events,
                    }],
                    outcome: Outcome::default(),
                })
            })
            .await?;
        drop(turn);
        Ok(Mutated {
            value: self.connection_view(connection_id, detail).await?,
            position: done.position,
        })
    }

    /// Maps an IdP group to an application role.
    pub async fn assign_group(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        connection_id: &str,
        idp_group: &str,
        role: &str,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("assign_group", &(connection_id, idp_group, role));
        let command = ConnectionCommand::AssignGroup {
            idp_group: idp_group.to_owned(),
            role: role.to_owned(),
        };
        self.connection_command(principal, meta, fp, connection_id, command, detail)
            .await
    }

    /// Removes an IdP group mapping.
    pub async fn unassign_group(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        connection_id: &str,
        idp_group: &str,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("unassign_group", &(connection_id, idp_group));
        let command = ConnectionCommand::UnassignGroup {
            idp_group: idp_group.to_owned(),
        };
        self.connection_command(principal, meta, fp, connection_id, command, detail)
            .await
    }

    /// Sets whether users must belong to an assigned group.
    pub async fn set_group_requirement(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        connection_id: &str,
        require_group: bool,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("set_group_requirement", &(connection_id, require_group));
        let command = ConnectionCommand::SetGroupRequirement { require_group };
        self.connection_command(principal, meta, fp, connection_id, command, detail)
            .await
    }

    /// Activates, deactivates or switches to a connection: an organization
    /// command, plus spending the open setup links that configured the
    /// connection that becomes active — all in one commit. Returns the position
    /// reached and the connection that was active when the command was decided
    /// (empty if none), which a switch reports as the previous one.
    async fn routing_command(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        fp: [u8; 32],
        organization_hint: Option<&str>,
        connection_id: &str,
        command: impl Fn(ConnectionFacts) -> OrganizationCommand,
    ) -> Result<(u64, String), ControlError> {
        // The turn of the organization the connection belongs to (a connection never
        // changes organization); a connection not known yet is refused when decided.
        let organization = self.projection().read(|model| {
            model
                .connection_organization(connection_id)
                .map(str::to_owned)
        });
        let _turn = match organization {
            Some(organization) => Some(
                self.stream_turn(&streams::organization(&organization))
                    .await,
            ),
            None => None,
        };
        let done = self
            .execute(principal, meta, fp, |model| {
                let organization_id = model
                    .connection_organization(connection_id)
                    .filter(|org| organization_hint.is_none_or(|hint| hint == *org))
                    .ok_or_else(|| {
                        not_found("CONNECTION_NOT_FOUND", "connection_id", "connection")
                    })?
                    .to_owned();
                let missing = signpost_domain::organization::Organization::default();
                let org = model
                    .organizations
                    .get(organization_id.as_str())
                    .map_or(&missing, |o| &o.state);
                let connection = model.connections.get(connection_id).map(|c| &c.state);
                let facts = ConnectionFacts {
                    connection_id: connection_id.to_owned(),
                    organization_id: organization_id.clone(),
                    configured: connection.is_some_and(|c| c.is_configured()),
                    role: connection.map(|c| c.role).unwrap_or_default(),
                };
                let previously_active = org
                    .active_connection_id
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned();
                let expected = expected_version(meta, org.version)?;
                let events = org.handle(command(facts))?;
                let activates = events.iter().any(|e| {
                    matches!(
                        e,
                        signpost_domain::Event::ConnectionActivated(_)
                            | signpost_domain::Event::ProviderSwitched(_)
                    )
                });
                let mut writes = vec![PlannedWrite {
                    stream: streams::organization(&organization_id),
                    expected,
                    events,
                }];
                if activates {
                    // Every link naming the connection is its organization's (an update
                    // link is issued in the connection's organization, a new one
                    // allocates it there): found through that organization's links.
                    for link in model
                        .organization_setup_links(&organization_id)
                        .into_iter()
                        .filter(|l| *l.state.connection_id == *connection_id && l.state.is_open())
                    {
                        writes.push(PlannedWrite {
                            stream: streams::setup_link(&link.state.id),
                            expected: ExpectedVersion::Exact(link.state.version),
                            events: link.state.handle(SetupLinkCommand::Spend)?,
                        });
                    }
                }
                Ok(Plan {
                    writes,
                    outcome: Outcome {
                        ids: vec![previously_active],
                        ..Default::default()
                    },
                })
            })
            .await?;
        Ok((
            done.position,
            done.outcome.ids.into_iter().next().unwrap_or_default(),
        ))
    }

    /// Makes a configured connection active.
    pub async fn activate_connection(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        connection_id: &str,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("activate_connection", &connection_id);
        let (position, _) = self
            .routing_command(principal, meta, fp, None, connection_id, |connection| {
                OrganizationCommand::Activate { connection }
            })
            .await?;
        Ok(Mutated {
            value: self.connection_view(connection_id, detail).await?,
            position,
        })
    }

    /// Switches the active connection off.
    pub async fn deactivate_connection(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        connection_id: &str,
        detail: ConnectionDetail,
    ) -> Result<Mutated<ConnectionView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("deactivate_connection", &connection_id);
        let (position, _) = self
            .routing_command(principal, meta, fp, None, connection_id, |facts| {
                OrganizationCommand::Deactivate {
                    connection_id: facts.connection_id,
                }
            })
            .await?;
        Ok(Mutated {
            value: self.connection_view(connection_id, detail).await?,
            position,
        })
    }

    /// Makes `connection_id` active in place of the organization's active connection.
    pub async fn switch_provider(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        organization_id: &str,
        connection_id: &str,
    ) -> Result<Mutated<(OrganizationView, String)>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("switch_provider", &(organization_id, connection_id));
        let (position, previous) = self
            .routing_command(
                principal,
                meta,
                fp,
                Some(organization_id),
                connection_id,
                |connection| OrganizationCommand::SwitchProvider { connection },
            )
            .await?;
        Ok(Mutated {
            value: (self.organization_view(organization_id)?, previous),
            position,
        })
    }

    // -------------------------------------------------------------- api tokens

    /// Mints an API token.
    pub async fn mint_api_token(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        name: &str,
        role: schema::TokenRole,
        organization_scope: &str,
    ) -> Result<Mutated<MintedApiToken>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("mint_api_token", &(name, role, organization_scope));
        let token_id = new_id();
        let token = credentials::generate(API_TOKEN_PREFIX);
        let done = self
            .execute(principal, meta, fp, |model| {
                if !organization_scope.is_empty()
                    && !model.organizations.contains_key(organization_scope)
                {
                    return Err(not_found(
                        "ORGANIZATION_NOT_FOUND",
                        "organization_scope",
                        "organization",
                    ));
                }
                let events = signpost_domain::api_token::ApiToken::default().handle(
                    ApiTokenCommand::Issue {
                        id: token_id.clone(),
                        name: name.to_owned(),
                        role,
                        token_sha256: token.sha256,
                        organization_scope: organization_scope.to_owned(),
                    },
                )?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: streams::api_token(&token_id),
                        expected: ExpectedVersion::NoStream,
                        events,
                    }],
                    outcome: Outcome {
                        ids: vec![token_id.clone()],
                        secret: Some(token.token.clone()),
                        ..Default::default()
                    },
                })
            })
            .await?;
        let view = self.api_token_view(&done.outcome.ids[0])?;
        Ok(Mutated {
            value: MintedApiToken {
                token: view,
                secret: done.outcome.secret.unwrap_or_default(),
            },
            position: done.position,
        })
    }

    /// Lists API tokens.
    pub async fn list_api_tokens(
        &self,
        principal: &Principal,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<ApiTokenView>, ControlError> {
        principal.require(ADMIN)?;
        let (size, after) = page_request(page_size, page_token)?;
        self.read_current(|model| {
            paginate(
                model.api_tokens.after(&after).map(|(id, t)| (&**id, t)),
                size,
                &after,
                |t| ApiTokenView {
                    token: t.state.clone(),
                    created_at: t.created_at(),
                },
            )
        })
        .await
    }

    /// Revokes an API token.
    pub async fn revoke_api_token(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        token_id: &str,
    ) -> Result<Mutated<ApiTokenView>, ControlError> {
        principal.require(ADMIN)?;
        let fp = fingerprint("revoke_api_token", &token_id);
        let done = self
            .execute(principal, meta, fp, |model| {
                let token = state_of(&model.api_tokens, token_id);
                let events = token.handle(ApiTokenCommand::Revoke)?;
                Ok(Plan {
                    writes: vec![PlannedWrite {
                        stream: streams::api_token(token_id),
                        expected: ExpectedVersion::Exact(token.version),
                        events,
                    }],
                    outcome: Outcome::default(),
                })
            })
            .await?;
        Ok(Mutated {
            value: self.api_token_view(token_id)?,
            position: done.position,
        })
    }

    fn api_token_view(&self, token_id: &str) -> Result<ApiTokenView, ControlError> {
        self.projection()
            .read(|model| {
                model.api_tokens.get(token_id).map(|t| ApiTokenView {
                    token: t.state.clone(),
                    created_at: t.created_at(),
                })
            })
            .ok_or_else(|| not_found("API_TOKEN_NOT_FOUND", "token_id", "API token"))
    }

    /// Records `SetupLinkExpired` for every open link past its expiry, by the system,
    /// in commits of at most [`EXPIRY_BATCH`] links. Returns how many links it expired.
    /// Run periodically by the server; expiry is enforced by the clock whether or not
    /// this has run, it only makes the timeline say so. The links are found through the
    /// read model's index of open links: a sweep costs the links it expires, not every
    /// link ever issued.
    pub async fn expire_setup_links(&self) -> Result<usize, ControlError> {
        let mut expired = 0;
        loop {
            let now = self.now();
            let done = self
                .execute(
                    &Principal::System,
                    &RequestMeta::default(),
                    [0; 32],
                    |model| {
                        let mut writes = Vec::new();
                        for link in model.open_links_expired_by(now).take(EXPIRY_BATCH) {
                            let events = link.state.handle(SetupLinkCommand::Expire { now })?;
                            if !events.is_empty() {
                                writes.push(PlannedWrite {
                                    stream: streams::setup_link(&link.state.id),
                                    expected: ExpectedVersion::Exact(link.state.version),
                                    events,
                                });
                            }
                        }
                        let ids = writes.iter().map(|w| w.stream.clone()).collect();
                        Ok(Plan {
                            writes,
                            outcome: Outcome {
                                ids,
                                ..Default::default()
                            },
                        })
                    },
                )
                .await?;
            let committed = done.outcome.ids.len();
            expired += committed;
            if committed < EXPIRY_BATCH {
                return Ok(expired);
            }
        }
    }

    /// Resolves an `authorization: Bearer` API token to its principal.
    pub fn authenticate_api_token(&self, bearer: &str) -> Result<Principal, ControlError> {
        self.with_api_token(bearer, |token, role| Principal::ApiToken {
            token_id: token.id.to_string(),
            name: token.name.clone(),
            role,
            organization_scope: Some(token.organization_scope.clone()).filter(|s| !s.is_empty()),
        })
    }

    /// Checks that an `authorization: Bearer` API token is valid and holds one of
    /// `roles`: [`Self::authenticate_api_token`] then [`Principal::require`], without
    /// building the principal (the routing service's calls need nothing else of it).
    pub fn authorize_api_token(&self, bearer: &str, roles: &[Role]) -> Result<(), ControlError> {
        let role = self.with_api_token(bearer, |_, role| role)?;
        if roles.contains(&role) {
            Ok(())
        } else {
            Err(crate::principal::permission_denied(roles))
        }
    }

    /// `f` of the active API token `bearer` is and of its role; `UNAUTHENTICATED` when
    /// it is not one.
    fn with_api_token<R>(
        &self,
        bearer: &str,
        f: impl FnOnce(&signpost_domain::api_token::ApiToken, Role) -> R,
    ) -> Result<R, ControlError> {
        let refused = || ControlError::Unauthenticated {
            reason: "API_TOKEN_INVALID",
            message: "the API token is not valid".into(),
        };
        if !bearer.starts_with(API_TOKEN_PREFIX) || bearer.len() > credentials::MAX_TOKEN_LEN {
            return Err(refused());
        }
        let hash = credentials::hash(bearer);
        self.projection().read(|model| {
            let token = model
                .api_token_by_hash(&hash)
                .filter(|t| t.state.is_active())
                .ok_or_else(refused)?;
            let role = Role::from_token_role(token.state.role).ok_or_else(refused)?;
            Ok(f(&token.state, role))
        })
    }

    /// On an empty store: mints the first admin token and writes it to
    /// `path` (mode 0600) before appending, so a crash can't leave an admin
    /// token nobody holds. Returns whether a token was minted.
    pub async fn bootstrap_admin_token(
        &self,
        path: &std::path::Path,
    ) -> Result<bool, ControlError> {
        if self.store().head().position != 0 {
            return Ok(false);
        }
        let token_id = new_id();
        let token = credentials::generate(API_TOKEN_PREFIX);
        crate::secrets::write_private_file(path, format!("{}\n", token.token).as_bytes())
            .map_err(|e| ControlError::Internal(format!("writing {}: {e}", path.display())))?;
        let events =
            signpost_domain::api_token::ApiToken::default().handle(ApiTokenCommand::Issue {
                id: token_id.clone(),
                name: "bootstrap admin".into(),
                role: schema::TokenRole::Admin,
                token_sha256: token.sha256,
                organization_scope: String::new(),
            })?;
        self.execute(&Principal::System, &RequestMeta::default(), [0; 32], |_| {
            Ok(Plan {
                writes: vec![PlannedWrite {
                    stream: streams::api_token(&token_id),
                    expected: ExpectedVersion::NoStream,
                    events: events.clone(),
                }],
                outcome: Outcome::default(),
            })
        })
        .await?;
        Ok(true)
    }
}

fn organization_view(model: &ReadModel, organization_id: &str) -> Option<OrganizationView> {
    let tracked = model.organizations.get(organization_id)?;
    let domains = tracked
        .state
        .domains
        .iter()
        .map(|(domain, claim)| DomainClaimView {
            domain: domain.to_string(),
            claim: claim.clone(),
            verification: model.verification(organization_id, domain),
        })
        .collect();
    Some(OrganizationView {
        organization: tracked.state.clone(),
        created_at: tracked.created_at(),
        domains,
    })
}

/// A closed setup link's view from the events of its stream.
fn closed_link_view(
    setup_link_id: &str,
    envelopes: &[EventEnvelope],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<SetupLinkView, ControlError> {
    let Some(first) = envelopes.first() else {
        return Err(ControlError::Internal(format!(
            "setup link {setup_link_id} is closed in the read model but has no stream"
        )));
    };
    let created_at = signpost_domain::event::from_timestamp(first.recorded_at.as_ref());
    let mut link = SetupLink::default();
    for envelope in envelopes {
        let event = signpost_domain::decode_event(&envelope.payload).map_err(|e| {
            ControlError::Internal(format!(
                "setup link {setup_link_id}: event at {} does not decode: {e}",
                envelope.position
            ))
        })?;
        link.apply(&event);
    }
    let tracked = Tracked::new(link, created_at);
    Ok(setup_link_view(&tracked, now))
}

/// A store that answered fewer streams than it was asked for.
fn missing_fold() -> ControlError {
    ControlError::Internal("the log answered fewer setup link streams than asked".into())
}

fn setup_link_view(
    link: &crate::read_model::Tracked<signpost_domain::setup_link::SetupLink>,
    now: chrono::DateTime<chrono::Utc>,
) -> SetupLinkView {
    use signpost_domain::setup_link::LinkState;
    let status = match link.state.state {
        LinkState::Revoked => SetupLinkStatus::Revoked,
        LinkState::Spent => SetupLinkStatus::Spent,
        LinkState::Expired => SetupLinkStatus::Expired,
        _ if now >= link.state.expires_at => SetupLinkStatus::Expired,
        _ => SetupLinkStatus::Open,
    };
    SetupLinkView {
        link: link.state.clone(),
        created_at: link.created_at(),
        status,
    }
}

fn hex_random(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    hex::encode(buffer)
}
