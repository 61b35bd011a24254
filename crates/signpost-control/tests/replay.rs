//! Property: replaying the log rebuilds exactly the live state.
//!
//! Random command sequences run through the real [`ControlPlane`] on an
//! in-memory log; then (1) a read model rebuilt from scratch equals the live
//! one, and (2) every aggregate folded from its own stream equals the state
//! the read model holds for it, and (3) the routing projection rebuilt from
//! scratch equals the one that followed the commands live, and routes exactly
//! the verified domains of organizations with an active connection.

use std::sync::Arc;

use proptest::prelude::*;
use signpost_control::views::ConnectionDetail;
use signpost_control::{
    ControlConfig, ControlPlane, Followers, IssueSetupLink, Principal, RequestMeta, Role,
    SecretBox, SettingsInput, SetupFormInput, VerifyMethod,
};
use signpost_domain::api_token::ApiToken;
use signpost_domain::connection::{Connection, ConnectionSettings};
use signpost_domain::organization::Organization;
use signpost_domain::setup_link::{LinkState, SetupLink};
use signpost_domain::{decode_event, schema, streams, Event};
use signpost_eventlog::{EventStore, MemoryEventStore, StreamId};
use signpost_outbound::StaticTxtResolver;
use signpost_routing::{RoutingOptions, RoutingProjection};

const IDP_CERT: &str = include_str!("../../signpost-idp/testdata/rsa2048_sha256.pem");

#[derive(Debug, Clone)]
enum Step {
    /// A whole journey: organization, verified domain, link, form, activation.
    Onboard(u8, u8),
    /// Stage a switch through a link, and maybe switch to it.
    StageSwitch(u8, u8, bool),
    CreateOrganization(u8),
    ClaimDomain(u8, u8),
    VerifyDomain(u8, u8),
    ReleaseDomain(u8, u8),
    SetPolicy(u8, bool),
    IssueLink(u8, u8),
    RevokeLink(u8),
    Submit(u8, u8),
    AssignGroup(u8, u8),
    UnassignGroup(u8, u8),
    RequireGroup(u8, bool),
    Activate(u8),
    Deactivate(u8),
    Switch(u8, u8),
    MintToken(u8),
    RevokeToken(u8),
}

fn step() -> impl Strategy<Value = Step> {
    let i = 0u8..4;
    prop_oneof![
        4 => (i.clone(), i.clone()).prop_map(|(d, e)| Step::Onboard(d, e)),
        3 => (i.clone(), i.clone(), any::<bool>()).prop_map(|(o, e, s)| Step::StageSwitch(o, e, s)),
        1 => i.clone().prop_map(Step::CreateOrganization),
        1 => (i.clone(), i.clone()).prop_map(|(o, d)| Step::ClaimDomain(o, d)),
        1 => (i.clone(), i.clone()).prop_map(|(o, d)| Step::VerifyDomain(o, d)),
        1 => (i.clone(), i.clone()).prop_map(|(o, d)| Step::ReleaseDomain(o, d)),
        1 => (i.clone(), any::<bool>()).prop_map(|(o, p)| Step::SetPolicy(o, p)),
        3 => (i.clone(), 0u8..3).prop_map(|(o, k)| Step::IssueLink(o, k)),
        1 => (0u8..8).prop_map(Step::RevokeLink),
        3 => (0u8..8, i.clone()).prop_map(|(l, e)| Step::Submit(l, e)),
        1 => (0u8..8, i.clone()).prop_map(|(c, g)| Step::AssignGroup(c, g)),
        1 => (0u8..8, i.clone()).prop_map(|(c, g)| Step::UnassignGroup(c, g)),
        1 => (0u8..8, any::<bool>()).prop_map(|(c, r)| Step::RequireGroup(c, r)),
        2 => (0u8..8).prop_map(Step::Activate),
        1 => (0u8..8).prop_map(Step::Deactivate),
        3 => (i.clone(), 0u8..8).prop_map(|(o, c)| Step::Switch(o, c)),
        1 => (0u8..3).prop_map(Step::MintToken),
        1 => (0u8..4).prop_map(Step::RevokeToken),
    ]
}

