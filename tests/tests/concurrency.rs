//! Many writers at once, over real gRPC: optimistic concurrency gives one
//! winner per version, unpinned commands on one connection or one organization take
//! turns and all succeed, and request ids make retries idempotent.

use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;

/// How many clients race in each test.
const RACERS: usize = 50;

/// An organization with a configured (not yet active) SAML connection.
/// Returns (organization id, connection id).
async fn configured_connection(server: &TestServer, admin: &mut AdminClient) -> (String, String) {
    let (org, connection_id, _) = configured_by_link(server, admin).await;
    (org, connection_id)
}

/// [`configured_connection`], and the setup link's URL it was configured through (its
/// form submitted once). Returns (organization id, connection id, link URL).
async fn configured_by_link(
    server: &TestServer,
    admin: &mut AdminClient,
) -> (String, String, String) {
    let org =
        organization_with_verified_domain(server, admin, "Hawthorn Law", "hawthorn-law.com").await;
    let (_, url, connection_id) =
        issue_link(admin, &org, schema::SetupIntent::NewConnection, "").await;
    server
        .form(&url)
        .await
        .submit_setup_form(hawthorn_form())
        .await
        .unwrap();
    (org, connection_id, url)
}

/// The setup form the Hawthorn Law connection is configured with.
fn hawthorn_form() -> pb::SubmitSetupFormRequest {
    saml_xml_form(&idp_metadata(
        "https://idp.hawthorn-law.com/entity",
        "https://idp.hawthorn-law.com/sso",
    ))
}

/// `RACERS` admin clients, each on its own HTTP/2 connection.
async fn racing_clients(server: &TestServer) -> Vec<AdminClient> {
    let mut clients = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        clients.push(server.admin().await);
    }
    clients
}

/// The log's positions are exactly 1..=head.
async fn assert_log_has_no_gaps(server: &TestServer) {
    let head = server.head();
    let positions: Vec<u64> = server.events().await.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
}

/// How many events of `event_type` the log holds.
async fn events_of_type(server: &TestServer, event_type: &str) -> usize {
    let events = server.events().await;
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// Runs `racer` with each of `clients` (and its number) at once; every call must
/// succeed. Returns their answers.
async fn race<Answer, Call>(
    clients: Vec<AdminClient>,
    racer: impl Fn(usize, AdminClient) -> Call,
) -> Vec<Answer>
where
    Answer: Send + 'static,
    Call: std::future::Future<Output = Result<tonic::Response<Answer>, tonic::Status>>
        + Send
        + 'static,
{
    let racers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(number, client)| tokio::spawn(racer(number, client)))
        .collect();
    let mut answers = Vec::with_capacity(racers.len());
    for racer in racers {
        let answer = racer.await.unwrap().expect("an unpinned command succeeds");
        answers.push(answer.into_inner());
    }
    answers
}

