//! Signpost's domain: the aggregates and every rule about them. No I/O, no
//! tonic, no clock: time, random values and facts from other aggregates are
//! passed in by the caller (`signpost-control`).
//!
//! Each aggregate is a plain state struct with two methods, in the cqrs-es
//! style: `handle(command) -> Result<Vec<Event>, DomainError>` holds the
//! rules, `apply(&event)` only changes state. Replaying a stream is `apply`
//! in a loop.
//!
//! - [`organization`]: the firm, its domain claims, SSO policy and which
//!   connection is active (activation, deactivation and provider switches
//!   are organization events, so "one active connection" is one stream's rule).
//! - [`setup_link`]: bearer links for the IT admin's form.
//! - [`connection`]: IdP settings, claim mapping, group assignments; a SAML IdP's
//!   settings kept as one encoded message without DER (`saml_idp.rs`, [`connection::SamlIdp`]).
//! - [`api_token`]: tokens with the `admin`, `edge` or `auditor` role.
//! - [`event`]: the events (the log schema's `Event` oneof) and stream names.
//! - [`error`]: [`DomainError`], the one refusal type.
//! - [`vec_map`]: [`VecMap`], the sorted-`Vec` map aggregates use for their small
//!   maps (a `BTreeMap` node per organization cost more than the rest of its state).
//!
//! See `OVERVIEW.md` for the model and where each rule lives.
#![forbid(unsafe_code)]

pub mod api_token;
pub mod connection;
pub mod error;
pub mod event;
pub mod organization;
mod saml_idp;
pub mod setup_link;
pub mod vec_map;

pub use error::{Decision, DomainError, ErrorKind};
pub use event::{decode_event, encode_event, event_type, schema, streams, Event};
pub use vec_map::VecMap;

/// An aggregate id as state holds it: shared, so that the read model keeps one copy of
/// each id for its maps' keys and every aggregate that names it (nine copies of three
/// 36-byte UUIDs per organization with a connection and a setup link, before).
pub type Id = std::sync::Arc<str>;
