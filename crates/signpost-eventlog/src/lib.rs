//! Signpost's event log: durable, append-only, tamper-evident.
//!
//! Everything Signpost knows is a fold of this log. The log knows nothing of the domain or of
//! gRPC: an event is an `event_type` string and opaque payload bytes, wrapped by the store in a
//! [`EventEnvelope`] (position, stream and version, ids, actor, time, hash chain).
//!
//! How data moves:
//!
//! ```text
//! append(Commit) ──► bounded channel ──► sequencer (one thread, sled_store)
//!                                          │ drain ≤ 1024 commits, validate each (batch.rs)
//!                                          │ assign positions, versions, hashes (chain.rs)
//!                                          │ ONE atomic sled batch + ONE flush (fsync)
//!                                          ▼
//!                           publish head (watch) ──► answer callers
//!                                          │
//! read_range / read_stream / head ◄────────┘ bounded by the published head
//! subscribe ──► Subscription: read pages while behind, wait on the head watch when caught up
//! verify_chain ──► walk any EventStore, recompute hashes, name the first bad position
//!                  (from the stored bytes when canonical: canonical.rs)
//! ```
//!
//! Modules that matter:
//! - [`EventStore`] (`store.rs`): the contract every implementation honours.
//! - [`FileEventStore`] ([`file_store`]): the server's durable store, a group-commit sequencer
//!   on append-only segment files (one `write` and one `fdatasync` per batch, in-memory
//!   indexes rebuilt by one sequential scan at open, or taken from the checkpoint a clean
//!   close saved once the scan finds the frames it covers unchanged); [`file_store::raw`] is its offline
//!   tampering toolkit, never used by the server.
//! - [`SledEventStore`] (`sled_store/`): the same sequencer design on sled, the format of data
//!   directories created before the file store (still opened as they are); [`raw`] tampers
//!   with it offline.
//! - `sequencing.rs` and `record.rs`: the request, thread and batch gathering of both
//!   sequencers, and the stored idempotency record.
//! - [`MemoryEventStore`] (`memory.rs`): the same semantics without a disk.
//! - `batch.rs`: commit validation shared by both stores, so their semantics cannot drift.
//! - `locking.rs`: how both stores (and the audit's sled databases) wait out a directory
//!   lock this process itself still holds for a moment, before refusing.
//! - `canonical.rs`: an envelope's chain hash from its stored bytes, without decoding them,
//!   when they are prost's own encoding (the verifier's fast path).
//! - [`Subscription`], [`verify_chain`], and `contract` (feature `contract-tests`): the test
//!   suite every store must pass.
//!
//! See `OVERVIEW.md` next to this crate's `Cargo.toml` for the mental model, the disk layout
//! and the failure modes.
#![forbid(unsafe_code)]

mod batch;
mod canonical;
mod chain;
mod error;
pub mod file_store;
mod locking;
mod memory;
mod record;
mod sequencing;
mod sled_store;
mod store;
mod subscription;
mod types;
mod verify;

#[cfg(feature = "contract-tests")]
pub mod contract;

pub use chain::{envelope_hash, GENESIS_HASH};
pub use error::LogError;
pub use file_store::{FileEventStore, FileOptions, FileScan};
pub use locking::DEFAULT_LOCK_WAIT;
pub use memory::MemoryEventStore;
pub use signpost_schema::log::v1::{Actor, ActorKind, EventEnvelope};
pub use sled_store::{
    open_sled_waiting_for_lock, raw, SequencerStats, SledEventStore, SledOptions, FORMAT_VERSION,
};
pub use store::EventStore;
pub use subscription::{Subscription, SUBSCRIPTION_PAGE};
pub use types::{
    AppendOutcome, Commit, CommitMeta, Committed, ExpectedVersion, Head, Idempotency,
    IdempotencyKey, NewEvent, Position, StoredOutcome, StreamId, StreamWrite,
};
pub use verify::{verify_chain, ChainProblem, ChainVerdict};
