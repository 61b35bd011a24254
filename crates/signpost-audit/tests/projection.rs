//! The audit projection over a realistic log (hand-built events in an in-memory store):
//! rebuild equals live, entries describe changes with before / after and no secrets,
//! queries page and filter by position, point-in-time answers, scoping, checkpoints.

use std::sync::Arc;

use prost::Message;
use signpost_audit::*;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    AppendOutcome, Commit, CommitMeta, EventStore, ExpectedVersion, MemoryEventStore, NewEvent,
    StreamId, StreamWrite,
};

const BASE_URL: &str = "https://signpost.test/";
const FP_OLD: &str = "1111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const FP_NEW: &str = "2222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SECRET_CIPHERTEXT: &[u8] = b"CIPHERTEXT-OF-THE-CLIENT-SECRET";
const LINK_TOKEN_HASH: [u8; 32] = [0xab; 32];
const API_TOKEN_HASH: [u8; 32] = [0xcd; 32];

fn token_actor(id: &str, name: &str, on_behalf_of: &str) -> schema::Actor {
    schema::Actor {
        kind: schema::ActorKind::ApiToken as i32,
        id: id.into(),
        on_behalf_of: on_behalf_of.into(),
        display_name: name.into(),
    }
}

fn link_actor(id: &str, recipient: &str) -> schema::Actor {
    schema::Actor {
        kind: schema::ActorKind::SetupLink as i32,
        id: id.into(),
        on_behalf_of: recipient.into(),
        display_name: "setup link".into(),
    }
}

fn system() -> schema::Actor {
    schema::Actor {
        kind: schema::ActorKind::System as i32,
        id: "system".into(),
        on_behalf_of: String::new(),
        display_name: "Signpost".into(),
    }
}

/// Appends one commit: several streams, each with its events.
async fn append(
    store: &MemoryEventStore,
    actor: schema::Actor,
    writes: Vec<(String, Vec<Event>)>,
) -> u64 {
    let commit = Commit {
        writes: writes
            .into_iter()
            .map(|(stream, events)| StreamWrite {
                stream: StreamId::new(stream).unwrap(),
                expected: ExpectedVersion::Any,
                events: events
                    .iter()
                    .map(|e| NewEvent {
                        event_type: event_type(e).into(),
                        payload: encode_event(e).into(),
                    })
                    .collect(),
            })
            .collect(),
        meta: CommitMeta {
            actor,
            correlation_id: uuid::Uuid::now_v7().to_string(),
            request_id: None,
        },
        idempotency: None,
    };
    match store.append(commit).await.unwrap() {
        AppendOutcome::Committed(c) => c.last_position,
        AppendOutcome::Duplicate(_) => unreachable!(),
    }
}

fn certificate(fingerprint: &str) -> schema::Certificate {
    schema::Certificate {
        der: vec![1, 2, 3],
        sha256_fingerprint: fingerprint.into(),
        subject: "CN=idp".into(),
        not_before: None,
        not_after: None,
    }
}

fn saml(connection: &str, org: &str, link: &str, sso_url: &str, certs: &[&str]) -> Event {
    Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
        connection_id: connection.into(),
        organization_id: org.into(),
        setup_link_id: link.into(),
        role: schema::ConnectionRole::Primary as i32,
        protocol: schema::Protocol::Saml as i32,
        saml: Some(schema::SamlSettings {
            idp_entity_id: "https://idp.acme.example/entity".into(),
            sso_endpoints: vec![schema::SamlEndpoint {
                binding: schema::SamlBinding::HttpRedirect as i32,
                location: sso_url.into(),
            }],
            signing_certificates: certs.iter().map(|fp| certificate(fp)).collect(),
            source: schema::SamlSource::MetadataXml as i32,
            metadata_url: String::new(),
        }),
        oidc: None,
        claim_mapping: Some(schema::ClaimMapping {
            email: "email".into(),
            ..Default::default()
        }),
        provider_preset: "okta".into(),
    }))
}

fn oidc(connection: &str, org: &str, link: &str) -> Event {
    Event::ConnectionConfigured(Box::new(schema::ConnectionConfigured {
        connection_id: connection.into(),
        organization_id: org.into(),
        setup_link_id: link.into(),
        role: schema::ConnectionRole::Standby as i32,
        protocol: schema::Protocol::Oidc as i32,
        saml: None,
        oidc: Some(schema::OidcSettings {
            issuer: "https://login.microsoftonline.example/acme/v2.0".into(),
            authorization_endpoint: "https://login.microsoftonline.example/authorize".into(),
            token_endpoint: "https://login.microsoftonline.example/token".into(),
            jwks_uri: "https://login.microsoftonline.example/keys".into(),
            userinfo_endpoint: String::new(),
            client_id: "signpost-client".into(),
            client_secret: Some(schema::EncryptedSecret {
                key_id: "k1".into(),
                nonce: vec![7; 12],
                ciphertext: SECRET_CIPHERTEXT.to_vec(),
            }),
            scopes: vec!["openid".into(), "email".into()],
        }),
        claim_mapping: Some(schema::ClaimMapping {
            email: "email".into(),
            ..Default::default()
        }),
        provider_preset: "entra".into(),
    }))
}

fn link_issued(link: &str, org: &str, connection: &str, intent: schema::SetupIntent) -> Event {
    Event::SetupLinkIssued(schema::SetupLinkIssued {
        setup_link_id: link.into(),
        organization_id: org.into(),
        intent: intent as i32,
        connection_id: connection.into(),
        token_sha256: LINK_TOKEN_HASH.to_vec(),
        expires_at: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        recipient_email: "it@acme.example".into(),
    })
}

/// Positions of interest in the realistic log.
struct Story {
    configured: u64,
    reconfigured: u64,
    switched: u64,
    switched_back: u64,
    head: u64,
}

const ORG_A: &str = "org-a";
const ORG_B: &str = "org-b";
const C1: &str = "conn-1";
const C2: &str = "conn-2";
const ADMIN: &str = "token-admin";

