//! The edge against a scripted in-process `RoutingService`: snapshot, deltas,
//! reconnect and resume, invalid messages, the state file.

mod common;

use std::time::Duration;

use common::*;
use signpost_edge::MessageKind;

async fn readyz(edge: &signpost_edge::Edge) -> u16 {
    reqwest::get(format!("http://{}/readyz", edge.local_addr))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn edge_follows_a_snapshot_then_deltas() {
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let directory = tempfile::tempdir().unwrap();
    let edge = start_edge(&control_plane.address, directory.path().join("state.pb")).await;
    let mut applied = edge.subscribe_applied();

    let call = control_plane.next_call().await;
    assert_eq!(
        call.request.from_revision, None,
        "a new edge asks for a snapshot"
    );
    assert_eq!(
        call.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(readyz(&edge).await, 503, "not ready before the snapshot");
    assert!(edge.lookup("jane@acme.com").unwrap().route.is_none());
    assert!(!edge.lookup("jane@acme.com").unwrap().ready);

    stream.snapshot(5, vec![saml_route("acme.com"), oidc_route("globex.com")]);
    let chunk = next_applied(&mut applied).await;
    assert_eq!(
        (chunk.kind, chunk.revision, chunk.upserts),
        (MessageKind::Snapshot, 5, 2)
    );
    let end = next_applied(&mut applied).await;
    assert_eq!((end.kind, end.revision), (MessageKind::SnapshotEnd, 5));
    assert_eq!(readyz(&edge).await, 200);
    let table = edge.table();
    assert_eq!(
        (table.revision(), table.store_epoch(), table.len()),
        (5, EPOCH, 2)
    );
    assert!(edge.status().connected);

    // A provider switch moving three domains is one message at one revision.
    let mut switched: Vec<_> = ["acme.com", "acme.co.uk", "acme.de"]
        .into_iter()
        .map(oidc_route)
        .collect();
    switched[0].connection_id = "conn_new".to_owned();
    stream.delta(9, switched, &["globex.com"]);
    let delta = next_applied(&mut applied).await;
    assert_eq!(
        (delta.kind, delta.revision, delta.upserts, delta.deletes),
        (MessageKind::Delta, 9, 3, 1)
    );
    let table = edge.table();
    assert_eq!(table.revision(), 9);
    assert_eq!(table.len(), 3);
    assert_eq!(table.get("acme.com").unwrap().connection_id(), "conn_new");
    assert!(edge.lookup("bob@globex.com").unwrap().route.is_none());

    stream.send(
        12,
        signpost_api::routing::v1::watch_routes_response::Kind::Progress(
            signpost_api::routing::v1::Progress {},
        ),
    );
    let progress = next_applied(&mut applied).await;
    assert_eq!(
        (progress.kind, progress.revision),
        (MessageKind::Progress, 12)
    );
    assert_eq!(edge.table().revision(), 12);
    assert_eq!(edge.table().len(), 3);
    edge.stop().await;
}

#[tokio::test]
async fn edge_resumes_from_its_revision_after_the_stream_drops() {
    let mut control_plane = FakeControlPlane::start().await;
    let first = control_plane.next_stream();
    let directory = tempfile::tempdir().unwrap();
    let edge = start_edge(&control_plane.address, directory.path().join("state.pb")).await;
    let mut applied = edge.subscribe_applied();
    control_plane.next_call().await;
    first.snapshot(5, vec![saml_route("acme.com")]);
    first.delta(7, vec![oidc_route("globex.com")], &[]);
    for _ in 0..3 {
        next_applied(&mut applied).await;
    }

    let second = control_plane.next_stream();
    drop(first);
    let call = control_plane.next_call().await;
    assert_eq!(call.request.from_revision, Some(7));
    assert_eq!(call.request.store_epoch, EPOCH);
    eventually("the edge to reconnect", || edge.status().connected).await;
    // The table kept serving across the reconnect.
    assert!(edge.lookup("jane@acme.com").unwrap().route.is_some());

    second.delta(8, vec![], &["acme.com"]);
    let resumed = next_applied(&mut applied).await;
    assert_eq!((resumed.kind, resumed.revision), (MessageKind::Delta, 8));
    assert!(
        applied.try_recv().is_err(),
        "the resume brought no snapshot"
    );
    assert!(edge.lookup("jane@acme.com").unwrap().route.is_none());
    assert_eq!(edge.table().revision(), 8);

    // A stream that fails with an error is resumed the same way.
    let third = control_plane.next_stream();
    second.fail(tonic::Status::unavailable("restarting"));
    let call = control_plane.next_call().await;
    assert_eq!(call.request.from_revision, Some(8));
    drop(third);
    edge.stop().await;
}

#[tokio::test]
async fn an_invalid_message_keeps_the_table_and_asks_for_a_full_snapshot() {
    let mut control_plane = FakeControlPlane::start().await;
    let first = control_plane.next_stream();
    let second = control_plane.next_stream();
    let directory = tempfile::tempdir().unwrap();
    let edge = start_edge(&control_plane.address, directory.path().join("state.pb")).await;
    let mut applied = edge.subscribe_applied();
    control_plane.next_call().await;
    first.snapshot(5, vec![saml_route("acme.com")]);
    next_applied(&mut applied).await;
    next_applied(&mut applied).await;

    let mut insecure = saml_route("globex.com");
    insecure.saml.as_mut().unwrap().idp_sso_url = "http://idp.globex.example/sso".to_owned();
    first.delta(6, vec![oidc_route("acme.com"), insecure], &[]);

    let call = control_plane.next_call().await;
    assert_eq!(
        call.request.from_revision, None,
        "after an invalid message: full snapshot"
    );
    let table = edge.table();
    assert_eq!(table.revision(), 5);
    assert_eq!(table.get("acme.com").unwrap().protocol_name(), "saml");
    assert!(table.get("globex.com").is_none());

    // A delta going backwards is refused the same way.
    let third = control_plane.next_stream();
    second.snapshot(6, vec![oidc_route("acme.com")]);
    next_applied(&mut applied).await;
    next_applied(&mut applied).await;
    second.delta(4, vec![], &["acme.com"]);
    let call = control_plane.next_call().await;
    assert_eq!(call.request.from_revision, None);
    assert_eq!(edge.table().revision(), 6);
    assert!(edge.lookup("a@acme.com").unwrap().route.is_some());
    drop(third);
    edge.stop().await;
}

#[tokio::test]
async fn a_restarted_edge_serves_from_its_state_file_and_resumes() {
    let directory = tempfile::tempdir().unwrap();
    let state_file = directory.path().join("state.pb");
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let edge = start_edge(&control_plane.address, state_file.clone()).await;
    let mut applied = edge.subscribe_applied();
    control_plane.next_call().await;
    stream.snapshot(5, vec![saml_route("acme.com")]);
    stream.delta(6, vec![oidc_route("globex.com")], &[]);
    for _ in 0..3 {
        next_applied(&mut applied).await;
    }
    // The snapshot end is written at once.
    eventually("the state file to be written", || state_file.exists()).await;
    edge.stop().await;
    drop(stream);
    control_plane.stop();

    // The control plane is down: the restarted edge still answers.
    let unreachable = "http://127.0.0.1:9".to_owned();
    let edge = start_edge(&unreachable, state_file.clone()).await;
    assert_eq!(readyz(&edge).await, 200);
    let table = edge.table();
    assert_eq!(
        (table.revision(), table.store_epoch(), table.len()),
        (6, EPOCH, 2)
    );
    assert!(edge.lookup("jane@globex.com").unwrap().route.is_some());
    assert!(!edge.status().connected);
    edge.stop().await;

    // Back up: it resumes from the state file's revision.
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let edge = start_edge(&control_plane.address, state_file.clone()).await;
    let call = control_plane.next_call().await;
    assert_eq!(call.request.from_revision, Some(6));
    assert_eq!(call.request.store_epoch, EPOCH);
    drop(stream);
    edge.stop().await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_ignored_and_the_edge_waits_for_a_snapshot() {
    let directory = tempfile::tempdir().unwrap();
    let state_file = directory.path().join("state.pb");
    std::fs::write(&state_file, b"\x0a\xff\xff garbage").unwrap();
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let edge = start_edge(&control_plane.address, state_file.clone()).await;
    assert_eq!(readyz(&edge).await, 503);
    let call = control_plane.next_call().await;
    assert_eq!(call.request.from_revision, None);
    let mut applied = edge.subscribe_applied();
    stream.snapshot(3, vec![]);
    next_applied(&mut applied).await;
    assert_eq!(readyz(&edge).await, 200);
    edge.stop().await;
}

#[tokio::test]
async fn the_next_control_plane_is_tried_when_one_is_down() {
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let directory = tempfile::tempdir().unwrap();
    let mut config = config("http://127.0.0.1:9", directory.path().join("state.pb"));
    config.control_planes.push(control_plane.address.clone());
    let edge = signpost_edge::Edge::start(config).await.unwrap();
    control_plane.next_call().await;
    stream.snapshot(2, vec![saml_route("acme.com")]);
    eventually("the snapshot", || edge.table().is_complete()).await;
    let status = edge.status();
    assert_eq!(
        status.control_plane.as_deref(),
        Some(control_plane.address.as_str())
    );
    assert!(status.connected);
    edge.stop().await;
}

#[tokio::test]
async fn stop_flushes_debounced_deltas_to_the_state_file() {
    let directory = tempfile::tempdir().unwrap();
    let state_file = directory.path().join("state.pb");
    let mut control_plane = FakeControlPlane::start().await;
    let stream = control_plane.next_stream();
    let edge = start_edge(&control_plane.address, state_file.clone()).await;
    let mut applied = edge.subscribe_applied();
    control_plane.next_call().await;
    stream.snapshot(1, vec![]);
    next_applied(&mut applied).await;
    for revision in 2..50 {
        stream.delta(
            revision,
            vec![saml_route(&format!("d{revision}.example"))],
            &[],
        );
    }
    while next_applied(&mut applied).await.revision < 49 {}
    edge.stop().await;
    let loaded = signpost_edge::state_file::load(&state_file, chrono::Utc::now())
        .unwrap()
        .unwrap();
    assert_eq!(loaded.revision(), 49);
    assert_eq!(loaded.len(), 48);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
