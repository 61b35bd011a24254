//! Append throughput of the sled and file stores under group commit, against the disk's raw
//! fdatasync rate, then the rate of reading a large log back (open + full read).
//!
//! Run: `cargo bench -p signpost-eventlog --bench append_throughput`. The stores live in
//! `$SIGNPOST_BENCH_DIR` if set, else in a temp dir under the workspace's `target/`.
//! `SIGNPOST_BENCH_SCAN_EVENTS` sets the size of the read phase (default 1,000,000 events;
//! 0 skips it), `SIGNPOST_BENCH_SCAN_COMMIT_EVENTS` the events per commit there (default 100,
//! each commit on a stream of its own), `SIGNPOST_BENCH_SCAN_SLED=0` skips sled in that phase
//! (it needs about 1.3 GB of disk for 1,000,000 events; the file store about 360 MB).
//!
//! `SIGNPOST_BENCH_ROUNDS` (default 4; 0 skips the appends) and `SIGNPOST_BENCH_SLICE_MS`
//! (default 2000) shape the append phase.
//!
//! Phases, all in one run so that they see the same disk:
//! 1. appends, for 1 then 64 appenders (one 200-byte event per commit): `ROUNDS` rounds, each
//!    a slice of the raw disk rate (200-byte write + `fdatasync` loop appending to a file, the
//!    reference; then the same loop over zeros written ahead, for context), then a slice of each
//!    store (sled then file in even rounds, file then sled in odd ones). Interleaving makes each
//!    store's figure comparable with the raw rate of the same moment on a shared, noisy disk;
//!    the medians are reported;
//! 2. reads: N events written in large batches (64 appenders × 100-event commits), the store
//!    dropped and reopened (timed: for the file store that is the index-building scan), then
//!    the whole log read with `read_range` pages of 10,000, with `FileEventStore::scan`, and
//!    with `verify_chain`. The page cache is warm (the files were just written).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use signpost_eventlog::{
    verify_chain, Actor, ChainVerdict, Commit, CommitMeta, EventStore, ExpectedVersion,
    FileEventStore, FileOptions, NewEvent, SequencerStats, SledEventStore, SledOptions, StreamId,
    StreamWrite,
};

const PAYLOAD_BYTES: usize = 200;
const SCAN_PAGE: usize = 10_000;

fn bench_root() -> PathBuf {
    match std::env::var_os("SIGNPOST_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fdatasync_rate(dir: &Path, duration: Duration) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("create probe file");
    let block = [0x42u8; PAYLOAD_BYTES];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        file.write_all(&block).expect("write probe");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    rate
}

/// The same loop writing over zeros written (and synced) beforehand, as the file store does:
/// no file size change, so no journal commit per `fdatasync`.
fn fdatasync_over_zeros_rate(dir: &Path, duration: Duration) -> f64 {
    use std::os::unix::fs::FileExt;
    const AHEAD: usize = 8 << 20;
    let path = dir.join("fsync-probe-zeros");
    let file = std::fs::File::create(&path).expect("create probe file");
    file.write_all_at(&vec![0u8; AHEAD], 0).expect("zeros");
    file.sync_all().expect("sync zeros");
    let block = [0x42u8; PAYLOAD_BYTES];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration && (syncs as usize + 1) * PAYLOAD_BYTES <= AHEAD {
        file.write_all_at(&block, syncs * PAYLOAD_BYTES as u64)
            .expect("write probe");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    rate
}

/// The two durable stores, behind what the bench needs of them.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Sled,
    File,
}

#[derive(Clone)]
enum Store {
    Sled(SledEventStore),
    File(FileEventStore),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sled => "sled",
            Kind::File => "file",
        }
    }

    fn open(self, dir: &Path) -> Store {
        match self {
            Kind::Sled => Store::Sled(SledEventStore::open(dir, SledOptions::default()).unwrap()),
            Kind::File => Store::File(FileEventStore::open(dir, FileOptions::default()).unwrap()),
        }
    }
}

impl Store {
    fn log(&self) -> &dyn EventStore {
        match self {
            Store::Sled(store) => store,
            Store::File(store) => store,
        }
    }

    fn stats(&self) -> SequencerStats {
        match self {
            Store::Sled(store) => store.stats(),
            Store::File(store) => store.stats(),
        }
    }
}