/// An organization's whole SSO life: domains, first connection through a link, groups, a
/// certificate rotation, a staged provider switch and a switch back, link revocation and
/// expiry, policy, a released domain; plus a second organization and API tokens.
async fn story(store: &MemoryEventStore) -> Story {
    let admin = || token_actor(ADMIN, "Onboarding", "alice@platform.example");
    append(
        store,
        system(),
        vec![(
            streams::api_token(ADMIN),
            vec![Event::ApiTokenIssued(schema::ApiTokenIssued {
                token_id: ADMIN.into(),
                name: "Onboarding".into(),
                role: schema::TokenRole::Admin as i32,
                token_sha256: API_TOKEN_HASH.to_vec(),
                organization_scope: String::new(),
            })],
        )],
    )
    .await;
    let org = streams::organization(ORG_A);
    append(
        store,
        admin(),
        vec![(
            org.clone(),
            vec![Event::OrganizationCreated(schema::OrganizationCreated {
                organization_id: ORG_A.into(),
                display_name: "Acme Law".into(),
                external_id: "ext-acme".into(),
            })],
        )],
    )
    .await;
    for domain in ["acme.example", "acme-law.example"] {
        append(
            store,
            admin(),
            vec![(
                org.clone(),
                vec![Event::DomainClaimed(schema::DomainClaimed {
                    domain: domain.into(),
                    verification_record_name: format!("_signpost-challenge.{domain}"),
                    verification_value: "challenge".into(),
                })],
            )],
        )
        .await;
        append(
            store,
            admin(),
            vec![(
                org.clone(),
                vec![Event::DomainVerified(schema::DomainVerified {
                    domain: domain.into(),
                    method: schema::VerificationMethod::DnsTxt as i32,
                    note: String::new(),
                })],
            )],
        )
        .await;
    }
    append(
        store,
        admin(),
        vec![(
            streams::setup_link("link-1"),
            vec![link_issued(
                "link-1",
                ORG_A,
                C1,
                schema::SetupIntent::NewConnection,
            )],
        )],
    )
    .await;
    let configured = append(
        store,
        link_actor("link-1", "it@acme.example"),
        vec![
            (
                streams::connection(C1),
                vec![saml(
                    C1,
                    ORG_A,
                    "link-1",
                    "https://a.idp.example/sso",
                    &[FP_OLD],
                )],
            ),
            (
                streams::setup_link("link-1"),
                vec![Event::SetupFormSubmitted(schema::SetupFormSubmitted {
                    setup_link_id: "link-1".into(),
                    connection_id: C1.into(),
                    submission: 1,
                })],
            ),
        ],
    )
    .await;
    append(
        store,
        admin(),
        vec![
            (
                org.clone(),
                vec![Event::ConnectionActivated(schema::ConnectionActivated {
                    connection_id: C1.into(),
                })],
            ),
            (
                streams::setup_link("link-1"),
                vec![Event::SetupLinkSpent(schema::SetupLinkSpent {
                    connection_id: C1.into(),
                })],
            ),
        ],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            streams::connection(C1),
            vec![
                Event::GroupAssigned(schema::GroupAssigned {
                    idp_group: "Lawyers".into(),
                    role: "member".into(),
                }),
                Event::GroupRequirementChanged(schema::GroupRequirementChanged {
                    require_group: true,
                }),
            ],
        )],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            streams::setup_link("link-2"),
            vec![link_issued(
                "link-2",
                ORG_A,
                C1,
                schema::SetupIntent::UpdateConnection,
            )],
        )],
    )
    .await;
    let reconfigured = append(
        store,
        link_actor("link-2", "it@acme.example"),
        vec![(
            streams::connection(C1),
            vec![saml(
                C1,
                ORG_A,
                "link-2",
                "https://b.idp.example/sso",
                &[FP_NEW],
            )],
        )],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            streams::setup_link("link-3"),
            vec![link_issued(
                "link-3",
                ORG_A,
                C2,
                schema::SetupIntent::StageSwitch,
            )],
        )],
    )
    .await;
    append(
        store,
        link_actor("link-3", "it@acme.example"),
        vec![(streams::connection(C2), vec![oidc(C2, ORG_A, "link-3")])],
    )
    .await;
    let switched = append(
        store,
        admin(),
        vec![(
            org.clone(),
            vec![Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: C1.into(),
                connection_id: C2.into(),
            })],
        )],
    )
    .await;
    append(
        store,
        token_actor("token-support", "Support console", "bob@platform.example"),
        vec![(
            streams::setup_link("link-4"),
            vec![
                link_issued("link-4", ORG_A, C1, schema::SetupIntent::UpdateConnection),
                Event::SetupLinkRevoked(schema::SetupLinkRevoked {
                    reason: schema::RevocationReason::Revoked as i32,
                    superseded_by: String::new(),
                }),
            ],
        )],
    )
    .await;
    let switched_back = append(
        store,
        token_actor("token-support", "Support console", "bob@platform.example"),
        vec![(
            org.clone(),
            vec![Event::ProviderSwitched(schema::ProviderSwitched {
                previous_connection_id: C2.into(),
                connection_id: C1.into(),
            })],
        )],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            streams::setup_link("link-5"),
            vec![link_issued(
                "link-5",
                ORG_A,
                "conn-9",
                schema::SetupIntent::StageSwitch,
            )],
        )],
    )
    .await;
    append(
        store,
        system(),
        vec![(
            streams::setup_link("link-5"),
            vec![Event::SetupLinkExpired(schema::SetupLinkExpired {
                expired_at: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
            })],
        )],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            org.clone(),
            vec![
                Event::SsoPolicyChanged(schema::SsoPolicyChanged {
                    previous: schema::SsoPolicy::Optional as i32,
                    policy: schema::SsoPolicy::Enforced as i32,
                }),
                Event::DomainReleased(schema::DomainReleased {
                    domain: "acme-law.example".into(),
                }),
            ],
        )],
    )
    .await;
    append(
        store,
        admin(),
        vec![(
            streams::organization(ORG_B),
            vec![
                Event::OrganizationCreated(schema::OrganizationCreated {
                    organization_id: ORG_B.into(),
                    display_name: "Birch Realty".into(),
                    external_id: "ext-birch".into(),
                }),
                Event::DomainClaimed(schema::DomainClaimed {
                    domain: "birch.example".into(),
                    verification_record_name: "_signpost-challenge.birch.example".into(),
                    verification_value: "challenge".into(),
                }),
            ],
        )],
    )
    .await;
    let head = append(
        store,
        system(),
        vec![(
            streams::api_token("token-audit"),
            vec![Event::ApiTokenIssued(schema::ApiTokenIssued {
                token_id: "token-audit".into(),
                name: "Compliance".into(),
                role: schema::TokenRole::Auditor as i32,
                token_sha256: API_TOKEN_HASH.to_vec(),
                organization_scope: ORG_B.into(),
            })],
        )],
    )
    .await;
    Story {
        configured,
        reconfigured,
        switched,
        switched_back,
        head,
    }
}

async fn projection(store: &Arc<MemoryEventStore>, dir: &std::path::Path) -> AuditProjection {
    let mut options = AuditOptions::new(BASE_URL);
    options.batch_events = 3;
    AuditProjection::start(store.clone(), dir, options)
        .await
        .unwrap()
}

async fn all(
    projection: &AuditProjection,
    filter: AuditFilter,
    scope: Option<&str>,
) -> Vec<signpost_api::audit::v1::AuditEntry> {
    projection
        .list(filter, scope, 1000, "", Order::Ascending)
        .await
        .unwrap()
        .entries
}

/// Every entry of `organization`, unscoped, oldest first.
async fn organization_entries(
    projection: &AuditProjection,
    organization: &str,
) -> Vec<signpost_api::audit::v1::AuditEntry> {
    all(
        projection,
        AuditFilter {
            organization_id: Some(organization.into()),
            ..AuditFilter::default()
        },
        None,
    )
    .await
}

fn struct_field<'a>(s: &'a prost_types::Struct, path: &[&str]) -> Option<&'a prost_types::Value> {
    use prost_types::value::Kind;
    let (first, rest) = path.split_first()?;
    let value = s.fields.get(*first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match &value.kind {
        Some(Kind::StructValue(inner)) => struct_field(inner, rest),
        _ => None,
    }
}

fn strings(value: Option<&prost_types::Value>) -> Vec<String> {
    use prost_types::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Some(Kind::StringValue(s)) => vec![s.clone()],
        _ => vec![],
    }
}

/// At every position of the story, each organization's streams listed through the index
/// are its own and the streams of every event up to there whose entry names it (each
/// stream once, in the order of its first such event): on a log the commands wrote, a
/// stream's first event names the organization all its events name.
#[tokio::test]
async fn an_organizations_streams_are_those_of_the_events_that_name_it() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    audit.wait_for(story.head).await.unwrap();
    let log = store.read_range(1, usize::MAX).await.unwrap();
    let entries = all(&audit, AuditFilter::default(), None).await;
    assert_eq!(entries.len(), log.len());
    let organizations: std::collections::BTreeSet<String> = entries
        .iter()
        .filter_map(|e| e.target.as_ref())
        .map(|t| t.organization_id.clone())
        .filter(|id| !id.is_empty())
        .collect();
    assert!(organizations.len() >= 2, "{organizations:?}");
    let mut checked_other_streams = 0;
    for position in 0..=story.head {
        for organization in &organizations {
            let mut expected = vec![streams::organization(organization)];
            for (envelope, entry) in log.iter().zip(&entries).take(position as usize) {
                let named = entry.target.as_ref().map(|t| t.organization_id.as_str());
                if named == Some(organization.as_str()) && !expected.contains(&envelope.stream_id) {
                    expected.push(envelope.stream_id.clone());
                }
            }
            checked_other_streams += expected.len() - 1;
            let listed = audit
                .organization_streams(organization, position)
                .await
                .unwrap();
            assert_eq!(listed, expected, "{organization} at {position}");
        }
    }
    assert!(checked_other_streams > 0);
    audit.stop().await;
}

/// Every page of `filter` in `order`, `size` at a time.
async fn pages(
    audit: &AuditProjection,
    filter: &AuditFilter,
    order: Order,
    size: i32,
) -> Vec<Vec<signpost_api::audit::v1::AuditEntry>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list(filter.clone(), None, size, &token, order)
            .await
            .unwrap();
        pages.push(page.entries);
        if page.next_page_token.is_empty() {
            return pages;
        }
        token = page.next_page_token;
    }
}

/// Every export batch of `filter`, `size` entries at most, from `after`; `encoded`:
/// through `export_batch_encoded` (what the export RPC sends), decoded.
async fn export(
    audit: &AuditProjection,
    filter: &AuditFilter,
    after: u64,
    size: usize,
    encoded: bool,
) -> Vec<ExportBatch> {
    let head = audit.position();
    let mut state = ExportState::default();
    let mut batches = Vec::new();
    let mut after = after;
    loop {
        let batch = if encoded {
            let batch = audit
                .export_batch_encoded(filter, None, after, head, size, &mut state)
                .await
                .unwrap();
            let entries = batch
                .entries
                .iter()
                .map(|e| signpost_api::audit::v1::AuditEntry::decode(e.as_slice()).unwrap())
                .collect();
            ExportBatch {
                entries,
                position: batch.position,
            }
        } else {
            audit
                .export_batch(filter, None, after, head, size, &mut state)
                .await
                .unwrap()
        };
        assert!(batch.entries.len() <= size, "a batch of {size} at most");
        after = batch.position;
        batches.push(batch);
        if after >= head {
            return batches;
        }
    }
}

