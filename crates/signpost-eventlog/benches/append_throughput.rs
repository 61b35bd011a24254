//! Append throughput of the sled store under group commit, against the disk's raw fsync rate.
//!
//! Run: `cargo bench -p signpost-eventlog --bench append_throughput`. The store lives in
//! `$SIGNPOST_BENCH_DIR` if set, else in a temp dir under the workspace's `target/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use signpost_eventlog::{
    Actor, Commit, CommitMeta, EventStore, ExpectedVersion, NewEvent, SledEventStore, SledOptions,
    StreamId, StreamWrite,
};

const PHASE: Duration = Duration::from_secs(5);
const FSYNC_PHASE: Duration = Duration::from_secs(3);
const PAYLOAD_BYTES: usize = 200;

fn bench_root() -> PathBuf {
    match std::env::var_os("SIGNPOST_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn fdatasync_rate(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("create probe file");
    let block = [0x42u8; PAYLOAD_BYTES];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < FSYNC_PHASE {
        file.write_all(&block).expect("write probe");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    rate
}

fn commit(stream: StreamId, payload: Bytes) -> Commit {
    Commit {
        writes: vec![StreamWrite {
            stream,
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event_type: "bench_event".to_owned(),
                payload,
            }],
        }],
        meta: CommitMeta {
            actor: Actor::default(),
            correlation_id: "bench".to_owned(),
            request_id: None,
        },
        idempotency: None,
    }
}

async fn run_phase(dir: &Path, appenders: usize) {
    let store = SledEventStore::open(dir, SledOptions::default()).expect("open store");
    let payload = Bytes::from(vec![0x61u8; PAYLOAD_BYTES]);
    let started = Instant::now();
    let deadline = started + PHASE;
    let mut tasks = Vec::new();
    for appender in 0..appenders {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Each commit is one event on a stream of its own.
                let stream = StreamId::new(format!("bench-{appender}-{n}")).unwrap();
                n += 1;
                let sent = Instant::now();
                store
                    .append(commit(stream, payload.clone()))
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
    let stats = store.stats();
    println!(
        "{appenders:>2} appender(s): {:>8.0} appends/s  {:>7.0} batches/s  avg batch {:>6.1} commits  \
         latency p50 {:>6.2} ms  p99 {:>6.2} ms  ({} commits in {:.1} s)",
        stats.commits as f64 / elapsed,
        stats.batches as f64 / elapsed,
        stats.commits as f64 / stats.batches.max(1) as f64,
        latencies.value_at_quantile(0.50) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        stats.commits,
        elapsed,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter-style arguments are ignored.
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    let root = root.canonicalize().expect("bench root path");
    let dir = tempfile::tempdir_in(&root).expect("temp dir");
    println!("bench dir: {}", dir.path().display());
    println!(
        "raw fdatasync ({PAYLOAD_BYTES} B write + sync_data): {:.0} /s",
        fdatasync_rate(dir.path())
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        run_phase(&dir.path().join("one"), 1).await;
        run_phase(&dir.path().join("many"), 64).await;
    });
}
