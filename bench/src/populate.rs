//! Bulk-loads a synthetic but valid history straight into an event log (segment files):
//! organizations with a verified domain and an active SAML connection (one
//! route each), plus an admin token whose secret is written next to the data.
//! Events go through the real `FileEventStore` (group commit, hash chain), so
//! the control plane opening the directory afterwards sees an ordinary log.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    Commit, CommitMeta, EventStore, ExpectedVersion, FileEventStore, FileOptions, NewEvent,
    StreamId, StreamWrite,
};

/// The test IdP certificate (RSA-2048, SHA-256, valid until 2046).
const CERT_PEM: &str = include_str!("../../crates/signpost-idp/testdata/rsa2048_sha256.pem");

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// Organizations, each with one routed domain.
    pub organizations: usize,
    /// Extra events per organization (group assignments), to reach a log size.
    pub extra_events_per_organization: usize,
    /// Write each organization in the order of its lifecycle: the organization and its
    /// domain, the connection configured, activated, and only then the group assignments,
    /// to an active connection (two commits). Without it one commit holds the connection's
    /// events (its group assignments included) before the organization's, so the
    /// assignments are folded before the organization exists: nothing routes yet, and
    /// the audit's fold compares no routes for them. The scenarios use the default
    /// (their figures compare with earlier rounds); this shows what a real log costs.
    pub lifecycle: bool,
    /// Give each organization the setup link its connection was configured through,
    /// issued and then spent at activation, as the real lifecycle leaves it (the
    /// routing scenario's memory row without them compares with earlier rounds).
    pub setup_links: bool,
}

fn write(stream: String, events: Vec<Event>) -> StreamWrite {
    write_expecting(stream, ExpectedVersion::NoStream, events)
}

fn write_expecting(stream: String, expected: ExpectedVersion, events: Vec<Event>) -> StreamWrite {
    StreamWrite {
        stream: StreamId::new(stream).expect("valid stream id"),
        expected,
        events: events
            .iter()
            .map(|event| NewEvent {
                event_type: event_type(event).to_owned(),
                payload: encode_event(event).into(),
            })
            .collect(),
    }
}

fn system_meta() -> CommitMeta {
    CommitMeta {
        actor: schema::Actor {
            kind: schema::ActorKind::System as i32,
            id: "bench".into(),
            on_behalf_of: String::new(),
            display_name: "bench loader".into(),
        },
        correlation_id: uuid::Uuid::now_v7().to_string(),
        request_id: None,
    }
}

fn certificate() -> anyhow::Result<schema::Certificate> {
    let cert = signpost_idp::parse_certificate_pem(CERT_PEM, chrono::Utc::now())?;
    Ok(schema::Certificate {
        sha256_fingerprint: cert.sha256_fingerprint,
        subject: cert.subject,
        not_before: Some(signpost_domain::event::timestamp(cert.not_before)),
        not_after: Some(signpost_domain::event::timestamp(cert.not_after)),
        der: cert.der,
    })
}

/// The domain of organization `index`.
pub fn domain_of(index: usize) -> String {
    format!("firm{index}.example.com")
}

/// One loaded organization.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Its id.
    pub organization_id: String,
    /// Its active connection.
    pub connection_id: String,
}

/// What [`populate`] loaded.
#[derive(Debug, Clone)]
pub struct Populated {
    /// The admin token (also in `<dir>/bench-admin.token`).
    pub token: String,
    /// Organizations in index order (organization `i` routes `domain_of(i)`).
    pub organizations: Vec<Organization>,
    /// Events in the log.
    pub events: u64,
    /// When loading started and ended (event times fall in between).
    pub started: chrono::DateTime<chrono::Utc>,
    /// See `started`.
    pub ended: chrono::DateTime<chrono::Utc>,
}

/// The admin token and the organizations a [`populate`]d `dir` holds.
pub fn read_populated(dir: &Path) -> anyhow::Result<(String, Vec<Organization>)> {
    let path = dir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok((token.trim().to_owned(), read_organizations(dir)?))
}

