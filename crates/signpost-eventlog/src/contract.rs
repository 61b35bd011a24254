//! The contract suite: one set of tests every [`EventStore`] must pass.
//!
//! Each test is a public async function taking a fresh, empty store. The
//! [`event_store_contract_tests!`](crate::event_store_contract_tests) macro expands them into
//! `#[tokio::test]`s for one implementation:
//!
//! ```text
//! mod memory {
//!     signpost_eventlog::event_store_contract_tests!(|| (MemoryEventStore::new(), ()));
//! }
//! ```
//!
//! The factory returns the store and a guard kept alive for the test (e.g. a temp dir).
//! A new implementation (PostgreSQL, ...) proves itself by running the same macro.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Barrier;

use crate::{
    envelope_hash, verify_chain, Actor, ActorKind, AppendOutcome, ChainVerdict, Commit, CommitMeta,
    Committed, EventEnvelope, EventStore, ExpectedVersion, Idempotency, IdempotencyKey, LogError,
    NewEvent, StreamId, StreamWrite, GENESIS_HASH,
};

/// Expands the contract suite into `#[tokio::test]`s for the store built by `$factory`, a
/// closure returning `(store, guard)`. The calling crate needs `tokio` with macros.
#[macro_export]
macro_rules! event_store_contract_tests {
    ($factory:expr) => {
        $crate::event_store_contract_tests!(@tests $factory;
            positions_are_gapless_and_start_at_one,
            envelopes_are_filled_and_chained_by_the_store,
            stream_versions_count_each_streams_events,
            expected_version_conflicts_append_nothing,
            multi_stream_commit_is_all_or_nothing,
            commit_naming_a_stream_twice_is_refused,
            commit_without_events_is_refused,
            racing_appenders_on_one_stream_get_one_winner_per_version,
            appenders_on_different_streams_all_succeed,
            idempotent_retry_returns_the_first_outcome_and_appends_nothing,
            racing_idempotent_retries_commit_once,
            idempotency_key_reused_for_another_request_is_refused,
            read_range_and_read_stream_page_through_the_log,
            read_streams_answers_each_stream_as_read_stream_does,
            watch_head_moves_only_after_events_are_readable,
            subscription_from_the_start_yields_history_then_live_events,
            subscription_from_the_middle_starts_there,
            subscription_beyond_the_head_waits_for_those_positions,
            unpolled_subscriber_later_reads_ten_thousand_events_in_order_once,
            subscriber_catching_up_while_writers_append_reads_every_event_once,
            verify_chain_accepts_a_good_log,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = ($factory)();
                $crate::contract::$name(store).await;
            }
        )*
    };
}

/// Most time any single wait in the suite may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

fn events(count: usize, tag: &str) -> Vec<NewEvent> {
    (0..count)
        .map(|i| NewEvent {
            event_type: "tested".to_owned(),
            payload: Bytes::from(format!("{tag}-{i}")),
        })
        .collect()
}

fn meta() -> CommitMeta {
    CommitMeta {
        actor: Actor {
            kind: ActorKind::ApiToken as i32,
            id: "token-1".to_owned(),
            on_behalf_of: "admin@example.com".to_owned(),
            display_name: "contract suite".to_owned(),
        },
        correlation_id: "correlation-1".to_owned(),
        request_id: None,
    }
}

fn write(name: &str, expected: ExpectedVersion, count: usize) -> StreamWrite {
    StreamWrite {
        stream: stream(name),
        expected,
        events: events(count, name),
    }
}

fn commit(writes: Vec<StreamWrite>) -> Commit {
    Commit {
        writes,
        meta: meta(),
        idempotency: None,
    }
}

fn idempotent(writes: Vec<StreamWrite>, request_id: &str, fingerprint: u8) -> Commit {
    let mut commit = commit(writes);
    commit.meta.request_id = Some(request_id.to_owned());
    commit.idempotency = Some(Idempotency {
        key: IdempotencyKey {
            principal: "token-1".to_owned(),
            request_id: request_id.to_owned(),
        },
        request_fingerprint: [fingerprint; 32],
        outcome: Bytes::from(format!("outcome-of-{request_id}")),
    });
    commit
}

