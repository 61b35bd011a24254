//! Signpost's application layer: the one owner of command execution and of
//! the admin read model. No tonic here: the gRPC handlers in `signpost-api`
//! call these methods and map [`ControlError`] to statuses.
//!
//! Data flow of a mutation:
//! caller → [`ControlPlane`] method (authorize, fingerprint) →
//! `plane::ControlPlane::execute`: read the [`read_model::ReadModel`] at the log head →
//! aggregate `handle` (rules, in `signpost-domain`) → one atomic log commit
//! (`signpost-eventlog`) → [`projection::Projection`] applies it → answer
//! built from the read model, with the log position reached.
//!
//! - [`plane`]: [`ControlPlane`], configuration, the execute loop (retries,
//!   idempotent replays, expected versions), pagination helpers.
//! - [`admin`]: organizations, domains, setup links, connections, groups,
//!   activation and switches, API tokens, bootstrap.
//! - [`setup_form`]: reading and submitting the setup form (token-authorized).
//! - [`read_model`], [`projection`]: the admin read model and its tailing task.
//! - [`principal`], [`credentials`], [`secrets`]: who is calling, bearer
//!   tokens (hashes only), encryption of secrets at rest.
//! - [`views`]: what reads return.
//! - [`certificates`]: SAML signing certificates whole (DER included) by the
//!   log position that set them, for views (the read model keeps no DER).
#![forbid(unsafe_code)]

pub mod admin;
pub mod certificates;
pub mod credentials;
pub mod error;
pub mod plane;
pub mod principal;
pub mod projection;
pub mod read_model;
pub mod secrets;
pub mod setup_form;
pub mod views;

pub use admin::{IssueSetupLink, IssuedSetupLink, MintedApiToken, VerifyMethod, EXPIRY_BATCH};
pub use error::ControlError;
pub use plane::{Clock, ControlConfig, ControlPlane, RequestMeta};
pub use principal::{Principal, Role};
pub use projection::{Follower, FollowerWait, Followers};
pub use secrets::SecretBox;
pub use setup_form::{SettingsInput, SetupFormInput, SetupFormView, SubmittedForm};
