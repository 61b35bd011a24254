//! The real binary, killed with SIGKILL and started again on the same data
//! directory: state, credentials and acknowledged writes survive.

use std::sync::{Arc, Mutex};

use signpost_api::admin::v1 as pb;
use signpost_api::audit::v1 as audit;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;

/// The `*.token` files in the data directory.
fn token_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".token"))
        .collect();
    names.sort();
    names
}

/// Over gRPC: an organization with `domain` verified manually and a SAML
/// connection configured from pasted metadata. Returns
/// (organization id, setup link id, setup URL, connection id, last log position).
async fn organization_with_configured_connection(
    addr: std::net::SocketAddr,
    admin: &mut AdminClient,
    domain: &str,
) -> (String, String, String, String, u64) {
    let org = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "Quince Law".into(),
            external_id: format!("ext-{domain}"),
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
            domain: domain.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: org.clone(),
            domain: domain.into(),
            method: pb::VerifyDomainMethod::Manual as i32,
            note: "called their IT".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let issued = admin
        .issue_setup_link(pb::IssueSetupLinkRequest {
            organization_id: org.clone(),
            intent: schema::SetupIntent::NewConnection as i32,
            recipient_email: format!("it@{domain}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let link = issued.setup_link.unwrap();
    let submitted = form_client(addr, &issued.url)
        .await
        .submit_setup_form(saml_xml_form(&idp_metadata(
            &format!("https://idp.{domain}/entity"),
            &format!("https://idp.{domain}/sso"),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.connection_id, link.connection_id);
    (
        org,
        link.setup_link_id,
        issued.url,
        link.connection_id,
        submitted.log_position,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_on_the_same_directory_and_the_lifecycle_continues() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;
    let token_file = dir.path().join("bootstrap-admin.token");
    let token_before = std::fs::read(&token_file).unwrap();
    let token = server.admin_token();
    let mut admin = admin_client(server.addr, &token).await;

    // Half the lifecycle: organization, verified domain, link, form.
    let (org, link_id, url, connection_id, last_position) =
        organization_with_configured_connection(server.addr, &mut admin, "quince-law.com").await;
    let org_before = get_organization(&mut admin, &org).await;
    let connection_before = get_connection(&mut admin, &connection_id).await;
    let link_before = get_setup_link(&mut admin, &link_id).await;
    assert_eq!(link_before.submissions, 1);
    assert_eq!(
        connection_before.status,
        pb::ConnectionStatus::Configured as i32
    );

    server.kill().await;
    let server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;

    // The same bootstrap token, no second one written.
    assert_eq!(std::fs::read(&token_file).unwrap(), token_before);
    assert_eq!(token_files(dir.path()), ["bootstrap-admin.token"]);
    assert_eq!(server.admin_token(), token);
    let mut admin = admin_client(server.addr, &token).await;
    let tokens = admin
        .list_api_tokens(pb::ListApiTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert_eq!(tokens.len(), 1, "no second bootstrap token: {tokens:?}");

    // Reads show the state from before the kill.
    assert_eq!(get_organization(&mut admin, &org).await, org_before);
    assert_eq!(
        get_connection(&mut admin, &connection_id).await,
        connection_before
    );
    assert_eq!(get_setup_link(&mut admin, &link_id).await, link_before);

    // The link still opens the form.
    let shown = form_client(server.addr, &url)
        .await
        .get_setup_form(pb::GetSetupFormRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.connection_id, connection_id);
    assert_eq!(shown.organization_display_name, "Quince Law");

    // The rest of the lifecycle; the log continues where it stopped.
    let assigned = admin
        .assign_group(pb::AssignGroupRequest {
            connection_id: connection_id.clone(),
            idp_group: "Partners".into(),
            role: "admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.log_position, last_position + 1);
    assert_eq!(
        assigned.connection.unwrap().version,
        connection_before.version + 1
    );
    let activated = admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(activated.log_position > assigned.log_position);
    assert_eq!(
        activated.connection.unwrap().status,
        pb::ConnectionStatus::Active as i32
    );
    assert_eq!(
        get_setup_link(&mut admin, &link_id).await.status,
        pb::SetupLinkStatus::Spent as i32
    );

    // The audit timeline has every event once, from before the kill (whatever its
    // database had written by then) and after it (described by the read model's task),
    // and the events after the kill say what they did.
    let mut auditor = audit_client(server.addr, &token).await;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = auditor
            .list_audit_events(audit::ListAuditEventsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let positions: Vec<u64> = entries.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=activated.log_position).collect::<Vec<_>>());
    let actions: Vec<&str> = entries[entries.len() - 3..]
        .iter()
        .map(|e| e.action.as_str())
        .collect();
    // The activation commit also spends the setup link.
    assert_eq!(
        actions,
        ["group.assigned", "connection.activated", "setup_link.spent"]
    );
    // The activation routed the verified domain (a domain change the feed recorded).
    let routed = auditor
        .get_routing_at(audit::GetRoutingAtRequest {
            subject: Some(audit::get_routing_at_request::Subject::Domain(
                "quince-law.com".into(),
            )),
            at: Some(audit::PointInTime {
                at: Some(audit::point_in_time::At::Position(activated.log_position)),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let domain = &routed.domains[0];
    assert_eq!(
        domain.route.as_ref().map(|r| r.connection_id.as_str()),
        Some(connection_id.as_str())
    );
    assert_eq!(
        domain.cause.as_ref().map(|c| c.action.as_str()),
        Some("connection.activated")
    );
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_mutation_survives_a_sigkill() {
    const ROUNDS: usize = 3;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 30;
    /// Kill once this many writes of the round are acknowledged, with the rest in flight.
    const KILL_AFTER: usize = 60;

    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;
    let token = server.admin_token();
    let mut admin = admin_client(server.addr, &token).await;
    let (_, _, _, connection_id, _) =
        organization_with_configured_connection(server.addr, &mut admin, "rowan-realty.com").await;

    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    for round in 0..ROUNDS {
        let acks = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let (ack_sent, mut ack_seen) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let mut client = admin_client(server.addr, &token).await;
            let connection_id = connection_id.clone();
            let acks = acks.clone();
            let ack_sent = ack_sent.clone();
            writers.push(tokio::spawn(async move {
                for n in 0..PER_WRITER {
                    let group = format!("round-{round}-writer-{writer}-{n}");
                    let reply = client
                        .assign_group(pb::AssignGroupRequest {
                            connection_id: connection_id.clone(),
                            idp_group: group.clone(),
                            role: "viewer".into(),
                            ..Default::default()
                        })
                        .await;
                    match reply {
                        Ok(reply) => {
                            let position = reply.into_inner().log_position;
                            acks.lock().unwrap().push((group, position));
                            let _ = ack_sent.send(());
                        }
                        // The server was killed under this write.
                        Err(_) => return,
                    }
                }
            }));
        }
        drop(ack_sent);
        let mut seen = 0;
        while seen < KILL_AFTER && ack_seen.recv().await.is_some() {
            seen += 1;
        }
        server.kill().await;
        for writer in writers {
            writer.await.unwrap();
        }
        let round_acks = std::mem::take(&mut *acks.lock().unwrap());
        assert!(round_acks.len() >= KILL_AFTER, "round {round}");
        acknowledged.extend(round_acks);

        server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;
        admin = admin_client(server.addr, &token).await;
        let connection = get_connection(&mut admin, &connection_id).await;
        for (group, position) in &acknowledged {
            assert!(
                connection.groups.iter().any(|g| &g.idp_group == group),
                "acknowledged at position {position} but lost after SIGKILL: {group}"
            );
        }
        // Writing once more shows the head: past every acknowledged position.
        let max_acknowledged = acknowledged.iter().map(|(_, p)| *p).max().unwrap();
        let probe = admin
            .assign_group(pb::AssignGroupRequest {
                connection_id: connection_id.clone(),
                idp_group: format!("probe-{round}"),
                role: "viewer".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            probe.log_position > max_acknowledged,
            "head {} went back behind acknowledged position {max_acknowledged}",
            probe.log_position - 1
        );
    }
    server.kill().await;
}
