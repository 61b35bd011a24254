//! What the file store must do: survive reopening and lock its directory (refusing foreign
//! formats and letting `verify_chain` name tampered positions is `durable/mod.rs`, shared
//! with the sled store), and judge damaged segment files at open: a torn tail is cut, damage
//! to acknowledged data is refused.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use signpost_eventlog::file_store::{raw, FORMAT_VERSION};
use signpost_eventlog::{
    verify_chain, AppendOutcome, ChainProblem, ChainVerdict, EventEnvelope, EventStore,
    ExpectedVersion, FileEventStore, FileOptions, Idempotency, IdempotencyKey, LogError, StreamId,
};

fn open(dir: &Path) -> Result<FileEventStore, LogError> {
    FileEventStore::open(dir, FileOptions::default())
}

#[path = "durable/mod.rs"]
mod durable;
use durable::{commit, fill};

fn small_segments() -> FileOptions {
    FileOptions {
        segment_bytes: 2048,
        ..FileOptions::default()
    }
}

async fn all_events(store: &FileEventStore) -> Vec<EventEnvelope> {
    store.read_range(1, usize::MAX).await.expect("read_range")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    raw::segment_files(dir).expect("segment files")
}

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Reopening and locking, as in tests/sled_store.rs, with the file store's own checks

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
    let s0_events = store.read_stream(&s0, 1, 100).await.unwrap();
    drop(store);

    let store = open(dir.path()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(store.store_epoch(), epoch);
    assert_eq!(*store.watch_head().borrow(), head.position);
    assert_eq!(store.stream_version(&s0).await.unwrap(), version);
    assert_eq!(store.read_range(1, 100).await.unwrap(), events);
    assert_eq!(store.read_stream(&s0, 1, 100).await.unwrap(), s0_events);
    let stored = store.lookup_idempotency(&key).await.unwrap().expect("kept");
    assert_eq!(stored.committed, first);
    assert_eq!(stored.outcome, Bytes::from_static(b"first outcome"));
    assert_eq!(
        store.append(idempotent).await.unwrap(),
        AppendOutcome::Duplicate(stored)
    );
    let other_key = IdempotencyKey {
        principal: "p".into(),
        request_id: "other".into(),
    };
    assert_eq!(store.lookup_idempotency(&other_key).await.unwrap(), None);
    // The sequencer's versions come from the rebuilt index and still enforce expectations.
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
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { .. }
    ));
}

#[tokio::test]
async fn a_store_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let briefly = FileOptions {
        lock_wait: std::time::Duration::from_millis(100),
        ..FileOptions::default()
    };
    assert!(matches!(
        FileEventStore::open(dir.path(), briefly),
        Err(LogError::Unavailable(_))
    ));
    // The raw tools take the same lock (after the same wait as a default open).
    assert!(matches!(
        raw::read_event_bytes(dir.path(), 1),
        Err(LogError::Unavailable(_))
    ));
    drop(store);
    open(dir.path()).expect("unlocked once closed");
}

// ---------------------------------------------------------------------------------------------
// Specific to the file format

/// Where the frames of the last segment end (after them: zeros written ahead, or damage).
fn data_len(dir: &Path) -> u64 {
    raw::segment_data_len(&last_segment(dir)).expect("data length")
}

/// Whether everything after `from` in `path` is zero.
fn zeros_from(path: &Path, from: u64) -> bool {
    std::fs::read(path).unwrap()[from as usize..]
        .iter()
        .all(|byte| *byte == 0)
}

/// Writes `commits` one-event commits, then one more whose frame is returned (start offset in
/// the last segment and its bytes) so that tests can fake a torn write of it.
async fn fill_and_capture_last_frame(dir: &Path, commits: usize) -> (u64, Vec<u8>) {
    let store = open(dir).unwrap();
    fill(&store, commits).await;
    let before = data_len(dir);
    store.append(commit("last", 1)).await.unwrap();
    drop(store);
    let after = data_len(dir);
    let bytes = std::fs::read(last_segment(dir)).unwrap();
    (before, bytes[before as usize..after as usize].to_vec())
}