async fn committed<S: EventStore + ?Sized>(store: &S, commit: Commit) -> Committed {
    match store.append(commit).await {
        Ok(AppendOutcome::Committed(committed)) => committed,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn all_events<S: EventStore + ?Sized>(store: &S) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    loop {
        let page = store
            .read_range(out.len() as u64 + 1, 1000)
            .await
            .expect("read_range");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn assert_gapless(events: &[EventEnvelope]) {
    for (index, envelope) in events.iter().enumerate() {
        assert_eq!(
            envelope.position,
            index as u64 + 1,
            "positions must be gapless"
        );
    }
}

/// Positions start at 1, have no gaps, and follow commit order.
pub async fn positions_are_gapless_and_start_at_one<S: EventStore>(store: S) {
    assert_eq!(store.head().position, 0);
    assert_eq!(store.head().hash, GENESIS_HASH);
    let first = committed(&store, commit(vec![write("a", ExpectedVersion::Any, 1)])).await;
    assert_eq!((first.first_position, first.last_position), (1, 1));
    let second = committed(&store, commit(vec![write("b", ExpectedVersion::Any, 3)])).await;
    assert_eq!((second.first_position, second.last_position), (2, 4));
    let third = committed(&store, commit(vec![write("a", ExpectedVersion::Any, 2)])).await;
    assert_eq!((third.first_position, third.last_position), (5, 6));
    let events = all_events(&store).await;
    assert_eq!(events.len(), 6);
    assert_gapless(&events);
    assert_eq!(store.head().position, 6);
    assert_eq!(store.head().hash.to_vec(), events[5].hash);
}

/// The store fills every envelope field and chains the hashes.
pub async fn envelopes_are_filled_and_chained_by_the_store<S: EventStore>(store: S) {
    let mut with_request = commit(vec![write("a", ExpectedVersion::NoStream, 2)]);
    with_request.meta.request_id = Some("request-7".to_owned());
    committed(&store, with_request).await;
    committed(
        &store,
        commit(vec![write("b", ExpectedVersion::NoStream, 1)]),
    )
    .await;
    let events = all_events(&store).await;
    let mut previous_hash = bytes::Bytes::from_static(&GENESIS_HASH);
    let mut event_ids = HashSet::new();
    for envelope in &events {
        let event_id = uuid::Uuid::parse_str(&envelope.event_id).expect("event id is a uuid");
        assert_eq!(event_id.get_version_num(), 7, "event ids are UUIDv7");
        assert!(event_ids.insert(event_id), "event ids are unique");
        assert!(envelope.recorded_at.is_some());
        assert_eq!(envelope.actor, Some(meta().actor));
        assert_eq!(envelope.correlation_id, "correlation-1");
        assert_eq!(envelope.event_type, "tested");
        assert_eq!(envelope.previous_hash, previous_hash);
        assert_eq!(envelope.hash, envelope_hash(envelope).to_vec());
        previous_hash = envelope.hash.clone();
    }
    assert_eq!(events[0].request_id, "request-7");
    assert_eq!(events[0].payload, &b"a-0"[..]);
    assert_eq!(events[1].payload, &b"a-1"[..]);
    assert_eq!(events[2].request_id, "");
    assert_eq!(events[2].stream_id, "b");
}

/// Each event's `stream_version` is its stream's version after it; missing streams are at 0.
pub async fn stream_versions_count_each_streams_events<S: EventStore>(store: S) {
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 0);
    let c = committed(
        &store,
        commit(vec![
            write("a", ExpectedVersion::NoStream, 2),
            write("b", ExpectedVersion::NoStream, 1),
        ]),
    )
    .await;
    assert_eq!(c.stream_versions, vec![(stream("a"), 2), (stream("b"), 1)]);
    committed(
        &store,
        commit(vec![write("a", ExpectedVersion::Exact(2), 3)]),
    )
    .await;
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 5);
    assert_eq!(store.stream_version(&stream("b")).await.unwrap(), 1);
    assert_eq!(store.stream_version(&stream("c")).await.unwrap(), 0);
    let a = store.read_stream(&stream("a"), 1, 100).await.unwrap();
    let versions: Vec<u64> = a.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    assert!(a.iter().all(|e| e.stream_id == "a"));
}

/// A failed expected-version check is reported with the actual version and appends nothing.
pub async fn expected_version_conflicts_append_nothing<S: EventStore>(store: S) {
    committed(
        &store,
        commit(vec![write("a", ExpectedVersion::NoStream, 2)]),
    )
    .await;
    let head = store.head();
    let refused = store
        .append(commit(vec![write("a", ExpectedVersion::NoStream, 1)]))
        .await;
    assert_eq!(
        refused,
        Err(LogError::WrongExpectedVersion {
            stream: "a".to_owned(),
            expected: ExpectedVersion::NoStream,
            actual: 2
        })
    );
    let refused = store
        .append(commit(vec![write("a", ExpectedVersion::Exact(1), 1)]))
        .await;
    assert!(matches!(
        refused,
        Err(LogError::WrongExpectedVersion { actual: 2, .. })
    ));
    let refused = store
        .append(commit(vec![write("new", ExpectedVersion::Exact(3), 1)]))
        .await;
    assert!(matches!(
        refused,
        Err(LogError::WrongExpectedVersion { actual: 0, .. })
    ));
    assert_eq!(store.head(), head);
    assert_eq!(all_events(&store).await.len(), 2);
    committed(
        &store,
        commit(vec![write("a", ExpectedVersion::Exact(2), 1)]),
    )
    .await;
    committed(
        &store,
        commit(vec![write("new", ExpectedVersion::Exact(0), 1)]),
    )
    .await;
    assert_eq!(store.head().position, 4);
}

/// One conflicting write refuses the whole commit; an accepted one writes every stream.
pub async fn multi_stream_commit_is_all_or_nothing<S: EventStore>(store: S) {
    committed(&store, commit(vec![write("b", ExpectedVersion::Any, 1)])).await;
    let head = store.head();
    let refused = store
        .append(commit(vec![
            write("a", ExpectedVersion::NoStream, 2),
            write("b", ExpectedVersion::NoStream, 1),
            write("c", ExpectedVersion::Any, 1),
        ]))
        .await;
    assert!(matches!(
        refused,
        Err(LogError::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.head(), head);
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 0);
    assert_eq!(store.stream_version(&stream("c")).await.unwrap(), 0);
    assert!(store.read_range(2, 10).await.unwrap().is_empty());

    let accepted = committed(
        &store,
        commit(vec![
            write("a", ExpectedVersion::NoStream, 2),
            write("b", ExpectedVersion::Exact(1), 1),
            write("c", ExpectedVersion::Any, 1),
        ]),
    )
    .await;
    assert_eq!((accepted.first_position, accepted.last_position), (2, 5));
    let events = all_events(&store).await;
    assert_gapless(&events);
    let streams: Vec<&str> = events[1..].iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, vec!["a", "a", "b", "c"]);
    // Every event names the end of its commit, so readers can group a command's events.
    let commit_ends: Vec<u64> = events.iter().map(|e| e.commit_last_position).collect();
    assert_eq!(commit_ends, vec![1, 5, 5, 5, 5]);
}

/// A commit that names one stream twice is refused.
pub async fn commit_naming_a_stream_twice_is_refused<S: EventStore>(store: S) {
    let refused = store
        .append(commit(vec![
            write("a", ExpectedVersion::Any, 1),
            write("a", ExpectedVersion::Any, 1),
        ]))
        .await;
    assert_eq!(
        refused,
        Err(LogError::DuplicateStreamInCommit("a".to_owned()))
    );
    assert_eq!(store.head().position, 0);
}

/// A commit without events is refused.
pub async fn commit_without_events_is_refused<S: EventStore>(store: S) {
    assert_eq!(
        store.append(commit(vec![])).await,
        Err(LogError::EmptyCommit)
    );
    assert_eq!(
        store
            .append(commit(vec![write("a", ExpectedVersion::Any, 0)]))
            .await,
        Err(LogError::EmptyCommit)
    );
    assert_eq!(store.head().position, 0);
}

/// 64 appenders racing on one stream with `Exact(v)`: exactly one winner per version.
pub async fn racing_appenders_on_one_stream_get_one_winner_per_version<S: EventStore + Clone>(
    store: S,
) {
    const APPENDERS: usize = 64;
    const ATTEMPTS: usize = 5;
    let barrier = Arc::new(Barrier::new(APPENDERS));
    let mut tasks = Vec::new();
    for _ in 0..APPENDERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            barrier.wait().await;
            // First round: everyone expects an empty stream at once.
            let mut expected = 0;
            for _ in 0..ATTEMPTS {
                match store
                    .append(commit(vec![write(
                        "hot",
                        ExpectedVersion::Exact(expected),
                        1,
                    )]))
                    .await
                {
                    Ok(AppendOutcome::Committed(c)) => {
                        assert_eq!(c.stream_versions, vec![(stream("hot"), expected + 1)]);
                        wins.push(expected + 1);
                    }
                    Err(LogError::WrongExpectedVersion { actual, .. }) => {
                        assert!(actual > expected);
                    }
                    other => panic!("unexpected append result {other:?}"),
                }
                expected = store.stream_version(&stream("hot")).await.unwrap();
            }
            wins
        }));
    }
    let mut wins = Vec::new();
    for task in tasks {
        wins.extend(task.await.expect("appender task"));
    }
    let unique: BTreeSet<u64> = wins.iter().copied().collect();
    assert_eq!(
        unique.len(),
        wins.len(),
        "two appenders won the same version"
    );
    let final_version = store.stream_version(&stream("hot")).await.unwrap();
    assert_eq!(unique, (1..=final_version).collect::<BTreeSet<u64>>());
    assert!(final_version >= ATTEMPTS as u64);
    let events = all_events(&store).await;
    assert_gapless(&events);
    assert_eq!(events.len() as u64, final_version);
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, (1..=final_version).collect::<Vec<_>>());
}

