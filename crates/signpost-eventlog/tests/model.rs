//! Property: the stores decide like a trivial model of optimistic concurrency.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use signpost_eventlog::{
    Actor, AppendOutcome, Commit, CommitMeta, EventStore, ExpectedVersion, FileEventStore,
    FileOptions, LogError, MemoryEventStore, NewEvent, StreamId, StreamWrite,
};

const STREAMS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
struct WriteSpec {
    stream: usize,
    expected: ExpectedVersion,
    events: usize,
}

fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        (0u64..6).prop_map(ExpectedVersion::Exact),
    ]
}

fn write_spec() -> impl Strategy<Value = WriteSpec> {
    (0..STREAMS.len(), expected_version(), 0usize..3).prop_map(|(stream, expected, events)| {
        WriteSpec {
            stream,
            expected,
            events,
        }
    })
}

/// What the model says about one commit: `Ok(new versions)` or the refusal.
fn model_decide(
    versions: &HashMap<usize, u64>,
    writes: &[WriteSpec],
) -> Result<Vec<(usize, u64)>, LogError> {
    if writes.iter().map(|w| w.events).sum::<usize>() == 0 {
        return Err(LogError::EmptyCommit);
    }
    for (i, write) in writes.iter().enumerate() {
        if writes[..i]
            .iter()
            .any(|earlier| earlier.stream == write.stream)
        {
            return Err(LogError::DuplicateStreamInCommit(
                STREAMS[write.stream].into(),
            ));
        }
    }
    let mut after = Vec::new();
    for write in writes {
        let actual = versions.get(&write.stream).copied().unwrap_or(0);
        let admitted = match write.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        };
        if !admitted {
            return Err(LogError::WrongExpectedVersion {
                stream: STREAMS[write.stream].into(),
                expected: write.expected,
                actual,
            });
        }
        after.push((write.stream, actual + write.events as u64));
    }
    Ok(after)
}

fn to_commit(writes: &[WriteSpec]) -> Commit {
    Commit {
        writes: writes
            .iter()
            .map(|w| StreamWrite {
                stream: StreamId::new(STREAMS[w.stream]).unwrap(),
                expected: w.expected,
                events: (0..w.events)
                    .map(|_| NewEvent {
                        event_type: "modelled".into(),
                        payload: Bytes::new(),
                    })
                    .collect(),
            })
            .collect(),
        meta: CommitMeta {
            actor: Actor::default(),
            correlation_id: String::new(),
            request_id: None,
        },
        idempotency: None,
    }
}

/// Appends `commits` to `store` one by one and checks each answer, the head and every
/// stream's version against the model.
async fn check_against_model<S: EventStore>(
    store: &S,
    commits: &[Vec<WriteSpec>],
) -> Result<(), TestCaseError> {
    let mut versions: HashMap<usize, u64> = HashMap::new();
    let mut position = 0u64;
    for writes in commits {
        let decision = model_decide(&versions, writes);
        let outcome = store.append(to_commit(writes)).await;
        match (decision, outcome) {
            (Ok(after), Ok(AppendOutcome::Committed(committed))) => {
                let events: u64 = writes.iter().map(|w| w.events as u64).sum();
                prop_assert_eq!(committed.first_position, position + 1);
                prop_assert_eq!(committed.last_position, position + events);
                position += events;
                let reported: Vec<(usize, u64)> = committed
                    .stream_versions
                    .iter()
                    .map(|(s, v)| (STREAMS.iter().position(|n| *n == s.as_str()).unwrap(), *v))
                    .collect();
                prop_assert_eq!(&reported, &after);
                versions.extend(after);
            }
            (Err(expected), Err(actual)) => prop_assert_eq!(expected, actual),
            (decision, outcome) => {
                prop_assert!(false, "model said {:?}, store said {:?}", decision, outcome)
            }
        }
    }
    prop_assert_eq!(store.head().position, position);
    for (index, name) in STREAMS.iter().enumerate() {
        let stored = store
            .stream_version(&StreamId::new(*name).unwrap())
            .await
            .unwrap();
        prop_assert_eq!(stored, versions.get(&index).copied().unwrap_or(0));
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_decisions_and_versions_match_the_model(
        commits in prop::collection::vec(prop::collection::vec(write_spec(), 1..4), 1..40)
    ) {
        runtime().block_on(check_against_model(&MemoryEventStore::new(), &commits))?;
    }
}

proptest! {
    // Every accepted commit costs an fdatasync here: fewer cases than the memory store.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn file_store_decisions_and_versions_match_the_model(
        commits in prop::collection::vec(prop::collection::vec(write_spec(), 1..4), 1..40)
    ) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            // Small zero-fills and segments: cheap cases that still roll over and write ahead.
            let options = FileOptions {
                segment_bytes: 8 * 1024,
                preallocate_bytes: 4 * 1024,
                ..FileOptions::default()
            };
            let store = FileEventStore::open(dir.path(), options.clone()).unwrap();
            check_against_model(&store, &commits).await?;
            // The versions rebuilt by a reopen are the ones the sequencer ended with.
            let head = store.head();
            let mut versions = Vec::new();
            for name in STREAMS {
                versions.push(store.stream_version(&StreamId::new(name).unwrap()).await.unwrap());
            }
            drop(store);
            let store = FileEventStore::open(dir.path(), options).unwrap();
            prop_assert_eq!(store.head(), head);
            for (name, version) in STREAMS.iter().zip(versions) {
                let reopened = store.stream_version(&StreamId::new(*name).unwrap()).await.unwrap();
                prop_assert_eq!(reopened, version);
            }
            Ok(())
        })?;
    }
}