/// Replaces the last segment's content from `at` on with `bytes` (and nothing after them).
fn rewrite_from(dir: &Path, at: u64, bytes: &[u8]) {
    let segment = last_segment(dir);
    let mut content = std::fs::read(&segment).unwrap();
    content.truncate(at as usize);
    content.extend_from_slice(bytes);
    std::fs::write(&segment, content).unwrap();
}

/// Opens the store and checks that it holds exactly the first `position` events, that its
/// last segment's data ends at `data_end` followed by nothing but zeros, and that appends
/// continue the chain (also across a second reopen).
async fn assert_reopens_at(dir: &Path, position: u64, data_end: u64) {
    let store = open(dir).expect("a torn tail does not prevent opening");
    assert_eq!(store.head().position, position);
    let segment = last_segment(dir);
    assert_eq!(data_len(dir), data_end);
    assert!(zeros_from(&segment, data_end), "torn bytes cut");
    let events = all_events(&store).await;
    assert_eq!(events.len() as u64, position);
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { head, .. } if head == store.head()
    ));
    // New appends continue the chain right after the acknowledged events.
    let AppendOutcome::Committed(next) = store.append(commit("after", 2)).await.unwrap() else {
        panic!("expected a commit");
    };
    assert_eq!(next.first_position, position + 1);
    drop(store);
    let store = open(dir).expect("reopen after the repair");
    assert_eq!(store.head().position, position + 2);
    assert!(data_len(dir) > data_end);
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { .. }
    ));
}

#[tokio::test]
async fn garbage_after_the_last_frame_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 10).await;
    let acknowledged = data_len(dir.path());
    let garbage = b"this is not a frame, just what a torn write left behind";
    // Right after the last frame (over the zeros written ahead), and after the zeros.
    rewrite_from(dir.path(), acknowledged, garbage);
    assert_reopens_at(dir.path(), 10, acknowledged).await;
    let acknowledged = data_len(dir.path());
    append_bytes(&last_segment(dir.path()), garbage);
    assert_reopens_at(dir.path(), 12, acknowledged).await;
}

#[tokio::test]
async fn zeros_after_the_last_frame_are_no_data() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 10).await;
    let acknowledged = data_len(dir.path());
    append_bytes(&last_segment(dir.path()), &[0u8; 4096]);
    assert_reopens_at(dir.path(), 10, acknowledged).await;
}

#[tokio::test]
async fn a_half_written_last_frame_is_cut_at_open() {
    for cut in ["inside the header", "half the body", "all but one byte"] {
        // Written past the end of the file, and written over zeros prepared ahead.
        for zeros_after in [0, 8192] {
            let dir = tempfile::tempdir().unwrap();
            let (start, frame) = fill_and_capture_last_frame(dir.path(), 10).await;
            let keep = match cut {
                "inside the header" => 7,
                "half the body" => frame.len() / 2,
                // All but the last byte that is not zero: over zeros, a lost zero byte
                // is not lost (a frame whose checksum ends in 0x00 then reads whole, as
                // it should, once in 256 runs).
                _ => frame
                    .iter()
                    .rposition(|byte| *byte != 0)
                    .expect("a frame is not all zeros"),
            };
            let mut torn = frame[..keep].to_vec();
            torn.resize(keep + zeros_after, 0);
            rewrite_from(dir.path(), start, &torn);
            assert_reopens_at(dir.path(), 10, start).await;
        }
    }
}

