//! The routing stream and lookups over real gRPC: snapshot, deltas, one
//! message per command, resume, resets, progress, slow consumers, and
//! read-your-writes `Resolve`.

use std::time::Duration;

use futures::StreamExt;
use signpost_api::admin::v1 as pb;
use signpost_api::log::v1 as schema;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::watch_routes_response::Kind;
use signpost_e2e::*;

type Watch = tonic::Streaming<wire::WatchRoutesResponse>;

async fn watch(client: &mut RoutingClient, from: Option<(u64, String)>) -> Watch {
    let request = match from {
        Some((revision, epoch)) => wire::WatchRoutesRequest {
            from_revision: Some(revision),
            store_epoch: epoch,
        },
        None => wire::WatchRoutesRequest::default(),
    };
    client.watch_routes(request).await.unwrap().into_inner()
}

async fn next(stream: &mut Watch) -> wire::WatchRoutesResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a message within 20 s")
        .expect("the stream stays open")
        .expect("no error")
}

/// The next message that is not a progress heartbeat.
async fn next_change(stream: &mut Watch) -> wire::WatchRoutesResponse {
    loop {
        let message = next(stream).await;
        if !matches!(message.kind, Some(Kind::Progress(_))) {
            return message;
        }
    }
}

/// Reads a whole snapshot; returns its routes by domain and its revision.
async fn read_snapshot(
    stream: &mut Watch,
) -> (std::collections::BTreeMap<String, wire::Route>, u64) {
    let mut routes = std::collections::BTreeMap::new();
    loop {
        let message = next_change(stream).await;
        match message.kind {
            Some(Kind::Snapshot(chunk)) => {
                routes.extend(chunk.routes.into_iter().map(|r| (r.domain.clone(), r)))
            }
            Some(Kind::SnapshotEnd(end)) => {
                assert_eq!(end.route_count as usize, routes.len());
                return (routes, message.revision);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
}

/// The organization "acme" with an active SAML connection routing acme.com, and an
/// edge token, once the table has the route: (admin client, connection id, edge token).
async fn acme_and_an_edge(server: &TestServer) -> (AdminClient, String, String) {
    let mut admin = server.admin().await;
    let (_, connection, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    (admin, connection, edge_token)
}

#[tokio::test]
async fn a_provider_switch_moves_every_domain_in_one_message_at_one_revision() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let domains = ["acme.com", "acme.co.uk", "acme-law.com"];
    let (org, old, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &domains,
        "https://old-idp.example.com/e",
    )
    .await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let mut stream = watch(&mut routing, None).await;
    let (snapshot, _) = read_snapshot(&mut stream).await;
    assert_eq!(snapshot.len(), 3);
    assert!(snapshot.values().all(|r| r.connection_id == old));

    let (_, url, new) = issue_link(&mut admin, &org, schema::SetupIntent::StageSwitch, "").await;
    let mut form = server.form(&url).await;
    form.submit_setup_form(saml_xml_form(&idp_metadata(
        "https://new-idp.example.com/e",
        "https://new-idp.example.com/sso",
    )))
    .await
    .unwrap();
    let switched = admin
        .switch_provider(pb::SwitchProviderRequest {
            organization_id: org,
            connection_id: new.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // Staging a standby connection changes no route; the switch is the next message.
    let message = next_change(&mut stream).await;
    assert_eq!(message.revision, switched.log_position);
    let Some(Kind::Delta(delta)) = message.kind else {
        panic!("expected a delta, got {:?}", message.kind)
    };
    assert!(delta.deletes.is_empty());
    let mut moved: Vec<&str> = delta.upserts.iter().map(|r| r.domain.as_str()).collect();
    moved.sort();
    assert_eq!(moved, vec!["acme-law.com", "acme.co.uk", "acme.com"]);
    assert!(delta.upserts.iter().all(|r| r.connection_id == new));
    assert!(delta
        .upserts
        .iter()
        .all(|r| r.saml.as_ref().unwrap().idp_entity_id == "https://new-idp.example.com/e"));
}

#[tokio::test]
async fn a_resuming_watcher_gets_only_the_deltas_and_ends_with_the_fresh_table() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (_, first, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "one",
        &["one.com"],
        "https://idp-one.example.com/e",
    )
    .await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let mut stream = watch(&mut routing, None).await;
    let (mut table, revision) = read_snapshot(&mut stream).await;
    let epoch = server.server.routing.epoch().to_owned();
    drop(stream);

    // Changes while the watcher is away.
    routing_changes_while_away(&mut admin, server.addr(), &first).await;
    let head = server.head();

    let mut stream = watch(&mut routing, Some((revision, epoch))).await;
    let mut at = revision;
    while at < head {
        let message = next(&mut stream).await;
        match message.kind {
            Some(Kind::Delta(delta)) => {
                for route in delta.upserts {
                    table.insert(route.domain.clone(), route);
                }
                for domain in delta.deletes {
                    table.remove(&domain);
                }
            }
            Some(Kind::Progress(_)) => {}
            other => panic!("a resume must get only deltas, got {other:?}"),
        }
        assert!(message.revision > at, "revisions only move forward");
        at = message.revision;
    }

    let mut fresh = watch(&mut routing, None).await;
    let (fresh_table, fresh_revision) = read_snapshot(&mut fresh).await;
    assert_eq!(fresh_revision, head);
    assert_eq!(table, fresh_table);
    // The snapshot's one chunk is larger than a watch stream's first encode buffer, which
    // grows to fit it.
    let chunk_bytes: usize = fresh_table.values().map(prost::Message::encoded_len).sum();
    assert!(chunk_bytes > signpost_grpc::routing::WATCH_BUFFER_BYTES);
    assert_eq!(
        table["one.com"]
            .group_roles
            .get("Partners")
            .map(String::as_str),
        Some("admin")
    );
    assert!(!table.contains_key("three.com"));
}

/// A watcher behind a burst of group assignments to one connection (each commit changing
/// the same route again) gets the burst as one delta at its last revision, holding the
/// route as the last commit left it; a change of another organization's route after the
/// burst is its own message.
#[tokio::test]
async fn a_watcher_behind_a_burst_on_one_route_gets_it_as_one_delta() {
    let server = TestServer::start().await;
    let (mut admin, acme, edge_token) = acme_and_an_edge(&server).await;
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let mut stream = watch(&mut routing, None).await;
    let (_, revision) = read_snapshot(&mut stream).await;
    let epoch = server.server.routing.epoch().to_owned();
    drop(stream);

    // Behind by the burst and one more delta, at most `CATCH_UP_AFTER` (16): the
    // published deltas, merged where they change the same route again. (Further behind,
    // one catch-up delta: `resuming_beyond_the_deltas_kept_...`.)
    const BURST: usize = 14;
    const { assert!(BURST < signpost_routing::CATCH_UP_AFTER) };
    for change in 0..BURST {
        admin
            .assign_group(pb::AssignGroupRequest {
                connection_id: acme.clone(),
                idp_group: format!("group-{}", change % 7),
                role: format!("role-{change}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let burst_end = server.head();
    active_globex(&mut admin, server.addr()).await;
    let head = server.head();
    server.server.routing.wait_for(head).await.unwrap();

    let mut stream = watch(&mut routing, Some((revision, epoch))).await;
    let burst = next_change(&mut stream).await;
    assert_eq!(burst.revision, burst_end, "one message for the whole burst");
    let Some(Kind::Delta(delta)) = burst.kind else {
        panic!("expected a delta, got {burst:?}");
    };
    assert!(delta.deletes.is_empty());
    let [route] = &delta.upserts[..] else {
        panic!("the burst's one route, got {:?}", delta.upserts);
    };
    assert_eq!(route.domain, "acme.com");
    assert_eq!(route.group_roles.len(), 7);
    for change in BURST - 7..BURST {
        assert_eq!(
            route.group_roles[&format!("group-{}", change % 7)],
            format!("role-{change}"),
            "each group's last role"
        );
    }
    let next = next_change(&mut stream).await;
    assert_eq!(next.revision, head);
    let Some(Kind::Delta(delta)) = next.kind else {
        panic!("expected a delta, got {next:?}");
    };
    assert_eq!(
        delta
            .upserts
            .iter()
            .map(|r| r.domain.as_str())
            .collect::<Vec<_>>(),
        ["globex.com"]
    );
}

/// Behind more deltas than the server keeps, a resuming watcher gets one delta at the
/// head with every domain changed since its revision, once, in its state now: a new
/// organization's route, and the deletions of two routes changed five times before.
#[tokio::test]
async fn resuming_beyond_the_deltas_kept_gets_every_changed_route_once_in_one_delta() {
    let server = TestServer::start_with(|config| config.routing_history = 2).await;
    let mut admin = server.admin().await;
    let (_, connection, revision) = active_acme(&mut admin, server.addr()).await;
    assign_numbered_groups(&mut admin, &connection, 5).await;
    active_globex(&mut admin, server.addr()).await;
    admin
        .deactivate_connection(pb::DeactivateConnectionRequest {
            connection_id: connection.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let stats = server.server.routing.stats();
    assert!(
        revision < stats.history_floor,
        "the deltas since are not all kept"
    );
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let epoch = server.server.routing.epoch().to_owned();
    let mut stream = watch(&mut routing, Some((revision, epoch))).await;
    let message = next_change(&mut stream).await;
    assert_eq!(message.revision, server.head());
    let Some(Kind::Delta(delta)) = message.kind else {
        panic!("expected one delta, got {message:?}");
    };
    let upserts: Vec<&str> = delta.upserts.iter().map(|r| r.domain.as_str()).collect();
    assert_eq!(upserts, ["globex.com"]);
    let mut deletes = delta.deletes.clone();
    deletes.sort();
    assert_eq!(deletes, ["acme.com", "acme.org"]);
}

#[tokio::test]
async fn resuming_from_history_no_longer_kept_gives_a_reset_and_a_snapshot() {
    // Two deltas kept, and one changed route remembered: the second organization's
    // route, made last, pushes acme's out.
    let server = TestServer::start_with(|config| {
        config.routing_history = 2;
        config.routing_catch_up_routes = 1;
    })
    .await;
    let mut admin = server.admin().await;
    let (_, connection, revision) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        &["acme.com"],
        "https://idp.acme.com/e",
    )
    .await;
    assign_numbered_groups(&mut admin, &connection, 5).await;
    active_globex(&mut admin, server.addr()).await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    // Mutations answer once the admin read model has them; the routing table follows
    // the log on its own, so wait until it holds the token's position too.
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let epoch = server.server.routing.epoch().to_owned();
    let mut stream = watch(&mut routing, Some((revision, epoch))).await;
    let reset = next_change(&mut stream).await;
    assert_eq!(
        reset.kind,
        Some(Kind::Reset(wire::Reset {
            reason: wire::ResetReason::HistoryNotKept as i32
        }))
    );
    let (table, at) = read_snapshot(&mut stream).await;
    assert_eq!(at, server.head());
    assert_eq!(table["acme.com"].group_roles.len(), 5);
}

#[tokio::test]
async fn resuming_with_another_store_epoch_or_a_revision_ahead_gives_a_reset() {
    let server = TestServer::start().await;
    let (_, _, edge_token) = acme_and_an_edge(&server).await;
    let mut routing = routing_client(server.addr(), &edge_token).await;

    let mut other_epoch = watch(&mut routing, Some((1, "a-restored-backup".into()))).await;
    let reset = next_change(&mut other_epoch).await;
    assert_eq!(
        reset.kind,
        Some(Kind::Reset(wire::Reset {
            reason: wire::ResetReason::EpochChanged as i32
        }))
    );
    assert_eq!(read_snapshot(&mut other_epoch).await.0.len(), 1);

    // A request larger than the buffer the server first reads requests into is read
    // whole (the buffer grows; `WATCH_REQUEST_BUFFER_BYTES`).
    let long_epoch = "e".repeat(4 * signpost_grpc::routing::WATCH_REQUEST_BUFFER_BYTES);
    let mut long = watch(&mut routing, Some((1, long_epoch))).await;
    assert_eq!(
        next_change(&mut long).await.kind,
        Some(Kind::Reset(wire::Reset {
            reason: wire::ResetReason::EpochChanged as i32
        }))
    );
    assert_eq!(read_snapshot(&mut long).await.0.len(), 1);

    let epoch = server.server.routing.epoch().to_owned();
    let mut ahead = watch(&mut routing, Some((server.head() + 1000, epoch))).await;
    let reset = next_change(&mut ahead).await;
    assert_eq!(
        reset.kind,
        Some(Kind::Reset(wire::Reset {
            reason: wire::ResetReason::RevisionAhead as i32
        }))
    );
    assert_eq!(read_snapshot(&mut ahead).await.0.len(), 1);
}

#[tokio::test]
async fn an_idle_stream_gets_progress_messages_with_the_current_revision() {
    let server = TestServer::start_with(|config| {
        config.routing_progress_interval = Duration::from_millis(100)
    })
    .await;
    let mut admin = server.admin().await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let mut stream = watch(&mut routing, None).await;
    read_snapshot(&mut stream).await;
    // A change that moves the revision but no route: progress carries it.
    admin
        .create_organization(pb::CreateOrganizationRequest {
            display_name: "quiet".into(),
            external_id: "quiet".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let head = server.head();
    loop {
        let message = next(&mut stream).await;
        assert!(
            matches!(message.kind, Some(Kind::Progress(_))),
            "{message:?}"
        );
        if message.revision == head {
            break;
        }
    }
}

/// What a stream that stopped reading got once it read again.
enum SlowStreamGot {
    /// The route's last state in a delta at the head, with no reset.
    CaughtUp,
    /// A `TOO_SLOW` reset, then the table at the head.
    Reset,
}

/// A slow stream stops reading while 1,500 changes (each a big group, so its transport
/// buffers fill) are made to acme's routes (`domains`), and a fast one reads them all;
/// then the slow one reads again, until it has the head's table.
async fn a_slow_and_a_fast_stream(catch_up_routes: usize, domains: &[&str]) -> SlowStreamGot {
    let server = TestServer::start_with(|config| {
        config.routing_history = 32;
        config.routing_catch_up_routes = catch_up_routes;
    })
    .await;
    let mut admin = server.admin().await;
    let (_, connection, _) = active_saml_organization(
        &mut admin,
        server.addr(),
        "acme",
        domains,
        "https://idp.acme.com/e",
    )
    .await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut slow_client = routing_client(server.addr(), &edge_token).await;
    let mut slow = watch(&mut slow_client, None).await;
    read_snapshot(&mut slow).await;

    // The fast watcher reads on its own task while changes are appended, until it has
    // the last one's revision (told once the changes are made). When it is behind by
    // several of them, they come as one delta (they all change the same routes).
    let mut fast_client = routing_client(server.addr(), &edge_token).await;
    let mut fast = watch(&mut fast_client, None).await;
    read_snapshot(&mut fast).await;
    const CHANGES: usize = 1500;
    const GROUPS: usize = 400;
    let (last_change, mut wanted) = tokio::sync::watch::channel(u64::MAX);
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < *wanted.borrow_and_update() {
            let message = tokio::select! {
                message = next(&mut fast) => message,
                _ = wanted.changed() => continue,
            };
            match message.kind {
                Some(Kind::Delta(_)) => {
                    assert!(
                        message.revision > last,
                        "each delta moves the revision forward"
                    );
                }
                Some(Kind::Progress(_)) => assert!(message.revision >= last),
                other => panic!("the fast watcher must not be reset: {other:?}"),
            }
            last = message.revision;
        }
        last
    });
    // Each change has a big group name, so the slow stream's transport buffers fill quickly.
    let padding = "x".repeat(200);
    for change in 0..CHANGES {
        admin
            .assign_group(pb::AssignGroupRequest {
                connection_id: connection.clone(),
                idp_group: format!("group-{}-{padding}", change % GROUPS),
                role: format!("role-{change}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let head = server.head();
    last_change.send(head).unwrap();
    let fast_reached = reader.await.unwrap();
    assert_eq!(fast_reached, head);
    // The server kept only its bounded history and index, whatever the slow stream did.
    let stats = server.server.routing.stats();
    assert!(stats.history_len <= 32);
    assert!(stats.catch_up_routes <= catch_up_routes);

    // The slow stream drains what its transport buffered, then catches up or is reset.
    let last_group = format!("group-{}-{padding}", (CHANGES - 1) % GROUPS);
    let has_the_last_change = |route: &wire::Route| {
        route.group_roles.len() == GROUPS
            && route.group_roles[&last_group] == format!("role-{}", CHANGES - 1)
    };
    let mut last = 0;
    loop {
        let message = next(&mut slow).await;
        match message.kind {
            Some(Kind::Reset(reset)) => {
                assert_eq!(reset.reason, wire::ResetReason::TooSlow as i32);
                let (table, revision) = read_snapshot(&mut slow).await;
                assert_eq!(revision, head);
                assert!(domains.iter().all(|d| has_the_last_change(&table[*d])));
                return SlowStreamGot::Reset;
            }
            Some(Kind::Delta(delta)) => {
                assert!(message.revision > last, "deltas move forward");
                last = message.revision;
                if last == head {
                    assert_eq!(delta.upserts.len(), domains.len(), "each route once");
                    assert!(delta.upserts.iter().all(has_the_last_change));
                    return SlowStreamGot::CaughtUp;
                }
            }
            Some(Kind::Progress(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Far behind the deltas kept, a stream that reads again gets every route changed since,
/// once, in one delta at the head: not a reset and the whole table.
#[tokio::test]
async fn a_stream_that_stops_reading_catches_up_in_one_delta_while_another_keeps_receiving() {
    let got = a_slow_and_a_fast_stream(65_536, &["acme.com", "acme.org"]).await;
    assert!(matches!(got, SlowStreamGot::CaughtUp));
}

/// Change number `change` of a connection: one of 100 groups, each named with 240 bytes
/// (routes grow to about 25 KB, so a slow watcher's transport buffers fill and the
/// server's side of its stream falls behind), gets the role `role-{change}`.
async fn assign_big_group(
    mut admin: AdminClient,
    connection_id: String,
    change: usize,
) -> AdminClient {
    admin
        .assign_group(pb::AssignGroupRequest {
            connection_id,
            idp_group: format!("group-{}-{}", change % 100, "x".repeat(240)),
            role: format!("role-{change}"),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
}

/// Watchers that read at different paces while commands from four clients change many
/// organizations' routes (a history of 4 deltas, so a watcher behind is caught up) each
/// end with exactly the server's table at its head: no change is lost between a
/// catch-up and the next wake-up, and revisions only move on. The writes end with one
/// change to each organization, so the last watcher's catch-up holds every
/// organization's last change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_at_any_pace_end_with_the_servers_table_while_many_routes_change() {
    const ORGANIZATIONS: usize = 6;
    const CHANGES: usize = 600;
    let server = TestServer::start_with(|config| config.routing_history = 4).await;
    let mut admin = server.admin().await;
    let mut connections = Vec::new();
    for n in 0..ORGANIZATIONS {
        let domain = format!("org{n}.test");
        let (_, connection, _) = active_saml_organization(
            &mut admin,
            server.addr(),
            &format!("org{n}"),
            &[domain.as_str()],
            &format!("https://idp.org{n}.test/e"),
        )
        .await;
        connections.push(connection);
    }
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();

    let (last_change, wanted) = tokio::sync::watch::channel(u64::MAX);
    let mut watchers = Vec::new();
    // Each watcher pauses this long after each message; the last one reads nothing until
    // the writes are done (its transport buffers fill, its stream on the server stops).
    for (pause_ms, late) in [(0u64, false), (2, false), (0, true)] {
        let mut client = routing_client(server.addr(), &edge_token).await;
        let mut stream = watch(&mut client, None).await;
        let (table, revision) = read_snapshot(&mut stream).await;
        let mut wanted = wanted.clone();
        watchers.push(tokio::spawn(async move {
            let _client = client;
            if late {
                let _ = wanted.wait_for(|head| *head != u64::MAX).await;
            }
            let (mut table, mut at, mut resets, mut catch_ups) = (table, revision, 0, 0);
            while at < *wanted.borrow_and_update() {
                let message = tokio::select! {
                    message = next(&mut stream) => message,
                    _ = wanted.changed() => continue,
                };
                match message.kind {
                    Some(Kind::Delta(delta)) => {
                        assert!(message.revision > at, "deltas move forward");
                        // A command changes one organization's route: more is a catch-up.
                        if delta.upserts.len() + delta.deletes.len() > 1 {
                            catch_ups += 1;
                        }
                        for domain in &delta.deletes {
                            table.remove(domain);
                        }
                        for route in delta.upserts {
                            table.insert(route.domain.clone(), route);
                        }
                    }
                    Some(Kind::Progress(_)) => assert!(message.revision >= at),
                    Some(Kind::Reset(_)) => {
                        resets += 1;
                        let (fresh, _) = read_snapshot(&mut stream).await;
                        table = fresh;
                    }
                    other => panic!("unexpected {other:?}"),
                }
                at = message.revision.max(at);
                if pause_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
            }
            (table, at, resets, catch_ups)
        }));
    }
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (mut client, connections) = (server.admin().await, connections.clone());
        writers.push(tokio::spawn(async move {
            for change in (writer..CHANGES).step_by(4) {
                let connection_id = connections[change % ORGANIZATIONS].clone();
                client = assign_big_group(client, connection_id, change).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    for (n, connection_id) in connections.iter().enumerate() {
        admin = assign_big_group(admin, connection_id.clone(), CHANGES + n).await;
    }
    let head = server.head();
    server.server.routing.wait_for(head).await.unwrap();
    last_change.send(head).unwrap();
    let mut client = routing_client(server.addr(), &edge_token).await;
    let (expected, at) = read_snapshot(&mut watch(&mut client, None).await).await;
    assert_eq!(at, head);
    let mut slowest_catch_ups = 0;
    for watcher in watchers {
        let (table, reached, resets, catch_ups) = watcher.await.unwrap();
        assert_eq!(reached, head);
        assert_eq!(
            table, expected,
            "after {resets} resets and {catch_ups} catch-ups"
        );
        slowest_catch_ups = catch_ups;
    }
    assert!(slowest_catch_ups > 0, "the slowest watcher was caught up");
}

/// When more routes changed since it stopped than the server remembers, it is reset.
#[tokio::test]
async fn a_stream_that_stops_reading_behind_more_routes_than_remembered_is_reset() {
    let got = a_slow_and_a_fast_stream(1, &["acme.com", "acme.org"]).await;
    assert!(matches!(got, SlowStreamGot::Reset));
}

#[tokio::test]
async fn deactivation_and_domain_release_route_to_password_and_the_enforced_policy_is_visible() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let (org, connection, activated_at) = active_acme(&mut admin, server.addr()).await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let resolve = |email: &str, at: u64| wire::ResolveRequest {
        email: email.into(),
        min_revision: Some(at),
    };

    let answer = routing
        .resolve(resolve("Jane.Doe@ACME.com", activated_at))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.domain, "acme.com");
    let Some(wire::resolve_response::Answer::Route(route)) = answer.answer else {
        panic!("expected a route")
    };
    assert_eq!(route.connection_id, connection);
    assert_eq!(route.sso_policy, schema::SsoPolicy::Optional as i32);
    let saml = route.saml.unwrap();
    assert_eq!(
        saml.idp_sso_binding,
        schema::SamlBinding::HttpRedirect as i32
    );
    assert_eq!(
        saml.acs_url,
        format!("https://signpost.test/sso/saml/{connection}/acs")
    );

    let enforced = admin
        .set_sso_policy(pb::SetSsoPolicyRequest {
            organization_id: org.clone(),
            policy: schema::SsoPolicy::Enforced as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    let answer = routing
        .resolve(resolve("a@acme.org", enforced))
        .await
        .unwrap()
        .into_inner();
    let Some(wire::resolve_response::Answer::Route(route)) = answer.answer else {
        panic!("expected a route")
    };
    assert_eq!(route.sso_policy, schema::SsoPolicy::Enforced as i32);

    let released = admin
        .release_domain(pb::ReleaseDomainRequest {
            organization_id: org.clone(),
            domain: "acme.org".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    let answer = routing
        .resolve(resolve("a@acme.org", released))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.answer,
        Some(wire::resolve_response::Answer::Password(wire::Password {}))
    );
    assert!(answer.revision >= released);

    let deactivated = admin
        .deactivate_connection(pb::DeactivateConnectionRequest {
            connection_id: connection,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .log_position;
    let answer = routing
        .resolve(resolve("a@acme.com", deactivated))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.answer,
        Some(wire::resolve_response::Answer::Password(wire::Password {}))
    );

    let unknown = routing
        .resolve(wire::ResolveRequest {
            email: "x@nobody.example".into(),
            min_revision: None,
        })
        .await
        .unwrap();
    assert_eq!(
        unknown.into_inner().answer,
        Some(wire::resolve_response::Answer::Password(wire::Password {}))
    );
}

#[tokio::test]
async fn resolve_refuses_malformed_emails_and_times_out_on_a_revision_never_reached() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let edge_token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let malformed = routing
        .resolve(wire::ResolveRequest {
            email: "not an email".into(),
            min_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        (reason(&malformed), field(&malformed)),
        ("EMAIL_INVALID".to_owned(), "email".to_owned())
    );

    let mut request = tonic::Request::new(wire::ResolveRequest {
        email: "a@acme.com".into(),
        min_revision: Some(server.head() + 100),
    });
    request.set_timeout(Duration::from_millis(300));
    let late = routing.resolve(request).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
}

#[tokio::test]
async fn routing_is_for_edge_and_admin_tokens_only() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let request = || wire::ResolveRequest {
        email: "a@acme.com".into(),
        min_revision: None,
    };
    for role in [schema::TokenRole::Edge, schema::TokenRole::Admin] {
        let token = mint_token(&mut admin, role).await;
        let mut routing = routing_client(server.addr(), &token).await;
        routing.resolve(request()).await.unwrap();
        routing
            .watch_routes(wire::WatchRoutesRequest::default())
            .await
            .unwrap();
    }
    let auditor = mint_token(&mut admin, schema::TokenRole::Auditor).await;
    let mut routing = routing_client(server.addr(), &auditor).await;
    assert_eq!(
        routing.resolve(request()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        routing
            .watch_routes(wire::WatchRoutesRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let mut anonymous = routing_client(server.addr(), "spt_not-a-real-token").await;
    assert_eq!(
        anonymous.resolve(request()).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_service_reports_every_service_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in [
        "signpost.admin.v1.ConnectionAdminService",
        "signpost.admin.v1.SetupFormService",
        "signpost.routing.v1.RoutingService",
        "signpost.audit.v1.AuditService",
        "signpost.eventlog.v1.EventLogService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|status| panic!("{service}: {status}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
}

/// Calls `WatchRoutes` with `message` as the request's bytes; the status it ends with
/// before any message, or the first message.
async fn watch_raw(
    addr: std::net::SocketAddr,
    token: &str,
    message: Vec<u8>,
    compressed: bool,
) -> Result<wire::WatchRoutesResponse, tonic::Status> {
    let mut grpc = raw_client(addr, token, compressed).await;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/signpost.routing.v1.RoutingService/WatchRoutes",
    );
    let mut stream = grpc
        .server_streaming(tonic::Request::new(message), path, RawRequest::default())
        .await?
        .into_inner();
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an answer within 20 s")
        .expect("a message or a status")
}

/// Calls `Resolve` with `message` as the request's bytes.
async fn resolve_raw(
    addr: std::net::SocketAddr,
    token: &str,
    message: Vec<u8>,
    compressed: bool,
) -> Result<wire::ResolveResponse, tonic::Status> {
    let path = "/signpost.routing.v1.RoutingService/Resolve";
    unary_raw(addr, token, path, message, compressed).await
}

/// The refusals every `RoutingService` request read by the server itself gets, `method`
/// called as `send(token, request bytes, compressed)` with `[edge, auditor]` tokens: a
/// body that does not decode, `huge` (over the 2 MiB limit), `valid` compressed, `valid`
/// without a real token, and `valid` with the auditor's token.
async fn assert_body_refusals<F, Fut>(
    method: &str,
    send: F,
    [edge, auditor]: [&str; 2],
    huge: Vec<u8>,
    valid: Vec<u8>,
) where
    F: Fn(String, Vec<u8>, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    // Field 2, length-delimited, with a length that runs past the message: neither
    // request decodes it.
    let undecodable = vec![0x12, 0x7f, b'x'];
    let refused = |result: Result<(), tonic::Status>| result.expect_err("refused");
    let status = refused(send(edge.into(), undecodable, false).await);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let expected = format!("does not decode as {method}Request");
    assert!(status.message().contains(&expected), "{status:?}");
    assert_eq!(reason(&status), "REQUEST_MALFORMED");
    assert_eq!(field(&status), "request");

    let status = refused(send(edge.into(), huge, false).await);
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_TOO_LARGE");

    // Compressed, which this server does not read.
    let status = refused(send(edge.into(), valid.clone(), true).await);
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert_eq!(reason(&status), "COMPRESSION_UNSUPPORTED");

    // Refused before anything is done: no token, a token of the wrong role.
    let status = refused(send("spt_not-a-real-token".into(), valid.clone(), false).await);
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = refused(send(auditor.into(), valid, false).await);
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_resolve_requests_get_a_precise_status_and_the_server_keeps_serving() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    active_saml_organization(
        &mut admin,
        server.addr(),
        "raw",
        &["raw.example"],
        "https://idp-raw.example.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let addr = server.addr();
    let head = server.head();

    let request = wire::ResolveRequest {
        email: "Kim@RAW.example".into(),
        min_revision: Some(head),
    }
    .encode_to_vec();
    let huge = wire::ResolveRequest {
        email: format!("{}@raw.example", "a".repeat(3 * 1024 * 1024)),
        min_revision: None,
    };
    let auditor = mint_token(&mut admin, schema::TokenRole::Auditor).await;
    assert_body_refusals(
        "Resolve",
        |token, bytes, compressed| async move {
            resolve_raw(addr, &token, bytes, compressed).await.map(drop)
        },
        [&token, &auditor],
        huge.encode_to_vec(),
        request.clone(),
    )
    .await;

    // A well-formed request with a bad email: the handler's own refusal.
    let bad_email = wire::ResolveRequest {
        email: "no-at-sign".into(),
        min_revision: None,
    };
    let status = resolve_raw(addr, &token, bad_email.encode_to_vec(), false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(field(&status), "email");

    // The same raw bytes, well formed, are answered exactly as the generated client
    // reads them: the server still serves.
    let raw = resolve_raw(addr, &token, request, false).await.unwrap();
    let mut client = routing_client(addr, &token).await;
    let typed = client
        .resolve(wire::ResolveRequest {
            email: "Kim@RAW.example".into(),
            min_revision: Some(head),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw, typed);
    assert_eq!(raw.domain, "raw.example");
    let Some(wire::resolve_response::Answer::Route(route)) = raw.answer else {
        panic!("a route: {raw:?}");
    };
    assert_eq!(route.domain, "raw.example");
    assert!(raw.revision >= head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_watch_requests_get_a_precise_status_and_the_server_keeps_serving() {
    use prost::Message;
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    let addr = server.addr();

    let request = wire::WatchRoutesRequest::default().encode_to_vec();
    let huge = wire::WatchRoutesRequest {
        from_revision: None,
        store_epoch: "e".repeat(3 * 1024 * 1024),
    };
    let auditor = mint_token(&mut admin, schema::TokenRole::Auditor).await;
    assert_body_refusals(
        "WatchRoutes",
        |token, bytes, compressed| async move {
            watch_raw(addr, &token, bytes, compressed).await.map(drop)
        },
        [&token, &auditor],
        huge.encode_to_vec(),
        request.clone(),
    )
    .await;

    // The same raw bytes, well formed, start a snapshot: the server still serves.
    let first = watch_raw(addr, &token, request, false).await.unwrap();
    assert!(
        matches!(
            first.kind,
            Some(Kind::SnapshotEnd(_)) | Some(Kind::Snapshot(_))
        ),
        "{first:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_compression_enabled_watch_routes_and_resolve_go_through_tonic_compressed() {
    use tonic::codec::CompressionEncoding::Gzip;
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    active_saml_organization(
        &mut admin,
        server.addr(),
        "zip",
        &["zip.example", "zap.example"],
        "https://idp-zip.example.com/e",
    )
    .await;
    let token = mint_token(&mut admin, schema::TokenRole::Edge).await;
    server.server.routing.wait_for(server.head()).await.unwrap();
    // The same routing table served by a `RoutingServer` that compresses both ways.
    let compressing = signpost_grpc::RoutingServer::new(signpost_grpc::RoutingApi::new(
        server.server.plane.clone(),
        server.server.routing.clone(),
        Duration::from_secs(5),
    ))
    .accept_compressed(Gzip)
    .send_compressed(Gzip);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(compressing)
            .serve_with_incoming(incoming),
    );

    let mut plain = routing_client(server.addr(), &token).await;
    let mut expected = watch(&mut plain, None).await;
    let (expected, _) = read_snapshot(&mut expected).await;
    assert_eq!(expected.len(), 2, "{expected:?}");

    let mut client = routing_client(addr, &token)
        .await
        .send_compressed(Gzip)
        .accept_compressed(Gzip);
    let response = client
        .watch_routes(wire::WatchRoutesRequest::default())
        .await
        .expect("a compressed request is read");
    assert_eq!(
        response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip"),
        "the stream is compressed"
    );
    let mut stream = response.into_inner();
    let (routes, _) = read_snapshot(&mut stream).await;
    assert_eq!(routes, expected);

    // `Resolve` goes through tonic too: compressed both ways, the same answer.
    let ask = || wire::ResolveRequest {
        email: "pat@zap.example".into(),
        min_revision: None,
    };
    let expected = plain.resolve(ask()).await.unwrap().into_inner();
    let response = client
        .resolve(ask())
        .await
        .expect("a compressed request is read");
    assert_eq!(
        response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip"),
        "the answer is compressed"
    );
    let answer = response.into_inner();
    assert_eq!(answer.domain, "zap.example");
    assert!(matches!(
        answer.answer,
        Some(wire::resolve_response::Answer::Route(_))
    ));
    assert_eq!(answer.answer, expected.answer);
}

/// When the routing table cannot apply the log, every open stream (on any connection)
/// ends with an error instead of waiting for changes that will not come, and so does a
/// stream opened afterwards. Progress messages are made rare, so the end has to come
/// from the stop itself (a stream also looks for it at each progress message).
#[tokio::test]
async fn streams_end_with_an_error_when_the_routing_table_stops() {
    use signpost_eventlog::{
        Actor, ActorKind, Commit, CommitMeta, ExpectedVersion, NewEvent, StreamId, StreamWrite,
    };

    let server = TestServer::start_with(|config| {
        config.routing_progress_interval = Duration::from_secs(3600);
    })
    .await;
    let (_admin, _, edge_token) = acme_and_an_edge(&server).await;
    // Streams on two connections, each holding the table.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut routing = routing_client(server.addr(), &edge_token).await;
        for _ in 0..2 {
            let mut stream = watch(&mut routing, None).await;
            read_snapshot(&mut stream).await;
            streams.push(stream);
        }
    }

    // An event no projection can decode, appended behind the control plane's back.
    let undecodable = Commit {
        writes: vec![StreamWrite {
            stream: StreamId::new("organization-undecodable".to_owned()).unwrap(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_type: "organization_created".to_owned(),
                payload: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
            }],
        }],
        meta: CommitMeta {
            actor: Actor {
                kind: ActorKind::ApiToken as i32,
                id: "test".to_owned(),
                on_behalf_of: String::new(),
                display_name: "test".to_owned(),
            },
            correlation_id: "test".to_owned(),
            request_id: None,
        },
        idempotency: None,
    };
    server
        .server
        .plane
        .store()
        .append(undecodable)
        .await
        .unwrap();

    let ends_with_an_error = |mut stream: Watch| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("the stream ends within 20 s")
            {
                Some(Ok(message)) => assert!(
                    matches!(message.kind, Some(Kind::Progress(_))),
                    "only progress before the end, got {message:?}"
                ),
                Some(Err(status)) => {
                    assert!(
                        matches!(
                            status.code(),
                            tonic::Code::Internal | tonic::Code::Unavailable
                        ),
                        "{status:?}"
                    );
                    return;
                }
                None => panic!("the stream ended without an error"),
            }
        }
    };
    for stream in streams {
        ends_with_an_error(stream).await;
    }
    // A stream opened now gets what the table held, then the same end.
    let mut routing = routing_client(server.addr(), &edge_token).await;
    let mut late = watch(&mut routing, None).await;
    read_snapshot(&mut late).await;
    ends_with_an_error(late).await;
}
