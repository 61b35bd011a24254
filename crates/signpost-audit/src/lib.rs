//! Signpost's audit timeline: what happened to each firm's SSO, whether the record is
//! intact, and what was true at a given moment. Folded from the log, kept in a sled
//! database of its own (`<data-dir>/audit`), rebuildable at any time; signed checkpoints
//! in another (`<data-dir>/checkpoints`), never rebuilt. No tonic here: the
//! gRPC handlers in `signpost-grpc` call these functions; entries are the wire
//! `signpost.audit.v1.AuditEntry` because the timeline exists to be sent.
//!
//! How data moves:
//!
//! ```text
//!  every event past the position the database recorded (a rebuild and a catch-up at
//!  start included): the control plane's read model task, around each event
//!  (feed.rs, AuditFeed)
//!    fold::before on the model before it (describe.rs: action, target, summary,
//!      details with before / after, no secrets; during a catch-up an entry its
//!      organization's streams alone describe is a stub instead, described when read)
//!    fold::after on the model after it: the domains the event made an organization
//!      claim or stop claiming, the organization of a connection it made known
//!        ▼ bounded channel: while the model catches up at start, a full channel makes
//!        │ it wait; later the feed lets go and the task reads the log itself
//!        │ (projection.rs own_fold: fold.rs with a read model of its own), as a
//!        │ projection started without a feed always does, and a start far behind
//!        │ does too (the server serves meanwhile); at the head the own fold hands the
//!        │ events back to the feed (feed.rs Handback) and its read model is dropped
//!        ▼
//!   projection.rs (one task): rows in batches
//!     a linger window near the head, 8 MiB / 64k events while catching up
//!                      ▼
//!   store.rs: ONE sled batch per write in ONE tree, `timeline` (layout: keys.rs):
//!     entries in chunks of consecutive positions (+ one time row per chunk),
//!     postings (organization, connection, actor, event type, claims of a domain,
//!     new claims and connections of an organization) as one
//!     row per write, every 64k positions made a run of packed blocks (runs merged
//!     logarithmically), the recorded position and hash
//!   (checkpoints: a sled database of their own, `<data-dir>/checkpoints`, never rebuilt)
//!                      ▼
//!   query.rs: list (pages by position) · export batches (sent encoded, as stored)
//!   lazy.rs: stubs described when read (a catch-up's organization-local entries are
//!     written as stubs, `fold::before` with `FirstNamed`: by organization for pages, in
//!     log order for exports)
//!   point_in_time.rs: routing_at (the claiming organizations' streams folded when
//!     asked, routes computed as the routing table does) · connection_at (stream fold)
//!   checkpoint.rs: Ed25519-signed heads, online and offline verification, log export files
//! ```
//!
//! Format 1 kept nine trees and about six sled keys per event (entries, four indexes, a
//! time row, domain history rows with whole routes, the organization's domains), each
//! write one `apply_batch` per tree: maintaining them was about a third of the control
//! plane's CPU under write load and capped a rebuild near 20,000 events/s. A database of
//! another format is dropped and rebuilt from the log at start (checkpoints are kept).
//! Format 4 stopped storing every route change whole with the event that caused it
//! (computing them was half of a rebuild's CPU on a log in lifecycle order): routing at
//! a point in time is folded when asked. Format 5 indexes each organization's streams
//! (the first event of each connection and setup-link stream, under the organization it
//! named) and stores a catch-up's organization-local entries as stubs: describing every
//! entry was most of the rest of a rebuild. Format 6 has format 5's layout: it is a new
//! number because format 5's writes could lose postings (a write taken while a commit was
//! half gathered put the postings of its first events past the end of the run it
//! recorded, out of every query's reach; bench/FINDINGS.md, round 20), so a database
//! they wrote is rebuilt rather than trusted.
//!
//! - [`AuditProjection`] (`projection.rs`): start / catch up / rebuild, position, stop;
//!   [`AuditFeed`] (`feed.rs`): the read model task's side of a fed projection.
//! - [`AuditFilter`], [`Order`], [`AuditPage`], [`ExportBatch`] (`query.rs`).
//! - [`PointInTime`], [`RoutingSubject`], [`RoutingAt`], [`ConnectionAt`]
//!   (`point_in_time.rs`).
//! - [`Checkpointer`], [`CheckpointKey`], [`verify_checkpoint_offline`],
//!   [`write_log_export`], [`read_log_export`] (`checkpoint.rs`).
//! - `keys.rs`: the database layout; `store.rs`: writing it and the reads queries build
//!   on; [`AuditError`] (`error.rs`) converts into the control plane's error so the one
//!   status mapping serves audit calls too.
#![forbid(unsafe_code)]

mod checkpoint;
mod describe;
mod error;
mod feed;
mod fold;
mod keys;
mod lazy;
mod point_in_time;
mod projection;
mod query;
mod store;

pub use checkpoint::{
    canonical_bytes, checkpoint_hash, key_id, read_log_export, verify_checkpoint_offline,
    verify_signature, write_log_export, CheckpointKey, CheckpointProblem, CheckpointVerification,
    Checkpointer, LogExportReader, CHECKPOINT_FORMAT, DEFAULT_CHECKPOINT_PAGE,
};
pub use describe::{action_name, ACTIONS};
pub use error::AuditError;
pub use feed::AuditFeed;
pub use point_in_time::{ConnectionAt, DomainRouting, PointInTime, RoutingAt, RoutingSubject};
pub use projection::{AuditOptions, AuditProjection, AuditStats, DumpedRow};
pub use query::{
    AuditFilter, AuditPage, EncodedExportBatch, ExportBatch, ExportState, Order, DEFAULT_PAGE_SIZE,
    EXPORT_BATCH, MAX_PAGE_SIZE,
};