#[tokio::test]
async fn a_last_frame_with_lost_sectors_is_cut_at_open() {
    // A torn write can leave the file at full length with some of it never written (zeros).
    let dir = tempfile::tempdir().unwrap();
    let (start, frame) = fill_and_capture_last_frame(dir.path(), 10).await;
    let mut torn = frame.clone();
    torn[20..20 + (frame.len() - 20) / 2].fill(0);
    rewrite_from(dir.path(), start, &torn);
    assert_reopens_at(dir.path(), 10, start).await;
    // The header lost instead of the body.
    let dir = tempfile::tempdir().unwrap();
    let (start, frame) = fill_and_capture_last_frame(dir.path(), 10).await;
    let mut torn = frame.clone();
    torn[..20].fill(0);
    rewrite_from(dir.path(), start, &torn);
    assert_reopens_at(dir.path(), 10, start).await;
}

#[tokio::test]
async fn damage_followed_by_valid_frames_fails_open_with_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    let segment = last_segment(dir.path());
    let len = file_len(&segment);
    let pristine = std::fs::read(&segment).unwrap();
    // A byte in a frame body, then a byte in a frame header, both in the middle of the log.
    for offset in [data_len(dir.path()) / 2, 3] {
        flip_byte(&segment, offset);
        match open(dir.path()) {
            Err(LogError::Corrupt { position, reason }) => {
                assert!(position > 0 && position < 20, "position {position}");
                assert!(reason.contains("offset"), "names the offset: {reason}");
                assert!(reason.contains("valid frame follows"), "{reason}");
            }
            other => panic!("damage at offset {offset}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(std::fs::read(&segment).unwrap().len() as u64, len);
        assert_eq!(
            std::fs::read(&segment).unwrap()[offset as usize],
            pristine[offset as usize] ^ 0x20,
            "nothing was cut or repaired"
        );
        std::fs::write(&segment, &pristine).unwrap();
    }
    assert_eq!(open(dir.path()).unwrap().head().position, 20);
}

#[tokio::test]
async fn zeros_are_written_ahead_and_only_the_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        preallocate_bytes: 64 * 1024,
        ..FileOptions::default()
    };
    let store = FileEventStore::open(dir.path(), options.clone()).unwrap();
    fill(&store, 5).await;
    let segment = last_segment(dir.path());
    let data = data_len(dir.path());
    assert!(file_len(&segment) >= data + 32 * 1024, "zeros ahead");
    assert!(zeros_from(&segment, data));
    // Appends go over the zeros; the file only grows when less than half a chunk is left.
    fill(&store, 200).await;
    let data = data_len(dir.path());
    assert!(file_len(&segment) >= data + 32 * 1024);
    let events = all_events(&store).await;
    drop(store);
    for _ in 0..2 {
        let store = FileEventStore::open(dir.path(), options.clone()).unwrap();
        assert_eq!(all_events(&store).await, events);
        drop(store);
    }
    // Without zeros ahead, a store still opens those files and appends after the data.
    let exact = FileOptions {
        preallocate_bytes: 0,
        ..FileOptions::default()
    };
    let store = FileEventStore::open(dir.path(), exact.clone()).unwrap();
    fill(&store, 3).await;
    assert!(zeros_from(&segment, data_len(dir.path())));
    drop(store);
    let store = FileEventStore::open(dir.path(), exact).unwrap();
    assert_eq!(store.head().position, 208);
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { .. }
    ));
}

#[tokio::test]
async fn damage_to_the_last_frame_alone_reads_as_a_torn_tail() {
    // The documented limit of detection without a second sync per batch: a damaged last frame
    // looks exactly like an interrupted write, so it is cut.
    let dir = tempfile::tempdir().unwrap();
    let (start, frame) = fill_and_capture_last_frame(dir.path(), 10).await;
    flip_byte(&last_segment(dir.path()), start + frame.len() as u64 - 3);
    assert_reopens_at(dir.path(), 10, start).await;
}

