//! The whole connection lifecycle over real gRPC: setup link → form →
//! groups → activation → provider switch, for SAML and OIDC.

use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;

#[tokio::test]
async fn saml_lifecycle_from_nothing_to_an_active_connection() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org =
        organization_with_verified_domain(&server, &mut admin, "Acme Law", "acme-law.com").await;
    let (link_id, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    assert!(url.starts_with("https://signpost.test/setup#spl_"), "{url}");

    let mut form = server.form(&url).await;
    let shown = form
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.organization_display_name, "Acme Law");
    let sp = shown.service_provider.unwrap();
    assert_eq!(
        sp.acs_url,
        format!("https://signpost.test/sso/saml/{connection_id}/acs")
    );
    assert!(sp.metadata_xml.contains(&sp.entity_id));
    assert!(shown.provider_presets.iter().any(|p| p.id == "entra_id"));

    let idp = FakeIdp::start("https://idp.acme-law.com/entity").await;
    let submitted = form
        .submit_setup_form(saml_form(&idp.metadata_url()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.connection_id, connection_id);
    assert_eq!(submitted.submission, 1);
    assert_eq!(submitted.status, pb::ConnectionStatus::Configured as i32);

    let assigned = admin
        .assign_group(pb::AssignGroupRequest {
            connection_id: connection_id.clone(),
            idp_group: "Lawyers".into(),
            role: "editor".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.connection.unwrap().groups[0].role, "editor");

    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let connection = activated.connection.unwrap();
    assert_eq!(connection.status, pb::ConnectionStatus::Active as i32);
    let saml = connection.saml.unwrap();
    assert_eq!(saml.idp_entity_id, "https://idp.acme-law.com/entity");
    assert_eq!(saml.signing_certificates[0].sha256_fingerprint.len(), 64);
    assert_eq!(activated.log_position, server.head());
    // The read model keeps no certificate DER (admin views read it back from the log):
    // every view still shows the certificate the IdP published, byte for byte.
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        idp_certificate_base64(),
    )
    .unwrap();
    assert_eq!(saml.signing_certificates[0].der, der);
    let fetched = get_connection(&mut admin, &connection_id).await;
    assert_eq!(fetched.saml.unwrap().signing_certificates[0].der, der);
    let listed = admin
        .list_connections(pb::ListConnectionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let listed = listed
        .connections
        .into_iter()
        .find(|c| c.connection_id == connection_id)
        .unwrap();
    assert_eq!(listed.saml.unwrap().signing_certificates[0].der, der);

    // Activation spends the link: the form no longer opens.
    let link = admin
        .get_setup_link(pb::GetSetupLinkRequest {
            setup_link_id: link_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        link.setup_link.unwrap().status,
        pb::SetupLinkStatus::Spent as i32
    );
    let refused = form
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&refused), "SETUP_LINK_INVALID");
}

/// The OIDC client secret every OIDC test submits.
const CLIENT_SECRET: &str = "super-secret-value-123";

/// Whether `needle` occurs anywhere in `haystack`.
fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// An organization with a verified domain and an active SAML connection
/// configured through a NEW_CONNECTION link. Returns (organization id, connection id).
async fn organization_with_active_saml_connection(
    server: &TestServer,
    admin: &mut AdminClient,
    domain: &str,
    idp: &FakeIdp,
) -> (String, String) {
    let org = organization_with_verified_domain(server, admin, "Firm", domain).await;
    let (_, url, connection_id) =
        issue_link(admin, &org, schema::SetupIntent::NewConnection, "").await;
    server
        .form(&url)
        .await
        .submit_setup_form(saml_form(&idp.metadata_url()))
        .await
        .unwrap();
    admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    (org, connection_id)
}