/// A database whose organization-local entries are stubs, described when read from the
/// organization's streams (pages, single entries, point-in-time causes) or from the log
/// in order (exports, `dump`), answers every query exactly as one whose fold described
/// every entry; and an export encoded as the RPC sends it (stored entries not decoded)
/// decodes to the same entries.
#[tokio::test]
async fn entries_described_when_read_answer_as_entries_described_when_folded() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let start = |describe_when_read: bool| {
        let store = store.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut options = AuditOptions::new(BASE_URL);
            options.batch_events = 5;
            options.describe_when_read = describe_when_read;
            let audit = AuditProjection::start(store, dir.path(), options)
                .await
                .unwrap();
            audit.wait_for(story.head).await.unwrap();
            (audit, dir)
        }
    };
    let (described, _described_dir) = start(false).await;
    let (stubs, _stubs_dir) = start(true).await;
    assert_eq!(described.entries_described_when_read().unwrap(), 0);
    let lazy = stubs.entries_described_when_read().unwrap();
    // All but the API tokens' entries and the few whose description needs another
    // organization's streams (none in this story).
    let tokens = all(
        &described,
        AuditFilter {
            event_types: ["api_token_issued".into(), "api_token_revoked".into()].into(),
            ..Default::default()
        },
        None,
    )
    .await
    .len() as u64;
    assert!(tokens > 0);
    assert_eq!(lazy, story.head - tokens, "stubs among {}", story.head);

    let mut filters = vec![AuditFilter::default()];
    for organization in [ORG_A, ORG_B] {
        filters.push(AuditFilter {
            organization_id: Some(organization.into()),
            ..Default::default()
        });
    }
    for connection in [C1, C2] {
        filters.push(AuditFilter {
            connection_id: Some(connection.into()),
            ..Default::default()
        });
    }
    filters.push(AuditFilter {
        actor_id: Some(ADMIN.into()),
        ..Default::default()
    });
    for (_, action) in ACTIONS {
        let event_type = ACTIONS.iter().find(|(_, a)| *a == action).unwrap().0;
        filters.push(AuditFilter {
            event_types: [event_type.to_owned()].into(),
            ..Default::default()
        });
    }
    filters.push(AuditFilter {
        organization_id: Some(ORG_A.into()),
        event_types: ["group_assigned".into(), "provider_switched".into()].into(),
        ..Default::default()
    });
    // Read through the actor's index, the organization checked on each entry.
    filters.push(AuditFilter {
        organization_id: Some(ORG_A.into()),
        actor_id: Some(ADMIN.into()),
        ..Default::default()
    });
    let middle = described.entry(story.head / 2).await.unwrap().unwrap();
    filters.push(AuditFilter {
        start_time: middle
            .time
            .map(|t| signpost_domain::event::from_timestamp(Some(&t))),
        ..Default::default()
    });
    for filter in &filters {
        for order in [Order::Ascending, Order::Descending] {
            for size in [1, 3, 1000] {
                let expected = pages(&described, filter, order, size).await;
                assert_eq!(
                    pages(&stubs, filter, order, size).await,
                    expected,
                    "{filter:?} {order:?} {size}"
                );
            }
        }
        for (after, size) in [(0, 4), (0, 1000), (story.head / 3, 7)] {
            let expected = export(&described, filter, after, size, false).await;
            assert_eq!(
                export(&stubs, filter, after, size, false).await,
                expected,
                "export {filter:?} from {after} by {size}"
            );
            for audit in [&described, &stubs] {
                assert_eq!(
                    export(audit, filter, after, size, true).await,
                    expected,
                    "encoded export {filter:?} from {after} by {size}"
                );
            }
        }
    }
    for position in 0..=story.head + 1 {
        assert_eq!(
            stubs.entry(position).await.unwrap(),
            described.entry(position).await.unwrap(),
            "entry {position}"
        );
        for domain in ["acme.example", "acme-law.example"] {
            let subject = RoutingSubject::Domain(domain.into());
            let at = PointInTime::Position(position);
            assert_eq!(
                stubs.routing_at(&subject, at, None).await.ok(),
                described.routing_at(&subject, at, None).await.ok(),
                "{domain} at {position}"
            );
        }
        for connection in [C1, C2] {
            let at = PointInTime::Position(position);
            let view = |found: Result<ConnectionAt, AuditError>| {
                found.ok().map(|c| (c.last_change, format!("{:?}", c.view)))
            };
            assert_eq!(
                view(stubs.connection_at(connection, at, None).await),
                view(described.connection_at(connection, at, None).await),
                "{connection} at {position}"
            );
        }
    }
    assert_eq!(stubs.dump().await.unwrap(), described.dump().await.unwrap());
    stubs.stop().await;
    described.stop().await;
}

#[tokio::test]
async fn a_rebuild_equals_the_live_projection_and_a_restart_resumes_to_the_same_rows() {
    let store = Arc::new(MemoryEventStore::new());
    let live_dir = tempfile::tempdir().unwrap();
    // Live: the projection follows the log while the story is appended.
    let live = projection(&store, live_dir.path()).await;
    let story = story(&store).await;
    live.wait_for(story.head).await.unwrap();

    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    assert_eq!(rebuilt.position(), story.head);
    let live_rows = live.dump().await.unwrap();
    assert_eq!(live_rows, rebuilt.dump().await.unwrap());
    assert!(
        live_rows.len() > 100,
        "entries, indexes, time and route history"
    );

    // Restart: stop, append more, start again on the same database: it resumes. The
    // fold replays the story without rows, and must still know the routes of what it
    // replayed: a domain claimed by an organization with routes changes no route.
    live.stop().await;
    drop(live);
    append(
        &store,
        system(),
        vec![(
            streams::organization(ORG_A),
            vec![Event::DomainClaimed(schema::DomainClaimed {
                domain: "claimed-later.example".into(),
                ..Default::default()
            })],
        )],
    )
    .await;
    let more = append(
        &store,
        system(),
        vec![(
            streams::api_token("token-late"),
            vec![Event::ApiTokenRevoked(schema::ApiTokenRevoked {})],
        )],
    )
    .await;
    let resumed = projection(&store, live_dir.path()).await;
    assert_eq!(resumed.stats().resumed_from, story.head);
    assert!(!resumed.stats().rebuilt);
    assert_eq!(resumed.position(), more);
    rebuilt.wait_for(more).await.unwrap();
    assert_eq!(resumed.dump().await.unwrap(), rebuilt.dump().await.unwrap());

    // Another log history (a new epoch) rebuilds from scratch.
    resumed.stop().await;
    drop(resumed);
    let other = Arc::new(MemoryEventStore::new());
    let other_head = append(
        &other,
        system(),
        vec![(
            streams::api_token("x"),
            vec![Event::ApiTokenRevoked(schema::ApiTokenRevoked {})],
        )],
    )
    .await;
    let fresh = projection(&other, live_dir.path()).await;
    assert!(fresh.stats().rebuilt);
    assert_eq!(fresh.position(), other_head);
    assert_eq!(all(&fresh, AuditFilter::default(), None).await.len(), 1);
}

#[tokio::test]
async fn a_reconfiguration_shows_the_sso_url_and_certificates_before_and_after() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;

    let first = audit.entry(story.configured - 1).await.unwrap().unwrap();
    assert_eq!(first.action, "connection.configured");
    assert!(
        first.summary.starts_with("connection configured: SAML"),
        "{}",
        first.summary
    );

    let entry = audit.entry(story.reconfigured).await.unwrap().unwrap();
    assert_eq!(entry.action, "connection.configured");
    assert!(
        entry.summary.contains(
            "SSO URL changed from https://a.idp.example/sso to https://b.idp.example/sso"
        ),
        "{}",
        entry.summary
    );
    assert!(
        entry
            .summary
            .contains("signing certificate 2222222222222222 added"),
        "{}",
        entry.summary
    );
    assert!(
        entry
            .summary
            .contains("signing certificate 1111111111111111 removed"),
        "{}",
        entry.summary
    );
    let details = entry.details.as_ref().unwrap();
    assert_eq!(
        strings(struct_field(details, &["changes", "sso_url", "before"])),
        ["https://a.idp.example/sso"]
    );
    assert_eq!(
        strings(struct_field(details, &["changes", "sso_url", "after"])),
        ["https://b.idp.example/sso"]
    );
    assert_eq!(
        strings(struct_field(
            details,
            &["changes", "signing_certificates", "added"]
        )),
        [FP_NEW]
    );
    assert_eq!(
        strings(struct_field(
            details,
            &["changes", "signing_certificates", "removed"]
        )),
        [FP_OLD]
    );
    let target = entry.target.unwrap();
    assert_eq!(
        (
            target.organization_id.as_str(),
            target.connection_id.as_str()
        ),
        (ORG_A, C1)
    );
    let actor = entry.actor.unwrap();
    assert_eq!(actor.kind, schema::ActorKind::SetupLink as i32);
    assert_eq!(actor.on_behalf_of, "it@acme.example");

    let switch = audit.entry(story.switched).await.unwrap().unwrap();
    assert_eq!(switch.action, "provider.switched");
    assert_eq!(
        switch.summary,
        "provider switched from conn-1 (okta, SAML) to conn-2 (entra, OIDC)"
    );
    let issued = all(
        &audit,
        AuditFilter {
            event_types: ["setup_link_issued".to_owned()].into(),
            ..Default::default()
        },
        None,
    )
    .await;
    assert!(
        issued[0].summary.starts_with(
            "setup link issued to it@acme.example by Onboarding for alice@platform.example"
        ),
        "{}",
        issued[0].summary
    );
    let actions: std::collections::BTreeSet<String> = all(&audit, AuditFilter::default(), None)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    for action in [
        "setup_link.issued",
        "setup_link.submitted",
        "setup_link.revoked",
        "setup_link.spent",
        "setup_link.expired",
        "group.assigned",
        "group_requirement.changed",
        "sso_policy.changed",
        "domain.released",
        "api_token.issued",
    ] {
        assert!(actions.contains(action), "missing {action}");
    }
}

