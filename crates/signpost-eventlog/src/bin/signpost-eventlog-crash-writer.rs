//! Crash-test helper: appends from 16 concurrent tasks forever, printing each acknowledged
//! position on its own line (stdout flushed per line), until it is killed.
//!
//! Usage: `signpost-eventlog-crash-writer <store dir> [sled|file]` (default `sled`). The crash
//! test SIGKILLs it and checks that every printed position survived.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use std::sync::Arc;

use signpost_eventlog::{
    Actor, AppendOutcome, Commit, CommitMeta, EventStore, ExpectedVersion, FileEventStore,
    FileOptions, NewEvent, SledEventStore, SledOptions, StreamId, StreamWrite,
};

const WRITERS: usize = 16;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: signpost-eventlog-crash-writer <store dir> [sled|file]";
    let mut args = std::env::args_os().skip(1);
    let dir: PathBuf = args.next().ok_or(USAGE)?.into();
    let kind = args.next().map(|k| k.to_string_lossy().into_owned());
    let store: Arc<dyn EventStore> = match kind.as_deref() {
        None | Some("sled") => Arc::new(SledEventStore::open(&dir, SledOptions::default())?),
        Some("file") => Arc::new(FileEventStore::open(&dir, FileOptions::default())?),
        Some(_) => return Err(USAGE.into()),
    };
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("crash-{writer}")).expect("valid stream id");
            let mut n = 0u64;
            loop {
                n += 1;
                let commit = Commit {
                    writes: vec![StreamWrite {
                        stream: stream.clone(),
                        expected: ExpectedVersion::Any,
                        events: vec![NewEvent {
                            event_type: "crash_tested".to_owned(),
                            payload: Bytes::from(format!("writer {writer} commit {n}")),
                        }],
                    }],
                    meta: CommitMeta {
                        actor: Actor::default(),
                        correlation_id: format!("crash-{writer}-{n}"),
                        request_id: None,
                    },
                    idempotency: None,
                };
                match store.append(commit).await {
                    Ok(AppendOutcome::Committed(committed)) => {
                        let mut out = std::io::stdout().lock();
                        for position in committed.first_position..=committed.last_position {
                            writeln!(out, "{position}").expect("write stdout");
                        }
                        out.flush().expect("flush stdout");
                    }
                    other => panic!("append failed: {other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}
