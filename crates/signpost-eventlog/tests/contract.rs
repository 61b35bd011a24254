//! The store contract suite, run against every implementation in this crate.

mod memory {
    use signpost_eventlog::MemoryEventStore;

    signpost_eventlog::event_store_contract_tests!(|| (MemoryEventStore::new(), ()));
}

mod sled {
    use signpost_eventlog::{SledEventStore, SledOptions};

    fn open_fresh() -> (SledEventStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEventStore::open(dir.path(), SledOptions::default()).expect("open store");
        (store, dir)
    }

    signpost_eventlog::event_store_contract_tests!(open_fresh);
}

mod file {
    use signpost_eventlog::{FileEventStore, FileOptions};

    fn open_fresh() -> (FileEventStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileEventStore::open(dir.path(), FileOptions::default()).expect("open store");
        (store, dir)
    }

    signpost_eventlog::event_store_contract_tests!(open_fresh);
}

/// The file store again with tiny segments, so that reads, scans and subscriptions cross
/// segment boundaries all the time.
mod file_small_segments {
    use signpost_eventlog::{FileEventStore, FileOptions};

    fn open_fresh() -> (FileEventStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = FileOptions {
            segment_bytes: 16 * 1024,
            ..FileOptions::default()
        };
        let store = FileEventStore::open(dir.path(), options).expect("open store");
        (store, dir)
    }

    signpost_eventlog::event_store_contract_tests!(open_fresh);
}