#[tokio::test]
async fn secrets_and_token_hashes_appear_in_no_entry() {
    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let entries = all(&audit, AuditFilter::default(), None).await;
    let needles: Vec<Vec<u8>> = vec![
        SECRET_CIPHERTEXT.to_vec(),
        LINK_TOKEN_HASH.to_vec(),
        API_TOKEN_HASH.to_vec(),
        hex::encode(LINK_TOKEN_HASH).into_bytes(),
        hex::encode(API_TOKEN_HASH).into_bytes(),
        hex::encode(SECRET_CIPHERTEXT).into_bytes(),
    ];
    for entry in &entries {
        let bytes = entry.encode_to_vec();
        let text = format!("{entry:?}");
        for needle in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_slice()));
            assert!(!text
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()));
        }
    }
    let oidc = entries
        .iter()
        .find(|e| {
            e.action == "connection.configured" && e.target.as_ref().unwrap().connection_id == C2
        })
        .unwrap();
    assert_eq!(
        strings(struct_field(
            oidc.details.as_ref().unwrap(),
            &["configuration", "client_secret"]
        )),
        ["set"]
    );
    assert!(
        oidc.summary.contains("client secret set"),
        "{}",
        oidc.summary
    );
}

#[tokio::test]
async fn pages_cover_every_matching_entry_once_in_either_order() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let filters = [
        AuditFilter::default(),
        AuditFilter {
            organization_id: Some(ORG_A.into()),
            ..Default::default()
        },
        AuditFilter {
            connection_id: Some(C1.into()),
            ..Default::default()
        },
        AuditFilter {
            actor_id: Some(ADMIN.into()),
            ..Default::default()
        },
        AuditFilter {
            event_types: [
                "provider_switched".to_owned(),
                "setup_link_issued".to_owned(),
            ]
            .into(),
            ..Default::default()
        },
        AuditFilter {
            organization_id: Some(ORG_A.into()),
            event_types: ["provider_switched".to_owned()].into(),
            ..Default::default()
        },
    ];
    for filter in filters {
        let expected: Vec<u64> = all(&audit, filter.clone(), None)
            .await
            .iter()
            .map(|e| e.position)
            .collect();
        assert!(!expected.is_empty(), "{filter:?}");
        for order in [Order::Ascending, Order::Descending] {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = audit
                    .list(filter.clone(), None, 2, &token, order)
                    .await
                    .unwrap();
                seen.extend(page.entries.iter().map(|e| e.position));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let mut wanted = expected.clone();
            if order == Order::Descending {
                wanted.reverse();
            }
            assert_eq!(seen, wanted, "{filter:?} {order:?}");
        }
    }
    // Connection timeline: the switch shows on both connections.
    for connection in [C1, C2] {
        let timeline = all(
            &audit,
            AuditFilter {
                connection_id: Some(connection.into()),
                ..Default::default()
            },
            None,
        )
        .await;
        assert!(timeline.iter().any(|e| e.position == story.switched));
    }
    // A token cannot be reused with another filter.
    let page = audit
        .list(AuditFilter::default(), None, 1, "", Order::Ascending)
        .await
        .unwrap();
    let other = AuditFilter {
        organization_id: Some(ORG_A.into()),
        ..Default::default()
    };
    assert!(matches!(
        audit
            .list(other, None, 1, &page.next_page_token, Order::Ascending)
            .await,
        Err(AuditError::InvalidArgument {
            field: "page_token",
            ..
        })
    ));
    // Export in small batches covers the same entries as a list.
    let mut exported = Vec::new();
    let mut after = 0;
    let mut export = ExportState::default();
    loop {
        let batch = audit
            .export_batch(
                &AuditFilter::default(),
                None,
                after,
                story.head,
                4,
                &mut export,
            )
            .await
            .unwrap();
        exported.extend(batch.entries.iter().map(|e| e.position));
        if batch.position >= story.head {
            break;
        }
        assert!(batch.position > after);
        after = batch.position;
    }
    assert_eq!(exported, (1..=story.head).collect::<Vec<_>>());
}

#[tokio::test]
async fn time_ranges_map_to_positions() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let entries = all(&audit, AuditFilter::default(), None).await;
    for entry in &entries {
        let time = signpost_domain::event::from_timestamp(entry.time.as_ref());
        assert!(audit.position_at_time(time).unwrap() >= entry.position);
        assert!(audit.first_position_at_or_after(time).unwrap() <= entry.position);
    }
    let last = signpost_domain::event::from_timestamp(entries.last().unwrap().time.as_ref());
    assert_eq!(audit.position_at_time(last).unwrap(), story.head);
    let before_all = signpost_domain::event::from_timestamp(entries[0].time.as_ref())
        - chrono::Duration::seconds(1);
    assert_eq!(audit.position_at_time(before_all).unwrap(), 0);
    let in_range = audit
        .list(
            AuditFilter {
                start_time: Some(before_all),
                end_time: Some(last + chrono::Duration::seconds(1)),
                ..Default::default()
            },
            None,
            1000,
            "",
            Order::Ascending,
        )
        .await
        .unwrap();
    assert_eq!(in_range.entries.len(), entries.len());
    let empty = audit
        .list(
            AuditFilter {
                end_time: Some(before_all),
                ..Default::default()
            },
            None,
            10,
            "",
            Order::Ascending,
        )
        .await
        .unwrap();
    assert!(empty.entries.is_empty());
}