#[tokio::test]
async fn oidc_lifecycle_keeps_the_client_secret_out_of_reads_the_log_and_the_data_directory() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org =
        organization_with_verified_domain(&server, &mut admin, "Birch Realty", "birch-realty.com")
            .await;
    let (_, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;

    let mut form = server.form(&url).await;
    let shown = form
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.connection_id, connection_id);
    assert_eq!(
        shown.service_provider.unwrap().oidc_redirect_uri,
        format!("https://signpost.test/sso/oidc/{connection_id}/callback")
    );

    let idp = FakeIdp::start("https://idp.birch-realty.com/entity").await;
    let submitted = form
        .submit_setup_form(oidc_form(&idp.base_url, CLIENT_SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.connection_id, connection_id);
    assert_eq!(submitted.submission, 1);
    assert_eq!(submitted.status, pb::ConnectionStatus::Configured as i32);

    let connection = get_connection(&mut admin, &connection_id).await;
    assert_eq!(connection.protocol, schema::Protocol::Oidc as i32);
    let oidc = connection.oidc.clone().unwrap();
    assert_eq!(oidc.issuer, idp.base_url);
    assert_eq!(
        oidc.authorization_endpoint,
        "https://idp.example.com/oauth2/authorize"
    );
    assert_eq!(oidc.token_endpoint, "https://idp.example.com/oauth2/token");
    assert_eq!(oidc.jwks_uri, "https://idp.example.com/oauth2/keys");
    assert_eq!(
        oidc.userinfo_endpoint,
        "https://idp.example.com/oauth2/userinfo"
    );
    assert_eq!(oidc.client_id, "signpost-client");
    assert!(oidc.client_secret_set);
    assert_eq!(oidc.scopes, ["openid", "email", "profile"]);

    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        activated.connection.clone().unwrap().status,
        pb::ConnectionStatus::Active as i32
    );

    // No read shows the secret.
    let listed = admin
        .list_connections(pb::ListConnectionsRequest {
            organization_id: org.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.connections.len(), 1);
    let reads = format!(
        "{connection:?}\n{listed:?}\n{activated:?}\n{:?}",
        get_connection(&mut admin, &connection_id).await
    );
    assert!(!reads.contains(CLIENT_SECRET), "a read shows the secret");

    // No event payload holds it in clear.
    let events = server.events().await;
    assert!(events
        .iter()
        .any(|e| e.event_type == "connection_configured"));
    for event in &events {
        assert!(
            !contains_bytes(&event.payload, CLIENT_SECRET.as_bytes()),
            "event at position {} holds the secret in clear",
            event.position
        );
        assert!(!format!("{event:?}").contains(CLIENT_SECRET));
    }

    // Nor does any file in the data directory (which does hold the client
    // id in clear: the search would find the secret if it were there).
    let mut client_id_found = false;
    for file in files_under(server.dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        client_id_found |= contains_bytes(&bytes, b"signpost-client");
        assert!(
            !contains_bytes(&bytes, CLIENT_SECRET.as_bytes()),
            "{} holds the secret in clear",
            file.display()
        );
    }
    assert!(client_id_found, "the data directory is searchable");
}