/// Concurrent appenders on distinct streams never conflict.
pub async fn appenders_on_different_streams_all_succeed<S: EventStore + Clone>(store: S) {
    const APPENDERS: usize = 64;
    const COMMITS: u64 = 5;
    let mut tasks = Vec::new();
    for task in 0..APPENDERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("stream-{task}");
            for version in 0..COMMITS {
                committed(
                    &store,
                    commit(vec![write(&name, ExpectedVersion::Exact(version), 1)]),
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender task");
    }
    assert_eq!(store.head().position, APPENDERS as u64 * COMMITS);
    for task in 0..APPENDERS {
        let name = stream(&format!("stream-{task}"));
        assert_eq!(store.stream_version(&name).await.unwrap(), COMMITS);
    }
    assert_gapless(&all_events(&store).await);
}

/// A retry with the same key returns the first outcome, even after the stream moved on.
pub async fn idempotent_retry_returns_the_first_outcome_and_appends_nothing<S: EventStore>(
    store: S,
) {
    let key = IdempotencyKey {
        principal: "token-1".to_owned(),
        request_id: "r1".to_owned(),
    };
    assert_eq!(store.lookup_idempotency(&key).await.unwrap(), None);
    let first = committed(
        &store,
        idempotent(vec![write("a", ExpectedVersion::NoStream, 2)], "r1", 1),
    )
    .await;
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 1)])).await;
    let head = store.head();

    let retry = store
        .append(idempotent(
            vec![write("a", ExpectedVersion::NoStream, 2)],
            "r1",
            1,
        ))
        .await
        .unwrap();
    let AppendOutcome::Duplicate(stored) = retry else {
        panic!("expected a duplicate, got {retry:?}");
    };
    assert_eq!(stored.committed, first);
    assert_eq!(stored.outcome, Bytes::from("outcome-of-r1"));
    assert_eq!(stored.request_fingerprint, [1; 32]);
    assert_eq!(store.head(), head);
    assert_eq!(store.lookup_idempotency(&key).await.unwrap(), Some(stored));

    // The same request id from another principal is another command.
    let mut other_principal = idempotent(vec![write("b", ExpectedVersion::Any, 1)], "r1", 9);
    if let Some(idempotency) = other_principal.idempotency.as_mut() {
        idempotency.key.principal = "token-2".to_owned();
    }
    committed(&store, other_principal).await;
}

