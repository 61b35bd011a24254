//! What both durable stores must do with a stopped store's files, shared by
//! `tests/sled_store.rs` and `tests/file_store.rs` (each includes this module and provides
//! `open`, its `raw` tamper tools and its `FORMAT_VERSION`): refuse a foreign format, and let
//! `verify_chain` name the first tampered position (changed, deleted, swapped events), or
//! open's tail check refuse an altered or missing last event; and wait out a directory lock
//! let go within the open's `lock_wait`.

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use signpost_eventlog::{
    verify_chain, Actor, ChainProblem, ChainVerdict, Commit, CommitMeta, EventEnvelope, EventStore,
    ExpectedVersion, LogError, NewEvent, StreamId, StreamWrite,
};

use super::{open, raw, FORMAT_VERSION};

pub fn commit(stream: &str, count: usize) -> Commit {
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

pub async fn fill(store: &impl EventStore, commits: usize) {
    for i in 0..commits {
        store
            .append(commit(&format!("s{}", i % 3), 1))
            .await
            .expect("append");
    }
}

pub async fn verdict(dir: &Path) -> ChainVerdict {
    let store = open(dir).expect("reopen");
    verify_chain(&store, 1, u64::MAX).await.expect("verify")
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
    let mut payload = envelope.payload.to_vec();
    payload[0] ^= 0x01;
    envelope.payload = payload.into();
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
    let mut payload = envelope.payload.to_vec();
    payload.push(b'!');
    envelope.payload = payload.into();
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

#[tokio::test]
async fn an_open_waits_for_a_lock_let_go_within_its_lock_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store, 3).await;
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(store);
    });
    // The default wait (2 s) outlasts the holder; the store opens with what it wrote.
    let reopened = open(dir.path()).expect("opened once the holder let go");
    assert_eq!(reopened.head().position, 3);
    holder.join().unwrap();
}