/// The organizations a [`populate`]d `dir` lists.
fn read_organizations(dir: &Path) -> anyhow::Result<Vec<Organization>> {
    let path = dir.join(ORGANIZATIONS_FILE);
    let listed = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    listed
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((organization_id, connection_id)) => Ok(Organization {
                organization_id: organization_id.to_owned(),
                connection_id: connection_id.to_owned(),
            }),
            None => anyhow::bail!("{}: not `organization connection`: {line}", path.display()),
        })
        .collect()
}

fn organization_commits(
    index: usize,
    cert: &schema::Certificate,
    extra: usize,
    population: &Population,
) -> (Vec<Commit>, Organization) {
    let lifecycle = population.lifecycle;
    let org = uuid::Uuid::now_v7().to_string();
    let connection = uuid::Uuid::now_v7().to_string();
    let link = population
        .setup_links
        .then(|| uuid::Uuid::now_v7().to_string());
    let loaded = Organization {
        organization_id: org.clone(),
        connection_id: connection.clone(),
    };
    let domain = domain_of(index);
    let entity = format!("https://idp{index}.example.com/entity");
    let mut org_events = vec![
        Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: org.clone(),
            display_name: format!("Firm {index}"),
            external_id: format!("ext-{index}"),
        }),
        Event::DomainClaimed(schema::DomainClaimed {
            domain: domain.clone(),
            verification_record_name: format!("_signpost-challenge.{domain}"),
            verification_value: "signpost-verification=bench".into(),
        }),
        Event::DomainVerified(schema::DomainVerified {
            domain,
            method: schema::VerificationMethod::Manual as i32,
            note: "bench".into(),
        }),
    ];
    let activated = Event::ConnectionActivated(schema::ConnectionActivated {
        connection_id: connection.clone(),
    });
    let mut connection_events = vec![Event::ConnectionConfigured(Box::new(
        schema::ConnectionConfigured {
            connection_id: connection.clone(),
            organization_id: org.clone(),
            setup_link_id: link.clone().unwrap_or_default(),
            role: schema::ConnectionRole::Primary as i32,
            protocol: schema::Protocol::Saml as i32,
            saml: Some(schema::SamlSettings {
                idp_entity_id: entity.clone(),
                sso_endpoints: vec![schema::SamlEndpoint {
                    binding: schema::SamlBinding::HttpRedirect as i32,
                    location: format!("{entity}/sso"),
                }],
                signing_certificates: vec![cert.clone()],
                source: schema::SamlSource::MetadataXml as i32,
                metadata_url: String::new(),
            }),
            oidc: None,
            claim_mapping: Some(schema::ClaimMapping {
                email: "email".into(),
                groups: "groups".into(),
                ..Default::default()
            }),
            provider_preset: "okta".into(),
        },
    ))];
    let groups = (0..extra).map(|group| {
        Event::GroupAssigned(schema::GroupAssigned {
            idp_group: format!("group-{}", group % 50),
            role: format!("role-{group}"),
        })
    });
    let commit = |writes| Commit {
        writes,
        meta: system_meta(),
        idempotency: None,
    };
    let issued = link.as_ref().map(|link| {
        let token_sha256 = [
            *uuid::Uuid::new_v4().as_bytes(),
            *uuid::Uuid::new_v4().as_bytes(),
        ];
        Event::SetupLinkIssued(schema::SetupLinkIssued {
            setup_link_id: link.clone(),
            organization_id: org.clone(),
            intent: schema::SetupIntent::NewConnection as i32,
            connection_id: connection.clone(),
            token_sha256: token_sha256.concat(),
            expires_at: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 72 * 3600,
                nanos: 0,
            }),
            recipient_email: format!("it-admin@firm{index}.example.com"),
        })
    });
    let spent = || {
        Event::SetupLinkSpent(schema::SetupLinkSpent {
            connection_id: connection.clone(),
        })
    };
    if !lifecycle {
        connection_events.extend(groups);
        org_events.push(activated);
        let mut writes = Vec::new();
        if let (Some(link), Some(issued)) = (&link, issued) {
            writes.push(write(streams::setup_link(link), vec![issued, spent()]));
        }
        writes.push(write(streams::connection(&connection), connection_events));
        writes.push(write(streams::organization(&org), org_events));
        return (vec![commit(writes)], loaded);
    }
    let mut configured = vec![write(streams::organization(&org), org_events)];
    if let (Some(link), Some(issued)) = (&link, issued) {
        configured.push(write(streams::setup_link(link), vec![issued]));
    }
    configured.push(write(streams::connection(&connection), connection_events));
    let mut active = vec![write_expecting(
        streams::organization(&org),
        ExpectedVersion::Any,
        vec![activated],
    )];
    if let Some(link) = &link {
        active.push(write_expecting(
            streams::setup_link(link),
            ExpectedVersion::Any,
            vec![spent()],
        ));
    }
    if extra > 0 {
        active.push(write_expecting(
            streams::connection(&connection),
            ExpectedVersion::Any,
            groups.collect(),
        ));
    }
    (vec![commit(configured), commit(active)], loaded)
}