/// Concurrent retries of one command, possibly in one batch, commit it once.
pub async fn racing_idempotent_retries_commit_once<S: EventStore + Clone>(store: S) {
    const RETRIES: usize = 32;
    let barrier = Arc::new(Barrier::new(RETRIES));
    let mut tasks = Vec::new();
    for _ in 0..RETRIES {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(idempotent(
                    vec![write("a", ExpectedVersion::Any, 3)],
                    "once",
                    4,
                ))
                .await
                .expect("append")
        }));
    }
    let mut commits = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.expect("retry task") {
            AppendOutcome::Committed(c) => commits.push(c),
            AppendOutcome::Duplicate(stored) => duplicates.push(stored),
        }
    }
    assert_eq!(commits.len(), 1, "exactly one retry commits");
    assert!(duplicates.iter().all(|d| d.committed == commits[0]));
    assert_eq!(store.head().position, 3);
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 3);
}

/// The same key with a different request fingerprint is refused.
pub async fn idempotency_key_reused_for_another_request_is_refused<S: EventStore>(store: S) {
    committed(
        &store,
        idempotent(vec![write("a", ExpectedVersion::Any, 1)], "r1", 1),
    )
    .await;
    let head = store.head();
    let refused = store
        .append(idempotent(
            vec![write("a", ExpectedVersion::Any, 1)],
            "r1",
            2,
        ))
        .await;
    assert_eq!(
        refused,
        Err(LogError::IdempotencyKeyReused {
            request_id: "r1".to_owned()
        })
    );
    assert_eq!(store.head(), head);
}

