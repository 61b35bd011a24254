//! What only the durable store must do: survive reopening, refuse foreign formats, and let
//! `verify_chain` name tampered positions.

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use signpost_eventlog::{
    raw, verify_chain, Actor, AppendOutcome, ChainProblem, ChainVerdict, Commit, CommitMeta,
    EventEnvelope, EventStore, ExpectedVersion, Idempotency, IdempotencyKey, LogError, NewEvent,
    SledEventStore, SledOptions, StreamId, StreamWrite, FORMAT_VERSION,
};

fn open(dir: &Path) -> Result<SledEventStore, LogError> {
    SledEventStore::open(dir, SledOptions::default())
}

fn commit(stream: &str, count: usize) -> Commit {
    Commit {
        writes: vec![StreamWrite {
            stream: StreamId::new(stream).unwrap(),
            expected: ExpectedVersion::Any,
            events: (0..count)
                .map(|i| NewEvent {
                    event_type: "tested".into(),
                    payload: Bytes::from(format!("{stream}-{i}")),
                })
                .collect(),
        }],
        meta: CommitMeta {
            actor: Actor::default(),
            correlation_id: "c".into(),
            request_id: None,
        },
        idempotency: None,
    }
}

async fn fill(store: &SledEventStore, commits: usize) {
    for i in 0..commits {
        store
            .append(commit(&format!("s{}", i % 3), 1))
            .await
            .expect("append");
    }
}

async fn verdict(dir: &Path) -> ChainVerdict {
    let store = open(dir).expect("reopen");
    verify_chain(&store, 1, u64::MAX).await.expect("verify")
}

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
    assert!(matches!(open(dir.path()), Err(LogError::Unavailable(_))));
}

#[tokio::test]
async fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    raw::tamper_set_format_version(dir.path(), FORMAT_VERSION + 1).unwrap();
    assert_eq!(
        open(dir.path()).err(),
        Some(LogError::FormatMismatch {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        })
    );
}

#[tokio::test]
async fn verify_chain_names_an_event_whose_payload_was_changed() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    let bytes = raw::read_event_bytes(dir.path(), 7).unwrap().unwrap();
    let mut envelope = EventEnvelope::decode(bytes.as_slice()).unwrap();
    envelope.payload[0] ^= 0x01;
    raw::tamper_overwrite_event_bytes(dir.path(), 7, &envelope.encode_to_vec()).unwrap();
    assert!(matches!(
        verdict(dir.path()).await,
        ChainVerdict::Broken {
            position: 7,
            problem: ChainProblem::HashMismatch { .. }
        }
    ));
}

#[tokio::test]
async fn verify_chain_names_an_event_with_any_overwritten_byte() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    let original = raw::read_event_bytes(dir.path(), 5).unwrap().unwrap();
    // Every single-byte change is caught at position 5: as bad content, a bad link, a wrong
    // position or undecodable bytes.
    for index in (0..original.len()).step_by(7) {
        let mut bytes = original.clone();
        bytes[index] ^= 0x5a;
        raw::tamper_overwrite_event_bytes(dir.path(), 5, &bytes).unwrap();
        let verdict = verdict(dir.path()).await;
        assert!(
            matches!(verdict, ChainVerdict::Broken { position: 5, .. }),
            "byte {index}: {verdict:?}"
        );
    }
    raw::tamper_overwrite_event_bytes(dir.path(), 5, &original).unwrap();
    assert!(matches!(
        verdict(dir.path()).await,
        ChainVerdict::Intact { .. }
    ));
}

#[tokio::test]
async fn verify_chain_names_a_deleted_event() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    raw::tamper_delete_event(dir.path(), 12).unwrap();
    assert_eq!(
        verdict(dir.path()).await,
        ChainVerdict::Broken {
            position: 12,
            problem: ChainProblem::PositionGap {
                expected: 12,
                found: Some(13)
            }
        }
    );
}

#[tokio::test]
async fn verify_chain_names_the_first_of_two_swapped_events() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    let eight = raw::read_event_bytes(dir.path(), 8).unwrap().unwrap();
    let nine = raw::read_event_bytes(dir.path(), 9).unwrap().unwrap();
    raw::tamper_overwrite_event_bytes(dir.path(), 8, &nine).unwrap();
    raw::tamper_overwrite_event_bytes(dir.path(), 9, &eight).unwrap();
    assert!(matches!(
        verdict(dir.path()).await,
        ChainVerdict::Broken { position: 8, .. }
    ));
}

#[tokio::test]
async fn a_deleted_or_altered_tail_is_reported_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 5).await;
    let tail = raw::read_event_bytes(dir.path(), 5).unwrap().unwrap();
    let mut envelope = EventEnvelope::decode(tail.as_slice()).unwrap();
    envelope.payload.push(b'!');
    raw::tamper_overwrite_event_bytes(dir.path(), 5, &envelope.encode_to_vec()).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Corrupt { position: 5, .. })
    ));
    raw::tamper_delete_event(dir.path(), 5).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Corrupt { position: 5, .. })
    ));
    raw::tamper_overwrite_event_bytes(dir.path(), 5, &tail).unwrap();
    assert_eq!(open(dir.path()).unwrap().head().position, 5);
}