#[tokio::test]
async fn segments_roll_over_and_reopen_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    for i in 0..40 {
        store
            .append(commit(&format!("s{}", i % 4), 1 + i % 3))
            .await
            .unwrap();
    }
    let head = store.head();
    let events = all_events(&store).await;
    drop(store);
    let files = segments(dir.path());
    assert!(files.len() >= 5, "{} segments", files.len());
    for file in &files[..files.len() - 1] {
        let len = file_len(file);
        assert!(len > 0 && len <= 2048, "{} is {len} bytes", file.display());
    }

    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(all_events(&store).await, events);
    let scanned: Vec<EventEnvelope> = store.scan(1, u64::MAX).map(|e| e.unwrap()).collect();
    assert_eq!(scanned, events);
    let s1 = store
        .read_stream(&StreamId::new("s1").unwrap(), 1, 1000)
        .await
        .unwrap();
    let expected: Vec<&EventEnvelope> = events.iter().filter(|e| e.stream_id == "s1").collect();
    assert_eq!(s1.iter().collect::<Vec<_>>(), expected);
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact { .. }
    ));
    drop(store);

    // A torn tail in the last segment is cut; the segments before it are untouched.
    let last = last_segment(dir.path());
    let last_data = data_len(dir.path());
    let before: Vec<Vec<u8>> = files[..files.len() - 1]
        .iter()
        .map(|file| std::fs::read(file).unwrap())
        .collect();
    append_bytes(&last, b"torn");
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(file_len(&last), last_data);
    assert_eq!(segments(dir.path()), files);
    for (file, bytes) in files.iter().zip(before) {
        assert_eq!(std::fs::read(file).unwrap(), bytes);
    }
}

#[tokio::test]
async fn damage_in_an_earlier_segment_fails_open_with_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    fill(&store, 40).await;
    drop(store);
    let files = segments(dir.path());
    assert!(files.len() > 2);
    // The last frame of the first segment: its successor is in the next segment.
    let first = &files[0];
    flip_byte(first, file_len(first) - 2);
    assert!(matches!(
        FileEventStore::open(dir.path(), small_segments()),
        Err(LogError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn an_empty_segment_left_by_a_crash_after_roll_over_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store, 5).await;
    drop(store);
    // The sequencer creates (and syncs) the next segment before writing to it.
    let next = dir.path().join("segment-00000001.log");
    std::fs::File::create(&next).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(store.head().position, 5);
    fill(&store, 3).await;
    assert!(file_len(&next) > 0, "appends go to the newest segment");
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.head().position, 8);
    assert_eq!(all_events(&store).await.len(), 8);
}

#[tokio::test]
async fn a_missing_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    fill(&store, 40).await;
    drop(store);
    let files = segments(dir.path());
    std::fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        FileEventStore::open(dir.path(), small_segments()),
        Err(LogError::Corrupt { position: 0, .. })
    ));
}

#[tokio::test]
async fn only_an_empty_directory_becomes_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), b"someone else's data").unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Corrupt { position: 0, .. })
    ));

    // Segments whose metadata is gone are not silently restarted either.
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 3).await;
    std::fs::remove_file(dir.path().join("meta")).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Corrupt { position: 0, .. })
    ));

    // A directory that does not exist yet is created.
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let store = open(&nested).unwrap();
    assert_eq!(store.head().position, 0);
    assert!(nested.join("meta").exists());
    assert!(!nested.join("meta.tmp").exists());
}

#[tokio::test]
async fn big_batches_read_back_in_one_range_and_one_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let mut commit = commit(&format!("w{writer}"), 25);
                commit.idempotency = Some(Idempotency {
                    key: IdempotencyKey {
                        principal: format!("w{writer}"),
                        request_id: format!("r{n}"),
                    },
                    request_fingerprint: [1; 32],
                    outcome: Bytes::from(vec![7u8; 300]),
                });
                store.append(commit).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.head().position, 16 * 20 * 25);
    let events = all_events(&store).await;
    assert_eq!(events.len(), 8000);
    let scanned: Vec<EventEnvelope> = store.scan(1, u64::MAX).map(|e| e.unwrap()).collect();
    assert_eq!(scanned, events);
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(all_events(&store).await, events);
    for writer in 0..16 {
        let stream = StreamId::new(format!("w{writer}")).unwrap();
        assert_eq!(store.stream_version(&stream).await.unwrap(), 500);
        let key = IdempotencyKey {
            principal: format!("w{writer}"),
            request_id: "r19".into(),
        };
        let stored = store.lookup_idempotency(&key).await.unwrap().unwrap();
        assert_eq!(stored.committed.stream_versions, vec![(stream, 500)]);
    }
}