#[tokio::test]
async fn a_setup_link_can_be_submitted_again_until_it_is_spent() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org =
        organization_with_verified_domain(&server, &mut admin, "Cedar Law", "cedar-law.com").await;
    let (link_id, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let mut form = server.form(&url).await;

    let first_idp = FakeIdp::start("https://first.cedar-law.com/entity").await;
    let first = form
        .submit_setup_form(saml_form(&first_idp.metadata_url()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.submission, 1);

    let second = form
        .submit_setup_form(saml_xml_form(&idp_metadata(
            "https://second.cedar-law.com/entity",
            "https://second.cedar-law.com/sso",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.submission, 2);
    assert_eq!(second.connection_id, connection_id);
    assert_eq!(second.status, pb::ConnectionStatus::Configured as i32);

    let connection = get_connection(&mut admin, &connection_id).await;
    let saml = connection.saml.unwrap();
    assert_eq!(saml.idp_entity_id, "https://second.cedar-law.com/entity");
    assert_eq!(saml.source, schema::SamlSource::MetadataXml as i32);
    assert!(saml
        .sso_endpoints
        .iter()
        .any(|e| e.location == "https://second.cedar-law.com/sso"));
    let link = get_setup_link(&mut admin, &link_id).await;
    assert_eq!(link.submissions, 2);
    assert_eq!(link.status, pb::SetupLinkStatus::Open as i32);

    // Activation spends the link: a third submission is refused.
    admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = form
        .submit_setup_form(saml_form(&first_idp.metadata_url()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&refused), "SETUP_LINK_INVALID");
    assert_eq!(
        get_connection(&mut admin, &connection_id)
            .await
            .saml
            .unwrap()
            .idp_entity_id,
        "https://second.cedar-law.com/entity"
    );
}

#[tokio::test]
async fn a_provider_switch_and_the_switch_back_each_move_the_active_connection_in_one_event() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let saml_idp = FakeIdp::start("https://okta.dogwood.com/entity").await;
    let (org, connection_a) =
        organization_with_active_saml_connection(&server, &mut admin, "dogwood.com", &saml_idp)
            .await;

    // Stage the switch: an OIDC connection in standby.
    let (switch_link_id, switch_url, connection_b) =
        issue_link(&mut admin, &org, schema::SetupIntent::StageSwitch, "").await;
    assert_ne!(connection_b, connection_a);
    let oidc_idp = FakeIdp::start("https://unused.dogwood.com/entity").await;
    let staged = server
        .form(&switch_url)
        .await
        .submit_setup_form(oidc_form(&oidc_idp.base_url, CLIENT_SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(staged.status, pb::ConnectionStatus::Standby as i32);
    assert_eq!(
        get_connection(&mut admin, &connection_a).await.status,
        pb::ConnectionStatus::Active as i32
    );

    // Switch: B active, A inactive, one organization event plus the spent link.
    let version_before = get_organization(&mut admin, &org).await.version;
    let head_before = server.head();
    let switched = admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org.clone(),
            connection_id: connection_b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(switched.previous_connection_id, connection_a);
    let organization = switched.organization.unwrap();
    assert_eq!(organization.active_connection_id, connection_b);
    assert_eq!(organization.version, version_before + 1);
    assert_eq!(switched.log_position, server.head());
    assert_eq!(
        server.head(),
        head_before + 2,
        "one switch + one spent link"
    );
    let new_events: Vec<_> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.position > head_before)
        .collect();
    let kinds: Vec<&str> = new_events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "provider_switched").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "setup_link_spent").count(),
        1,
        "{kinds:?}"
    );
    // One commit: the same correlation id on both.
    assert_eq!(new_events[0].correlation_id, new_events[1].correlation_id);
    assert_eq!(
        get_connection(&mut admin, &connection_b).await.status,
        pb::ConnectionStatus::Active as i32
    );
    assert_eq!(
        get_connection(&mut admin, &connection_a).await.status,
        pb::ConnectionStatus::Inactive as i32
    );
    assert_eq!(
        get_setup_link(&mut admin, &switch_link_id).await.status,
        pb::SetupLinkStatus::Spent as i32
    );

    // Switch back: A active again, B inactive, exactly one event.
    let head_before = server.head();
    let switched_back = admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org.clone(),
            connection_id: connection_a.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(switched_back.previous_connection_id, connection_b);
    let organization = switched_back.organization.unwrap();
    assert_eq!(organization.active_connection_id, connection_a);
    assert_eq!(organization.version, version_before + 2);
    assert_eq!(server.head(), head_before + 1);
    assert_eq!(switched_back.log_position, server.head());
    assert_eq!(
        get_connection(&mut admin, &connection_a).await.status,
        pb::ConnectionStatus::Active as i32
    );
    assert_eq!(
        get_connection(&mut admin, &connection_b).await.status,
        pb::ConnectionStatus::Inactive as i32
    );
    let refused = server
        .form(&switch_url)
        .await
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_deactivated_connection_is_inactive_and_no_switch_can_be_staged_without_an_active_one() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let idp = FakeIdp::start("https://idp.elm-estates.com/entity").await;
    let (org, connection_id) =
        organization_with_active_saml_connection(&server, &mut admin, "elm-estates.com", &idp)
            .await;

    let deactivated = admin
        .deactivate_connection(pb::DeactivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        deactivated.connection.unwrap().status,
        pb::ConnectionStatus::Inactive as i32
    );
    assert_eq!(deactivated.log_position, server.head());
    assert_eq!(
        get_organization(&mut admin, &org)
            .await
            .active_connection_id,
        ""
    );

    let refused = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: org.clone(),
            intent: schema::SetupIntent::StageSwitch as i32,
            recipient_email: "it@elm-estates.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused), "NO_ACTIVE_CONNECTION");

    // Deactivating again is refused: nothing is active.
    let again = admin
        .deactivate_connection(pb::DeactivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&again), "CONNECTION_NOT_ACTIVE");
}

