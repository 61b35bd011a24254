//! Signpost's audit timeline: what happened to each firm's SSO, whether the record is
//! intact, and what was true at a given moment. Folded from the log, kept in a sled
//! database of its own (`<data-dir>/audit`), rebuildable at any time. No tonic here: the
//! gRPC handlers in `signpost-grpc` call these functions; entries are the wire
//! `signpost.audit.v1.AuditEntry` because the timeline exists to be sent.
//!
//! How data moves:
//!
//! ```text
//! log ──subscribe──► projection.rs (one task) ──► fold.rs: ReadModel before the event
//!                      │ batches per commit /         │  describe.rs: action, target,
//!                      │ per N events                 │  summary, details (no secrets)
//!                      ▼                              │  routes per domain (routing crate)
//!   sled trees: entries, by_org / by_connection / by_actor / by_type, time,
//!               domain_history, org_domains   (+ checkpoints, never rebuilt)
//!                      ▼
//!   query.rs: list (pages by position) · export batches
//!   point_in_time.rs: routing_at (domain history) · connection_at (stream fold)
//!   checkpoint.rs: Ed25519-signed heads, online and offline verification, log export files
//! ```
//!
//! - [`AuditProjection`] (`projection.rs`): start / catch up / rebuild, position, stop.
//! - [`AuditFilter`], [`Order`], [`AuditPage`], [`ExportBatch`] (`query.rs`).
//! - [`PointInTime`], [`RoutingSubject`], [`RoutingAt`], [`ConnectionAt`]
//!   (`point_in_time.rs`).
//! - [`Checkpointer`], [`CheckpointKey`], [`verify_checkpoint_offline`],
//!   [`write_log_export`], [`read_log_export`] (`checkpoint.rs`).
//! - `keys.rs`: the database layout; [`AuditError`] (`error.rs`) converts into the control
//!   plane's error so the one status mapping serves audit calls too.
#![forbid(unsafe_code)]

mod checkpoint;
mod describe;
mod error;
mod fold;
mod keys;
mod point_in_time;
mod projection;
mod query;

pub use checkpoint::{
    canonical_bytes, checkpoint_hash, key_id, read_log_export, verify_checkpoint_offline,
    verify_signature, write_log_export, CheckpointKey, CheckpointProblem, CheckpointVerification,
    Checkpointer, LogExportReader, CHECKPOINT_FORMAT, DEFAULT_CHECKPOINT_PAGE,
};
pub use describe::{action_name, ACTIONS};
pub use error::AuditError;
pub use point_in_time::{ConnectionAt, DomainRouting, PointInTime, RoutingAt, RoutingSubject};
pub use projection::{AuditOptions, AuditProjection, AuditStats, DumpedRow};
pub use query::{
    AuditFilter, AuditPage, ExportBatch, Order, DEFAULT_PAGE_SIZE, EXPORT_BATCH, MAX_PAGE_SIZE,
};