fn nth<T: Clone>(items: &[T], index: u8) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        Some(items[index as usize % items.len()].clone())
    }
}

fn manual_saml(entity: u8) -> SetupFormInput {
    SetupFormInput {
        provider_preset: "generic_saml".into(),
        settings: SettingsInput::SamlManual {
            entity_id: format!("https://idp{entity}.example.com/entity"),
            sso_url: format!("https://idp{entity}.example.com/sso"),
            certificate_pem: IDP_CERT.into(),
        },
        claim_mapping: schema::ClaimMapping {
            email: "email".into(),
            ..Default::default()
        },
    }
}

fn link_request(
    organization_id: &str,
    intent: schema::SetupIntent,
    connection_id: &str,
) -> IssueSetupLink {
    IssueSetupLink {
        organization_id: organization_id.into(),
        intent,
        connection_id: connection_id.into(),
        recipient_email: "it@example.org".into(),
        lifetime_seconds: 0,
    }
}

async fn fold<T: Default>(
    store: &Arc<dyn EventStore>,
    stream: String,
    apply: impl Fn(&mut T, &signpost_domain::Event),
) -> T {
    let mut state = T::default();
    let stream = StreamId::new(stream).unwrap();
    for envelope in store.read_stream(&stream, 1, 100_000).await.unwrap() {
        apply(&mut state, &decode_event(&envelope.payload).unwrap());
    }
    state
}