#[tokio::test]
async fn an_undecodable_event_opens_and_is_reported_where_it_lies() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 10).await;
    raw::tamper_overwrite_event_bytes(dir.path(), 5, &[0xff, 0xff, 0xff]).unwrap();
    let store = open(dir.path()).expect("a tampered store still opens");
    let scanned: Vec<_> = store.scan(1, u64::MAX).collect();
    assert_eq!(
        scanned.len(),
        5,
        "four events, then the error, then the end"
    );
    assert!(scanned[..4].iter().all(|event| event.is_ok()));
    assert!(matches!(
        scanned[4],
        Err(LogError::Corrupt { position: 5, .. })
    ));
    assert!(matches!(
        store.read_range(1, 100).await,
        Err(LogError::Corrupt { position: 5, .. })
    ));
    assert_eq!(store.read_range(6, 100).await.unwrap().len(), 5);
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Broken {
            position: 5,
            problem: ChainProblem::Undecodable { .. }
        }
    ));
}

#[tokio::test]
async fn raw_tools_name_events_by_their_place_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 3).await;
    assert_eq!(raw::read_event_bytes(dir.path(), 0).unwrap(), None);
    assert_eq!(raw::read_event_bytes(dir.path(), 4).unwrap(), None);
    let third = raw::read_event_bytes(dir.path(), 3).unwrap().unwrap();
    assert_eq!(EventEnvelope::decode(third.as_slice()).unwrap().position, 3);
    assert!(raw::tamper_overwrite_event_bytes(dir.path(), 5, b"x").is_err());
    assert!(raw::tamper_delete_event(dir.path(), 4).is_err());
    // Untouched by the failed edits.
    assert_eq!(open(dir.path()).unwrap().head().position, 3);
}

#[tokio::test]
async fn encoded_reads_hand_over_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store, 700).await;
    let encoded = store.read_range_encoded(3, 600).await.unwrap();
    let decoded = store.read_range(3, 600).await.unwrap();
    assert_eq!(encoded.len(), 600);
    for (bytes, envelope) in encoded.iter().zip(&decoded) {
        assert_eq!(bytes.as_ref(), envelope.encode_to_vec().as_slice());
    }
    assert!(store.read_range_encoded(701, 10).await.unwrap().is_empty());
    drop(store);
    let stored = raw::read_event_bytes(dir.path(), 10).unwrap().unwrap();
    assert_eq!(encoded[7].as_ref(), stored.as_slice());
    // Bytes that are not an envelope (under a valid checksum) are handed over as they are.
    raw::tamper_overwrite_event_bytes(dir.path(), 20, &[0xff, 0xff, 0xff]).unwrap();
    let store = open(dir.path()).unwrap();
    let read = store.read_range_encoded(1, 100).await.unwrap();
    assert_eq!(read[19].as_ref(), &[0xff, 0xff, 0xff]);
}

