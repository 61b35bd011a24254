//! The audit database as a projection: a database of another format is rebuilt (and keeps
//! its checkpoints), and a projection killed with SIGKILL (a child process on a real sled
//! log) resumes from the position it recorded, with no entry missing or repeated.

use std::io::BufRead;
use std::sync::Arc;

use signpost_audit::*;
use signpost_domain::{encode_event, event_type, schema, streams, Event};
use signpost_eventlog::{
    Commit, CommitMeta, EventStore, ExpectedVersion, MemoryEventStore, NewEvent, SledEventStore,
    SledOptions, StreamId, StreamWrite,
};

const BASE_URL: &str = "https://signpost.test/";

async fn append(store: &dyn EventStore, actor: &str, stream: String, events: Vec<Event>) {
    let commit = Commit {
        writes: vec![StreamWrite {
            stream: StreamId::new(stream).unwrap(),
            expected: ExpectedVersion::Any,
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_type: event_type(e).into(),
                    payload: encode_event(e).into(),
                })
                .collect(),
        }],
        meta: CommitMeta {
            actor: schema::Actor {
                kind: schema::ActorKind::ApiToken as i32,
                id: actor.into(),
                on_behalf_of: String::new(),
                display_name: "Onboarding".into(),
            },
            correlation_id: uuid::Uuid::now_v7().to_string(),
            request_id: None,
        },
        idempotency: None,
    };
    store.append(commit).await.unwrap();
}

/// Organization `i`'s `n`th commit: created, then domains claimed, verified, released.
async fn organization_commit(store: &dyn EventStore, i: usize, n: usize) {
    let org = format!("org-{i}");
    let domain = format!("d{}.firm-{i}.example", n / 3);
    let event = match n {
        0 => Event::OrganizationCreated(schema::OrganizationCreated {
            organization_id: org.clone(),
            display_name: format!("Firm {i}"),
            external_id: format!("ext-{i}"),
        }),
        n if n % 3 == 1 => Event::DomainClaimed(schema::DomainClaimed {
            domain,
            verification_record_name: "_signpost-challenge".into(),
            verification_value: "v".into(),
        }),
        n if n % 3 == 2 => Event::DomainVerified(schema::DomainVerified {
            domain,
            method: schema::VerificationMethod::DnsTxt as i32,
            note: String::new(),
        }),
        _ => Event::SsoPolicyChanged(schema::SsoPolicyChanged {
            previous: schema::SsoPolicy::Optional as i32,
            policy: schema::SsoPolicy::Enforced as i32,
        }),
    };
    append(
        store,
        &format!("token-{}", i % 3),
        streams::organization(&org),
        vec![event],
    )
    .await;
}

async fn all_positions(audit: &AuditProjection) -> Vec<u64> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list(
                AuditFilter::default(),
                None,
                MAX_PAGE_SIZE as i32,
                &token,
                Order::Ascending,
            )
            .await
            .unwrap();
        out.extend(page.entries.iter().map(|e| e.position));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_database_of_another_format_is_rebuilt_and_keeps_its_checkpoints() {
    let store = Arc::new(MemoryEventStore::new());
    for n in 0..12 {
        organization_commit(store.as_ref(), n % 2, n / 2).await;
    }
    let head = store.head().position;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap()
    };
    let options = || {
        let mut options = AuditOptions::new(BASE_URL);
        options.batch_events = 5;
        options.merge_events = 4;
        options
    };

    // Format 1: nine trees, whose meta says "caught up with this very log". Misread as
    // the current format, it would be served as is.
    let db = open();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("epoch", store.store_epoch().as_bytes())
        .unwrap();
    meta.insert("position", &head.to_be_bytes()).unwrap();
    meta.insert("hash", store.head().hash.to_vec()).unwrap();
    for tree in ["entries", "by_org", "time"] {
        db.open_tree(tree)
            .unwrap()
            .insert(1u64.to_be_bytes(), &b"format 1 row"[..])
            .unwrap();
    }
    let key = CheckpointKey::from_seed([3; 32]);
    let checkpoint = Checkpointer::open(&db, store.clone(), key.clone())
        .unwrap()
        .create(chrono::Utc::now())
        .await
        .unwrap();
    let audit = AuditProjection::start_with_db(store.clone(), db.clone(), options())
        .await
        .unwrap();
    assert!(audit.stats().rebuilt);
    assert_eq!(audit.position(), head);
    assert_eq!(all_positions(&audit).await, (1..=head).collect::<Vec<_>>());
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    for old in ["meta", "entries", "by_org", "time"] {
        assert!(!names.iter().any(|n| n == old), "{old} in {names:?}");
    }
    let checkpoints = Checkpointer::open(&db, store.clone(), key.clone()).unwrap();
    assert_eq!(
        checkpoints.list(10, "").unwrap().0,
        std::slice::from_ref(&checkpoint)
    );
    let rows = audit.dump().await.unwrap();
    audit.stop().await;
    drop(audit);

    // The same database again: resumed, not rebuilt.
    let audit = AuditProjection::start_with_db(store.clone(), db.clone(), options())
        .await
        .unwrap();
    assert!(!audit.stats().rebuilt);
    assert_eq!(audit.stats().resumed_from, head);
    assert_eq!(audit.dump().await.unwrap(), rows);
    audit.stop().await;
    drop(audit);

    // A record of another format version, or one that does not decode: rebuilt.
    for record in [vec![0x08, 99], vec![0xff, 0xff]] {
        db.open_tree("timeline")
            .unwrap()
            .insert("M", record)
            .unwrap();
        let audit = AuditProjection::start_with_db(store.clone(), db.clone(), options())
            .await
            .unwrap();
        assert!(audit.stats().rebuilt);
        assert_eq!(audit.dump().await.unwrap(), rows);
        audit.stop().await;
    }
    assert_eq!(checkpoints.list(10, "").unwrap().0, [checkpoint]);
}