#[tokio::test]
async fn activation_needs_a_verified_domain_and_manual_verification_records_who_vouched() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Fir Partners".into(),
            external_id: "fir-1".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap()
        .organization_id;
    admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.clone(),
            domain: "fir-partners.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let idp = FakeIdp::start("https://idp.fir-partners.com/entity").await;
    server
        .form(&url)
        .await
        .submit_setup_form(saml_form(&idp.metadata_url()))
        .await
        .unwrap();

    let head = server.head();
    let refused = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused), "NO_VERIFIED_DOMAIN");
    assert_eq!(server.head(), head, "a refused command appends nothing");

    let mut verify = tonic::Request::new(pb::VerifyDomainRequest {
        organization_id: org.clone(),
        domain: "fir-partners.com".into(),
        method: pb::VerifyDomainMethod::Manual as i32,
        note: "called their IT".into(),
        ..Default::default()
    });
    verify.metadata_mut().insert(
        "x-signpost-on-behalf-of",
        "jane@platform.example".parse().unwrap(),
    );
    let verified = admin.verify_domain(verify).await.unwrap().into_inner();
    let claim = verified.domain_claim.unwrap();
    assert_eq!(claim.status, pb::DomainStatus::Verified as i32);
    assert_eq!(
        claim.verification_method,
        schema::VerificationMethod::Manual as i32
    );
    assert!(
        claim.verified_by.contains("bootstrap admin"),
        "{}",
        claim.verified_by
    );
    assert!(
        claim.verified_by.contains("jane@platform.example"),
        "{}",
        claim.verified_by
    );
    assert!(claim.verify_time.is_some());
    let event = server.events().await.pop().unwrap();
    assert_eq!(event.position, verified.log_position);
    assert_eq!(event.event_type, "domain_verified");
    assert_eq!(event.actor.unwrap().on_behalf_of, "jane@platform.example");
    let shown = get_organization(&mut admin, &org).await;
    assert_eq!(shown.domains[0].verified_by, claim.verified_by);

    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        activated.connection.unwrap().status,
        pb::ConnectionStatus::Active as i32
    );
}