fn commit(stream: StreamId, payload: &Bytes, events: usize) -> Commit {
    Commit {
        writes: vec![StreamWrite {
            stream,
            expected: ExpectedVersion::NoStream,
            events: (0..events)
                .map(|_| NewEvent {
                    event_type: "bench_event".to_owned(),
                    payload: payload.clone(),
                })
                .collect(),
        }],
        meta: CommitMeta {
            actor: Actor::default(),
            correlation_id: "bench".to_owned(),
            request_id: None,
        },
        idempotency: None,
    }
}

/// What one slice of appends measured.
struct Slice {
    appends_per_second: f64,
    batches_per_second: f64,
    avg_batch: f64,
    p50_ms: f64,
    p99_ms: f64,
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

/// `appenders` tasks append one-event commits to `store` for `duration`.
async fn run_slice(store: &Store, appenders: usize, duration: Duration) -> Slice {
    let payload = Bytes::from(vec![0x61u8; PAYLOAD_BYTES]);
    let before = store.stats();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while Instant::now() < deadline {
                // Each commit is one event on a stream of its own.
                let n = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
                let stream = StreamId::new(format!("bench-{n}")).unwrap();
                let sent = Instant::now();
                store
                    .log()
                    .append(commit(stream, &payload, 1))
                    .await
                    .expect("append");
                latencies.record(sent.elapsed().as_micros() as u64).unwrap();
            }
            latencies
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for task in tasks {
        latencies.add(task.await.expect("appender")).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.stats();
    let commits = (after.commits - before.commits) as f64;
    let batches = (after.batches - before.batches) as f64;
    Slice {
        appends_per_second: commits / elapsed,
        batches_per_second: batches / elapsed,
        avg_batch: commits / batches.max(1.0),
        p50_ms: latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn print_slice(kind: Kind, slice: &Slice, fsync_rate: f64) {
    println!(
        "    {:<4} {:>8.0} appends/s ({:>5.0}% of fdatasync)  {:>6.0} batches/s  avg batch \
         {:>5.1}  p50 {:>6.2} ms  p99 {:>6.2} ms",
        kind.name(),
        slice.appends_per_second,
        100.0 * slice.appends_per_second / fsync_rate,
        slice.batches_per_second,
        slice.avg_batch,
        slice.p50_ms,
        slice.p99_ms,
    );
}

/// Interleaves raw fdatasync, sled and file slices, `rounds` times, so that the disk's
/// (noisy) state is shared; prints every slice and the medians.
async fn append_phase(dir: &Path, stores: &[(Kind, Store)], appenders: usize, rounds: usize) {
    let slice = Duration::from_millis(env_u64("SIGNPOST_BENCH_SLICE_MS", 2000));
    println!("{appenders} appender(s), {rounds} rounds of {slice:?} slices:");
    let mut fsync_rates = Vec::new();
    let mut zeros_rates = Vec::new();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    for round in 0..rounds {
        let fsync_rate = fdatasync_rate(dir, slice);
        let over_zeros = fdatasync_over_zeros_rate(dir, slice);
        println!(
            "  round {round}: raw fdatasync {fsync_rate:.0} /s (appending; over zeros written \
             ahead: {over_zeros:.0} /s)"
        );
        fsync_rates.push(fsync_rate);
        zeros_rates.push(over_zeros);
        // Alternate the order, so that neither store always runs right after the probe.
        let mut order: Vec<usize> = (0..stores.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (kind, store) = &stores[i];
            let measured = run_slice(store, appenders, slice).await;
            print_slice(*kind, &measured, fsync_rate);
            rates[i].push(measured.appends_per_second);
            ratios[i].push(measured.appends_per_second / fsync_rate);
            p99s[i].push(measured.p99_ms);
        }
    }
    println!(
        "  median raw fdatasync {:.0} /s (appending), {:.0} /s (over zeros)",
        median(fsync_rates.clone()),
        median(zeros_rates),
    );
    for (i, (kind, _)) in stores.iter().enumerate() {
        println!(
            "  median {:<4} {appenders:>2} appender(s): {:>8.0} appends/s, {:>5.0}% of the same \
             round's fdatasync, p99 {:.2} ms",
            kind.name(),
            median(rates[i].clone()),
            100.0 * median(ratios[i].clone()),
            median(p99s[i].clone()),
        );
    }
}

fn per_second(events: u64, elapsed: Duration) -> String {
    format!(
        "{:>9.0} events/s ({:.3} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

async fn read_phase(kind: Kind, dir: &Path, total: u64) {
    // Write `total` events in large batches.
    let store = kind.open(dir);
    let payload = Bytes::from(vec![0x61u8; PAYLOAD_BYTES]);
    let commit_events = env_u64("SIGNPOST_BENCH_SCAN_COMMIT_EVENTS", 100).max(1) as usize;
    let commits = total.div_ceil(commit_events as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    const WRITERS: u64 = 64;
    for writer in 0..WRITERS {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = writer;
            while n < commits {
                let stream = StreamId::new(format!("scan-{n}")).unwrap();
                store
                    .log()
                    .append(commit(stream, &payload, commit_events))
                    .await
                    .expect("append");
                n += WRITERS;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let written = store.log().head().position;
    let stats = store.stats();
    println!(
        "{:<4} write {written} events: {}  (avg batch {:.0} events)",
        kind.name(),
        per_second(written, started.elapsed()),
        stats.events as f64 / stats.batches.max(1) as f64
    );
    drop(store);
    // sled flushes and releases its files asynchronously on drop; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "{:<4} on disk: {:.0} MiB",
        kind.name(),
        dir_bytes(dir) as f64 / (1 << 20) as f64
    );

    let started = Instant::now();
    let store = kind.open(dir);
    println!(
        "{:<4} open (index build / head check): {:.3} s",
        kind.name(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut read = 0u64;
    let mut from = 1;
    loop {
        let page = store.log().read_range(from, SCAN_PAGE).await.expect("read");
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        read += page.len() as u64;
    }
    assert_eq!(read, written);
    println!(
        "{:<4} read_range pages of {SCAN_PAGE}: {}",
        kind.name(),
        per_second(read, started.elapsed())
    );

    if let Store::File(file) = &store {
        let file = file.clone();
        let started = Instant::now();
        let scanned = tokio::task::spawn_blocking(move || {
            let mut count = 0u64;
            for event in file.scan(1, u64::MAX) {
                event.expect("scan");
                count += 1;
            }
            count
        })
        .await
        .expect("scan task");
        assert_eq!(scanned, written);
        println!(
            "{:<4} scan (blocking iterator):   {}",
            kind.name(),
            per_second(scanned, started.elapsed())
        );
    }

    let started = Instant::now();
    let verdict = verify_chain(store.log(), 1, u64::MAX)
        .await
        .expect("verify");
    assert!(
        matches!(verdict, ChainVerdict::Intact { .. }),
        "{verdict:?}"
    );
    println!(
        "{:<4} verify_chain (SHA-256 each): {}",
        kind.name(),
        per_second(written, started.elapsed())
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter-style arguments are ignored.
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    let root = root.canonicalize().expect("bench root path");
    let dir = tempfile::tempdir_in(&root).expect("temp dir");
    println!("bench dir: {}", dir.path().display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rounds = env_u64("SIGNPOST_BENCH_ROUNDS", 4) as usize;
    if rounds > 0 {
        runtime.block_on(async {
            for appenders in [1, 64] {
                // Fresh stores per phase, removed after it: the disk may be shared and small.
                let phase_dir =
                    |kind: Kind| dir.path().join(format!("{}-{appenders}", kind.name()));
                let stores: Vec<(Kind, Store)> = [Kind::Sled, Kind::File]
                    .into_iter()
                    .map(|kind| (kind, kind.open(&phase_dir(kind))))
                    .collect();
                append_phase(dir.path(), &stores, appenders, rounds).await;
                drop(stores);
                // sled releases its files asynchronously on drop.
                tokio::time::sleep(Duration::from_millis(500)).await;
                for kind in [Kind::Sled, Kind::File] {
                    let _ = std::fs::remove_dir_all(phase_dir(kind));
                }
            }
        });
    }

    let total = env_u64("SIGNPOST_BENCH_SCAN_EVENTS", 1_000_000);
    if total > 0 {
        let mut kinds = vec![Kind::File];
        if env_u64("SIGNPOST_BENCH_SCAN_SLED", 1) != 0 {
            kinds.push(Kind::Sled);
        }
        runtime.block_on(async {
            for kind in kinds {
                let phase_dir = dir.path().join(format!("{}-read", kind.name()));
                read_phase(kind, &phase_dir, total).await;
                let _ = std::fs::remove_dir_all(&phase_dir);
            }
        });
    }
}
