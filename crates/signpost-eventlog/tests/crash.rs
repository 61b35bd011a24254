//! Durability under SIGKILL: every acknowledged position survives a crash of the writer.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use signpost_eventlog::{
    verify_chain, ChainVerdict, EventStore, FileEventStore, FileOptions, SledEventStore,
    SledOptions,
};

const ACKNOWLEDGED_BEFORE_KILL: usize = 2000;
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_position_survives_sigkill() {
    crash_rounds("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_position_survives_sigkill_of_the_file_store() {
    crash_rounds("file").await;
}

fn reopen(kind: &str, dir: &std::path::Path) -> Box<dyn EventStore> {
    match kind {
        "sled" => Box::new(
            SledEventStore::open(dir, SledOptions::default()).expect("reopen after SIGKILL"),
        ),
        _ => Box::new(
            FileEventStore::open(dir, FileOptions::default()).expect("reopen after SIGKILL"),
        ),
    }
}

/// Runs the crash writer on `kind`'s store, SIGKILLs it after 2,000 acknowledgements, reopens
/// and checks every acknowledged position and the whole chain; three times on one directory.
async fn crash_rounds(kind: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut max_acknowledged_overall = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_signpost-eventlog-crash-writer"))
            .arg(dir.path())
            .arg(kind)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash writer");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut acknowledged = Vec::new();
        let mut line = String::new();
        while acknowledged.len() < ACKNOWLEDGED_BEFORE_KILL {
            line.clear();
            let read = stdout.read_line(&mut line).expect("read writer stdout");
            assert!(read > 0, "crash writer exited early in round {round}");
            acknowledged.push(line.trim().parse::<u64>().expect("a position per line"));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        // Lines already in the pipe were acknowledged before the kill, too.
        let mut rest = String::new();
        stdout
            .read_to_string(&mut rest)
            .expect("drain writer stdout");
        acknowledged.extend(rest.lines().filter_map(|l| l.trim().parse::<u64>().ok()));

        let max_acknowledged = *acknowledged.iter().max().expect("some acknowledgements");
        max_acknowledged_overall = max_acknowledged_overall.max(max_acknowledged);

        let store = reopen(kind, dir.path());
        let head = store.head();
        assert!(
            head.position >= max_acknowledged_overall,
            "round {round}: head {} below acknowledged {max_acknowledged_overall}",
            head.position
        );
        match verify_chain(&*store, 1, head.position)
            .await
            .expect("verify")
        {
            ChainVerdict::Intact {
                head: verified,
                events_checked,
            } => {
                assert_eq!(verified, head);
                assert_eq!(events_checked, head.position);
            }
            broken => panic!("round {round}: chain broken after crash: {broken:?}"),
        }
        for position in &acknowledged {
            let events = store.read_range(*position, 1).await.expect("read");
            assert_eq!(
                events.first().map(|e| e.position),
                Some(*position),
                "acknowledged position {position} lost"
            );
        }
        drop(store);
    }
}