/// `read_range` and `read_stream` page through the log and stop at the head.
pub async fn read_range_and_read_stream_page_through_the_log<S: EventStore>(store: S) {
    for i in 0..25 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        committed(&store, commit(vec![write(name, ExpectedVersion::Any, 1)])).await;
    }
    let mut positions = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_range(from, 10).await.unwrap();
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        from = page.last().unwrap().position + 1;
        positions.extend(page.iter().map(|e| e.position));
    }
    assert_eq!(positions, (1..=25).collect::<Vec<_>>());
    assert_eq!(
        store.read_range(0, 3).await.unwrap().len(),
        3,
        "from 0 reads from 1"
    );
    assert!(store.read_range(1, 0).await.unwrap().is_empty());
    assert!(store.read_range(26, 10).await.unwrap().is_empty());

    let even = stream("even");
    let mut versions = Vec::new();
    let mut from_version = 1;
    loop {
        let page = store.read_stream(&even, from_version, 4).await.unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        from_version = page.last().unwrap().stream_version + 1;
        versions.extend(page.iter().map(|e| (e.stream_version, e.position)));
    }
    let expected: Vec<(u64, u64)> = (1..=13).map(|v| (v, 2 * v - 1)).collect();
    assert_eq!(versions, expected);
    assert!(store.read_stream(&even, 14, 10).await.unwrap().is_empty());
    assert!(store
        .read_stream(&stream("missing"), 1, 10)
        .await
        .unwrap()
        .is_empty());
}