/// The verifier hashes stored bytes without decoding them only when they are prost's own
/// encoding; bytes that decode to the same envelope in another form get the definition's
/// verdict (the decoded content's hash), and changed content is still caught.
#[tokio::test]
async fn the_verifier_judges_non_canonical_bytes_by_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 10).await;
    let fifth = raw::read_event_bytes(dir.path(), 5).unwrap().unwrap();
    // The position written a second time at the end: prost keeps the last, the same value.
    let mut same_content = fifth.clone();
    same_content.extend_from_slice(&[0x08, 5]);
    assert_eq!(
        EventEnvelope::decode(same_content.as_slice()).unwrap(),
        EventEnvelope::decode(fifth.as_slice()).unwrap()
    );
    raw::tamper_overwrite_event_bytes(dir.path(), 5, &same_content).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Intact {
            events_checked: 10,
            ..
        }
    ));
    drop(store);
    // The same trick with another stream version is a different envelope.
    let mut other_content = raw::read_event_bytes(dir.path(), 6).unwrap().unwrap();
    other_content.extend_from_slice(&[0x18, 0x7f]);
    raw::tamper_overwrite_event_bytes(dir.path(), 6, &other_content).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Broken {
            position: 6,
            problem: ChainProblem::HashMismatch { .. }
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// The index checkpoint (`checkpoint.rs`): saved at a clean close, taken at open only as far as
// the segments bear it out

const CHECKPOINT: &str = "index";

/// Stream names as the control plane writes them (a prefix and a UUID, which the index keeps
/// compact) and others.
fn stream_name(n: u8) -> String {
    let uuid = uuid::Uuid::from_u128(u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1);
    match n % 3 {
        0 => format!("plain-{n}"),
        1 => format!("organization-{}", uuid.hyphenated()),
        _ => format!("connection-{}", uuid.hyphenated()),
    }
}

/// A commit of `count` events to `stream`, under idempotency key `request` if given.
fn keyed_commit(stream: &str, count: usize, request: Option<String>) -> signpost_eventlog::Commit {
    let mut commit = commit(stream, count);
    commit.idempotency = request.map(|request_id| Idempotency {
        key: IdempotencyKey {
            principal: "p".into(),
            request_id,
        },
        request_fingerprint: [1; 32],
        outcome: Bytes::from(format!("outcome of {stream}")),
    });
    commit
}

/// What a store answers from its index: every event, each stream's events and version, and
/// the outcome stored under each request id.
#[derive(Debug, PartialEq)]
struct Answers {
    head: signpost_eventlog::Head,
    events: Vec<EventEnvelope>,
    streams: Vec<(u64, Vec<EventEnvelope>)>,
    requests: Vec<Option<signpost_eventlog::StoredOutcome>>,
}

async fn answers(store: &FileEventStore, streams: &[String], requests: &[String]) -> Answers {
    let mut answers = Answers {
        head: store.head(),
        events: all_events(store).await,
        streams: Vec::new(),
        requests: Vec::new(),
    };
    for stream in streams {
        let id = StreamId::new(stream).unwrap();
        answers.streams.push((
            store.stream_version(&id).await.unwrap(),
            store.read_stream(&id, 1, usize::MAX).await.unwrap(),
        ));
    }
    for request_id in requests {
        let key = IdempotencyKey {
            principal: "p".into(),
            request_id: request_id.clone(),
        };
        answers
            .requests
            .push(store.lookup_idempotency(&key).await.unwrap());
    }
    answers
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Closing and opening again, any number of times, with segments rolling over: a store
    /// opened from its checkpoint answers exactly as before it closed, and as a store that
    /// indexed every segment itself.
    #[test]
    fn a_store_opened_from_its_checkpoint_answers_as_one_that_scanned_everything(
        ops in proptest::collection::vec((0u8..24, 1usize..4, proptest::bool::ANY, proptest::bool::ANY), 1..48),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let options = FileOptions { segment_bytes: 4096, ..FileOptions::default() };
            let streams: Vec<String> = (0..24).map(stream_name).collect();
            let mut requests = Vec::new();
            let mut store = FileEventStore::open(dir.path(), options.clone()).unwrap();
            for (i, (stream, count, keyed, reopen)) in ops.into_iter().enumerate() {
                let request = keyed.then(|| format!("r{i}"));
                requests.extend(request.clone());
                store.append(keyed_commit(&streams[usize::from(stream)], count, request)).await.unwrap();
                if reopen {
                    let before = answers(&store, &streams, &requests).await;
                    drop(store);
                    assert!(dir.path().join(CHECKPOINT).exists(), "a clean close saves the index");
                    store = FileEventStore::open(dir.path(), options.clone()).unwrap();
                    assert!(store.opened_from_checkpoint());
                    assert_eq!(answers(&store, &streams, &requests).await, before);
                }
            }
            let before = answers(&store, &streams, &requests).await;
            drop(store);
            std::fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
            let store = FileEventStore::open(dir.path(), options.clone()).unwrap();
            assert!(!store.opened_from_checkpoint());
            assert_eq!(answers(&store, &streams, &requests).await, before);
            // Appends after an open from a checkpoint find the right versions and keys.
            drop(store);
            let store = FileEventStore::open(dir.path(), options).unwrap();
            assert!(store.opened_from_checkpoint());
            let stream = StreamId::new(&streams[1]).unwrap();
            let version = store.stream_version(&stream).await.unwrap();
            let mut next = commit(&streams[1], 1);
            next.writes[0].expected = ExpectedVersion::Exact(version);
            store.append(next).await.unwrap();
            assert_eq!(store.stream_version(&stream).await.unwrap(), version + 1);
            if let Some(request) = requests.first() {
                let retried = keyed_commit("anything", 1, Some(request.clone()));
                assert!(matches!(store.append(retried).await.unwrap(), AppendOutcome::Duplicate(_)));
            }
        });
    }
}