async fn run(steps: Vec<Step>) {
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
    let config = ControlConfig::new("https://signpost.test/".parse().unwrap());
    let secrets = SecretBox::from_key([5; 32]);
    let txt = Arc::new(StaticTxtResolver::new());
    // The live routing table is fed by the read model's task (as in the server); the
    // rebuilt one below folds the log with its own aggregates: they must agree.
    let (live_routing, routing_feed) = RoutingProjection::fed(
        store.store_epoch().to_string(),
        RoutingOptions::new("https://signpost.test/"),
    );
    let plane = ControlPlane::start_with(
        store.clone(),
        secrets.clone(),
        txt.clone(),
        config.clone(),
        Followers {
            routing: Some(routing_feed),
            ..Followers::default()
        },
    )
    .await
    .unwrap();
    let admin = Principal::ApiToken {
        token_id: "test".into(),
        name: "test".into(),
        role: Role::Admin,
        organization_scope: None,
    };
    let meta = RequestMeta::default();
    let mut orgs: Vec<String> = Vec::new();
    let mut links: Vec<String> = Vec::new();
    let mut link_urls: Vec<String> = Vec::new();
    let mut connections: Vec<String> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let domain = |d: u8| format!("firm{d}.example.com");
    for step in steps {
        // Refusals are part of the property: they must append nothing.
        let _ = match step {
            Step::Onboard(d, entity) => {
                let org = plane
                    .create_organization(
                        &admin,
                        &meta,
                        "Journey",
                        &format!("journey-{}", orgs.len()),
                    )
                    .await
                    .unwrap()
                    .value
                    .organization
                    .id;
                orgs.push(org.to_string());
                let journey = async {
                    plane.claim_domain(&admin, &meta, &org, &domain(d)).await?;
                    let note = Some(VerifyMethod::Manual {
                        note: "checked".into(),
                    });
                    plane
                        .verify_domain(&admin, &meta, &org, &domain(d), note)
                        .await?;
                    let intent = schema::SetupIntent::NewConnection;
                    let link = plane
                        .issue_setup_link(&admin, &meta, &link_request(&org, intent, ""))
                        .await?
                        .value;
                    links.push(link.link.link.id.to_string());
                    link_urls.push(link.url.clone());
                    connections.push(link.link.link.connection_id.to_string());
                    let holder =
                        plane.authenticate_setup_link(link.url.rsplit_once('#').unwrap().1)?;
                    plane
                        .submit_setup_form(&holder, &meta, manual_saml(entity))
                        .await?;
                    plane
                        .activate_connection(
                            &admin,
                            &meta,
                            &link.link.link.connection_id,
                            ConnectionDetail::Full,
                        )
                        .await
                        .map(drop)
                };
                journey.await
            }
            Step::StageSwitch(o, entity, switch) => match nth(&orgs, o) {
                Some(org) => {
                    let stage = async {
                        let intent = schema::SetupIntent::StageSwitch;
                        let link = plane
                            .issue_setup_link(&admin, &meta, &link_request(&org, intent, ""))
                            .await?
                            .value;
                        links.push(link.link.link.id.to_string());
                        link_urls.push(link.url.clone());
                        let connection = link.link.link.connection_id.clone();
                        connections.push(connection.to_string());
                        let holder =
                            plane.authenticate_setup_link(link.url.rsplit_once('#').unwrap().1)?;
                        plane
                            .submit_setup_form(&holder, &meta, manual_saml(entity))
                            .await?;
                        if switch {
                            plane
                                .switch_provider(&admin, &meta, &org, &connection)
                                .await?;
                        }
                        Ok::<_, signpost_control::ControlError>(())
                    };
                    stage.await
                }
                None => Ok(()),
            },
            Step::CreateOrganization(n) => plane
                .create_organization(
                    &admin,
                    &meta,
                    &format!("Firm {n}"),
                    &format!("ext-{n}-{}", orgs.len()),
                )
                .await
                .map(|m| orgs.push(m.value.organization.id.to_string())),
            Step::ClaimDomain(o, d) => match nth(&orgs, o) {
                Some(org) => plane
                    .claim_domain(&admin, &meta, &org, &domain(d))
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::VerifyDomain(o, d) => match nth(&orgs, o) {
                Some(org) => plane
                    .verify_domain(
                        &admin,
                        &meta,
                        &org,
                        &domain(d),
                        Some(VerifyMethod::Manual {
                            note: "checked".into(),
                        }),
                    )
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::ReleaseDomain(o, d) => match nth(&orgs, o) {
                Some(org) => plane
                    .release_domain(&admin, &meta, &org, &domain(d))
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::SetPolicy(o, enforced) => match nth(&orgs, o) {
                Some(org) => {
                    let policy = if enforced {
                        schema::SsoPolicy::Enforced
                    } else {
                        schema::SsoPolicy::Optional
                    };
                    plane
                        .set_sso_policy(&admin, &meta, &org, policy)
                        .await
                        .map(drop)
                }
                None => Ok(()),
            },
            Step::IssueLink(o, kind) => match nth(&orgs, o) {
                Some(org) => {
                    let (intent, target) = match kind {
                        0 => (schema::SetupIntent::NewConnection, String::new()),
                        1 => (schema::SetupIntent::StageSwitch, String::new()),
                        _ => (
                            schema::SetupIntent::UpdateConnection,
                            nth(&connections, o).unwrap_or_default(),
                        ),
                    };
                    plane
                        .issue_setup_link(&admin, &meta, &link_request(&org, intent, &target))
                        .await
                        .map(|m| {
                            links.push(m.value.link.link.id.to_string());
                            link_urls.push(m.value.url.clone());
                            connections.push(m.value.link.link.connection_id.to_string());
                        })
                }
                None => Ok(()),
            },
            Step::RevokeLink(l) => match nth(&links, l) {
                Some(link) => plane
                    .revoke_setup_link(&admin, &meta, &link)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::Submit(l, entity) => match nth(&link_urls, l) {
                Some(url) => {
                    let token = url.rsplit_once('#').unwrap().1;
                    match plane.authenticate_setup_link(token) {
                        Ok(link) => plane
                            .submit_setup_form(&link, &meta, manual_saml(entity))
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
                None => Ok(()),
            },
            Step::AssignGroup(c, g) => match nth(&connections, c) {
                Some(conn) => plane
                    .assign_group(
                        &admin,
                        &meta,
                        &conn,
                        &format!("group-{g}"),
                        "member",
                        ConnectionDetail::Basic,
                    )
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::UnassignGroup(c, g) => match nth(&connections, c) {
                Some(conn) => plane
                    .unassign_group(
                        &admin,
                        &meta,
                        &conn,
                        &format!("group-{g}"),
                        ConnectionDetail::Basic,
                    )
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::RequireGroup(c, required) => match nth(&connections, c) {
                Some(conn) => plane
                    .set_group_requirement(&admin, &meta, &conn, required, ConnectionDetail::Full)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::Activate(c) => match nth(&connections, c) {
                Some(conn) => plane
                    .activate_connection(&admin, &meta, &conn, ConnectionDetail::Basic)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::Deactivate(c) => match nth(&connections, c) {
                Some(conn) => plane
                    .deactivate_connection(&admin, &meta, &conn, ConnectionDetail::Full)
                    .await
                    .map(drop),
                None => Ok(()),
            },
            Step::Switch(o, c) => match (nth(&orgs, o), nth(&connections, c)) {
                (Some(org), Some(conn)) => plane
                    .switch_provider(&admin, &meta, &org, &conn)
                    .await
                    .map(drop),
                _ => Ok(()),
            },
            Step::MintToken(role) => {
                let role = [
                    schema::TokenRole::Admin,
                    schema::TokenRole::Edge,
                    schema::TokenRole::Auditor,
                ][role as usize];
                plane
                    .mint_api_token(&admin, &meta, "token", role, "")
                    .await
                    .map(|m| tokens.push(m.value.token.token.id.to_string()))
            }
            Step::RevokeToken(t) => match nth(&tokens, t) {
                Some(token) => plane
                    .revoke_api_token(&admin, &meta, &token)
                    .await
                    .map(drop),
                None => Ok(()),
            },
        };
    }

    let live = plane.projection().read(|model| model.clone());
    assert_eq!(live.position, store.head().position);
    if std::env::var_os("REPLAY_DEBUG").is_some() {
        let active = live
            .organizations
            .values()
            .filter(|o| o.state.active_connection_id.is_some())
            .count();
        let switched = live
            .organizations
            .values()
            .filter(|o| o.state.previously_active.len() > 1)
            .count();
        eprintln!(
            "replay-debug head={} connections={} active={active} switched={switched}",
            live.position,
            live.connections.len()
        );
    }

    // (1) A read model rebuilt from scratch equals the live one.
    let rebuilt = ControlPlane::start(store.clone(), secrets.clone(), txt.clone(), config.clone())
        .await
        .unwrap();
    assert_eq!(rebuilt.projection().read(|model| model.clone()), live);

    // (2) Each aggregate folded from its own stream equals the read model's state.
    for (id, org) in &live.organizations {
        let folded: Organization =
            fold(&store, streams::organization(id), Organization::apply).await;
        assert_eq!(&folded, &org.state);
    }
    // A SAML connection's state keeps its certificates without DER (`SamlIdp`): the
    // DER is in the event at `certificates_at`, whose certificates are the state's
    // otherwise.
    for (id, connection) in &live.connections {
        let folded: Connection = fold(&store, streams::connection(id), Connection::apply).await;
        if let Some(ConnectionSettings::Saml(saml)) = &folded.settings {
            let position = live
                .certificates_at(id)
                .expect("a SAML connection's position");
            let envelope = store.read_range(position, 1).await.unwrap().remove(0);
            let Event::ConnectionConfigured(configured) = decode_event(&envelope.payload).unwrap()
            else {
                panic!("position {position} is not a configuration of {id}");
            };
            let mut recorded = configured.saml.unwrap().signing_certificates;
            assert!(recorded.iter().all(|c| !c.der.is_empty()));
            for certificate in &mut recorded {
                certificate.der.clear();
            }
            assert_eq!(recorded, saml.settings().signing_certificates);
        } else {
            assert_eq!(live.certificates_at(id), None);
        }
        assert_eq!(&folded, &connection.state);
    }
    for (id, link) in &live.setup_links {
        let folded: SetupLink = fold(&store, streams::setup_link(id), SetupLink::apply).await;
        assert_eq!(&folded, &link.state);
        assert!(folded.state == LinkState::Open || folded.state == LinkState::Unissued);
    }
    // A closed link keeps its organization, version and state; the rest is its stream's.
    for (id, closed) in &live.closed_links {
        let folded: SetupLink = fold(&store, streams::setup_link(id), SetupLink::apply).await;
        assert!(!folded.is_open(), "{id} is kept as closed");
        assert_eq!(folded.organization_id, closed.organization_id);
        assert_eq!(folded.version, u64::from(closed.version));
        assert_eq!(folded.state, closed.state);
    }
    for (id, token) in &live.api_tokens {
        let folded: ApiToken = fold(&store, streams::api_token(id), ApiToken::apply).await;
        assert_eq!(&folded, &token.state);
    }

    // (3) Routing: rebuilt equals live, and routes are exactly what the rules say.
    live_routing.wait_for(store.head().position).await.unwrap();
    let rebuilt_routing =
        RoutingProjection::start(store.clone(), RoutingOptions::new("https://signpost.test/"))
            .await
            .unwrap();
    let (live_revision, live_table) = live_routing.snapshot();
    let (rebuilt_revision, rebuilt_table) = rebuilt_routing.snapshot();
    assert_eq!(live_revision, rebuilt_revision);
    assert_eq!(live_table, rebuilt_table);
    // A restarted server: the read model catches up on the whole log and feeds the routing
    // table in catch-up mode (routes computed once per organization at the end).
    let (restarted_routing, restarted_feed) = RoutingProjection::fed(
        store.store_epoch().to_string(),
        RoutingOptions::new("https://signpost.test/"),
    );
    let restarted = ControlPlane::start_with(
        store.clone(),
        secrets.clone(),
        txt.clone(),
        config.clone(),
        Followers {
            routing: Some(restarted_feed),
            ..Followers::default()
        },
    )
    .await
    .unwrap();
    restarted_routing
        .wait_for(store.head().position)
        .await
        .unwrap();
    let (restarted_revision, restarted_table) = restarted_routing.snapshot();
    assert_eq!(restarted_revision, live_revision);
    assert_eq!(restarted_table, live_table);
    restarted
        .projection()
        .read(|model| assert_eq!(model, &live));
    let mut expected_domains = std::collections::BTreeSet::new();
    for org in live.organizations.values() {
        if let Some(active) = &org.state.active_connection_id {
            for domain in org.state.verified_domains() {
                expected_domains.insert(domain.to_string());
                let route = live_table
                    .get(domain)
                    .expect("a verified domain of an active organization routes")
                    .decode();
                assert_eq!(route.domain, **domain);
                assert_eq!(*route.connection_id, **active);
                assert_eq!(*route.organization_id, *org.state.id);
            }
        }
    }
    let routed: std::collections::BTreeSet<String> =
        live_table.keys().map(|d| d.to_string()).collect();
    assert_eq!(routed, expected_domains);

    // And the invariants the rules promise hold in the result.
    let mut owners = std::collections::HashMap::new();
    for org in live.organizations.values() {
        // The organization indexes answer what a walk through every aggregate finds.
        let mut connections: Vec<&str> = live
            .connections
            .iter()
            .filter(|(_, c)| c.state.organization_id == org.state.id)
            .map(|(id, _)| &**id)
            .chain(
                live.draft_connections
                    .iter()
                    .filter(|(_, o)| **o == org.state.id)
                    .map(|(id, _)| &**id),
            )
            .collect();
        connections.sort();
        connections.dedup();
        assert_eq!(live.organization_connection_ids(&org.state.id), connections);
        let mut links: Vec<&str> = live
            .setup_links
            .values()
            .filter(|l| l.state.organization_id == org.state.id)
            .map(|l| &*l.state.id)
            .chain(
                live.closed_links
                    .iter()
                    .filter(|(_, l)| l.organization_id == org.state.id)
                    .map(|(id, _)| &**id),
            )
            .collect();
        links.sort_unstable();
        let indexed: Vec<&str> = live
            .organization_link_ids(&org.state.id)
            .into_iter()
            .map(|id| &**id)
            .collect();
        assert_eq!(indexed, links);
        if let Some(active) = &org.state.active_connection_id {
            let connection = live
                .connections
                .get(active)
                .expect("the active connection exists");
            assert!(connection.state.is_configured());
            assert_eq!(connection.state.organization_id, org.state.id);
        }
        for domain in org.state.domains.keys() {
            assert!(
                owners
                    .insert(domain.clone(), org.state.id.clone())
                    .is_none(),
                "{domain} claimed twice"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_log_rebuilds_the_live_state(steps in proptest::collection::vec(step(), 1..60)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(steps));
    }
}
