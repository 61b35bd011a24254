//! Rough figures for the audit projection (a benchmark, not a test: run with
//! `cargo bench -p signpost-audit --bench measure`,
//! `SIGNPOST_MEASURE_ORGS` organizations of ten events each, default 20 000, i.e. 200 000
//! events; `SIGNPOST_MEASURE_LIVE` commits for each live phase, default 5 000;
//! `SIGNPOST_MEASURE_CACHE_MIB` the audit database's sled cache; `SIGNPOST_MEASURE_ROWS`
//! set: count the database's rows by key kind after the rebuild).
//!
//! Phases: rebuild from an in-memory log (wall time and process CPU time), disk size and
//! RSS, one page of one organization and one page of one event type (p50 / p99), export,
//! restart on the caught-up database, then live tailing (one commit at a time, each waited
//! for; and 64 concurrent appenders): process CPU time per event, minus the same appends
//! into a log nobody follows. CPU times come from `/proc/self/stat` (10 ms ticks), RSS
//! from `/proc/self/status` (the system allocator here; the server uses jemalloc).
//!
//! The `describe` phase runs last: `describe` (one event → one audit entry) timed alone
//! over two mixes, folded in order so each event sees a realistic state before it: a story
//! of 32 events per organization touching every event type and every kind of configuration
//! change, and the projection phases' own log (10 events per organization, 4 of them SAML
//! configurations). `SIGNPOST_MEASURE_DESCRIBE_ORGS` organizations, default 2 000;
//! `SIGNPOST_MEASURE_DESCRIBE_REPS` calls per event, default 1 (the first call is the
//! realistic one: its inputs are not in cache yet). It prints the cost per event type and
//! a SHA-256 of every entry produced (stable for the story mix), so two builds can be
//! compared for identical output. Pass `describe` or `projection` to run only that phase
//! (`cargo bench -p signpost-audit --bench measure -- describe`).
//!
//! The `lazy` phase (run alone: `-- lazy`) asks whether audit entries could be described
//! when they are read instead of at start: the story mix is written to a segment-file log
//! on disk (`SIGNPOST_MEASURE_LAZY_ORGS` organizations, default 1 000, each story followed
//! by `SIGNPOST_MEASURE_LAZY_EXTRA` group assignments, default 0), described once in
//! log order with one read model (as the projection does), then organization by
//! organization from that organization's own streams alone (`read_streams`, a fresh read
//! model, `describe`), as a query would. It prints the cost of one organization's page
//! both ways apart (reading its streams; folding and describing) and how many entries the
//! organization-local fold describes differently from the whole-log one; then what start would
//! still record in such a design (actor and event-type postings, a sparse time index) per
//! event, from envelopes already decoded.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use signpost_audit::*;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    verify_chain, Commit, CommitMeta, EventStore, ExpectedVersion, MemoryEventStore, NewEvent,
    StreamId, StreamWrite,
};

// `describe` is crate-private; the bench compiles its source as a module of its own to time
// it without the projection around it (the file names no other module of the crate).
#[allow(dead_code)]
#[path = "../src/describe.rs"]
mod describe;

/// The number in environment variable `name`, or `default` when it is unset or not one.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn append(store: &MemoryEventStore, stream: String, events: Vec<Event>) {
    append_as(store, admin(), stream, events).await
}

fn admin() -> schema::Actor {
    schema::Actor {
        kind: schema::ActorKind::ApiToken as i32,
        id: "token-admin".into(),
        on_behalf_of: "alice@platform.example".into(),
        display_name: "Onboarding".into(),
    }
}

fn link(i: usize) -> schema::Actor {
    schema::Actor {
        kind: schema::ActorKind::SetupLink as i32,
        id: format!("link-{i}"),
        on_behalf_of: format!("it@firm-{i}.com"),
        display_name: "setup link".into(),
    }
}

async fn append_as(
    store: &impl EventStore,
    actor: schema::Actor,
    stream: String,
    events: Vec<Event>,
) {
    let commit = Commit {
        writes: vec![StreamWrite {
            stream: StreamId::new(stream).unwrap(),
            expected: ExpectedVersion::Any,
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_type: event_type(e).into(),
                    payload: encode_event(e).into(),
                })
                .collect(),
        }],
        meta: CommitMeta {
            actor,
            correlation_id: uuid::Uuid::now_v7().to_string(),
            request_id: None,
        },
        idempotency: None,
    };
    store.append(commit).await.unwrap();
}