/// Copies the files of a store's directory (what a crash at this moment would leave on disk:
/// every acknowledged append is in the segments).
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn events_appended_after_the_checkpoint_are_indexed_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let streams: Vec<String> = (0..6).map(stream_name).collect();
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    for (i, stream) in streams.iter().cycle().take(30).enumerate() {
        store
            .append(keyed_commit(stream, 1, Some(format!("early-{i}"))))
            .await
            .unwrap();
    }
    drop(store);
    let saved = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();

    // Open from the checkpoint, append past it (into new segments too), and crash: the
    // checkpoint on disk is still the one of 30 events.
    let store = FileEventStore::open(dir.path(), small_segments()).unwrap();
    assert!(store.opened_from_checkpoint());
    let requests: Vec<String> = (0..30)
        .map(|i| format!("early-{i}"))
        .chain((0..30).map(|i| format!("late-{i}")))
        .collect();
    for (i, stream) in streams.iter().cycle().take(30).enumerate() {
        store
            .append(keyed_commit(stream, 2, Some(format!("late-{i}"))))
            .await
            .unwrap();
    }
    let expected = answers(&store, &streams, &requests).await;
    assert_eq!(expected.head.position, 90);
    let crashed = tempfile::tempdir().unwrap();
    crash_image(dir.path(), crashed.path());
    drop(store);
    assert_eq!(
        std::fs::read(crashed.path().join(CHECKPOINT)).unwrap(),
        saved
    );

    let store = FileEventStore::open(crashed.path(), small_segments()).unwrap();
    assert!(store.opened_from_checkpoint());
    assert_eq!(answers(&store, &streams, &requests).await, expected);
    assert!(expected.requests.iter().all(Option::is_some));
}

/// Rewrites the event at `position` behind the log's back (framing kept valid), changed by
/// `change`.
fn alter_event(dir: &Path, position: u64, change: impl FnOnce(&mut EventEnvelope)) {
    let bytes = raw::read_event_bytes(dir, position).unwrap().unwrap();
    let mut event = EventEnvelope::decode(bytes.as_slice()).unwrap();
    change(&mut event);
    raw::tamper_overwrite_event_bytes(dir, position, &event.encode_to_vec()).unwrap();
}

