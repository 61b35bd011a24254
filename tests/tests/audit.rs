//! The audit timeline, the verifiable log, point-in-time answers and the event feed, over
//! real gRPC: pagination and export while the log grows, a provider switch and back,
//! organization-scoped auditors, subscribers that disconnect or fall behind, redaction of
//! secrets everywhere, and a tampered log that the server refuses to serve.

use std::time::Duration;

use signpost_api::admin::v1 as pb;
use signpost_api::audit::v1 as audit;
use signpost_api::eventlog::v1 as feed;
use signpost_api::log::v1 as schema;
use signpost_e2e::*;
use signpost_eventlog::file_store::raw;
use signpost_eventlog::{verify_chain, ChainVerdict, EventStore, FileEventStore, FileOptions};
use tonic::Code;
use tonic_types::StatusExt;

async fn create_organization(admin: &mut AdminClient, name: &str) -> (String, u64) {
    let reply = admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: name.into(),
            external_id: format!("ext-{name}"),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    (
        reply.organization.unwrap().organization_id,
        reply.log_position,
    )
}

fn org_filter(organization_id: &str) -> Option<audit::AuditFilter> {
    Some(audit::AuditFilter {
        organization_id: organization_id.into(),
        ..Default::default()
    })
}

/// Positions of the events in `organization_id`'s own stream, from the log itself.
async fn organization_positions(server: &TestServer, organization_id: &str) -> Vec<u64> {
    let stream = format!("organization-{organization_id}");
    server
        .server
        .plane
        .store()
        .read_range(1, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .map(|e| e.position)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_exports_have_no_duplicates_and_no_gaps_while_the_log_grows() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, _) = create_organization(&mut admin, "Growing Law").await;
    let auditor = mint_token(&mut admin, schema::TokenRole::Auditor).await;

    let addr = server.addr();
    let token = server.admin_token.clone();
    let org_for_writer = org.clone();
    // The writer keeps appending (at least 40 rounds) until the reader says its export has
    // been resumed twice while the log grew, so that both happen whatever the machine's speed.
    let keep_writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writing = keep_writing.clone();
    let writer = tokio::spawn(async move {
        let mut admin = admin_client(addr, &token).await;
        let mut i = 0;
        // (An organization holds at most 200 domains.)
        while i < 190 && (i < 40 || writing.load(std::sync::atomic::Ordering::SeqCst)) {
            i += 1;
            admin
                .claim_domain(pb::ClaimDomainRequest {
                    organization_id: org_for_writer.clone(),
                    domain: format!("growing-law-{i}.com"),
                    ..Default::default()
                })
                .await
                .unwrap();
            // Noise from another organization, interleaved.
            create_organization(&mut admin, &format!("Noise {i}")).await;
        }
    });

    let mut client = audit_client(addr, &auditor).await;
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_audit_events(audit::ListAuditEventsRequest {
                filter: org_filter(&org),
                page_size: 3,
                page_token: token.clone(),
                order: audit::Order::Ascending as i32,
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.entries.iter().map(|e| e.position));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    let mut exported = Vec::new();
    let mut after = 0;
    let mut rounds = 0;
    loop {
        let writer_done = writer.is_finished();
        let mut stream = client
            .export_audit_events(audit::ExportAuditEventsRequest {
                filter: org_filter(&org),
                after_position: after,
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(batch) = stream.message().await.unwrap() {
            assert!(batch.position >= after && batch.position <= batch.head);
            exported.extend(batch.decode_entries().unwrap().iter().map(|e| e.position));
            after = batch.position;
        }
        rounds += 1;
        if rounds >= 3 {
            keep_writing.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        if writer_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(rounds > 1, "the export was resumed while the log grew");

    let expected = organization_positions(&server, &org).await;
    let last_paged = *paged.last().unwrap();
    let expected_paged: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|p| *p <= last_paged)
        .collect();
    assert_eq!(paged, expected_paged, "pages: no duplicates, no gaps");
    assert_eq!(exported, expected, "export: no duplicates, no gaps");
    assert_eq!(expected.len(), 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_at_follows_a_provider_switch_and_a_switch_back() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut admin = server.admin().await;
    let (org, first, activated) = active_saml_organization(
        &mut admin,
        addr,
        "Quill",
        &["quill-law.com", "quill-law.net"],
        "https://idp-one.example/e",
    )
    .await;
    let (_, url, second) = issue_link(&mut admin, &org, schema::SetupIntent::StageSwitch, "").await;
    server
        .form(&url)
        .await
        .submit_setup_form(saml_xml_form(&idp_metadata(
            "https://idp-two.example/e",
            "https://idp-two.example/sso",
        )))
        .await
        .unwrap();
    let support = admin
        .mint_api_token(pb::MintApiTokenRequest {
            name: "Support console".into(),
            role: schema::TokenRole::Admin as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let support_id = support.api_token.unwrap().token_id;
    let mut support_admin =
        pb::connection_admin_service_client::ConnectionAdminServiceClient::with_interceptor(
            channel(addr).await,
            signpost::cli::interceptor(&support.token, Some("carol@platform.example")).unwrap(),
        );
    let switched = support_admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org.clone(),
            connection_id: second.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    let back = admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org.clone(),
            connection_id: first.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;

    let auditor = mint_token(&mut admin, schema::TokenRole::Auditor).await;
    let mut client = audit_client(addr, &auditor).await;
    let routing_at = |subject: audit::get_routing_at_request::Subject,
                      at: audit::point_in_time::At| {
        let mut client = client.clone();
        async move {
            client
                .get_routing_at(audit::GetRoutingAtRequest {
                    subject: Some(subject),
                    at: Some(audit::PointInTime { at: Some(at) }),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    use audit::get_routing_at_request::Subject;
    use audit::point_in_time::At;
    let domain = || Subject::Domain("Quill-Law.com".into());
    let connection_of = |answer: &audit::GetRoutingAtResponse| {
        answer.domains[0]
            .route
            .as_ref()
            .map(|r| r.connection_id.clone())
            .unwrap_or_default()
    };

    // A switch commit also spends the staging link: find the switch events themselves.
    let switches: Vec<u64> = client
        .clone()
        .list_audit_events(audit::ListAuditEventsRequest {
            filter: Some(audit::AuditFilter {
                event_types: vec!["provider_switched".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .iter()
        .map(|e| e.position)
        .collect();
    let [switch, switch_back] = switches[..] else {
        panic!("two switches expected, got {switches:?}")
    };
    assert!(switch <= switched && switch_back <= back);

    let before = routing_at(domain(), At::Position(switch - 1)).await;
    assert_eq!(connection_of(&before), first);
    assert_eq!(before.domains[0].domain, "quill-law.com");
    let cause = before.domains[0].cause.as_ref().unwrap();
    assert_eq!(cause.action, "connection.activated");
    assert!(cause.position <= activated);

    let between = routing_at(domain(), At::Position(switch)).await;
    assert_eq!(connection_of(&between), second);
    let cause = between.domains[0].cause.clone().unwrap();
    assert_eq!(cause.action, "provider.switched");
    assert_eq!(cause.position, switch);
    let actor = cause.actor.clone().unwrap();
    assert_eq!(actor.id, support_id);
    assert_eq!(actor.display_name, "Support console");
    assert_eq!(actor.on_behalf_of, "carol@platform.example");
    assert!(
        cause.summary.starts_with("provider switched from"),
        "{}",
        cause.summary
    );

    // The same question by time: the moment the switch was recorded.
    let by_time = routing_at(domain(), At::Time(cause.time.unwrap())).await;
    assert_eq!(connection_of(&by_time), second);
    assert!(by_time.position >= switch && by_time.position <= switched);

    let after = routing_at(domain(), At::Position(back)).await;
    assert_eq!(connection_of(&after), first);
    assert_eq!(
        after.domains[0].cause.as_ref().unwrap().position,
        switch_back
    );

    // The whole organization moved at once.
    let whole = routing_at(Subject::OrganizationId(org.clone()), At::Position(switch)).await;
    assert_eq!(whole.domains.len(), 2);
    assert!(whole
        .domains
        .iter()
        .all(|d| d.route.as_ref().unwrap().connection_id == second));

    // Connection states then.
    let status_at = |connection: String, position: u64| {
        let mut client = client.clone();
        async move {
            client
                .get_connection_at(audit::GetConnectionAtRequest {
                    connection_id: connection,
                    at: Some(audit::PointInTime {
                        at: Some(At::Position(position)),
                    }),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let standby = status_at(second.clone(), switch - 1).await;
    assert_eq!(
        standby.connection.unwrap().status,
        pb::ConnectionStatus::Standby as i32
    );
    let old = status_at(first.clone(), switch).await;
    assert_eq!(
        old.connection.unwrap().status,
        pb::ConnectionStatus::Inactive as i32
    );
    assert_eq!(old.last_change.unwrap().position, switch);
    let new = status_at(second.clone(), switch).await;
    assert_eq!(
        new.connection.unwrap().status,
        pb::ConnectionStatus::Active as i32
    );
    let restored = status_at(first.clone(), back).await;
    let restored_connection = restored.connection.unwrap();
    assert_eq!(
        restored_connection.status,
        pb::ConnectionStatus::Active as i32
    );
    assert_eq!(
        restored_connection.saml.unwrap().idp_entity_id,
        "https://idp-one.example/e"
    );
    let verified = client
        .verify_log(audit::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verified.intact);
    assert_eq!(verified.head_position, server.head());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_scoped_auditor_reads_nothing_of_another_organization() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut admin = server.admin().await;
    let (mine, _, _) = active_saml_organization(
        &mut admin,
        addr,
        "Mine",
        &["mine-law.com"],
        "https://idp-mine.example/e",
    )
    .await;
    let (theirs, their_connection, _) = active_saml_organization(
        &mut admin,
        addr,
        "Theirs",
        &["theirs-law.com"],
        "https://idp-theirs.example/e",
    )
    .await;
    let (_, token) = mint_scoped_auditor(&mut admin, &mine).await;
    let mut client = audit_client(addr, &token).await;
    use audit::get_routing_at_request::Subject;

    // Lists and exports are forced to the auditor's organization.
    let all = client
        .list_audit_events(audit::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!all.is_empty());
    assert!(all
        .iter()
        .all(|e| e.target.as_ref().unwrap().organization_id == mine));
    for filter in [
        audit::AuditFilter {
            connection_id: their_connection.clone(),
            ..Default::default()
        },
        audit::AuditFilter {
            event_types: vec!["api_token_issued".into()],
            ..Default::default()
        },
    ] {
        let entries = client
            .list_audit_events(audit::ListAuditEventsRequest {
                filter: Some(filter),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(entries.is_empty(), "{entries:?}");
    }
    let refused = client
        .list_audit_events(audit::ListAuditEventsRequest {
            filter: org_filter(&theirs),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut export = client
        .export_audit_events(audit::ExportAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    while let Some(batch) = export.message().await.unwrap() {
        assert!(batch.decode_entries().unwrap().iter().all(|e| e
            .target
            .as_ref()
            .unwrap()
            .organization_id
            == mine));
    }
    let refused = client
        .export_audit_events(audit::ExportAuditEventsRequest {
            filter: org_filter(&theirs),
            after_position: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Point-in-time answers about the other organization: not found, as if absent.
    for subject in [
        Subject::Domain("theirs-law.com".into()),
        Subject::OrganizationId(theirs.clone()),
    ] {
        let refused = client
            .get_routing_at(audit::GetRoutingAtRequest {
                subject: Some(subject),
                at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);
    }
    let refused = client
        .get_connection_at(audit::GetConnectionAtRequest {
            connection_id: their_connection,
            at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let own = client
        .get_routing_at(audit::GetRoutingAtRequest {
            subject: Some(Subject::OrganizationId(mine.clone())),
            at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.domains.len(), 1);

    // Log-wide answers carry hashes, not content: allowed. Signing is for admins.
    let verified = client
        .verify_log(audit::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verified.intact);
    client
        .list_checkpoints(audit::ListCheckpointsRequest::default())
        .await
        .unwrap();
    let refused = client
        .create_checkpoint(audit::CreateCheckpointRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // The raw event feed is for admins only.
    let mut feed_client = eventlog_client(channel(addr).await, &token);
    let refused = feed_client
        .subscribe(feed::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // And an edge token reads no audit at all.
    let edge = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let refused = audit_client(addr, &edge)
        .await
        .verify_log(audit::VerifyLogRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

fn resume_position(status: &tonic::Status) -> u64 {
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "SUBSCRIBER_TOO_SLOW");
    let resume: u64 = info.metadata["resume_from_position"].parse().unwrap();
    assert!(status
        .message()
        .contains(&format!("resume_from_position={resume}")));
    resume
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_disconnect_or_fall_behind_resume_without_gaps_or_repeats() {
    let server = TestServer::start_with(|config| config.event_feed_max_lag = 64).await;
    let addr = server.addr();
    let token = server.admin_token.clone();
    let writer_token = token.clone();
    let writer = tokio::spawn(async move {
        let mut admin = admin_client(addr, &writer_token).await;
        for i in 0..150 {
            create_organization(&mut admin, &format!("Feed {i}")).await;
        }
    });

    // Disconnect after a few messages, many times, while the writer appends.
    let mut received: Vec<u64> = Vec::new();
    let mut next = 1;
    let mut reconnects = 0;
    loop {
        let writer_done = writer.is_finished();
        let mut client = eventlog_client(channel(addr).await, &token);
        let mut stream = client
            .subscribe(feed::SubscribeRequest {
                from_position: next,
                event_types: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        for _ in 0..(reconnects % 4 + 1) {
            match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                Err(_) => break,
                Ok(Ok(Some(batch))) => {
                    for envelope in &batch.events {
                        assert_eq!(envelope.position, next, "in order, no gap, no repeat");
                        received.push(envelope.position);
                        next += 1;
                    }
                    assert_eq!(batch.position, next - 1);
                }
                Ok(Ok(None)) => panic!("the feed ended"),
                Ok(Err(status)) => {
                    assert_eq!(resume_position(&status), next);
                    break;
                }
            }
        }
        drop(stream);
        reconnects += 1;
        if writer_done && next > server.head() {
            break;
        }
    }
    writer.await.unwrap();
    assert!(reconnects > 10, "{reconnects} reconnects");
    assert_eq!(received, (1..=server.head()).collect::<Vec<_>>());

    // A subscriber that stops reading is ended once it is more than 64 events behind,
    // told where to resume, and resuming continues exactly there.
    const BURST_SUBMISSIONS: usize = 500;
    let mut admin = server.admin().await;
    let (burst_org, burst_connection, _) = active_saml_organization(
        &mut admin,
        addr,
        "Burst",
        &["burst-law.com"],
        "https://idp-burst.example/e",
    )
    .await;
    let from = server.head() + 1;
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(2048))
        .initial_connection_window_size(Some(2048))
        .connect()
        .await
        .unwrap();
    let mut slow = eventlog_client(slow_channel, &token);
    let mut stream = slow
        .subscribe(feed::SubscribeRequest {
            from_position: from,
            event_types: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Enough bytes to fill the transport's buffers (certificates make each commit ~2 KiB):
    // only then does the server stop being polled and the subscriber fall behind.
    let mut admin = server.admin().await;
    let (_, url, _) = issue_link(
        &mut admin,
        &burst_org,
        schema::SetupIntent::UpdateConnection,
        &burst_connection,
    )
    .await;
    let mut form = form_client(addr, &url).await;
    let started = std::time::Instant::now();
    for _ in 0..BURST_SUBMISSIONS {
        form.submit_setup_form(saml_xml_form(&idp_metadata(
            "https://idp-burst.example/e",
            "https://idp-burst.example/sso",
        )))
        .await
        .unwrap();
    }
    eprintln!(
        "burst of {BURST_SUBMISSIONS} submissions took {:?}",
        started.elapsed()
    );
    let head = server.head();
    let mut got: Vec<u64> = Vec::new();
    let mut next = from;
    let resume = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let Ok(message) = message else {
            panic!(
                "the slow subscriber is ended, not left hanging: got {} of {}",
                got.len(),
                head - from + 1
            );
        };
        match message {
            Ok(Some(batch)) => {
                for envelope in &batch.events {
                    assert_eq!(envelope.position, next);
                    got.push(envelope.position);
                    next += 1;
                }
            }
            Ok(None) => panic!("the feed ended without a status"),
            Err(status) => break resume_position(&status),
        }
    };
    eprintln!(
        "slow subscriber ended after {} of {} events",
        got.len(),
        head - from + 1
    );
    assert_eq!(
        resume, next,
        "resume exactly after the last delivered event"
    );
    assert!(next <= head);
    let mut client = eventlog_client(channel(addr).await, &token);
    let mut stream = client
        .subscribe(feed::SubscribeRequest {
            from_position: resume,
            event_types: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    while next <= head {
        let batch = stream.message().await.unwrap().unwrap();
        for envelope in &batch.events {
            assert_eq!(envelope.position, next);
            got.push(envelope.position);
            next += 1;
        }
    }
    assert_eq!(got, (from..=head).collect::<Vec<_>>());

    // A type filter still moves the position past filtered events.
    let mut stream = client
        .subscribe(feed::SubscribeRequest {
            from_position: 1,
            event_types: vec!["api_token_issued".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let batch = stream.message().await.unwrap().unwrap();
    assert!(batch
        .events
        .iter()
        .all(|e| e.event_type == "api_token_issued"));
    assert!(!batch.events.is_empty());
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_link_tokens_appear_in_no_audit_answer_and_no_log_line() {
    const SECRET: &str = "first-client-secret-7f3a91";
    const ROTATED: &str = "rotated-client-secret-c02e55";
    let idp = FakeIdp::start("https://idp.redact.example/entity").await;
    let dir = tempfile::tempdir().unwrap();
    let server = LoggedChildServer::start(
        signpost_binary!(),
        dir.path(),
        &["--test-only-allow-loopback-http-idp"],
        "debug",
    )
    .await;
    let addr = server.addr;
    let admin_token = std::fs::read_to_string(dir.path().join("bootstrap-admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let mut admin = admin_client(addr, &admin_token).await;
    let (org, _) = create_organization(&mut admin, "Redact").await;
    admin
        .claim_domain(pb::ClaimDomainRequest {
            organization_id: org.clone(),
            domain: "redact-law.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .verify_domain(pb::VerifyDomainRequest {
            organization_id: org.clone(),
            domain: "redact-law.com".into(),
            method: pb::VerifyDomainMethod::Manual as i32,
            note: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, url, connection) =
        issue_link(&mut admin, &org, schema::SetupIntent::NewConnection, "").await;
    let link_token = url.rsplit_once('#').unwrap().1.to_owned();
    let submitted = form_client(addr, &url)
        .await
        .submit_setup_form(oidc_form(&idp.base_url, SECRET))
        .await
        .unwrap()
        .into_inner();
    admin
        .activate_connection(pb::ActivateConnectionRequest {
            connection_id: connection.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, update_url, _) = issue_link(
        &mut admin,
        &org,
        schema::SetupIntent::UpdateConnection,
        &connection,
    )
    .await;
    let update_token = update_url.rsplit_once('#').unwrap().1.to_owned();
    form_client(addr, &update_url)
        .await
        .submit_setup_form(oidc_form(&idp.base_url, ROTATED))
        .await
        .unwrap();

    let mut client = audit_client(addr, &admin_token).await;
    let mut answers: Vec<u8> = Vec::new();
    let mut remember = |text: String| answers.extend_from_slice(text.as_bytes());
    let entries = client
        .list_audit_events(audit::ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let configured: Vec<&audit::AuditEntry> = entries
        .iter()
        .filter(|e| e.action == "connection.configured")
        .collect();
    assert_eq!(configured.len(), 2);
    assert!(
        configured[0].summary.contains("client secret set"),
        "{}",
        configured[0].summary
    );
    assert!(
        configured[1].summary.contains("client secret changed"),
        "{}",
        configured[1].summary
    );
    assert!(entries.iter().any(|e| e.action == "setup_link.spent"));
    remember(format!("{entries:?}"));
    let mut export = client
        .export_audit_events(audit::ExportAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    while let Some(batch) = export.message().await.unwrap() {
        remember(format!("{:?}", batch.decode_entries().unwrap()));
    }
    use audit::get_routing_at_request::Subject;
    for subject in [
        Subject::Domain("redact-law.com".into()),
        Subject::OrganizationId(org.clone()),
    ] {
        let answer = client
            .get_routing_at(audit::GetRoutingAtRequest {
                subject: Some(subject),
                at: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.domains[0].route.is_some());
        remember(format!("{answer:?}"));
    }
    for at in [None, Some(submitted.log_position)] {
        let answer = client
            .get_connection_at(audit::GetConnectionAtRequest {
                connection_id: connection.clone(),
                at: at.map(|p| audit::PointInTime {
                    at: Some(audit::point_in_time::At::Position(p)),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            answer
                .connection
                .as_ref()
                .unwrap()
                .oidc
                .as_ref()
                .unwrap()
                .client_secret_set
        );
        remember(format!("{answer:?}"));
    }
    let log = server.log_text();
    assert!(
        log.contains("log checkpoint signed") || log.contains("signpost control plane serving")
    );
    for needle in [SECRET, ROTATED, link_token.as_str(), update_token.as_str()] {
        assert!(
            !contains(&answers, needle),
            "an audit answer shows {needle}"
        );
        assert!(!log.contains(needle), "the server log shows {needle}");
    }
    server.kill().await;
}

/// Copies a directory tree (a stopped server's data directory).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One way of damaging a stopped server's log directory.
type Tamper = fn(&std::path::Path);

async fn verdict(log_dir: &std::path::Path) -> ChainVerdict {
    let store = FileEventStore::open(log_dir, FileOptions::default()).unwrap();
    let head = store.head().position;
    let verdict = verify_chain(&store, 1, head).await.unwrap();
    drop(store);
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_log_is_named_at_its_first_bad_position_and_the_server_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;
    let mut admin = admin_client(server.addr, &server.admin_token()).await;
    active_saml_organization(
        &mut admin,
        server.addr,
        "Tamper",
        &["tamper-law.com"],
        "https://idp-tamper.example/e",
    )
    .await;
    server.kill().await;
    assert!(matches!(
        verdict(&dir.path().join("log")).await,
        ChainVerdict::Intact { .. }
    ));

    const BAD: u64 = 5;
    let cases: [(&str, Tamper); 3] = [
        ("one byte changed", |log| {
            let mut bytes = raw::read_event_bytes(log, BAD).unwrap().unwrap();
            // The last byte ends the `commit_last_position` varint: still decodable.
            *bytes.last_mut().unwrap() ^= 0x01;
            raw::tamper_overwrite_event_bytes(log, BAD, &bytes).unwrap();
        }),
        ("one event deleted", |log| {
            raw::tamper_delete_event(log, BAD).unwrap();
        }),
        ("two events swapped", |log| {
            let a = raw::read_event_bytes(log, BAD).unwrap().unwrap();
            let b = raw::read_event_bytes(log, BAD + 1).unwrap().unwrap();
            raw::tamper_overwrite_event_bytes(log, BAD, &b).unwrap();
            raw::tamper_overwrite_event_bytes(log, BAD + 1, &a).unwrap();
        }),
    ];
    for (name, tamper) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let log = copy.path().join("log");
        tamper(&log);
        match verdict(&log).await {
            ChainVerdict::Broken { position, problem } => {
                assert_eq!(position, BAD, "{name}: {problem}")
            }
            intact => panic!("{name}: verified as {intact:?}"),
        }
        let (started, stderr) = run_server_until_exit(signpost_binary!(), copy.path()).await;
        assert!(!started, "{name}: the server started on a broken log");
        assert!(
            stderr.contains(&format!("broken at position {BAD}"))
                && stderr.contains("refusing to start"),
            "{name}: {stderr}"
        );
    }

    // The untouched original still starts, and its checkpoints verify.
    let server = ChildServer::start(signpost_binary!(), dir.path(), &[]).await;
    let mut client = audit_client(server.addr, &server.admin_token()).await;
    let checkpoints = client
        .list_checkpoints(audit::ListCheckpointsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .checkpoints;
    assert!(
        !checkpoints.is_empty(),
        "a checkpoint is signed at start when the head moved"
    );
    let created = client
        .create_checkpoint(audit::CreateCheckpointRequest::default())
        .await
        .unwrap()
        .into_inner()
        .checkpoint
        .unwrap();
    // With a request id, a retry gets the first attempt's checkpoint; another id signs anew.
    let create = |request_id: &str| audit::CreateCheckpointRequest {
        request_id: request_id.into(),
    };
    let before = checkpoint_count(&mut client).await;
    let first = client.create_checkpoint(create("cp-1")).await.unwrap();
    let retried = client.create_checkpoint(create("cp-1")).await.unwrap();
    assert_eq!(first.into_inner(), retried.into_inner());
    client.create_checkpoint(create("cp-2")).await.unwrap();
    let after = checkpoint_count(&mut client).await;
    assert_eq!(after, before + 2, "one checkpoint per request id");
    let refused = client
        .create_checkpoint(create("bad\nid"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "FIELD_INVALID");
    assert_eq!(field(&refused), "request_id");
    let key = client
        .get_checkpoint_public_key(audit::GetCheckpointPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.key_id, created.key_id);
    let online = client
        .verify_checkpoint(audit::VerifyCheckpointRequest {
            checkpoint: Some(checkpoints[0].clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        online.signature_valid && online.log_extends_checkpoint,
        "{online:?}"
    );
    let mut forged = created.clone();
    forged.head_hash[0] ^= 1;
    let refused = client
        .verify_checkpoint(audit::VerifyCheckpointRequest {
            checkpoint: Some(forged),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!refused.signature_valid);
    server.kill().await;

    // Offline: the checkpoint against an exported copy of the log.
    let store = FileEventStore::open(&dir.path().join("log"), FileOptions::default()).unwrap();
    let envelopes = store.read_range(1, 1_000_000).await.unwrap();
    drop(store);
    let mut file = Vec::new();
    signpost_audit::write_log_export(&mut file, envelopes).unwrap();
    let exported = signpost_audit::read_log_export(file.as_slice()).map(Result::unwrap);
    let head =
        signpost_audit::verify_checkpoint_offline(&created, &key.public_key, exported).unwrap();
    assert_eq!(head.position, created.position);
}

/// How many checkpoints the server lists (they fit on one page here).
async fn checkpoint_count(client: &mut AuditClient) -> usize {
    client
        .list_checkpoints(audit::ListCheckpointsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .checkpoints
        .len()
}
