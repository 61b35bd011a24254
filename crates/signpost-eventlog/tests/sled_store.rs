//! What the sled store must do: survive reopening and lock its directory; refusing foreign
//! formats and letting `verify_chain` name tampered positions is `durable/mod.rs`, shared with
//! the file store.

use std::path::Path;

use bytes::Bytes;
use signpost_eventlog::{
    raw, AppendOutcome, EventStore, ExpectedVersion, Idempotency, IdempotencyKey, LogError,
    SledEventStore, SledOptions, StreamId, FORMAT_VERSION,
};

fn open(dir: &Path) -> Result<SledEventStore, LogError> {
    SledEventStore::open(dir, SledOptions::default())
}

#[path = "durable/mod.rs"]
mod durable;
use durable::{commit, fill};

#[tokio::test]
async fn reopening_keeps_head_versions_idempotency_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store, 10).await;
    let mut idempotent = commit("s0", 2);
    let key = IdempotencyKey {
        principal: "p".into(),
        request_id: "r".into(),
    };
    idempotent.idempotency = Some(Idempotency {
        key: key.clone(),
        request_fingerprint: [7; 32],
        outcome: Bytes::from_static(b"first outcome"),
    });
    let AppendOutcome::Committed(first) = store.append(idempotent.clone()).await.unwrap() else {
        panic!("expected a commit");
    };
    let head = store.head();
    let epoch = store.store_epoch();
    let s0 = StreamId::new("s0").unwrap();
    let version = store.stream_version(&s0).await.unwrap();
    let events = store.read_range(1, 100).await.unwrap();
    drop(store);

    let store = open(dir.path()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(store.store_epoch(), epoch);
    assert_eq!(*store.watch_head().borrow(), head.position);
    assert_eq!(store.stream_version(&s0).await.unwrap(), version);
    assert_eq!(store.read_range(1, 100).await.unwrap(), events);
    let stored = store.lookup_idempotency(&key).await.unwrap().expect("kept");
    assert_eq!(stored.committed, first);
    assert_eq!(
        store.append(idempotent).await.unwrap(),
        AppendOutcome::Duplicate(stored)
    );
    // The sequencer's version cache starts cold and still enforces expected versions.
    let mut conflicting = commit("s0", 1);
    conflicting.writes[0].expected = ExpectedVersion::Exact(version - 1);
    assert!(matches!(
        store.append(conflicting).await,
        Err(LogError::WrongExpectedVersion { actual, .. }) if actual == version
    ));
    let AppendOutcome::Committed(next) = store.append(commit("s0", 1)).await.unwrap() else {
        panic!("expected a commit");
    };
    assert_eq!(next.first_position, head.position + 1);
    assert_eq!(next.stream_versions[0].1, version + 1);
}

#[tokio::test]
async fn a_store_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path()).unwrap();
    let briefly = SledOptions {
        lock_wait: std::time::Duration::from_millis(100),
        ..SledOptions::default()
    };
    assert!(matches!(
        SledEventStore::open(dir.path(), briefly),
        Err(LogError::Unavailable(_))
    ));
}
