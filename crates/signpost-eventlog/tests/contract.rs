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
