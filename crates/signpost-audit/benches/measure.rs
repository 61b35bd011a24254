//! Rough figures for the audit projection (a benchmark, not a test: run with
//! `cargo bench -p signpost-audit --bench measure`,
//! `SIGNPOST_MEASURE_ORGS` organizations of ten events each, default 10 000).

use std::sync::Arc;
use std::time::Instant;

use signpost_audit::*;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    verify_chain, Commit, CommitMeta, EventStore, ExpectedVersion, MemoryEventStore, NewEvent,
    StreamId, StreamWrite,
};

async fn append(store: &MemoryEventStore, stream: String, events: Vec<Event>) {
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
            actor: schema::Actor {
                kind: schema::ActorKind::ApiToken as i32,
                id: "token-admin".into(),
                on_behalf_of: "alice@platform.example".into(),
                display_name: "Onboarding".into(),
            },
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
        append(
            store,
            streams::connection(&connection),
            vec![Event::ConnectionConfigured(schema::ConnectionConfigured {
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
            })],
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let organizations: usize = std::env::var("SIGNPOST_MEASURE_ORGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let store = Arc::new(MemoryEventStore::new());
    for i in 0..organizations {
        organization(&store, i).await;
    }
    let head = store.head().position;

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let audit = AuditProjection::start(
        store.clone(),
        dir.path(),
        AuditOptions::new("https://s.test/"),
    )
    .await
    .unwrap();
    let rebuild = started.elapsed();
    println!(
        "rebuild: {head} events in {rebuild:?} = {:.0} events/s",
        head as f64 / rebuild.as_secs_f64()
    );

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

    let started = Instant::now();
    let mut after = 0;
    let mut exported = 0;
    while after < head {
        let batch = audit
            .export_batch(&AuditFilter::default(), None, after, head, EXPORT_BATCH)
            .unwrap();
        exported += batch.entries.len();
        after = batch.position;
    }
    let export = started.elapsed();
    println!(
        "export (in process): {exported} entries in {export:?} = {:.0} entries/s",
        exported as f64 / export.as_secs_f64()
    );

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