const CHILD: &str = "SIGNPOST_AUDIT_CRASH_CHILD";
const TEST: &str = "a_projection_killed_mid_write_resumes_without_gaps_or_repeats";

fn crash_options() -> AuditOptions {
    let mut options = AuditOptions::new(BASE_URL);
    // Many small writes and frequent merges: a kill lands in or between any of them.
    options.linger = std::time::Duration::from_millis(1);
    options.batch_events = 7;
    options.merge_events = 40;
    options
}

/// The child: opens the log and the projection in `dir`, reports how it started, then
/// appends commits and reports the applied position until it is killed.
async fn child(dir: std::path::PathBuf) {
    let store: Arc<dyn EventStore> =
        Arc::new(SledEventStore::open(&dir.join("log"), SledOptions::default()).unwrap());
    let audit = AuditProjection::start(store.clone(), &dir.join("audit"), crash_options())
        .await
        .unwrap();
    let stats = audit.stats();
    println!(
        "CHILD started {} {} {}",
        stats.resumed_from,
        stats.rebuilt,
        store.head().position
    );
    let first = store.head().position as usize;
    for task in 0..4 {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0.. {
                organization_commit(store.as_ref(), first + task, n).await;
            }
        });
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        println!("CHILD applied {}", audit.position());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_mid_write_resumes_without_gaps_or_repeats() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child(dir.into()).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let mut process = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let mut started = None;
        let mut running = false;
        for line in lines {
            let line = line.unwrap();
            // The test harness may print its own words before ours on the same line.
            let ours = line.find("CHILD ").map_or("", |at| &line[at..]);
            let words: Vec<&str> = ours.split_whitespace().collect();
            match words.as_slice() {
                ["CHILD", "started", resumed, rebuilt, _head] => {
                    let resumed: u64 = resumed.parse().unwrap();
                    assert_eq!(*rebuilt, (round == 0).to_string(), "round {round}");
                    if round > 0 {
                        assert!(resumed > 0, "round {round}: nothing recovered");
                    }
                    started = Some(resumed);
                }
                ["CHILD", "applied", position] => {
                    let position: u64 = position.parse().unwrap();
                    let started = started.expect("started first");
                    if position >= started + 150 + 40 * round {
                        running = true;
                        break;
                    }
                }
                _ => {}
            }
        }
        process.kill().unwrap();
        process.wait().unwrap();
        assert!(running, "round {round}: the child ended on its own");
    }

    let store: Arc<dyn EventStore> =
        Arc::new(SledEventStore::open(&dir.path().join("log"), SledOptions::default()).unwrap());
    let head = store.head().position;
    let audit = AuditProjection::start(store.clone(), &dir.path().join("audit"), crash_options())
        .await
        .unwrap();
    assert!(!audit.stats().rebuilt);
    assert!(audit.stats().resumed_from > 0);
    assert_eq!(audit.position(), head);
    assert_eq!(all_positions(&audit).await, (1..=head).collect::<Vec<_>>());
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh =
        AuditProjection::start(store.clone(), fresh_dir.path(), AuditOptions::new(BASE_URL))
            .await
            .unwrap();
    assert_eq!(audit.dump().await.unwrap(), fresh.dump().await.unwrap());
    for org in 0..4 {
        let filter = AuditFilter {
            organization_id: Some(format!("org-{org}")),
            ..Default::default()
        };
        let page = async |audit: &AuditProjection| {
            audit
                .list(filter.clone(), None, 1000, "", Order::Descending)
                .await
                .unwrap()
                .entries
        };
        assert_eq!(page(&audit).await, page(&fresh).await);
    }
}