/// `read_streams` gives each stream named its whole stream, as `read_stream` from version
/// 1 does, in the order the streams are named: streams interleaved in the log, written
/// several events at once, named twice, or never written.
pub async fn read_streams_answers_each_stream_as_read_stream_does<S: EventStore>(store: S) {
    for i in 0..12 {
        let writes = match i % 3 {
            0 => vec![write("a", ExpectedVersion::Any, 1)],
            1 => vec![
                write("b", ExpectedVersion::Any, 2),
                write("c", ExpectedVersion::Any, 1),
            ],
            _ => vec![write("a", ExpectedVersion::Any, 3)],
        };
        committed(&store, commit(writes)).await;
    }
    let named = ["c", "missing", "a", "b", "a"].map(stream);
    let read = store.read_streams(&named).await.unwrap();
    assert_eq!(read.len(), named.len());
    for (name, events) in named.iter().zip(&read) {
        let one = store.read_stream(name, 1, usize::MAX).await.unwrap();
        assert_eq!(events, &one, "stream {name}");
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
        assert!(events.iter().all(|e| e.stream_id == name.as_str()));
    }
    let lens: Vec<usize> = read.iter().map(Vec::len).collect();
    assert_eq!(lens, [4, 0, 16, 8, 16]);
    assert!(store.read_streams(&[]).await.unwrap().is_empty());
}

/// The head watch only announces positions that can already be read.
pub async fn watch_head_moves_only_after_events_are_readable<S: EventStore + Clone>(store: S) {
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < 20 {
                tokio::time::timeout(PATIENCE, head.changed())
                    .await
                    .expect("head moves")
                    .expect("store open");
                let position = *head.borrow_and_update();
                assert!(position > seen);
                let events = store.read_range(position, 1).await.unwrap();
                assert_eq!(events.len(), 1, "announced position {position} is readable");
                assert!(store.head().position >= position);
                seen = position;
            }
        })
    };
    for _ in 0..20 {
        let c = committed(&store, commit(vec![write("a", ExpectedVersion::Any, 1)])).await;
        assert!(
            store.head().position >= c.last_position,
            "acknowledged means visible"
        );
    }
    reader.await.expect("reader task");
}

async fn next_positions(subscription: &mut crate::Subscription, count: usize) -> Vec<u64> {
    let mut positions = Vec::with_capacity(count);
    for _ in 0..count {
        let envelope = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .expect("subscription delivers in time")
            .expect("subscription open")
            .expect("subscription event");
        positions.push(envelope.position);
    }
    positions
}

/// Subscribing from 1 yields the history, then events appended while subscribed.
pub async fn subscription_from_the_start_yields_history_then_live_events<S: EventStore + Clone>(
    store: S,
) {
    for _ in 0..5 {
        committed(&store, commit(vec![write("a", ExpectedVersion::Any, 2)])).await;
    }
    let mut subscription = store.subscribe(1);
    assert_eq!(
        next_positions(&mut subscription, 10).await,
        (1..=10).collect::<Vec<_>>()
    );
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                committed(&store, commit(vec![write("b", ExpectedVersion::Any, 1)])).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    assert_eq!(
        next_positions(&mut subscription, 10).await,
        (11..=20).collect::<Vec<_>>()
    );
    writer.await.expect("writer task");
    // Nothing more is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), subscription.next())
            .await
            .is_err()
    );
}

/// Subscribing from the middle starts exactly there.
pub async fn subscription_from_the_middle_starts_there<S: EventStore + Clone>(store: S) {
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 10)])).await;
    let mut subscription = store.subscribe(6);
    assert_eq!(
        next_positions(&mut subscription, 5).await,
        (6..=10).collect::<Vec<_>>()
    );
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 2)])).await;
    assert_eq!(next_positions(&mut subscription, 2).await, vec![11, 12]);
}

/// Subscribing beyond the head yields nothing until those positions are committed.
pub async fn subscription_beyond_the_head_waits_for_those_positions<S: EventStore + Clone>(
    store: S,
) {
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 2)])).await;
    let mut subscription = store.subscribe(5);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), subscription.next())
            .await
            .is_err(),
        "nothing at or beyond 5 yet"
    );
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 2)])).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), subscription.next())
            .await
            .is_err(),
        "positions 3 and 4 are before the subscription"
    );
    committed(&store, commit(vec![write("a", ExpectedVersion::Any, 3)])).await;
    assert_eq!(next_positions(&mut subscription, 3).await, vec![5, 6, 7]);
}