/// Each of `clients` at once assigns its own group (`group-<its number>`) the `role` on
/// `connection_id`; every call must succeed. Returns their answers.
async fn race_group_assignments(
    clients: Vec<AdminClient>,
    connection_id: &str,
    role: &'static str,
) -> Vec<pb::AssignGroupResponse> {
    race(clients, |racer, mut client| {
        let connection_id = connection_id.to_owned();
        async move {
            client
                .assign_group(pb::AssignGroupRequest {
                    connection_id,
                    idp_group: format!("group-{racer}"),
                    role: role.into(),
                    ..Default::default()
                })
                .await
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pinned_commands_have_exactly_one_winner_per_version() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id) = configured_connection(&server, &mut admin).await;
    let clients = racing_clients(&server).await;
    let start_version = get_connection(&mut admin, &connection_id).await.version;
    const ROUNDS: u64 = 5;

    for round in 0..ROUNDS {
        let version = start_version + round;
        let racers: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(racer, mut client)| {
                let connection_id = connection_id.clone();
                tokio::spawn(async move {
                    let group = format!("round-{round}-racer-{racer}");
                    let reply = client
                        .assign_group(pb::AssignGroupRequest {
                            connection_id,
                            idp_group: group.clone(),
                            role: "viewer".into(),
                            request_id: String::new(),
                            expected_version: Some(version),
                            // The answer a group-sync job asks for: groups and version.
                            view: pb::ConnectionView::Basic as i32,
                        })
                        .await;
                    (group, reply.map(|r| r.into_inner()))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (group, reply) = racer.await.unwrap();
            match reply {
                Ok(reply) => winners.push((group, reply)),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
                    assert_eq!(reason(&status), "VERSION_MISMATCH", "{status:?}");
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one winner per version");
        let (winning_group, reply) = winners.pop().unwrap();
        let connection = reply.connection.unwrap();
        assert_eq!(connection.version, version + 1);
        assert!(connection
            .groups
            .iter()
            .any(|g| g.idp_group == winning_group));

        let now = get_connection(&mut admin, &connection_id).await;
        assert_eq!(now.version, version + 1);
        assert_eq!(
            now.groups.len() as u64,
            round + 1,
            "only winners were applied"
        );
        assert!(now.groups.iter().any(|g| g.idp_group == winning_group));
    }

    assert_eq!(
        get_connection(&mut admin, &connection_id).await.version,
        start_version + ROUNDS
    );
    assert_log_has_no_gaps(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_unpinned_commands_on_one_connection_all_succeed_each_deciding_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id) = configured_connection(&server, &mut admin).await;
    let clients = racing_clients(&server).await;
    let start_version = get_connection(&mut admin, &connection_id).await.version;

    let answers = race_group_assignments(clients, &connection_id, "viewer").await;
    let mut positions: Vec<u64> = answers.iter().map(|a| a.log_position).collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(
        positions.len(),
        RACERS,
        "each command appended its own event"
    );

    let connection = get_connection(&mut admin, &connection_id).await;
    assert_eq!(connection.groups.len(), RACERS);
    for racer in 0..RACERS {
        let group = format!("group-{racer}");
        assert!(connection.groups.iter().any(|g| g.idp_group == group));
    }
    assert_eq!(connection.version, start_version + RACERS as u64);
    // They took turns: none decided on state another was about to change.
    assert_eq!(server.server.plane.conflict_retries(), 0);
    assert_log_has_no_gaps(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_unpinned_commands_on_one_organization_all_succeed_each_deciding_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, _) = configured_connection(&server, &mut admin).await;
    let clients = racing_clients(&server).await;
    let retries_before = server.server.plane.conflict_retries();

    // Half the racers enforce SSO, half make it optional: whichever runs next after a
    // racer of the other kind changes the policy, on the version that racer left.
    race(clients, |racer, mut client| {
        let organization_id = org.clone();
        let policy = if racer % 2 == 0 {
            schema::SsoPolicy::Enforced
        } else {
            schema::SsoPolicy::Optional
        };
        async move {
            client
                .set_sso_policy(pb::SetSsoPolicyRequest {
                    organization_id,
                    policy: policy as i32,
                    ..Default::default()
                })
                .await
        }
    })
    .await;
    // They took turns: none decided on state another was about to change.
    assert_eq!(server.server.plane.conflict_retries(), retries_before);
    let changes = events_of_type(&server, "sso_policy_changed").await;
    assert!(changes > 1, "the racers changed the policy {changes} times");
    assert_log_has_no_gaps(&server).await;
}

/// Setup form submissions on one link take turns with each other and with the commands
/// on the connection they configure: submissions and group assignments racing on one
/// connection all succeed, each deciding once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_setup_form_submissions_and_group_assignments_all_succeed_each_deciding_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id, url) = configured_by_link(&server, &mut admin).await;
    let mut forms = Vec::with_capacity(RACERS / 2);
    for _ in 0..RACERS / 2 {
        forms.push(server.form(&url).await);
    }
    let clients = racing_clients(&server).await;
    let retries_before = server.server.plane.conflict_retries();

    let submissions: Vec<_> = forms
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move { client.submit_setup_form(hawthorn_form()).await })
        })
        .collect();
    let assignments = race_group_assignments(clients, &connection_id, "member").await;
    for submission in submissions {
        submission.await.unwrap().expect("a submission succeeds");
    }
    assert_eq!(assignments.len(), RACERS);
    // They took turns: none decided on state another was about to change.
    assert_eq!(server.server.plane.conflict_retries(), retries_before);
    assert_eq!(
        events_of_type(&server, "setup_form_submitted").await,
        1 + RACERS / 2
    );
    assert_log_has_no_gaps(&server).await;
}

/// Activation is decided on the organization's state too: a burst of activations of one
/// connection activates it once, and the others find it active without racing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_activations_of_one_connection_activate_it_once_each_deciding_once() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, connection_id) = configured_connection(&server, &mut admin).await;
    let clients = racing_clients(&server).await;
    let retries_before = server.server.plane.conflict_retries();

    race(clients, |_, mut client| {
        let connection_id = connection_id.clone();
        async move {
            client
                .activate_connection(pb::ActivateConnectionRequest {
                    connection_id,
                    ..Default::default()
                })
                .await
        }
    })
    .await;
    assert_eq!(server.server.plane.conflict_retries(), retries_before);
    assert_eq!(events_of_type(&server, "connection_activated").await, 1);
    assert_log_has_no_gaps(&server).await;
}

#[tokio::test]
async fn a_retried_command_with_the_same_request_id_returns_the_first_outcome_and_appends_nothing()
{
    let server = TestServer::start().await;
    let mut admin = server.admin().await;

    let create = || pb::CreateOrganizationRequest {
        display_name: "Juniper Homes".into(),
        external_id: "juniper-1".into(),
        request_id: "create-juniper".into(),
    };
    let first = admin
        .create_organization(create())
        .await
        .unwrap()
        .into_inner();
    let head = server.head();
    assert_eq!(first.log_position, head);
    let retry = admin
        .create_organization(create())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.head(), head, "the retry appends nothing");
    assert_eq!(retry.log_position, first.log_position);
    let org = first.organization.unwrap();
    assert_eq!(
        retry.organization.unwrap().organization_id,
        org.organization_id
    );

    let issue = || pb::IssueSetupLinkRequest {
        organization_id: org.organization_id.clone(),
        intent: schema::SetupIntent::NewConnection as i32,
        recipient_email: "it@juniper-homes.com".into(),
        request_id: "issue-juniper-link".into(),
        ..Default::default()
    };
    let first = admin.issue_setup_link(issue()).await.unwrap().into_inner();
    let head = server.head();
    let retry = admin.issue_setup_link(issue()).await.unwrap().into_inner();
    assert_eq!(server.head(), head, "the retry appends nothing");
    assert_eq!(retry.log_position, first.log_position);
    assert_eq!(
        retry.setup_link.as_ref().unwrap().setup_link_id,
        first.setup_link.as_ref().unwrap().setup_link_id
    );
    assert_eq!(retry.url, first.url, "the one-time URL is replayed");
    assert!(retry.url.contains("#spl_"), "{}", retry.url);
    // The replayed URL is the real one: it opens the form.
    server
        .form(&retry.url)
        .await
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap();

    let mint = || pb::MintApiTokenRequest {
        name: "onboarding tool".into(),
        role: schema::TokenRole::Admin as i32,
        organization_scope: String::new(),
        request_id: "mint-onboarding".into(),
    };
    let first = admin.mint_api_token(mint()).await.unwrap().into_inner();
    let head = server.head();
    let retry = admin.mint_api_token(mint()).await.unwrap().into_inner();
    assert_eq!(server.head(), head, "the retry appends nothing");
    assert_eq!(retry.log_position, first.log_position);
    assert_eq!(
        retry.api_token.unwrap().token_id,
        first.api_token.unwrap().token_id
    );
    assert_eq!(retry.token, first.token, "the one-time token is replayed");
    let mut onboarding = admin_client(server.addr(), &retry.token).await;
    let tokens = onboarding
        .list_api_tokens(pb::ListApiTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert_eq!(tokens.len(), 2, "bootstrap + one minted token: {tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_retries_of_one_request_create_exactly_one_organization() {
    let server = TestServer::start().await;
    let head = server.head();
    let mut retries = Vec::new();
    for _ in 0..20 {
        let mut client = server.admin().await;
        retries.push(tokio::spawn(async move {
            client
                .create_organization(pb::CreateOrganizationRequest {
                    display_name: "Larch Legal".into(),
                    external_id: "larch-1".into(),
                    request_id: "create-larch".into(),
                })
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut answers = Vec::new();
    for retry in retries {
        answers.push(retry.await.unwrap().expect("every retry succeeds"));
    }
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer.log_position, first.log_position);
        assert_eq!(
            answer.organization.as_ref().unwrap().organization_id,
            first.organization.as_ref().unwrap().organization_id
        );
    }
    assert_eq!(server.head(), head + 1, "one event appended");
    let organizations = server
        .admin()
        .await
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .organizations;
    assert_eq!(organizations.len(), 1);
}

#[tokio::test]
async fn a_request_id_reused_with_a_different_body_is_refused() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Maple Realty".into(),
            external_id: "maple-1".into(),
            request_id: "create-maple".into(),
        })
        .await
        .unwrap();
    let head = server.head();
    let refused = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Maple Realty Group".into(),
            external_id: "maple-2".into(),
            request_id: "create-maple".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(reason(&refused), "REQUEST_ID_REUSED");
    assert_eq!(field(&refused), "request_id");
    assert_eq!(server.head(), head, "nothing appended");
}

#[tokio::test]
async fn request_ids_are_scoped_to_the_principal() {
    let server = TestServer::start().await;
    let mut bootstrap = server.admin().await;
    let minted = bootstrap
        .mint_api_token(pb::MintApiTokenRequest {
            name: "support console".into(),
            role: schema::TokenRole::Admin as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut support = admin_client(server.addr(), &minted.token).await;

    let by_bootstrap = bootstrap
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Oak Leasing".into(),
            external_id: "oak-1".into(),
            request_id: "shared-request-id".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let by_support = support
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Pine Leasing".into(),
            external_id: "pine-1".into(),
            request_id: "shared-request-id".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        by_bootstrap.organization.unwrap().organization_id,
        by_support.organization.unwrap().organization_id
    );
    assert_eq!(by_support.log_position, by_bootstrap.log_position + 1);
    let organizations = bootstrap
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .organizations;
    assert_eq!(organizations.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_retries_of_one_mint_issue_exactly_one_token() {
    // Minting takes no uniqueness lock: the log's idempotency record alone
    // must turn the racing retries into one token.
    let server = TestServer::start().await;
    let head = server.head();
    let mut retries = Vec::new();
    for _ in 0..20 {
        let mut client = server.admin().await;
        retries.push(tokio::spawn(async move {
            client
                .mint_api_token(pb::MintApiTokenRequest {
                    name: "login edge".into(),
                    role: schema::TokenRole::Edge as i32,
                    organization_scope: String::new(),
                    request_id: "mint-edge".into(),
                })
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut answers = Vec::new();
    for retry in retries {
        answers.push(retry.await.unwrap().expect("every retry succeeds"));
    }
    for answer in &answers {
        assert_eq!(answer.log_position, answers[0].log_position);
        assert_eq!(answer.token, answers[0].token);
        assert_eq!(
            answer.api_token.as_ref().unwrap().token_id,
            answers[0].api_token.as_ref().unwrap().token_id
        );
    }
    assert_eq!(server.head(), head + 1, "one event appended");
    let tokens = server
        .admin()
        .await
        .list_api_tokens(pb::ListApiTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert_eq!(tokens.len(), 2, "bootstrap + one edge token");
}