#[tokio::test]
async fn a_checkpoint_the_segments_do_not_bear_out_is_not_used() {
    let streams: Vec<String> = (0..6).map(stream_name).collect();
    let requests: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    // A store of 20 events closed cleanly, what it answered, and where its data ended
    // before the last event.
    let fresh = || async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        let mut before_last = 0;
        for (i, stream) in streams.iter().cycle().take(20).enumerate() {
            before_last = data_len(dir.path());
            store
                .append(keyed_commit(stream, 1, Some(format!("r{i}"))))
                .await
                .unwrap();
        }
        let answered = answers(&store, &streams, &requests).await;
        drop(store);
        assert!(dir.path().join(CHECKPOINT).exists());
        (dir, answered, before_last)
    };
    let opens_without_it = |dir: &Path| {
        let store = open(dir).expect("the open goes on without the checkpoint");
        assert!(!store.opened_from_checkpoint());
        store
    };

    // The file itself damaged, cut short, or another store's.
    let (dir, answered, _) = fresh().await;
    let path = dir.path().join(CHECKPOINT);
    flip_byte(&path, file_len(&path) / 2);
    let store = opens_without_it(dir.path());
    assert!(answers(&store, &streams, &requests).await == answered);

    let (dir, answered, _) = fresh().await;
    let path = dir.path().join(CHECKPOINT);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 9]).unwrap();
    let store = opens_without_it(dir.path());
    assert!(answers(&store, &streams, &requests).await == answered);

    let (dir, answered, _) = fresh().await;
    let (other, _, _) = fresh().await;
    std::fs::copy(other.path().join(CHECKPOINT), dir.path().join(CHECKPOINT)).unwrap();
    let store = opens_without_it(dir.path());
    assert!(answers(&store, &streams, &requests).await == answered);

    // An event rewritten behind the log's back into another stream, framing kept valid: the
    // frames are not the ones the checkpoint was written from, the index follows the
    // segments, and the chain names the event.
    let (dir, _, _) = fresh().await;
    alter_event(dir.path(), 7, |event| event.stream_id = streams[5].clone());
    let store = opens_without_it(dir.path());
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Broken { position: 7, .. }
    ));
    let moved = store
        .read_stream(&StreamId::new(&streams[5]).unwrap(), 1, usize::MAX)
        .await
        .unwrap();
    assert!(moved.iter().any(|event| event.position == 7));
    drop(store);

    // The same with every record where it was (a payload byte changed): only the frames'
    // digest tells.
    let (dir, _, _) = fresh().await;
    alter_event(dir.path(), 7, |event| {
        let mut payload = event.payload.to_vec();
        payload[0] ^= 1;
        event.payload = payload.into();
    });
    let store = opens_without_it(dir.path());
    assert!(matches!(
        verify_chain(&store, 1, u64::MAX).await.unwrap(),
        ChainVerdict::Broken { position: 7, .. }
    ));
    drop(store);

    // The last frame gone (a disk that lost it): the segments end before the place the
    // checkpoint covers, and the log opens at what they hold.
    let (dir, answered, before_last) = fresh().await;
    let segment = last_segment(dir.path());
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..before_last as usize]).unwrap();
    let store = opens_without_it(dir.path());
    assert_eq!(store.head().position, 19);
    assert!(all_events(&store).await[..] == answered.events[..19]);
}

#[tokio::test]
async fn damage_before_the_checkpoints_place_is_judged_as_without_it() {
    // As `damage_followed_by_valid_frames_fails_open_with_corrupt`, with the checkpoint of a
    // clean close covering the damaged frame: the open fails the same way and cuts nothing.
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap(), 20).await;
    assert!(dir.path().join(CHECKPOINT).exists());
    let segment = last_segment(dir.path());
    let pristine = std::fs::read(&segment).unwrap();
    flip_byte(&segment, data_len(dir.path()) / 2);
    match open(dir.path()) {
        Err(LogError::Corrupt { reason, .. }) => {
            assert!(reason.contains("valid frame follows"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(&segment).unwrap().len(), pristine.len());
    std::fs::write(&segment, &pristine).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(store.opened_from_checkpoint());
    assert_eq!(store.head().position, 20);
}