async fn organization(store: &MemoryEventStore, i: usize) {
    let org = format!("org-{i}");
    let connection = format!("conn-{i}");
    let domain = format!("firm-{i}.com");
    let stream = streams::organization(&org);
    append(
        store,
        stream.clone(),
        vec![Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: org.clone(),
            display_name: format!("Firm {i}"),
            external_id: format!("ext-{i}"),
        })],
    )
    .await;
    append(
        store,
        stream.clone(),
        vec![Event::DomainClaimed(schema::DomainClaimed {
            domain: domain.clone(),
            verification_record_name: format!("_signpost-challenge.{domain}"),
            verification_value: "v".into(),
        })],
    )
    .await;
    append(
        store,
        stream.clone(),
        vec![Event::DomainVerified(schema::DomainVerified {
            domain,
            method: schema::VerificationMethod::DnsTxt as i32,
            note: String::new(),
        })],
    )
    .await;
    for round in 0..4 {
        append_as(
            store,
            link(i),
            streams::connection(&connection),
            vec![Event::ConnectionConfigured(Box::new(
                schema::ConnectionConfigured {
                    connection_id: connection.clone(),
                    organization_id: org.clone(),
                    setup_link_id: "link".into(),
                    role: schema::ConnectionRole::Primary as i32,
                    protocol: schema::Protocol::Saml as i32,
                    saml: Some(schema::SamlSettings {
                        idp_entity_id: format!("https://idp-{i}.example/e"),
                        sso_endpoints: vec![schema::SamlEndpoint {
                            binding: schema::SamlBinding::HttpRedirect as i32,
                            location: format!("https://idp-{i}.example/sso/{round}"),
                        }],
                        signing_certificates: vec![schema::Certificate {
                            der: vec![0; 800],
                            sha256_fingerprint: format!("{round:064}"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    oidc: None,
                    claim_mapping: Some(schema::ClaimMapping {
                        email: "email".into(),
                        ..Default::default()
                    }),
                    provider_preset: "okta".into(),
                },
            ))],
        )
        .await;
        if round == 0 {
            append(
                store,
                stream.clone(),
                vec![Event::ConnectionActivated(schema::ConnectionActivated {
                    connection_id: connection.clone(),
                })],
            )
            .await;
        }
    }
    append(
        store,
        streams::connection(&connection),
        vec![Event::GroupAssigned(schema::GroupAssigned {
            idp_group: "Lawyers".into(),
            role: "member".into(),
        })],
    )
    .await;
    append(
        store,
        stream,
        vec![Event::SsoPolicyChanged(schema::SsoPolicyChanged {
            previous: schema::SsoPolicy::Optional as i32,
            policy: schema::SsoPolicy::Enforced as i32,
        })],
    )
    .await;
}

/// The projection's options; `SIGNPOST_MEASURE_CACHE_MIB` sets its sled cache.
fn options() -> AuditOptions {
    let mut options = AuditOptions::new("https://s.test/");
    if let Some(mib) = std::env::var("SIGNPOST_MEASURE_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        options.cache_capacity_bytes = mib * 1024 * 1024;
    }
    options
}

/// Process CPU time (user + system, every thread) from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A line of `/proc/self/status` in MiB (`VmRSS`, `VmHWM`).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// A live command's commit: one group assigned to organization `i`'s connection.
async fn live_commit(store: &MemoryEventStore, i: usize, n: usize) {
    append(
        store,
        streams::connection(&format!("conn-{i}")),
        vec![Event::GroupAssigned(schema::GroupAssigned {
            idp_group: format!("Group {n}"),
            role: "member".into(),
        })],
    )
    .await;
}

/// Appends `commits` live commits, one at a time (each waited for by `audit`, if any) or
/// from 64 concurrent appenders; returns the process CPU seconds it took.
async fn live(
    store: &Arc<MemoryEventStore>,
    audit: Option<&AuditProjection>,
    organizations: usize,
    commits: usize,
    concurrent: bool,
) -> f64 {
    let cpu = cpu_seconds();
    if concurrent {
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for n in (t..commits).step_by(64) {
                        live_commit(&store, (n * 7919) % organizations, n).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        if let Some(audit) = audit {
            audit.wait_for(store.head().position).await.unwrap();
        }
    } else {
        for n in 0..commits {
            live_commit(store, (n * 7919) % organizations, n).await;
            if let Some(audit) = audit {
                audit.wait_for(store.head().position).await.unwrap();
            }
        }
    }
    cpu_seconds() - cpu
}

/// A 64-hex-digit certificate fingerprint, like the ones `signpost-idp` computes.
fn fingerprint(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

fn saml_settings(i: usize, sso_path: &str, certificates: &[&str]) -> schema::SamlSettings {
    schema::SamlSettings {
        idp_entity_id: format!("http://www.okta.com/exk{i:08}"),
        sso_endpoints: vec![
            schema::SamlEndpoint {
                binding: schema::SamlBinding::HttpPost as i32,
                location: format!("https://firm-{i}.okta.com/app/signpost/{sso_path}/sso/saml"),
            },
            schema::SamlEndpoint {
                binding: schema::SamlBinding::HttpRedirect as i32,
                location: format!("https://firm-{i}.okta.com/app/signpost/{sso_path}/sso/saml"),
            },
        ],
        signing_certificates: certificates
            .iter()
            .map(|seed| schema::Certificate {
                der: vec![0x30; 900],
                sha256_fingerprint: fingerprint(&format!("{i}-{seed}")),
                subject: format!("CN=firm-{i}.okta.com"),
                ..Default::default()
            })
            .collect(),
        source: schema::SamlSource::MetadataUrl as i32,
        metadata_url: format!("https://firm-{i}.okta.com/app/exk{i:08}/sso/saml/metadata"),
    }
}

fn oidc_settings(i: usize, secret: u8) -> schema::OidcSettings {
    let base = format!("https://login.microsoftonline.com/{i:08}-tenant/v2.0");
    schema::OidcSettings {
        issuer: base.clone(),
        authorization_endpoint: format!("{base}/oauth2/authorize"),
        token_endpoint: format!("{base}/oauth2/token"),
        jwks_uri: format!("{base}/discovery/keys"),
        userinfo_endpoint: "https://graph.microsoft.com/oidc/userinfo".into(),
        client_id: format!("client-{i}"),
        client_secret: Some(schema::EncryptedSecret {
            key_id: "data-key-1".into(),
            nonce: vec![secret; 12],
            ciphertext: vec![secret; 48],
        }),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
    }
}

fn configured(
    i: usize,
    connection: &str,
    link: &str,
    role: schema::ConnectionRole,
    saml: Option<schema::SamlSettings>,
    oidc: Option<schema::OidcSettings>,
) -> Event {
    Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
        connection_id: connection.to_owned(),
        organization_id: format!("org-{i}"),
        setup_link_id: link.to_owned(),
        role: role as i32,
        protocol: if saml.is_some() {
            schema::Protocol::Saml
        } else {
            schema::Protocol::Oidc
        } as i32,
        saml,
        oidc,
        claim_mapping: Some(schema::ClaimMapping {
            email: "email".into(),
            given_name: "firstName".into(),
            family_name: "lastName".into(),
            groups: "groups".into(),
        }),
        provider_preset: "okta".into(),
    }))
}

fn issued(i: usize, link: &str, connection: &str, intent: schema::SetupIntent) -> Event {
    Event::SetupLinkIssued(schema::SetupLinkIssued {
        setup_link_id: link.to_owned(),
        organization_id: format!("org-{i}"),
        intent: intent as i32,
        connection_id: connection.to_owned(),
        token_sha256: Sha256::digest(link.as_bytes()).to_vec(),
        expires_at: Some(prost_types::Timestamp {
            seconds: 1_780_000_000,
            nanos: 0,
        }),
        recipient_email: format!("it@firm-{i}.com"),
    })
}

/// One organization's life in 32 events (stream, actor, event): every event type, first
/// configurations and re-configurations (changed, unchanged, SAML → OIDC), a switch.
fn organization_story(i: usize) -> Vec<(String, schema::Actor, Event)> {
    use schema::{ConnectionRole as Role, SetupIntent as Intent};
    let org = streams::organization(&format!("org-{i}"));
    let (a, b) = (format!("conn-{i}-a"), format!("conn-{i}-b"));
    let (ca, cb) = (streams::connection(&a), streams::connection(&b));
    let links: Vec<String> = (1..=4).map(|n| format!("link-{i}-{n}")).collect();
    let link_stream = |n: usize| streams::setup_link(&links[n]);
    let token = streams::api_token(&format!("token-{i}"));
    let system = schema::Actor {
        kind: schema::ActorKind::System as i32,
        id: "signpost".into(),
        on_behalf_of: String::new(),
        display_name: "Signpost".into(),
    };
    let holder = |n: usize| schema::Actor {
        kind: schema::ActorKind::SetupLink as i32,
        id: links[n].clone(),
        on_behalf_of: format!("it@firm-{i}.com"),
        display_name: "setup link".into(),
    };
    let assigned = |group: &str, role: &str| {
        Event::GroupAssigned(schema::GroupAssigned {
            idp_group: group.into(),
            role: role.into(),
        })
    };
    let domain = format!("firm-{i}.com");
    let other_domain = format!("firm-{i}.co.uk");
    vec![
        (
            token.clone(),
            admin(),
            Event::ApiTokenIssued(schema::ApiTokenIssued {
                token_id: format!("token-{i}"),
                name: format!("auditor for firm {i}"),
                role: schema::TokenRole::Auditor as i32,
                token_sha256: vec![1; 32],
                organization_scope: format!("org-{i}"),
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::OrganizationCreated(schema::OrganizationCreated {
                organization_id: format!("org-{i}"),
                display_name: format!("Firm {i} LLP"),
                external_id: format!("ext-{i}"),
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::DomainClaimed(schema::DomainClaimed {
                domain: domain.clone(),
                verification_record_name: format!("_signpost-challenge.{domain}"),
                verification_value: "v".into(),
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::DomainClaimed(schema::DomainClaimed {
                domain: other_domain.clone(),
                verification_record_name: format!("_signpost-challenge.{other_domain}"),
                verification_value: "v".into(),
            }),
        ),
        (
            org.clone(),
            system.clone(),
            Event::DomainVerified(schema::DomainVerified {
                domain: domain.clone(),
                method: schema::VerificationMethod::DnsTxt as i32,
                note: String::new(),
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::DomainVerified(schema::DomainVerified {
                domain: other_domain.clone(),
                method: schema::VerificationMethod::Manual as i32,
                note: "checked by phone".into(),
            }),
        ),
        (
            link_stream(0),
            admin(),
            issued(i, &links[0], &a, Intent::NewConnection),
        ),
        (
            link_stream(0),
            holder(0),
            Event::SetupFormSubmitted(schema::SetupFormSubmitted {
                setup_link_id: links[0].clone(),
                connection_id: a.clone(),
                submission: 1,
            }),
        ),
        (
            ca.clone(),
            holder(0),
            configured(
                i,
                &a,
                &links[0],
                Role::Primary,
                Some(saml_settings(i, "1", &["c1"])),
                None,
            ),
        ),
        (
            org.clone(),
            admin(),
            Event::ConnectionActivated(schema::ConnectionActivated {
                connection_id: a.clone(),
            }),
        ),
        (
            link_stream(0),
            admin(),
            Event::SetupLinkSpent(schema::SetupLinkSpent {
                connection_id: a.clone(),
            }),
        ),
        (ca.clone(), admin(), assigned("Lawyers", "member")),
        (ca.clone(), admin(), assigned("IT", "admin")),
        (ca.clone(), admin(), assigned("Lawyers", "editor")),
        (
            ca.clone(),
            admin(),
            Event::GroupRequirementChanged(schema::GroupRequirementChanged {
                require_group: true,
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::SsoPolicyChanged(schema::SsoPolicyChanged {
                previous: schema::SsoPolicy::Optional as i32,
                policy: schema::SsoPolicy::Enforced as i32,
            }),
        ),
        (
            link_stream(1),
            admin(),
            issued(i, &links[1], &a, Intent::UpdateConnection),
        ),
        (
            link_stream(1),
            holder(1),
            Event::SetupFormSubmitted(schema::SetupFormSubmitted {
                setup_link_id: links[1].clone(),
                connection_id: a.clone(),
                submission: 1,
            }),
        ),
        // A certificate rollover and a new SSO URL, then the same form again.
        (
            ca.clone(),
            holder(1),
            configured(
                i,
                &a,
                &links[1],
                Role::Primary,
                Some(saml_settings(i, "2", &["c1", "c2"])),
                None,
            ),
        ),
        (
            ca.clone(),
            holder(1),
            configured(
                i,
                &a,
                &links[1],
                Role::Primary,
                Some(saml_settings(i, "2", &["c1", "c2"])),
                None,
            ),
        ),
        (
            link_stream(2),
            admin(),
            issued(i, &links[2], &b, Intent::StageSwitch),
        ),
        (
            link_stream(1),
            admin(),
            Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                reason: schema::RevocationReason::Superseded as i32,
                superseded_by: links[2].clone(),
            }),
        ),
        (
            cb.clone(),
            holder(2),
            configured(
                i,
                &b,
                &links[2],
                Role::Standby,
                None,
                Some(oidc_settings(i, 1)),
            ),
        ),
        (
            cb.clone(),
            holder(2),
            configured(
                i,
                &b,
                &links[2],
                Role::Standby,
                None,
                Some(oidc_settings(i, 2)),
            ),
        ),
        (
            org.clone(),
            admin(),
            Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: a.clone(),
                connection_id: b.clone(),
            }),
        ),
        (
            ca.clone(),
            admin(),
            Event::GroupUnassigned(schema::GroupUnassigned {
                idp_group: "IT".into(),
            }),
        ),
        (
            link_stream(3),
            admin(),
            issued(i, &links[3], &b, Intent::UpdateConnection),
        ),
        (
            link_stream(3),
            system.clone(),
            Event::SetupLinkExpired(schema::SetupLinkExpired {
                expired_at: Some(prost_types::Timestamp {
                    seconds: 1_780_000_000,
                    nanos: 0,
                }),
            }),
        ),
        (
            link_stream(2),
            admin(),
            Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                reason: schema::RevocationReason::Revoked as i32,
                superseded_by: String::new(),
            }),
        ),
        (
            org.clone(),
            admin(),
            Event::ConnectionDeactivated(schema::ConnectionDeactivated {
                connection_id: b.clone(),
            }),
        ),
        (
            org,
            admin(),
            Event::DomainReleased(schema::DomainReleased {
                domain: other_domain,
            }),
        ),
        (
            token,
            admin(),
            Event::ApiTokenRevoked(schema::ApiTokenRevoked {}),
        ),
    ]
}

/// The story mix: every organization's story as envelopes, in log order, with fixed times
/// and ids (so the entries, hence their digest, are the same from run to run).
fn story_mix(organizations: usize) -> Vec<(signpost_eventlog::EventEnvelope, Event)> {
    let mut envelopes = Vec::new();
    for i in 0..organizations {
        for (stream, actor, event) in organization_story(i) {
            let position = envelopes.len() as u64 + 1;
            let envelope = signpost_eventlog::EventEnvelope {
                position,
                stream_id: stream,
                recorded_at: Some(prost_types::Timestamp {
                    seconds: 1_770_000_000 + position as i64,
                    nanos: 0,
                }),
                actor: Some(actor),
                correlation_id: format!("{:032x}", position * 7919),
                event_type: event_type(&event).into(),
                ..Default::default()
            };
            envelopes.push((envelope, event));
        }
    }
    envelopes
}

/// The rebuild mix: the log the projection phases rebuild from (`organization`, ten events
/// each, four of them SAML configurations), read back from a memory store.
async fn rebuild_mix(organizations: usize) -> Vec<(signpost_eventlog::EventEnvelope, Event)> {
    let store = MemoryEventStore::new();
    for i in 0..organizations {
        organization(&store, i).await;
    }
    let mut envelopes = Vec::new();
    loop {
        let batch = store
            .read_range(envelopes.len() as u64 + 1, 10_000)
            .await
            .unwrap();
        if batch.is_empty() {
            return envelopes;
        }
        for envelope in batch {
            let event = signpost_domain::decode_event(&envelope.payload).unwrap();
            envelopes.push((envelope, event));
        }
    }
}

/// Times `describe` alone over `envelopes`, folded in order (the state before each event is
/// the admin read model, as in the fold): `reps` calls per event, each entry dropped inside
/// the timed spans (freeing it is part of its cost), encoded for the digest outside them.
fn measure_describe(mix: &str, envelopes: &[(signpost_eventlog::EventEnvelope, Event)]) {
    let reps: u32 = env_number("SIGNPOST_MEASURE_DESCRIBE_REPS", 1).max(1);
    // What one `Instant` pair costs, to subtract from every timed span.
    let calibration = {
        let started = Instant::now();
        let mut sum = Duration::ZERO;
        for _ in 0..100_000 {
            let t = Instant::now();
            sum += black_box(t).elapsed();
        }
        black_box(sum);
        started.elapsed() / 100_000
    };

    let mut model = signpost_control::read_model::ReadModel::default();
    let mut by_type: BTreeMap<&'static str, (u64, Duration)> = BTreeMap::new();
    let mut digest = Sha256::new();
    let mut total = Duration::ZERO;
    for (envelope, event) in envelopes {
        let started = Instant::now();
        let described = describe::describe(black_box(envelope), black_box(event), &model);
        let described = black_box(described);
        let mut spent = started.elapsed();
        digest.update(prost::Message::encode_to_vec(&described.entry));
        for connection in &describe::terms(envelope, event, &model).connections {
            digest.update(connection.as_bytes());
            digest.update([0]);
        }
        let started = Instant::now();
        drop(described);
        for _ in 1..reps {
            drop(black_box(describe::describe(
                black_box(envelope),
                black_box(event),
                black_box(&model),
            )));
        }
        spent += started.elapsed();
        let spent = spent.saturating_sub(calibration * 2) / reps;
        total += spent;
        let kind = by_type.entry(event_type(event)).or_default();
        kind.0 += 1;
        kind.1 += spent;
        model.apply(envelope, event);
    }
    println!(
        "describe, {mix}: {} events, {reps} call(s) each: {:.2} us/event on average (timer overhead {calibration:?} subtracted)",
        envelopes.len(),
        total.as_secs_f64() * 1e6 / envelopes.len().max(1) as f64
    );
    for (kind, (count, spent)) in &by_type {
        println!(
            "  {kind:<26} {count:>7} x {:>6.2} us",
            spent.as_secs_f64() * 1e6 / *count as f64
        );
    }
    println!(
        "  entries' SHA-256 (identical output, identical digest): {}",
        hex::encode(digest.finalize())
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: cargo bench -p signpost-audit --bench measure [-- projection | describe]\n\
             (environment variables: see the top of benches/measure.rs)"
        );
        return;
    }
    // Positional arguments pick phases (cargo adds `--bench`, ignored); none: all of them.
    let phases: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |phase: &str| phases.is_empty() || phases.iter().any(|p| p == phase);
    if wants("projection") {
        measure_projection().await;
    }
    // Only when asked for: it writes a log to disk with one fsync per commit.
    if phases.iter().any(|p| p == "lazy") {
        measure_lazy().await;
    }
    // Last, so that its memory does not show in the projection's RSS figures.
    if wants("describe") {
        let organizations: usize = env_number("SIGNPOST_MEASURE_DESCRIBE_ORGS", 2_000);
        measure_describe(
            "story mix (every event type, 32 per organization)",
            &story_mix(organizations),
        );
        measure_describe(
            "rebuild mix (the projection phases' log, 10 per organization)",
            &rebuild_mix(organizations).await,
        );
    }
}

/// The projection phases (see the top of the file).
async fn measure_projection() {
    let organizations: usize = env_number("SIGNPOST_MEASURE_ORGS", 20_000);
    let live_commits: usize = env_number("SIGNPOST_MEASURE_LIVE", 5_000);
    let store = Arc::new(MemoryEventStore::new());
    for i in 0..organizations {
        organization(&store, i).await;
    }
    let head = store.head().position;
    let rss_log = status_mib("VmRSS:");

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let audit = AuditProjection::start(store.clone(), dir.path(), options())
        .await
        .unwrap();
    let rebuild = started.elapsed();
    let rebuild_cpu = cpu_seconds() - cpu;
    println!(
        "rebuild: {head} events ({organizations} organizations) in {rebuild:?} = {:.0} events/s; CPU {rebuild_cpu:.2} s = {:.2} us/event",
        head as f64 / rebuild.as_secs_f64(),
        rebuild_cpu * 1e6 / head as f64
    );
    audit.database().unwrap().flush().unwrap();
    println!(
        "after the rebuild: disk {:.1} MiB; RSS {:.0} MiB (log alone {rss_log:.0} MiB), peak {:.0} MiB",
        dir_bytes(dir.path()) as f64 / (1024.0 * 1024.0),
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );

    if std::env::var_os("SIGNPOST_MEASURE_ROWS").is_some() {
        // Rows per kind (first key byte) in the audit database's trees.
        // The guard is held while the trees are read (the projection may reopen the
        // database otherwise).
        let db = audit.database().unwrap();
        for name in db.tree_names() {
            let tree = db.open_tree(&name).unwrap();
            let mut kinds = std::collections::BTreeMap::<u8, (usize, usize)>::new();
            for row in tree.iter() {
                let (key, value) = row.unwrap();
                let kind = kinds.entry(key.first().copied().unwrap_or(0)).or_default();
                kind.0 += 1;
                kind.1 += key.len() + value.len();
            }
            println!("  tree {:?}: {kinds:?}", String::from_utf8_lossy(&name));
        }
    }

    let mut latencies = Vec::new();
    for i in 0..2000 {
        let org = format!("org-{}", (i * 7919) % organizations);
        let started = Instant::now();
        let page = audit
            .list(
                AuditFilter {
                    organization_id: Some(org),
                    start_time: Some(chrono::DateTime::UNIX_EPOCH),
                    end_time: Some(chrono::Utc::now()),
                    ..Default::default()
                },
                None,
                50,
                "",
                Order::Descending,
            )
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert!(!page.entries.is_empty());
    }
    latencies.sort();
    println!(
        "list (one organization, time range, page of 50, in process): p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
    let mut latencies = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let page = audit
            .list(
                AuditFilter {
                    event_types: ["sso_policy_changed".to_owned()].into(),
                    ..Default::default()
                },
                None,
                50,
                "",
                if i % 2 == 0 {
                    Order::Descending
                } else {
                    Order::Ascending
                },
            )
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(page.entries.len(), 50);
    }
    latencies.sort();
    println!(
        "list (one event type, page of 50, in process): p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );

    let started = Instant::now();
    let mut after = 0;
    let mut exported = 0;
    let mut bytes = 0;
    let mut export = ExportState::default();
    while after < head {
        let batch = audit
            .export_batch(
                &AuditFilter::default(),
                None,
                after,
                head,
                EXPORT_BATCH,
                &mut export,
            )
            .await
            .unwrap();
        exported += batch.entries.len();
        bytes += batch
            .entries
            .iter()
            .map(prost::Message::encoded_len)
            .sum::<usize>();
        after = batch.position;
    }
    let export = started.elapsed();
    println!(
        "export (in process): {exported} entries in {export:?} = {:.0} entries/s; {} bytes per entry (wire)",
        exported as f64 / export.as_secs_f64(),
        bytes / exported.max(1)
    );

    // Restart on the caught-up database.
    audit.stop().await;
    drop(audit);
    let started = Instant::now();
    let audit = AuditProjection::start(store.clone(), dir.path(), options())
        .await
        .unwrap();
    assert!(!audit.stats().rebuilt);
    println!("restart on the caught-up database: {:?}", started.elapsed());
    // The restarted tail re-folds the log before it applies anything new.
    let started = Instant::now();
    live(&store, Some(&audit), organizations, 1, false).await;
    println!(
        "  then one new commit applied after {:?} (the tail re-folds the log first)",
        started.elapsed()
    );

    // Live: the same appends into a log nobody follows are the baseline.
    let idle = Arc::new(MemoryEventStore::new());
    for i in 0..organizations.min(1000) {
        organization(&idle, i).await;
    }
    let idle_orgs = organizations.min(1000);
    for concurrent in [false, true] {
        let name = if concurrent {
            "64 concurrent appenders"
        } else {
            "one commit at a time, each waited for"
        };
        let base = live(&idle, None, idle_orgs, live_commits, concurrent).await;
        let started = Instant::now();
        let with = live(
            &store,
            Some(&audit),
            organizations,
            live_commits,
            concurrent,
        )
        .await;
        let elapsed = started.elapsed();
        println!(
            "live ({name}): {live_commits} commits in {elapsed:?}; CPU {:.1} us/event with the projection, {:.1} us/event without: audit {:.1} us/event",
            with * 1e6 / live_commits as f64,
            base * 1e6 / live_commits as f64,
            (with - base) * 1e6 / live_commits as f64
        );
    }
    audit.database().unwrap().flush().unwrap();
    println!(
        "at the end: disk {:.1} MiB; RSS {:.0} MiB, peak {:.0} MiB",
        dir_bytes(dir.path()) as f64 / (1024.0 * 1024.0),
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );

    let head = store.head().position;
    let started = Instant::now();
    let verdict = verify_chain(store.as_ref(), 1, head).await.unwrap();
    let verify = started.elapsed();
    assert!(matches!(
        verdict,
        signpost_eventlog::ChainVerdict::Intact { .. }
    ));
    println!(
        "verify (memory store): {head} events in {verify:?} = {:.0} events/s",
        head as f64 / verify.as_secs_f64()
    );
}

/// The `lazy` phase (see the top of the file).
async fn measure_lazy() {
    let organizations: usize = env_number("SIGNPOST_MEASURE_LAZY_ORGS", 1_000);
    let extra: usize = env_number("SIGNPOST_MEASURE_LAZY_EXTRA", 0);
    let dir = tempfile::tempdir().unwrap();
    let store = signpost_eventlog::FileEventStore::open(dir.path(), Default::default()).unwrap();
    // The story, one commit per event, in the mix's order; each organization's streams.
    let mut streams_of: Vec<Vec<StreamId>> = Vec::with_capacity(organizations);
    let started = Instant::now();
    for i in 0..organizations {
        let mut own: Vec<StreamId> = Vec::new();
        let assignments = (0..extra).map(|n| {
            let event = Event::GroupAssigned(schema::GroupAssigned {
                idp_group: format!("group-{}", n % 16),
                role: format!("role-{n}"),
            });
            (streams::connection(&format!("conn-{i}-a")), admin(), event)
        });
        for (stream, actor, event) in organization_story(i).into_iter().chain(assignments) {
            let id = StreamId::new(stream.clone()).unwrap();
            if !own.contains(&id) {
                own.push(id);
            }
            append_as(&store, actor, stream, vec![event]).await;
        }
        streams_of.push(own);
    }
    let head = store.head().position;
    println!(
        "lazy: {organizations} organizations, {head} events written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Eager: the whole log in order, one read model, as the projection describes.
    let mut eager: Vec<Vec<u8>> = Vec::with_capacity(head as usize);
    let mut model = signpost_control::read_model::ReadModel::default();
    let started = Instant::now();
    let mut from = 1;
    loop {
        let batch = store.read_range(from, 4096).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        for envelope in batch {
            let event = signpost_domain::decode_event(&envelope.payload).unwrap();
            let described = describe::describe(&envelope, &event, &model);
            eager.push(describe::encode_entry(described.entry, described.details));
            model.apply(&envelope, &event);
        }
    }
    let eager_time = started.elapsed();
    drop(model);
    println!(
        "  whole log in order (read, decode, describe, apply): {:.2} us/event",
        eager_time.as_secs_f64() * 1e6 / head as f64
    );

    // Lazy: each organization from its own streams alone.
    let mut reads = Vec::with_capacity(organizations);
    let mut folds = Vec::with_capacity(organizations);
    let (mut differ, mut events) = (0usize, 0usize);
    let mut first_difference: Option<String> = None;
    for own in &streams_of {
        let started = Instant::now();
        let read = store.read_streams(own).await.unwrap();
        let read_time = started.elapsed();
        let started = Instant::now();
        let mut envelopes: Vec<_> = read.into_iter().flatten().collect();
        envelopes.sort_by_key(|e| e.position);
        let mut model = signpost_control::read_model::ReadModel::default();
        let mut entries = Vec::with_capacity(envelopes.len());
        for envelope in &envelopes {
            let event = signpost_domain::decode_event(&envelope.payload).unwrap();
            let described = describe::describe(envelope, &event, &model);
            entries.push((
                envelope.position,
                &envelope.stream_id,
                describe::encode_entry(described.entry, described.details),
            ));
            model.apply(envelope, &event);
        }
        drop(model);
        folds.push(started.elapsed());
        reads.push(read_time);
        events += entries.len();
        for (position, stream, entry) in entries {
            if eager[position as usize - 1] != entry {
                differ += 1;
                first_difference.get_or_insert_with(|| format!("position {position}, {stream}"));
            }
        }
    }
    assert_eq!(
        events as u64, head,
        "every event belongs to one organization"
    );
    let summary = |name: &str, times: &mut Vec<Duration>| {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!(
            "  one organization's {name}: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    };
    summary("streams read (read_streams)", &mut reads);
    summary("fold and describe (fresh read model)", &mut folds);
    println!(
        "  events per organization: {:.1}; entries described differently from the whole-log fold: {differ} of {events}{}",
        events as f64 / organizations as f64,
        first_difference
            .map(|d| format!(" (first: {d})"))
            .unwrap_or_default()
    );

    // What start would still record: the postings that neither the log's stream index nor
    // the read model gives (actor, event type) and a sparse time index, from envelopes
    // already decoded (a start's catch-up decodes every one anyway).
    let mut envelopes = Vec::with_capacity(head as usize);
    let mut from = 1;
    loop {
        let batch = store.read_range(from, 4096).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        envelopes.extend(batch);
    }
    let started = Instant::now();
    let mut by_actor: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    let mut by_type: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    let mut times: Vec<(u64, i64)> = Vec::new();
    let mut latest = i64::MIN;
    for envelope in &envelopes {
        let actor = envelope.actor.as_ref().map_or("", |a| a.id.as_str());
        by_actor.entry(actor).or_default().push(envelope.position);
        by_type
            .entry(envelope.event_type.as_str())
            .or_default()
            .push(envelope.position);
        let nanos = envelope.recorded_at.map_or(0, |t| {
            t.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.nanos))
        });
        latest = latest.max(nanos);
        if envelope.position % 64 == 1 {
            times.push((envelope.position, latest));
        }
    }
    let postings = started.elapsed();
    black_box((&by_actor, &by_type, &times));
    println!(
        "  start-up postings from decoded envelopes (actor, event type, a time every 64): {:.3} us/event ({} actors, {} types)",
        postings.as_secs_f64() * 1e6 / head as f64,
        by_actor.len(),
        by_type.len()
    );
}