#[tokio::test]
async fn every_mutation_answers_with_the_head_it_reached_and_reads_right_after_see_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut positions = Vec::new();

    let created = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Grove Leasing".into(),
            external_id: "grove-1".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.log_position, server.head());
    positions.push(created.log_position);
    let org = created.organization.unwrap().organization_id;
    assert_eq!(
        get_organization(&mut admin, &org).await.display_name,
        "Grove Leasing"
    );

    let claimed = admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.clone(),
            domain: "Grove-Leasing.COM.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claimed.log_position, server.head());
    positions.push(claimed.log_position);
    let shown = get_organization(&mut admin, &org).await;
    assert_eq!(shown.domains[0].domain, "grove-leasing.com");
    assert_eq!(shown.domains[0].status, pb::DomainStatus::Pending as i32);

    let verified = admin
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: org.clone(),
            domain: "grove-leasing.com".into(),
            method: pb::VerifyDomainMethod::Manual as i32,
            note: "signed contract".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.log_position, server.head());
    positions.push(verified.log_position);
    assert_eq!(
        get_organization(&mut admin, &org).await.domains[0].status,
        pb::DomainStatus::Verified as i32
    );

    let policy = admin
        .set_sso_policy(pb::SetSsoPolicyRequest {
            organization_id: org.clone(),
            policy: schema::SsoPolicy::Enforced as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.log_position, server.head());
    positions.push(policy.log_position);
    assert_eq!(
        get_organization(&mut admin, &org).await.sso_policy,
        schema::SsoPolicy::Enforced as i32
    );

    let issued = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: org.clone(),
            intent: schema::SetupIntent::NewConnection as i32,
            recipient_email: "it@grove-leasing.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.log_position, server.head());
    positions.push(issued.log_position);
    let link = issued.setup_link.unwrap();
    assert_eq!(
        get_setup_link(&mut admin, &link.setup_link_id).await.status,
        pb::SetupLinkStatus::Open as i32
    );

    let idp = FakeIdp::start("https://idp.grove-leasing.com/entity").await;
    let submitted = server
        .form(&issued.url)
        .await
        .submit_setup_form(saml_form(&idp.metadata_url()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.log_position, server.head());
    positions.push(submitted.log_position);
    let connection_id = link.connection_id;
    assert_eq!(
        get_connection(&mut admin, &connection_id).await.status,
        pb::ConnectionStatus::Configured as i32
    );

    let assigned = admin
        .assign_group(pb::AssignGroupRequest {
            connection_id: connection_id.clone(),
            idp_group: "Leasing Agents".into(),
            role: "agent".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.log_position, server.head());
    positions.push(assigned.log_position);
    assert_eq!(
        get_connection(&mut admin, &connection_id).await.groups,
        [pb::GroupAssignment {
            idp_group: "Leasing Agents".into(),
            role: "agent".into()
        }]
    );

    let required = admin
        .set_group_requirement(pb::SetGroupRequirementRequest {
            connection_id: connection_id.clone(),
            require_group: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(required.log_position, server.head());
    positions.push(required.log_position);
    assert!(
        get_connection(&mut admin, &connection_id)
            .await
            .require_group
    );

    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.log_position, server.head());
    positions.push(activated.log_position);
    assert_eq!(
        get_organization(&mut admin, &org)
            .await
            .active_connection_id,
        connection_id
    );

    let minted = admin
        .mint_api_token(pb::MintApiTokenRequest {
            name: "support console".into(),
            role: schema::TokenRole::Admin as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.log_position, server.head());
    positions.push(minted.log_position);
    let mut support = admin_client(server.addr(), &minted.token).await;
    assert_eq!(
        get_organization(&mut support, &org)
            .await
            .active_connection_id,
        connection_id
    );

    let (second_link_id, _, _) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    positions.push(server.head());
    let revoked = admin
        .revoke_setup_link(pb::RevokeSetupLinkRequest {
            setup_link_id: second_link_id,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.log_position, server.head());
    positions.push(revoked.log_position);
    assert_eq!(
        revoked.setup_link.unwrap().status,
        pb::SetupLinkStatus::Revoked as i32
    );

    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions grow: {positions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_list_in_pages_each_once_in_id_order() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut created = Vec::new();
    for n in 0..7 {
        let organization =
            new_organization(&mut admin, format!("Firm {n}"), format!("ext-{n}")).await;
        created.push(organization.organization_id);
    }
    created.sort();
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_organizations(pb::ListOrganizationsRequest {
                page_size: 3,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.organizations.len() <= 3);
        listed.extend(page.organizations.into_iter().map(|o| o.organization_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, created);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn metadata_mid_rotation_is_accepted_without_its_expired_certificate() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org =
        organization_with_verified_domain(&server, &mut admin, "Rota Law", "rota-law.com").await;
    let (_, url, connection_id) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let mut form = server.form(&url).await;
    // The IdP still lists the certificate it retired (expired in 2020) beside its current one.
    let retired: String =
        include_str!("../../crates/signpost-idp/testdata/rsa2048_expired_2020.pem")
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
    let metadata = idp_metadata(
        "https://idp.rota-law.com/entity",
        "https://idp.rota-law.com/sso",
    )
    .replace(
        "<md:SingleSignOnService",
        &format!(
            "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{retired}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService"
        ),
    );
    let submitted = form
        .submit_setup_form(saml_xml_form(&metadata))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.status, pb::ConnectionStatus::Configured as i32);
    let saml = get_connection(&mut admin, &connection_id)
        .await
        .saml
        .unwrap();
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        idp_certificate_base64(),
    )
    .unwrap();
    let kept: Vec<&[u8]> = saml
        .signing_certificates
        .iter()
        .map(|c| c.der.as_slice())
        .collect();
    assert_eq!(kept, vec![der.as_slice()], "only the current certificate");
}

/// Every id a paged list gives, page after page: `page(token)` answers one page's ids
/// and the next page's token.
async fn all_pages<F, Fut>(mut page: F) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<String>, String)>,
{
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let (ids, next_page_token) = page(page_token).await;
        listed.extend(ids);
        if next_page_token.is_empty() {
            return listed;
        }
        page_token = next_page_token;
    }
}

/// Every connection id a `ListConnections` call gives, page after page (`page_size` each).
async fn listed_connections(
    admin: &mut AdminClient,
    organization_id: &str,
    page_size: i32,
) -> Vec<String> {
    all_pages(|page_token| {
        let mut admin = admin.clone();
        let organization_id = organization_id.to_owned();
        async move {
            let page = admin
                .list_connections(pb::ListConnectionsRequest {
                    organization_id,
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.connections.len() <= page_size as usize);
            let ids = page.connections.into_iter().map(|c| c.connection_id);
            (ids.collect(), page.next_page_token)
        }
    })
    .await
}

#[tokio::test]
async fn connections_list_by_organization_with_drafts_in_id_order_across_pages() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut all = Vec::new();
    let mut of = Vec::new();
    for (n, (configured, drafts)) in [(2, 2), (1, 3)].into_iter().enumerate() {
        let org = organization_with_verified_domain(
            &server,
            &mut admin,
            &format!("Firm {n}"),
            &format!("firm-{n}.example"),
        )
        .await;
        let mut ids = Vec::new();
        for c in 0..configured + drafts {
            let (_, url, connection_id) =
                issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
            if c < configured {
                let xml = idp_metadata(
                    &format!("https://idp.firm-{n}.example/{c}"),
                    &format!("https://idp.firm-{n}.example/{c}/sso"),
                );
                server
                    .form(&url)
                    .await
                    .submit_setup_form(saml_xml_form(&xml))
                    .await
                    .unwrap();
            }
            ids.push(connection_id);
        }
        ids.sort();
        all.extend(ids.iter().cloned());
        of.push((org, ids));
    }
    all.sort();
    // Each organization's own, configured and drafts alike, once each and in id order,
    // whatever the page size; and every one of them without a filter.
    for (org, ids) in &of {
        for page_size in [1, 2, 50] {
            assert_eq!(
                listed_connections(&mut admin, org, page_size).await,
                *ids,
                "organization {org}, pages of {page_size}"
            );
        }
    }
    assert_eq!(listed_connections(&mut admin, "", 3).await, all);
}

/// Every setup link id a `ListSetupLinks` call gives, page after page (`page_size` each),
/// each link checked to be the organization's.
async fn listed_setup_links(
    admin: &mut AdminClient,
    organization_id: &str,
    page_size: i32,
) -> Vec<String> {
    all_pages(|page_token| {
        let mut admin = admin.clone();
        let organization_id = organization_id.to_owned();
        async move {
            let page = admin
                .list_setup_links(pb::ListSetupLinksRequest {
                    organization_id: organization_id.clone(),
                    page_size,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.setup_links.len() <= page_size as usize);
            for link in &page.setup_links {
                assert!(organization_id.is_empty() || link.organization_id == organization_id);
            }
            let ids = page.setup_links.into_iter().map(|l| l.setup_link_id);
            (ids.collect(), page.next_page_token)
        }
    })
    .await
}

#[tokio::test]
async fn setup_links_list_by_organization_in_id_order_across_pages() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let mut all = Vec::new();
    let mut of = Vec::new();
    for n in 0..3 {
        let org = organization_with_verified_domain(
            &server,
            &mut admin,
            &format!("Firm {n}"),
            &format!("firm-{n}.example"),
        )
        .await;
        // A new link supersedes the organization's open ones of its intent: the
        // superseded ones (revoked) are listed too.
        let mut ids = Vec::new();
        for _ in 0..=n {
            let (link_id, _, _) =
                issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
            ids.push(link_id);
        }
        ids.sort();
        all.extend(ids.iter().cloned());
        of.push((org, ids));
    }
    all.sort();
    for (org, ids) in &of {
        for page_size in [1, 2, 50] {
            assert_eq!(
                listed_setup_links(&mut admin, org, page_size).await,
                *ids,
                "organization {org}, pages of {page_size}"
            );
        }
    }
    assert_eq!(
        listed_setup_links(&mut admin, "no-such-organization", 10).await,
        Vec::<String>::new()
    );
    assert_eq!(listed_setup_links(&mut admin, "", 2).await, all);
}

/// The read model keeps a closed link's state alone; its views are read from its
/// stream in the log, and must show what they showed while it was open.
#[tokio::test]
async fn a_closed_setup_link_reads_back_whole_from_the_log() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let get = |admin: &mut AdminClient, id: &str| {
        let mut admin = admin.clone();
        let id = id.to_owned();
        async move {
            admin
                .get_setup_link(pb::GetSetupLinkRequest { setup_link_id: id })
                .await
                .unwrap()
                .into_inner()
                .setup_link
                .unwrap()
        }
    };
    let (first, _, _) = issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let open = get(&mut admin, &first).await;
    assert_eq!(open.status, pb::SetupLinkStatus::Open as i32);
    assert_eq!(open.recipient_email, "it-admin@example.org");
    assert!(open.create_time.is_some() && open.expire_time.is_some());
    // Another organization's link, open, whose id sorts between this one's and the next:
    // a page across every organization mixes links read from the model and from the log.
    let beta = organization_with_verified_domain(&server, &mut admin, "Beta", "beta-law.com").await;
    let (between, _, _) =
        issue_link(&mut admin, &beta, schema::SetupIntent::NewConnection, "").await;
    let between = get(&mut admin, &between).await;

    // A newer link supersedes it; the newer one is then revoked.
    let (second, _, _) = issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let second_open = get(&mut admin, &second).await;
    let revoked = admin
        .revoke_setup_link(pb::RevokeSetupLinkRequest {
            setup_link_id: second.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .setup_link
        .unwrap();
    let closed = |link: &pb::SetupLink| pb::SetupLink {
        status: pb::SetupLinkStatus::Revoked as i32,
        ..link.clone()
    };
    assert_eq!(revoked, closed(&second_open), "the revocation's answer");
    assert_eq!(get(&mut admin, &second).await, revoked);
    assert_eq!(get(&mut admin, &first).await, closed(&open), "superseded");

    // Listed, by organization and across every organization, the same.
    for organization_id in [org.clone(), String::new()] {
        let mut expected = vec![closed(&open), revoked.clone()];
        if organization_id.is_empty() {
            expected.push(between.clone());
        }
        let listed = admin
            .list_setup_links(pb::ListSetupLinksRequest {
                organization_id,
                page_size: 50,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .setup_links;
        expected.sort_by(|a, b| a.setup_link_id.cmp(&b.setup_link_id));
        assert_eq!(listed, expected);
    }
    assert_eq!(
        between.status,
        pb::SetupLinkStatus::Open as i32,
        "the page's middle link is open, read from the model"
    );
    assert!(open.setup_link_id < between.setup_link_id && between.setup_link_id < second);
    // Revoking it again is refused as before: the model still knows it is closed.
    let again = admin
        .revoke_setup_link(pb::RevokeSetupLinkRequest {
            setup_link_id: first,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "SETUP_LINK_NOT_OPEN");
}

#[tokio::test]
async fn the_server_sweeps_open_setup_links_past_their_expiry_into_the_log() {
    let server = TestServer::start_with(|config| {
        config.link_expiry_sweep_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let mut admin = server.admin().await;
    let org = organization_with_verified_domain(&server, &mut admin, "Acme", "acme-law.com").await;
    let (due, _, _) = issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    // And a 30-day link, in another organization (a new link supersedes the open one
    // of its intent in its own).
    let other =
        organization_with_verified_domain(&server, &mut admin, "Other", "other-firm.com").await;
    let kept = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: other,
            intent: schema::SetupIntent::NewConnection as i32,
            recipient_email: "it-admin@example.org".into(),
            lifetime_seconds: 30 * 24 * 3600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .setup_link
        .unwrap()
        .setup_link_id;

    let expired_in_log = || async {
        let store = server.server.plane.store();
        store
            .read_range(1, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "setup_link_expired")
            .map(|e| (e.stream_id, e.actor.map(|a| a.kind)))
            .collect::<Vec<_>>()
    };
    // Sweeps run meanwhile, and find nothing due.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(expired_in_log().await.is_empty());

    server.clock.advance(chrono::Duration::hours(73));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let recorded = loop {
        let recorded = expired_in_log().await;
        if !recorded.is_empty() || std::time::Instant::now() > deadline {
            break recorded;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // The due link, once, by the system; the 30-day link stays open.
    assert_eq!(
        recorded,
        vec![(
            format!("setup-link-{due}"),
            Some(schema::ActorKind::System as i32)
        )]
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(expired_in_log().await.len(), 1, "recorded once");
    let kept = admin
        .get_setup_link(pb::GetSetupLinkRequest {
            setup_link_id: kept,
        })
        .await
        .unwrap()
        .into_inner()
        .setup_link
        .unwrap();
    assert_eq!(kept.status, pb::SetupLinkStatus::Open as i32);
}

/// `full` with what a BASIC view leaves out cleared.
fn basic_of(full: &pb::Connection) -> pb::Connection {
    pb::Connection {
        saml: None,
        oidc: None,
        claim_mapping: None,
        service_provider: None,
        ..full.clone()
    }
}

#[tokio::test]
async fn a_basic_view_is_the_full_view_without_settings_in_reads_and_command_answers() {
    use prost::Message;

    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, connection_id, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "Linden",
        &["linden-law.com"],
        "https://idp.linden-law.com/e",
    )
    .await;
    let get = |view: pb::ConnectionView| pb::GetConnectionRequest {
        connection_id: connection_id.clone(),
        view: view as i32,
    };

    // Reads: unset is FULL; BASIC is FULL without the settings, and much smaller.
    let full = admin
        .get_connection(get(pb::ConnectionView::Full))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    assert!(full.saml.is_some() && full.service_provider.is_some() && full.claim_mapping.is_some());
    assert_eq!(get_connection(&mut admin, &connection_id).await, full);
    let basic = admin
        .get_connection(get(pb::ConnectionView::Basic))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    assert_eq!(basic, basic_of(&full));
    assert_eq!(basic.protocol, schema::Protocol::Saml as i32);
    assert_eq!(basic.status, pb::ConnectionStatus::Active as i32);
    assert!(
        basic.encoded_len() * 4 < full.encoded_len(),
        "BASIC {} bytes, FULL {} bytes",
        basic.encoded_len(),
        full.encoded_len()
    );

    // A command's answer in BASIC carries the change and the new version.
    let assigned = admin
        .assign_group(pb::AssignGroupRequest {
            connection_id: connection_id.clone(),
            idp_group: "Partners".into(),
            role: "admin".into(),
            view: pb::ConnectionView::Basic as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let answered = assigned.connection.unwrap();
    let now = get_connection(&mut admin, &connection_id).await;
    assert_eq!(answered, basic_of(&now));
    assert_eq!(answered.version, full.version + 1);
    assert_eq!(
        answered.groups,
        [pb::GroupAssignment {
            idp_group: "Partners".into(),
            role: "admin".into()
        }]
    );
    // ... and in FULL (or unset), the whole connection.
    let required = admin
        .set_group_requirement(pb::SetGroupRequirementRequest {
            connection_id: connection_id.clone(),
            require_group: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        required.connection.unwrap(),
        get_connection(&mut admin, &connection_id).await
    );

    // Lists: the same rule for every item.
    let list = |view: pb::ConnectionView| pb::ListConnectionsRequest {
        organization_id: org.clone(),
        view: view as i32,
        ..Default::default()
    };
    let full_items = admin
        .list_connections(list(pb::ConnectionView::Unspecified))
        .await
        .unwrap()
        .into_inner()
        .connections;
    let basic_items = admin
        .list_connections(list(pb::ConnectionView::Basic))
        .await
        .unwrap()
        .into_inner()
        .connections;
    assert_eq!(full_items.len(), 1);
    assert_eq!(
        basic_items,
        full_items.iter().map(basic_of).collect::<Vec<_>>()
    );
}