/// `writers` tasks, each appending `commits` commits of `events` events to a stream of its
/// own (yielding between commits, so that readers interleave).
fn spawn_writers<S: EventStore + Clone>(
    store: &S,
    writers: usize,
    commits: usize,
    events: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("writer-{writer}");
                for _ in 0..commits {
                    committed(
                        &store,
                        commit(vec![write(&name, ExpectedVersion::Any, events)]),
                    )
                    .await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

/// A subscriber catching up on a log several pages long while writers keep appending
/// reads every event, in order, exactly once, across the move from catching up to
/// following the head.
pub async fn subscriber_catching_up_while_writers_append_reads_every_event_once<
    S: EventStore + Clone,
>(
    store: S,
) {
    const HISTORY: usize = 3 * crate::subscription::SUBSCRIPTION_PAGE + 7;
    const WRITERS: usize = 4;
    const COMMITS_PER_WRITER: usize = 60;
    const EVENTS_PER_COMMIT: usize = 9;
    for chunk in 0..HISTORY / 100 {
        let name = format!("history-{chunk}");
        committed(
            &store,
            commit(vec![write(&name, ExpectedVersion::Any, 100)]),
        )
        .await;
    }
    let rest = HISTORY % 100;
    committed(
        &store,
        commit(vec![write("history", ExpectedVersion::Any, rest)]),
    )
    .await;
    let mut subscription = store.subscribe(1);
    let tasks = spawn_writers(&store, WRITERS, COMMITS_PER_WRITER, EVENTS_PER_COMMIT);
    let total = (HISTORY + WRITERS * COMMITS_PER_WRITER * EVENTS_PER_COMMIT) as u64;
    let positions = next_positions(&mut subscription, total as usize).await;
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    for task in tasks {
        task.await.expect("writer task");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), subscription.next())
            .await
            .is_err(),
        "no event is delivered twice"
    );
}

/// A subscriber that does not poll while 10,000 events are appended holds nothing up and
/// later reads every one of them, in order, exactly once.
pub async fn unpolled_subscriber_later_reads_ten_thousand_events_in_order_once<
    S: EventStore + Clone,
>(
    store: S,
) {
    const WRITERS: usize = 16;
    const COMMITS_PER_WRITER: usize = 25;
    const EVENTS_PER_COMMIT: usize = 25;
    const TOTAL: u64 = (WRITERS * COMMITS_PER_WRITER * EVENTS_PER_COMMIT) as u64;
    let mut subscription = store.subscribe(1);
    let tasks = spawn_writers(&store, WRITERS, COMMITS_PER_WRITER, EVENTS_PER_COMMIT);
    for task in tasks {
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("an unpolled subscriber never slows appends")
            .expect("writer task");
    }
    assert_eq!(store.head().position, TOTAL);
    let positions = next_positions(&mut subscription, TOTAL as usize).await;
    assert_eq!(positions, (1..=TOTAL).collect::<Vec<_>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), subscription.next())
            .await
            .is_err(),
        "no event is delivered twice"
    );
}

/// `verify_chain` accepts an intact log, whole or in part.
pub async fn verify_chain_accepts_a_good_log<S: EventStore>(store: S) {
    assert_eq!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact {
            head: crate::Head::EMPTY,
            events_checked: 0
        }
    );
    for i in 0..30 {
        let name = format!("s{}", i % 4);
        committed(
            &store,
            commit(vec![write(&name, ExpectedVersion::Any, 1 + i % 3)]),
        )
        .await;
    }
    let head = store.head();
    assert_eq!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact {
            head,
            events_checked: head.position
        }
    );
    let events = all_events(&store).await;
    let middle = verify_chain(&store, 10, 20).await.unwrap();
    assert_eq!(
        middle,
        ChainVerdict::Intact {
            head: crate::Head {
                position: 20,
                hash: events[19].hash[..].try_into().unwrap()
            },
            events_checked: 11
        }
    );
    // A dyn store verifies the same way.
    let dyn_store: &dyn EventStore = &store;
    assert!(matches!(
        verify_chain(dyn_store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { .. }
    ));
}
