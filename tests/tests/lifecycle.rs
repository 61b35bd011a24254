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