#[tokio::test]
async fn routing_and_connections_are_answered_as_they_were() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let domain = RoutingSubject::Domain("ACME.example".into());
    let route_at = async |position: u64| {
        let answer = audit
            .routing_at(&domain, PointInTime::Position(position), None)
            .await
            .unwrap();
        let routing = answer.domains.into_iter().next().unwrap();
        (
            routing.route.map(|r| r.connection_id).unwrap_or_default(),
            routing.cause,
        )
    };
    assert_eq!(
        route_at(story.configured).await.0,
        "",
        "configured, not active: password"
    );
    let (before, _) = route_at(story.switched - 1).await;
    assert_eq!(before, C1);
    let (between, cause) = route_at(story.switched).await;
    assert_eq!(between, C2);
    let cause = cause.unwrap();
    assert_eq!(cause.action, "provider.switched");
    assert_eq!(cause.actor.unwrap().id, ADMIN);
    let (after, cause) = route_at(story.switched_back).await;
    assert_eq!(after, C1);
    assert_eq!(cause.unwrap().actor.unwrap().id, "token-support");
    assert_eq!(route_at(story.head).await.0, C1);

    // The organization's domains: the released one is gone at the end.
    let org = RoutingSubject::Organization(ORG_A.into());
    let then = audit
        .routing_at(&org, PointInTime::Position(story.switched), None)
        .await
        .unwrap();
    assert_eq!(then.domains.len(), 2);
    let now = audit
        .routing_at(&org, PointInTime::Now, None)
        .await
        .unwrap();
    assert_eq!(
        now.domains
            .iter()
            .map(|d| d.domain.as_str())
            .collect::<Vec<_>>(),
        ["acme.example"]
    );
    let released = audit
        .routing_at(
            &RoutingSubject::Domain("acme-law.example".into()),
            PointInTime::Now,
            None,
        )
        .await
        .unwrap();
    assert!(released.domains[0].route.is_none());
    assert_eq!(
        released.domains[0].cause.as_ref().unwrap().action,
        "domain.released"
    );

    // Connection state then: SSO URL before and after the reconfiguration, status.
    let sso_url = |at: &ConnectionAt| {
        let saml = at.view.saml_settings().expect("saml");
        saml.sso_endpoints[0].location.clone()
    };
    let early = audit
        .connection_at(C1, PointInTime::Position(story.configured), None)
        .await
        .unwrap();
    assert_eq!(sso_url(&early), "https://a.idp.example/sso");
    // The state keeps certificates without DER; the answer shows the event's.
    let certificates = early.view.saml_settings().unwrap().signing_certificates;
    assert!(!certificates.is_empty());
    assert!(certificates.iter().all(|c| c.der == [1, 2, 3]));
    assert_eq!(
        early.view.status,
        signpost_control::views::ConnectionStatus::Configured
    );
    let later = audit
        .connection_at(C1, PointInTime::Position(story.reconfigured), None)
        .await
        .unwrap();
    assert_eq!(sso_url(&later), "https://b.idp.example/sso");
    assert_eq!(
        later.view.status,
        signpost_control::views::ConnectionStatus::Active
    );
    assert_eq!(later.last_change.position, story.reconfigured);
    let during_switch = audit
        .connection_at(C1, PointInTime::Position(story.switched), None)
        .await
        .unwrap();
    assert_eq!(
        during_switch.view.status,
        signpost_control::views::ConnectionStatus::Inactive
    );
    assert_eq!(during_switch.last_change.action, "provider.switched");
    let standby = audit
        .connection_at(C2, PointInTime::Position(story.switched - 1), None)
        .await
        .unwrap();
    assert_eq!(
        standby.view.status,
        signpost_control::views::ConnectionStatus::Standby
    );
    assert!(matches!(
        audit
            .connection_at(C1, PointInTime::Position(2), None)
            .await,
        Err(AuditError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_scoped_auditor_sees_only_its_organization() {
    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let scope = Some(ORG_B);
    let visible = all(&audit, AuditFilter::default(), scope).await;
    assert!(!visible.is_empty());
    assert!(visible
        .iter()
        .all(|e| e.target.as_ref().unwrap().organization_id == ORG_B));
    for filter in [
        AuditFilter {
            connection_id: Some(C1.into()),
            ..Default::default()
        },
        AuditFilter {
            actor_id: Some(ADMIN.into()),
            event_types: ["provider_switched".to_owned()].into(),
            ..Default::default()
        },
        AuditFilter {
            event_types: ["api_token_issued".to_owned()].into(),
            ..Default::default()
        },
    ] {
        assert!(all(&audit, filter, scope).await.is_empty());
    }
    assert!(matches!(
        audit
            .list(
                AuditFilter {
                    organization_id: Some(ORG_A.into()),
                    ..Default::default()
                },
                scope,
                10,
                "",
                Order::Ascending
            )
            .await,
        Err(AuditError::PermissionDenied(_))
    ));
    let export = audit
        .export_batch(
            &AuditFilter::default(),
            scope,
            0,
            u64::MAX,
            1000,
            &mut ExportState::default(),
        )
        .await
        .unwrap();
    assert_eq!(export.entries, visible);
    assert!(matches!(
        audit
            .routing_at(
                &RoutingSubject::Domain("acme.example".into()),
                PointInTime::Now,
                scope
            )
            .await,
        Err(AuditError::NotFound { .. })
    ));
    assert!(matches!(
        audit
            .routing_at(
                &RoutingSubject::Organization(ORG_A.into()),
                PointInTime::Now,
                scope
            )
            .await,
        Err(AuditError::NotFound { .. })
    ));
    assert!(matches!(
        audit.connection_at(C1, PointInTime::Now, scope).await,
        Err(AuditError::NotFound { .. })
    ));
    let own = audit
        .routing_at(
            &RoutingSubject::Organization(ORG_B.into()),
            PointInTime::Now,
            scope,
        )
        .await
        .unwrap();
    assert_eq!(own.domains.len(), 1);
    assert!(
        own.domains[0].route.is_none(),
        "claimed, not verified: password"
    );
}

#[tokio::test]
async fn checkpoints_chain_verify_online_and_offline_and_catch_tampering() {
    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("checkpoint.key");
    let key = CheckpointKey::load_or_create(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        CheckpointKey::load_or_create(&key_file).unwrap().key_id(),
        key.key_id()
    );
    // Checkpoints live in a database of their own (the server's `checkpoints`).
    let checkpoint_db = sled::Config::new()
        .path(dir.path().join("checkpoints"))
        .open()
        .unwrap();
    let checkpoints = Checkpointer::open(&checkpoint_db, store.clone(), key.clone()).unwrap();
    let first = checkpoints.create(chrono::Utc::now()).await.unwrap();
    assert!(first.previous_checkpoint_hash.is_empty());
    assert!(checkpoints
        .create_if_moved(chrono::Utc::now())
        .await
        .unwrap()
        .is_none());
    let more = append(
        &store,
        system(),
        vec![(
            streams::api_token("token-late"),
            vec![Event::ApiTokenRevoked(schema::ApiTokenRevoked {})],
        )],
    )
    .await;
    let second = checkpoints
        .create_if_moved(chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.position, more);
    assert_eq!(
        second.previous_checkpoint_hash,
        checkpoint_hash(&first).to_vec()
    );
    let (listed, token) = checkpoints.list(1, "").unwrap();
    assert_eq!(listed, std::slice::from_ref(&second));
    let (rest, end) = checkpoints.list(1, &token).unwrap();
    assert_eq!(rest, std::slice::from_ref(&first));
    assert!(end.is_empty());

    let online = checkpoints.verify(&first).await.unwrap();
    assert!(
        online.signature_valid && online.log_extends_checkpoint,
        "{online:?}"
    );
    assert_eq!(online.head.unwrap().position, more);
    let mut forged = first.clone();
    forged.position -= 1;
    let verdict = checkpoints.verify(&forged).await.unwrap();
    assert!(!verdict.signature_valid);

    // Offline, from an exported log file.
    let envelopes = store.read_range(1, 10_000).await.unwrap();
    let mut file = Vec::new();
    assert_eq!(
        write_log_export(&mut file, envelopes.clone()).unwrap(),
        more
    );
    let read: Vec<_> = read_log_export(file.as_slice())
        .map(Result::unwrap)
        .collect();
    assert_eq!(read, envelopes);
    let head =
        verify_checkpoint_offline(&first, &key.public_key(), read.clone().into_iter()).unwrap();
    assert_eq!(head.position, more);
    // An export starting at the checkpoint's position also shows the extension.
    let tail = read
        .iter()
        .filter(|e| e.position >= first.position)
        .cloned();
    assert_eq!(
        verify_checkpoint_offline(&first, &key.public_key(), tail).unwrap(),
        head
    );

    let mut changed = read.clone();
    changed[3].correlation_id = "edited".into();
    assert_eq!(
        verify_checkpoint_offline(&first, &key.public_key(), changed.into_iter()),
        Err(CheckpointProblem::ChainBroken {
            position: 4,
            problem: "hash does not match content".into()
        })
    );
    let mut missing = read.clone();
    missing.remove(5);
    assert!(matches!(
        verify_checkpoint_offline(&first, &key.public_key(), missing.into_iter()),
        Err(CheckpointProblem::ChainBroken { position: 6, .. })
    ));
    let short = read.iter().take(3).cloned();
    assert!(matches!(
        verify_checkpoint_offline(&first, &key.public_key(), short),
        Err(CheckpointProblem::LogTooShort { .. })
    ));
    let stranger = CheckpointKey::from_seed([9; 32]);
    assert!(matches!(
        verify_checkpoint_offline(&first, &stranger.public_key(), read.into_iter()),
        Err(CheckpointProblem::UnknownKey { .. })
    ));
    // A truncated export file is an error, not a silent end.
    let cut = &file[..file.len() - 3];
    assert!(read_log_export(cut).last().unwrap().is_err());
}

/// Routing at every position, for every domain and organization, against a plain fold of
/// the log (the admin read model and the routing crate's routes after each event; a
/// domain's state is whatever the last recomputed organization says, as the fold does).
#[tokio::test]
async fn routing_at_every_position_matches_a_plain_fold_of_the_log() {
    use signpost_api::routing::v1 as routing;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    // A released domain claimed by another organization, and a contested claim.
    let claim = |domain: &str| {
        Event::DomainClaimed(schema::DomainClaimed {
            domain: domain.into(),
            verification_record_name: format!("_signpost-challenge.{domain}"),
            verification_value: "challenge".into(),
        })
    };
    let release = |domain: &str| {
        Event::DomainReleased(schema::DomainReleased {
            domain: domain.into(),
        })
    };
    let by_system = async |stream: String, events: Vec<Event>| {
        append(&store, system(), vec![(stream, events)]).await
    };
    let verified = Event::DomainVerified(schema::DomainVerified {
        domain: "acme-law.example".into(),
        method: schema::VerificationMethod::Manual as i32,
        note: "ticket 7".into(),
    });
    by_system(
        streams::organization(ORG_B),
        vec![claim("acme-law.example"), verified],
    )
    .await;
    by_system(streams::organization(ORG_A), vec![claim("birch.example")]).await;
    by_system(streams::organization(ORG_A), vec![release("birch.example")]).await;
    // A claim of a domain another organization routes (the control plane refuses it;
    // a log may still hold one): then each side's next event makes the domain its own
    // again, a connection's event included.
    by_system(streams::organization(ORG_B), vec![claim("acme.example")]).await;
    append(
        &store,
        token_actor(ADMIN, "Onboarding", "alice@platform.example"),
        vec![(
            streams::connection(C1),
            vec![Event::GroupAssigned(schema::GroupAssigned {
                idp_group: "Auditors".into(),
                role: "viewer".into(),
            })],
        )],
    )
    .await;
    by_system(streams::organization(ORG_B), vec![claim("birch.example")]).await;
    let head = by_system(streams::organization(ORG_B), vec![release("acme.example")]).await;

    // The plain fold.
    type State = (String, Option<routing::Route>, u64);
    let mut model = signpost_control::read_model::ReadModel::default();
    let mut domains: HashMap<String, State> = HashMap::new();
    let mut claimed: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut states = vec![domains.clone()];
    for envelope in store.read_range(1, 10_000).await.unwrap() {
        let event = signpost_domain::decode_event(&envelope.payload).unwrap();
        model.apply(&envelope, &event);
        let stream = envelope.stream_id.as_str();
        let organization_id = match stream.split_once('-') {
            Some(("organization", id)) => Some(id.to_owned()),
            _ => stream.strip_prefix("connection-").and_then(|id| {
                model
                    .connections
                    .get(id)
                    .map(|c| c.state.organization_id.to_string())
            }),
        };
        if let Some(organization) = organization_id
            .as_deref()
            .and_then(|id| model.organizations.get(id))
        {
            let organization = &organization.state;
            let organization_id = organization_id.clone().unwrap();
            let active = organization
                .active_connection_id
                .as_deref()
                .and_then(|id| model.connections.get(id))
                .map(|c| &c.state);
            let routes =
                signpost_routing::routes::organization_routes(organization, active, BASE_URL);
            let now: BTreeSet<String> =
                organization.domains.keys().map(|d| d.to_string()).collect();
            let before = claimed
                .insert(organization_id.clone(), now.clone())
                .unwrap_or_default();
            for domain in now.union(&before) {
                let owner = if now.contains(domain) {
                    organization_id.clone()
                } else {
                    String::new()
                };
                let route = routes
                    .get(domain.as_str())
                    .map(signpost_routing::EncodedRoute::decode);
                if domains
                    .get(domain)
                    .is_none_or(|(o, r, _)| (o, r) != (&owner, &route))
                {
                    domains.insert(domain.clone(), (owner, route, envelope.position));
                }
            }
        }
        states.push(domains.clone());
    }
    assert_eq!(states.len() as u64, head + 1);

    let dir = tempfile::tempdir().unwrap();
    let audit = projection(&store, dir.path()).await;
    let names = ["acme.example", "acme-law.example", "birch.example"];
    let mut changes = 0;
    for (position, state) in states.iter().enumerate() {
        let at = PointInTime::Position(position as u64);
        for name in names {
            let answer = audit
                .routing_at(&RoutingSubject::Domain(name.into()), at, None)
                .await
                .unwrap();
            let routing = &answer.domains[0];
            let expected = state.get(name);
            assert_eq!(
                routing.route,
                expected.and_then(|(_, r, _)| r.clone()),
                "{name} at {position}"
            );
            assert_eq!(
                routing.cause.as_ref().map(|c| c.position),
                expected.map(|(_, _, cause)| *cause),
                "{name} at {position}"
            );
            changes += usize::from(expected.is_some_and(|(_, _, c)| *c == position as u64));
            // A scoped auditor sees the domain only while its organization owns it.
            for scope in [ORG_A, ORG_B] {
                let scoped = audit
                    .routing_at(&RoutingSubject::Domain(name.into()), at, Some(scope))
                    .await;
                let owned = expected.is_some_and(|(owner, _, _)| owner == scope);
                assert_eq!(scoped.is_ok(), owned, "{name} at {position} for {scope}");
            }
        }
        for organization in [ORG_A, ORG_B] {
            let Ok(answer) = audit
                .routing_at(&RoutingSubject::Organization(organization.into()), at, None)
                .await
            else {
                continue;
            };
            let owned: BTreeMap<&str, Option<&routing::Route>> = state
                .iter()
                .filter(|(_, (owner, _, _))| owner == organization)
                .map(|(domain, (_, route, _))| (domain.as_str(), route.as_ref()))
                .collect();
            let answered: BTreeMap<&str, Option<&routing::Route>> = answer
                .domains
                .iter()
                .map(|d| (d.domain.as_str(), d.route.as_ref()))
                .collect();
            assert_eq!(answered, owned, "{organization} at {position}");
        }
    }
    assert!(changes > 10, "{changes} changes");
}

/// Point-in-time answers fold streams longer than a page (1,024 events) a page of each
/// stream at a time, in log order across the organization's and its connection's.
#[tokio::test]
async fn point_in_time_answers_fold_long_streams_a_page_at_a_time() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let admin = || token_actor(ADMIN, "Onboarding", "alice@platform.example");
    let mut assigned = Vec::new();
    let mut late_claim = 0;
    for n in 0..2_500 {
        let at = append(
            &store,
            admin(),
            vec![(
                streams::connection(C1),
                vec![Event::GroupAssigned(schema::GroupAssigned {
                    idp_group: format!("bulk-{n}"),
                    role: "member".into(),
                })],
            )],
        )
        .await;
        assigned.push(at);
        if n == 1_500 {
            late_claim = append(
                &store,
                system(),
                vec![(
                    streams::organization(ORG_A),
                    vec![Event::DomainClaimed(schema::DomainClaimed {
                        domain: "late.example".into(),
                        verification_record_name: "_signpost-challenge.late.example".into(),
                        verification_value: "challenge".into(),
                    })],
                )],
            )
            .await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditProjection::start(store.clone(), dir.path(), AuditOptions::new(BASE_URL))
        .await
        .unwrap();
    reach(&audit, *assigned.last().unwrap()).await;
    let domain = RoutingSubject::Domain("acme.example".into());
    for k in [0, 1_022, 1_023, 1_024, 1_500, 2_048, 2_499] {
        let at = PointInTime::Position(assigned[k]);
        let answer = audit.routing_at(&domain, at, None).await.unwrap();
        let routing = &answer.domains[0];
        let route = routing.route.as_ref().expect("acme.example routes");
        assert_eq!(route.connection_id, C1, "after {k}");
        let bulk = route.group_roles.keys().filter(|g| g.starts_with("bulk-"));
        assert_eq!(bulk.count(), k + 1, "after {k}");
        assert_eq!(
            routing.cause.as_ref().map(|c| c.position),
            Some(assigned[k]),
            "after {k}"
        );
        let connection = audit.connection_at(C1, at, None).await.unwrap();
        let groups = &connection.view.connection.as_ref().unwrap().groups;
        let bulk = groups.keys().filter(|g| g.starts_with("bulk-"));
        assert_eq!(bulk.count(), k + 1, "after {k}");
        let organization = audit
            .routing_at(&RoutingSubject::Organization(ORG_A.into()), at, None)
            .await
            .unwrap();
        let late = organization
            .domains
            .iter()
            .any(|d| d.domain == "late.example");
        assert_eq!(late, assigned[k] > late_claim, "after {k}");
    }
    assert!(story.head < assigned[0]);
}

/// A projection started with [`AuditProjection::start_fed`], its feed followed by a
/// control-plane read model over `store` that drives a routing table too (as in the
/// server: the domain changes are then the routing table's).
async fn fed_projection(
    store: &Arc<MemoryEventStore>,
    dir: &std::path::Path,
    options: AuditOptions,
) -> (AuditProjection, signpost_control::projection::Projection) {
    let (audit, feed) = AuditProjection::start_fed(store.clone(), dir, options)
        .await
        .unwrap();
    let (_, routing) = signpost_routing::RoutingProjection::fed(
        store.store_epoch().to_string(),
        signpost_routing::RoutingOptions::new(BASE_URL),
    );
    let model = signpost_control::projection::Projection::start_with(
        store.clone(),
        signpost_control::Followers {
            routing: Some(routing),
            follower: Some(Box::new(feed)),
        },
    )
    .await
    .unwrap();
    (audit, model)
}

fn small_batches() -> AuditOptions {
    let mut options = AuditOptions::new(BASE_URL);
    options.batch_events = 3;
    options
}

/// Events after the story: a new organization claiming and verifying a domain, a token
/// revoked.
async fn epilogue(store: &MemoryEventStore) -> u64 {
    created_and_claimed(store, "org-late", "Late Ltd", "ext-late", "late.example").await;
    append(store, system(), vec![revoke("token-late")]).await
}

/// An organization created, then a domain claimed for it: two commits.
async fn created_and_claimed(
    store: &MemoryEventStore,
    id: &str,
    display_name: &str,
    external_id: &str,
    domain: &str,
) {
    let org = streams::organization(id);
    append(
        store,
        system(),
        vec![(
            org.clone(),
            vec![Event::OrganizationCreated(schema::OrganizationCreated {
                organization_id: id.into(),
                display_name: display_name.into(),
                external_id: external_id.into(),
            })],
        )],
    )
    .await;
    append(
        store,
        system(),
        vec![(
            org,
            vec![Event::DomainClaimed(schema::DomainClaimed {
                domain: domain.into(),
                ..Default::default()
            })],
        )],
    )
    .await;
}

/// Started with a routing table on a log with history (as the server starts): while the
/// model catches up, the routing table gives the feed each event's route changes past the
/// position the audit database recorded, instead of computing the routes once at the end
/// (and the audit computing them itself on both sides of every event). The rows are the
/// audit's own fold's, whether it rebuilds from nothing or resumes.
#[tokio::test]
async fn a_fed_catch_up_with_a_routing_table_writes_the_rows_of_its_own_fold() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;

    let fed_dir = tempfile::tempdir().unwrap();
    let (fed, model) = fed_projection(&store, fed_dir.path(), small_batches()).await;
    fed.wait_for(story.head).await.unwrap();
    assert!(fed.stats().rebuilt && fed.stats().fed);
    let rows = fed.dump().await.unwrap();
    assert!(
        rows.iter().any(|(tree, _, _)| tree == "domain_history"),
        "route history"
    );
    assert_eq!(rows, rebuilt.dump().await.unwrap());

    // Stopped, more events, started again: the routes are put off up to what the
    // database recorded, and given per event after it.
    fed.stop().await;
    drop((fed, model));
    let head = epilogue(&store).await;
    let (resumed, _model) = fed_projection(&store, fed_dir.path(), small_batches()).await;
    assert_eq!(resumed.stats().resumed_from, story.head);
    resumed.wait_for(head).await.unwrap();
    rebuilt.wait_for(head).await.unwrap();
    assert_eq!(resumed.dump().await.unwrap(), rebuilt.dump().await.unwrap());
}

/// While the read model catches up at start, the feed hands its steps over in batches (as
/// many as the channel holds, up to a limit): batches that end inside a commit, a last
/// batch cut short at the head, and batches of one, all write the rows of the audit's own
/// fold, without the feed letting go; the live events after them too.
#[tokio::test]
async fn a_catch_up_handed_over_in_batches_writes_the_rows_of_its_own_fold() {
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    assert!(story.head > 20, "several batches of up to 7 steps");
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    let mut fed = Vec::new();
    for capacity in [1, 2, 5, 7, 32_768] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = small_batches();
        options.feed_capacity = capacity;
        let (audit, model) = fed_projection(&store, dir.path(), options).await;
        audit.wait_for(story.head).await.unwrap();
        assert!(audit.stats().fed, "capacity {capacity}: the feed let go");
        assert_eq!(
            audit.dump().await.unwrap(),
            rebuilt.dump().await.unwrap(),
            "capacity {capacity}"
        );
        fed.push((capacity, audit, model, dir));
    }
    let head = epilogue(&store).await;
    rebuilt.wait_for(head).await.unwrap();
    for (capacity, audit, _, _) in &fed {
        audit.wait_for(head).await.unwrap();
        assert_eq!(
            audit.dump().await.unwrap(),
            rebuilt.dump().await.unwrap(),
            "capacity {capacity}, live events"
        );
    }
}

#[tokio::test]
async fn a_fed_projection_writes_the_rows_of_its_own_fold_and_keeps_no_read_model() {
    let store = Arc::new(MemoryEventStore::new());
    // Fed from the first event: nothing to catch up on alone.
    let fed_dir = tempfile::tempdir().unwrap();
    let (fed, _model) = fed_projection(&store, fed_dir.path(), small_batches()).await;
    assert!(fed.stats().fed);
    let story = story(&store).await;
    fed.wait_for(story.head).await.unwrap();
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    assert!(
        !rebuilt.stats().fed,
        "a projection without a feed folds alone"
    );
    let rows = fed.dump().await.unwrap();
    assert_eq!(rows, rebuilt.dump().await.unwrap());
    assert!(
        rows.iter().any(|(tree, _, _)| tree == "domain_history"),
        "route history"
    );
    assert!(fed.stats().fed);

    // Started on a log with history: the catch-up is the read model's too (the feed
    // describes every event past the recorded position), so nothing is written before
    // the read model its feed is given to runs, and the task never folds alone.
    // Room for one step: the read model waits for the audit task all along its catch-up.
    let late_dir = tempfile::tempdir().unwrap();
    let mut one_step = small_batches();
    one_step.feed_capacity = 1;
    let (late, late_feed) = AuditProjection::start_fed(store.clone(), late_dir.path(), one_step)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(late.position(), 0, "waits for the read model");
    assert!(late.stats().fed);
    // This read model drives no routing table: the audit computes domain changes itself.
    let _late_model = signpost_control::projection::Projection::start_with(
        store.clone(),
        signpost_control::Followers {
            routing: None,
            follower: Some(Box::new(late_feed)),
        },
    )
    .await
    .unwrap();
    late.wait_for(story.head).await.unwrap();
    assert!(
        late.stats().fed,
        "the feed never let go while the model caught up"
    );
    // Past the head at start, a full channel makes the feed let go (room for one step
    // is little): the rows are the same either way.
    let head = epilogue(&store).await;
    late.wait_for(head).await.unwrap();
    rebuilt.wait_for(head).await.unwrap();
    fed.wait_for(head).await.unwrap();
    assert_eq!(late.dump().await.unwrap(), rebuilt.dump().await.unwrap());
    assert_eq!(fed.dump().await.unwrap(), rebuilt.dump().await.unwrap());
    let late_entries = organization_entries(&late, "org-late").await;
    assert_eq!(late_entries.len(), 2, "created and claimed");
}

/// Plays the read model's task by hand over `envelopes`, yielding only in the waits the
/// feed asks for; returns the positions it waited at.
async fn play_read_model(
    feed: &mut AuditFeed,
    envelopes: &[signpost_eventlog::EventEnvelope],
) -> Vec<u64> {
    let mut model = signpost_control::read_model::ReadModel::default();
    play_on(feed, &mut model, envelopes).await
}

/// [`play_read_model`] from `model` on.
async fn play_on(
    feed: &mut AuditFeed,
    model: &mut signpost_control::read_model::ReadModel,
    envelopes: &[signpost_eventlog::EventEnvelope],
) -> Vec<u64> {
    use signpost_control::Follower;
    let mut waited = Vec::new();
    for envelope in envelopes {
        let event = signpost_domain::decode_event(&envelope.payload).unwrap();
        feed.before(envelope, &event, model);
        model.apply(envelope, &event);
        if let Some(wait) = feed.after(envelope, &event, model) {
            waited.push(envelope.position);
            wait.await;
        }
    }
    // The events at hand are applied: live steps held for a batch go now, as the read
    // model's task hands them over before it waits for the log.
    feed.idle();
    waited
}

/// A token revoked: a one-event commit.
fn revoke(token: &str) -> (String, Vec<Event>) {
    (
        streams::api_token(token),
        vec![Event::ApiTokenRevoked(schema::ApiTokenRevoked {})],
    )
}

#[tokio::test]
async fn a_feed_that_falls_behind_lets_go_and_the_projection_reads_the_log_itself() {
    // The read model's task is played by hand, yielding only in the waits the feed asks
    // for (this runtime has one thread, so the audit task takes nothing otherwise): with
    // room for one step, the feed makes the model wait up to the head at start, and lets
    // go at the first later step that does not fit. The projection then reads the log
    // itself up to the head, where it hands the events back to the feed.
    async fn play(
        feed: &mut AuditFeed,
        model: &mut signpost_control::read_model::ReadModel,
        envelopes: &[signpost_eventlog::EventEnvelope],
    ) -> usize {
        let waits = play_on(feed, model, envelopes).await.len();
        assert!(format!("{feed:?}").contains("attached: false"));
        waits
    }
    /// Waits until the projection has handed the events back (once) to its feed.
    async fn handed_back(audit: &AuditProjection, feed: &AuditFeed) {
        eventually(|| audit.stats().fed, || format!("{:?}", audit.stats())).await;
        assert_eq!(audit.stats().handbacks, 1);
        assert!(
            format!("{feed:?}").contains("offer_standing: true"),
            "{feed:?}"
        );
    }
    let mut options = small_batches();
    options.feed_capacity = 1;

    // Fed from the start, then let go: the task takes the step handed over and reads
    // the log itself from the next one, up to the head.
    let store = Arc::new(MemoryEventStore::new());
    let fed_dir = tempfile::tempdir().unwrap();
    let (fed, mut fed_feed) =
        AuditProjection::start_fed(store.clone(), fed_dir.path(), options.clone())
            .await
            .unwrap();
    assert!(fed.stats().fed);
    story(&store).await;
    let head = epilogue(&store).await;
    let envelopes = store.read_range(1, 10_000).await.unwrap();
    let mut fed_model = signpost_control::read_model::ReadModel::default();
    assert_eq!(
        play(&mut fed_feed, &mut fed_model, &envelopes).await,
        0,
        "nothing to catch up on"
    );
    fed.wait_for(head).await.unwrap();
    handed_back(&fed, &fed_feed).await;

    // Started on a log with history: the model waits for the audit task while it
    // catches up (the channel holds one step), then the feed lets go at the first step
    // past the head at start that does not fit.
    let late_dir = tempfile::tempdir().unwrap();
    let (late, mut late_feed) = AuditProjection::start_fed(store.clone(), late_dir.path(), options)
        .await
        .unwrap();
    append(&store, system(), vec![revoke("token-later")]).await;
    let more = append(&store, system(), vec![revoke("token-last")]).await;
    let envelopes = store.read_range(1, 10_000).await.unwrap();
    let mut late_model = signpost_control::read_model::ReadModel::default();
    let waits = play(&mut late_feed, &mut late_model, &envelopes).await;
    assert!(
        waits as u64 >= head - 1,
        "{waits} waits while catching up to {head}"
    );
    late.wait_for(more).await.unwrap();
    handed_back(&late, &late_feed).await;

    // The first projection's feed took the events back at the head: it describes the
    // first later event, and (room for one step, nothing taken meanwhile) lets go again
    // at the second; the projection reads the log itself once more, and hands back again.
    let later = store.read_range(head + 1, 10).await.unwrap();
    play_on(&mut fed_feed, &mut fed_model, &later).await;
    fed.wait_for(more).await.unwrap();
    eventually(
        || fed.stats().handbacks >= 2 && fed.stats().fed,
        || format!("{:?}", fed.stats()),
    )
    .await;

    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    assert_eq!(fed.dump().await.unwrap(), rebuilt.dump().await.unwrap());
    assert_eq!(late.dump().await.unwrap(), rebuilt.dump().await.unwrap());
}

#[tokio::test]
async fn after_its_catch_up_the_feed_has_room_for_the_first_commands() {
    // Room for four steps. The read model's task is played by hand, yielding only in the
    // waits the feed asks for: at the end of the catch-up it waits until two steps are
    // free, so the next two events (commands right after the server starts) fit even
    // though nothing yields between them.
    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    let head = epilogue(&store).await;
    let mut options = small_batches();
    options.feed_capacity = 4;
    let dir = tempfile::tempdir().unwrap();
    let (audit, mut feed) = AuditProjection::start_fed(store.clone(), dir.path(), options)
        .await
        .unwrap();
    append(&store, system(), vec![revoke("token-first")]).await;
    let last = append(&store, system(), vec![revoke("token-second")]).await;
    let envelopes = store.read_range(1, 10_000).await.unwrap();
    let waited = play_read_model(&mut feed, &envelopes).await;
    assert!(
        waited.iter().all(|position| *position <= head),
        "no wait past the catch-up: {waited:?}"
    );
    assert!(format!("{feed:?}").contains("attached: true"), "{feed:?}");
    audit.wait_for(last).await.unwrap();
    assert!(audit.stats().fed);
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    assert_eq!(audit.dump().await.unwrap(), rebuilt.dump().await.unwrap());
}

/// Waits (up to a minute) until `audit` has applied `position`: a handback that loses an
/// event or never happens fails here instead of hanging.
async fn reach(audit: &AuditProjection, position: u64) {
    tokio::time::timeout(std::time::Duration::from_secs(60), audit.wait_for(position))
        .await
        .unwrap_or_else(|_| panic!("stuck at {:?}, waiting for {position}", audit.stats()))
        .unwrap();
}

/// Waits (up to 10 s) until `holds`; else fails, showing `state`.
async fn eventually(holds: impl Fn() -> bool, state: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !holds() {
        assert!(std::time::Instant::now() < deadline, "{}", state());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Waits (up to 10 s) until `feed`'s Debug shows `what`.
async fn feed_shows(feed: &AuditFeed, what: &str) {
    eventually(
        || format!("{feed:?}").contains(what),
        || format!("{feed:?} never showed {what}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_far_behind_catches_up_alone_and_hands_the_events_back_to_the_feed() {
    // The read model's task is played by hand. Room for four steps, and a catch-up far
    // longer: had the feed described it, the model would have waited for the audit task.
    let store = Arc::new(MemoryEventStore::new());
    let story = story(&store).await;
    let mut options = small_batches();
    options.feed_capacity = 4;
    options.catch_up_alone_behind = 1;
    let dir = tempfile::tempdir().unwrap();
    let (audit, mut feed) = AuditProjection::start_fed(store.clone(), dir.path(), options)
        .await
        .unwrap();
    assert!(!audit.stats().fed, "catches up alone");
    let mut model = signpost_control::read_model::ReadModel::default();
    let envelopes = store.read_range(1, 10_000).await.unwrap();
    assert!(envelopes.len() > 20);
    let waited = play_on(&mut feed, &mut model, &envelopes).await;
    assert_eq!(waited, Vec::<u64>::new(), "the model never waited");
    assert!(format!("{feed:?}").contains("attached: false"), "{feed:?}");
    reach(&audit, story.head).await;

    // At the head of a quiet log, the fold hands the events back at once (and its read
    // model goes): the model has seen no later event, so it takes the feed up at the
    // next one, whenever that comes.
    eventually(|| audit.stats().fed, || format!("{:?}", audit.stats())).await;
    assert_eq!(audit.stats().handbacks, 1);
    feed_shows(&feed, "offer_standing: true").await;
    assert!(format!("{feed:?}").contains("attached: false"), "{feed:?}");
    let head = epilogue(&store).await;
    let envelopes = store.read_range(story.head + 1, 10_000).await.unwrap();
    let waited = play_on(&mut feed, &mut model, &envelopes).await;
    assert_eq!(waited, Vec::<u64>::new());
    assert!(
        format!("{feed:?}").contains("attached: true, offer_standing: false"),
        "{feed:?}"
    );
    reach(&audit, head).await;
    assert!(audit.stats().fed);
    assert_eq!(audit.stats().handbacks, 1);

    // Every event once, in order: the rows of a projection that folded alone throughout.
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    rebuilt.wait_for(head).await.unwrap();
    assert_eq!(audit.dump().await.unwrap(), rebuilt.dump().await.unwrap());
    let late = organization_entries(&audit, "org-late").await;
    assert_eq!(late.len(), 2, "created and claimed, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_made_while_a_commit_is_half_taken_holds_whole_commits_only() {
    // The read model's task is played by hand. A reader waits for a one-event commit
    // while the audit task holds the first event of the next commit (two events): the
    // write it asks for records that first commit, and must not take the half commit
    // with it. That write merges the postings into a run ending at the position it
    // records (`merge_events` 3, reached at position 3), and the next write keeps its
    // postings apart: a posting of a later event written into the run would be out of
    // every query's reach.
    let store = Arc::new(MemoryEventStore::new());
    let mut options = small_batches();
    options.batch_events = 1000;
    options.merge_events = 3;
    options.linger = std::time::Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let (audit, mut feed) = AuditProjection::start_fed(store.clone(), dir.path(), options)
        .await
        .unwrap();
    assert!(audit.stats().fed);
    append(&store, system(), vec![revoke("token-0")]).await;
    append(&store, system(), vec![revoke("token-1")]).await;
    let whole = append(&store, system(), vec![revoke("token-2")]).await;
    let org = streams::organization("org-split");
    let last = append(
        &store,
        system(),
        vec![(
            org,
            vec![
                Event::OrganizationCreated(schema::OrganizationCreated {
                    organization_id: "org-split".into(),
                    display_name: "Split Ltd".into(),
                    external_id: "ext-split".into(),
                }),
                Event::DomainClaimed(schema::DomainClaimed {
                    domain: "split.example".into(),
                    ..Default::default()
                }),
            ],
        )],
    )
    .await;
    assert_eq!((whole, last), (3, 5));
    let envelopes = store.read_range(1, 10).await.unwrap();
    let mut model = signpost_control::read_model::ReadModel::default();
    play_on(&mut feed, &mut model, &envelopes[..2]).await;
    reach(&audit, 2).await;
    play_on(&mut feed, &mut model, &envelopes[2..4]).await;
    // The audit task takes both steps (nothing makes it wait), then the reader asks.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    reach(&audit, whole).await;
    play_on(&mut feed, &mut model, &envelopes[4..]).await;
    reach(&audit, last).await;

    let entries = organization_entries(&audit, "org-split").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    rebuilt.wait_for(last).await.unwrap();
    assert_eq!(entries, organization_entries(&rebuilt, "org-split").await);
}

/// One writer's commits: an organization created, a domain claimed, a token revoked.
async fn writer(store: Arc<MemoryEventStore>, writer: usize, rounds: usize) -> u64 {
    let mut last = 0;
    for round in 0..rounds {
        let id = format!("org-w{writer}-{round}");
        created_and_claimed(
            &store,
            &id,
            &format!("Writer {writer} round {round}"),
            &format!("ext-{id}"),
            &format!("{id}.example"),
        )
        .await;
        last = append(&store, system(), vec![revoke(&format!("token-{id}"))]).await;
        tokio::task::yield_now().await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettings_go_and_handbacks_under_concurrent_writes_leave_every_event_once() {
    // A real read model task (with a routing table) and writers appending all along: the
    // catch-up is alone, the fold hands back at the head while commits pour in, and a
    // feed with room for two steps lets go again and again, each time followed by a
    // fold of its own that catches up and hands back. Whatever the interleaving, the rows
    // are those of a projection that folded alone.
    let store = Arc::new(MemoryEventStore::new());
    story(&store).await;
    let mut options = small_batches();
    options.feed_capacity = 2;
    options.catch_up_alone_behind = 1;
    let dir = tempfile::tempdir().unwrap();
    let (audit, _model) = fed_projection(&store, dir.path(), options).await;
    // Bursts of writes, each followed by quiet until the feed has the events back, until
    // the feed has let go and taken them back at least twice (a burst does not always
    // fill the channel).
    let mut head = 0;
    let mut quiet = 0;
    for burst in 0..20 {
        let writers: Vec<_> = (0..4)
            .map(|w| tokio::spawn(writer(store.clone(), burst * 4 + w, 30)))
            .collect();
        for handle in writers {
            handle.await.unwrap();
        }
        head = store.head().position;
        loop {
            reach(&audit, head).await;
            if audit.stats().fed {
                break;
            }
            // One event at a time: the model takes the offer at its next event.
            quiet += 1;
            assert!(quiet < 200, "the feed never took the events back");
            head = append(
                &store,
                system(),
                vec![revoke(&format!("token-quiet-{quiet}"))],
            )
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if audit.stats().handbacks >= 3 {
            break;
        }
    }
    let stats = audit.stats();
    assert!(stats.fed);
    assert!(
        stats.handbacks >= 3,
        "the feed let go and took the events back again, twice: {stats:?}"
    );

    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = projection(&store, rebuilt_dir.path()).await;
    rebuilt.wait_for(head).await.unwrap();
    let rows = audit.dump().await.unwrap();
    assert_eq!(rows.len(), rebuilt.dump().await.unwrap().len());
    assert_eq!(rows, rebuilt.dump().await.unwrap());
    let claimed = organization_entries(&audit, "org-w3-29").await;
    assert_eq!(claimed.len(), 2, "created and claimed, once each");
}