/// The admin token file `populate` writes in the data directory.
pub const TOKEN_FILE: &str = "bench-admin.token";
/// The organizations file `populate` writes in the data directory: one line each,
/// in index order, `organization_id connection_id`.
pub const ORGANIZATIONS_FILE: &str = "bench-organizations.txt";

/// Loads `population` into a fresh log in `dir`; writes an admin token to
/// `<dir>/bench-admin.token` and the organizations to `<dir>/bench-organizations.txt`,
/// and returns them.
pub async fn populate(dir: &Path, population: Population) -> anyhow::Result<Populated> {
    let started = chrono::Utc::now();
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(
        FileEventStore::open(&dir.join("log"), FileOptions::default()).context("open the log")?,
    );
    anyhow::ensure!(
        store.head().position == 0,
        "{} already holds a log",
        dir.display()
    );
    let token =
        signpost_control::credentials::generate(signpost_control::credentials::API_TOKEN_PREFIX);
    let token_id = uuid::Uuid::now_v7().to_string();
    let issued = Event::ApiTokenIssued(schema::ApiTokenIssued {
        token_id: token_id.clone(),
        name: "bench admin".into(),
        role: schema::TokenRole::Admin as i32,
        token_sha256: token.sha256.to_vec(),
        organization_scope: String::new(),
    });
    store
        .append(Commit {
            writes: vec![write(streams::api_token(&token_id), vec![issued])],
            meta: system_meta(),
            idempotency: None,
        })
        .await?;
    let cert = certificate()?;
    let per_task = population.organizations.div_ceil(16);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = store.clone();
        let cert = cert.clone();
        let range = (task * per_task)..((task + 1) * per_task).min(population.organizations);
        tasks.push(tokio::spawn(async move {
            let mut loaded = Vec::with_capacity(range.len());
            for index in range {
                let (commits, organization) = organization_commits(
                    index,
                    &cert,
                    population.extra_events_per_organization,
                    &population,
                );
                for commit in commits {
                    store.append(commit).await?;
                }
                loaded.push(organization);
            }
            anyhow::Ok(loaded)
        }));
    }
    let mut organizations = Vec::with_capacity(population.organizations);
    for task in tasks {
        organizations.extend(task.await??);
    }
    std::fs::write(dir.join(TOKEN_FILE), &token.token)?;
    let listed: String = organizations
        .iter()
        .map(|o| format!("{} {}\n", o.organization_id, o.connection_id))
        .collect();
    std::fs::write(dir.join(ORGANIZATIONS_FILE), listed)?;
    Ok(Populated {
        token: token.token,
        organizations,
        events: store.head().position,
        started,
        ended: chrono::Utc::now(),
    })
}
