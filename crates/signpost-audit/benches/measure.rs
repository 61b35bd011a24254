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
//! from `/proc/self/status` (the system allocator here; the server uses mimalloc).

use std::sync::Arc;
use std::time::Instant;

use signpost_audit::*;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    verify_chain, Commit, CommitMeta, EventStore, ExpectedVersion, MemoryEventStore, NewEvent,
    StreamId, StreamWrite,
};

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
    store: &MemoryEventStore,
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let organizations: usize = std::env::var("SIGNPOST_MEASURE_ORGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let live_commits: usize = std::env::var("SIGNPOST_MEASURE_LIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
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
    audit.database().flush().unwrap();
    println!(
        "after the rebuild: disk {:.1} MiB; RSS {:.0} MiB (log alone {rss_log:.0} MiB), peak {:.0} MiB",
        dir_bytes(dir.path()) as f64 / (1024.0 * 1024.0),
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );

    if std::env::var_os("SIGNPOST_MEASURE_ROWS").is_some() {
        // Rows per kind (first key byte) in the audit database's trees.
        for name in audit.database().tree_names() {
            let tree = audit.database().open_tree(&name).unwrap();
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
    while after < head {
        let batch = audit
            .export_batch(&AuditFilter::default(), None, after, head, EXPORT_BATCH)
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
    audit.database().flush().unwrap();
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