const IDLE_CHILD: &str = "SIGNPOST_AUDIT_IDLE_CHILD";
const IDLE_TEST: &str = "a_projection_killed_while_idle_resumes_at_the_head";

/// The idle child: appends commits, waits until the projection has applied them all,
/// reports it, and idles until it is killed.
async fn idle_child(dir: std::path::PathBuf) {
    let store: Arc<dyn EventStore> =
        Arc::new(SledEventStore::open(&dir.join("log"), SledOptions::default()).unwrap());
    let audit = AuditProjection::start(
        store.clone(),
        &dir.join("audit"),
        AuditOptions::new(BASE_URL),
    )
    .await
    .unwrap();
    for n in 0..50 {
        organization_commit(store.as_ref(), n % 3, n).await;
    }
    let head = store.head().position;
    audit.wait_for(head).await.unwrap();
    println!("CHILD idle {head}");
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_while_idle_resumes_at_the_head() {
    if let Some(dir) = std::env::var_os(IDLE_CHILD) {
        idle_child(dir.into()).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut process = std::process::Command::new(std::env::current_exe().unwrap())
        .args([IDLE_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(IDLE_CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(process.stdout.take().unwrap()).lines();
    let mut idle_at = None;
    for line in lines {
        let line = line.unwrap();
        if let Some(at) = line.find("CHILD idle ") {
            idle_at = Some(
                line[at + "CHILD idle ".len()..]
                    .trim()
                    .parse::<u64>()
                    .unwrap(),
            );
            break;
        }
    }
    process.kill().unwrap();
    process.wait().unwrap();
    let idle_at = idle_at.expect("the child reported it was idle");

    let store: Arc<dyn EventStore> =
        Arc::new(SledEventStore::open(&dir.path().join("log"), SledOptions::default()).unwrap());
    assert_eq!(store.head().position, idle_at);
    let audit = AuditProjection::start(store.clone(), &dir.path().join("audit"), crash_options())
        .await
        .unwrap();
    assert_eq!(
        audit.stats().resumed_from,
        idle_at,
        "the write that reached the head was flushed before the kill"
    );
    assert_eq!(
        all_positions(&audit).await,
        (1..=idle_at).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn checkpoints_move_out_of_the_audit_database_into_their_own_and_keep_chaining() {
    let store = Arc::new(MemoryEventStore::new());
    organization_commit(store.as_ref(), 0, 0).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_db = sled::Config::new().path(audit_dir.path()).open().unwrap();
    let key = CheckpointKey::from_seed([4; 32]);
    // Where earlier versions kept them: two checkpoints in the audit database.
    let old = Checkpointer::open(&audit_db, store.clone(), key.clone()).unwrap();
    let first = old.create(chrono::Utc::now()).await.unwrap();
    organization_commit(store.as_ref(), 0, 1).await;
    let second = old.create(chrono::Utc::now()).await.unwrap();
    drop(old);

    let own = tempfile::tempdir().unwrap();
    let path = own.path().join("checkpoints");
    let moved = Checkpointer::open_at(&path, Some(&audit_db), store.clone(), key.clone()).unwrap();
    let newest_first = vec![second.clone(), first.clone()];
    assert_eq!(moved.list(10, "").unwrap().0, newest_first);
    assert!(
        !audit_db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() == b"checkpoints"),
        "moved out of the audit database"
    );
    // The next one chains to the moved ones, and the whole chain verifies.
    organization_commit(store.as_ref(), 1, 0).await;
    let third = moved.create(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        third.previous_checkpoint_hash,
        checkpoint_hash(&second).to_vec()
    );
    drop(moved);

    // Opened again (and a move cut short by a crash, the old tree back with one of
    // them): nothing is lost or doubled.
    let old_again = Checkpointer::open(&audit_db, store.clone(), key.clone()).unwrap();
    drop(old_again);
    audit_db
        .open_tree("checkpoints")
        .unwrap()
        .insert(1u64.to_be_bytes(), prost::Message::encode_to_vec(&first))
        .unwrap();
    let reopened = Checkpointer::open_at(&path, Some(&audit_db), store.clone(), key).unwrap();
    assert_eq!(
        reopened.list(10, "").unwrap().0,
        vec![third.clone(), second, first]
    );
    let verification = reopened.verify(&third).await.unwrap();
    assert!(
        verification.signature_valid && verification.log_extends_checkpoint,
        "{verification:?}"
    );
}

#[tokio::test]
async fn a_checkpoint_request_id_is_honoured_across_a_reopen_and_scoped_to_its_caller() {
    let store = Arc::new(MemoryEventStore::new());
    organization_commit(store.as_ref(), 0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoints");
    let key = CheckpointKey::from_seed([5; 32]);
    let checkpoints = Checkpointer::open_at(&path, None, store.clone(), key.clone()).unwrap();
    let now = chrono::Utc::now();
    let first = checkpoints
        .create_requested(now, "token-a", Some("daily-1"))
        .await
        .unwrap();
    drop(checkpoints);

    // Reopened (a restart between the attempt and its retry), the log moved on: the
    // retry still gets the first checkpoint.
    organization_commit(store.as_ref(), 0, 1).await;
    let checkpoints = Checkpointer::open_at(&path, None, store.clone(), key).unwrap();
    let later = now + chrono::Duration::seconds(5);
    let retried = checkpoints
        .create_requested(later, "token-a", Some("daily-1"))
        .await
        .unwrap();
    assert_eq!(retried, first);
    // The same id from another caller is another request.
    let other = checkpoints
        .create_requested(later, "token-b", Some("daily-1"))
        .await
        .unwrap();
    assert_ne!(other, first);
    assert_eq!(
        other.previous_checkpoint_hash,
        checkpoint_hash(&first).to_vec()
    );
    assert_eq!(checkpoints.list(10, "").unwrap().0.len(), 2);
    for bad in ["", "with\nnewline", &"x".repeat(129)] {
        let refused = checkpoints
            .create_requested(later, "token-a", Some(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                AuditError::InvalidArgument {
                    field: "request_id",
                    ..
                }
            ),
            "{refused:?}"
        );
    }
    assert_eq!(
        checkpoints.list(10, "").unwrap().0.len(),
        2,
        "nothing signed"
    );
}

/// Options under which any catch-up at start reopens the database, in small batches (so
/// the catch-up takes many writes, and readers overlap them).
fn reopening_options(reopen_after_catch_up: u64) -> AuditOptions {
    let mut options = AuditOptions::new(BASE_URL);
    options.batch_events = 64;
    options.reopen_after_catch_up = reopen_after_catch_up;
    options.wait_at_start = false;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_catch_up_reopens_the_database_while_readers_read_and_a_restart_resumes() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
    for n in 0..600 {
        organization_commit(store.as_ref(), n % 7, n / 7).await;
    }
    let head = store.head().position;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit");
    let audit = AuditProjection::start(store.clone(), &path, reopening_options(head))
        .await
        .unwrap();
    // Readers page through what is applied while the catch-up writes and then reopens
    // the database: every read succeeds and sees every applied entry, in order.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let audit = audit.clone();
            let done = done.clone();
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let applied = audit.position();
                    let seen = runtime.block_on(all_positions(&audit));
                    assert!(
                        seen.len() as u64 >= applied
                            && seen.iter().copied().eq(1..=seen.len() as u64),
                        "applied {applied}, read {} entries",
                        seen.len()
                    );
                    reads += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                reads
            })
        })
        .collect();
    audit.wait_for(head).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while audit.stats().reopens == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reopen: {:?}",
            audit.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // More commits after the reopen are written to the reopened database.
    for n in 600..700 {
        organization_commit(store.as_ref(), n % 7, n / 7).await;
    }
    let head = store.head().position;
    audit.wait_for(head).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a reader failed") > 0);
    }
    assert_eq!(
        audit.stats().reopens,
        1,
        "one reopen, after the catch-up only"
    );
    assert_eq!(audit.failure(), None);
    assert_eq!(all_positions(&audit).await, (1..=head).collect::<Vec<_>>());
    let rows = audit.dump().await.unwrap();
    audit.stop().await;
    drop(audit);

    // The same log folded without a reopen writes the same rows.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain =
        AuditProjection::start(store.clone(), plain_dir.path(), reopening_options(u64::MAX))
            .await
            .unwrap();
    plain.wait_for(head).await.unwrap();
    assert_eq!(plain.stats().reopens, 0);
    assert_eq!(plain.dump().await.unwrap(), rows);

    // A restart on the reopened database resumes where it was, and does not reopen
    // again (nothing to catch up).
    let again = AuditProjection::start(store.clone(), &path, reopening_options(1))
        .await
        .unwrap();
    again.wait_for(head).await.unwrap();
    let stats = again.stats();
    assert!(!stats.rebuilt);
    assert_eq!(stats.resumed_from, head);
    assert_eq!(stats.reopens, 0);
    assert_eq!(again.dump().await.unwrap(), rows);
}

#[tokio::test]
async fn a_database_the_caller_opened_is_never_reopened() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
    for n in 0..40 {
        organization_commit(store.as_ref(), n % 3, n / 3).await;
    }
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mut options = reopening_options(1);
    options.wait_at_start = true;
    let audit = AuditProjection::start_with_db(store.clone(), db.clone(), options)
        .await
        .unwrap();
    assert_eq!(audit.position(), store.head().position);
    assert_eq!(audit.stats().reopens, 0);
    // The caller's handle still works, on the same database.
    assert!(db.tree_names().len() > 1);
}
