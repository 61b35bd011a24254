//! Normalization of email addresses and email domains.
//!
//! The control plane (when an organization claims a domain) and the login edge (when a user
//! types an email address) must agree byte for byte on what a domain is, so both use this
//! crate and nothing else:
//!
//! - [`DomainName`] (`domain.rs`): trimmed, lowercase, IDNA to ASCII, no trailing dot,
//!   DNS-shaped labels, never an IP literal. Parsing is idempotent.
//! - [`EmailAddress`] (`email.rs`): a pragmatic dot-atom local part (case preserved) and a
//!   [`DomainName`].
//! - [`check_claimable`] (`claim.rs`): refuses public suffixes and the documented
//!   [`CONSUMER_MAIL_DOMAINS`].
//! - [`NameError`] (`error.rs`): one error type, with a stable [`NameError::reason`] code.
//!
//! Data flows one way: raw text → [`DomainName::parse`] / [`EmailAddress::parse`] → normalized
//! value → (control plane only) [`check_claimable`]. Hot paths that only need the normalized
//! domain (the login edge, once per sign-in) use [`DomainName::normalize`] /
//! [`EmailAddress::normalized_domain`]: the same checks and errors, but no allocation when the
//! input is already normalized (property-tested against the full path).
#![forbid(unsafe_code)]

mod claim;
mod domain;
mod email;
mod error;

pub use claim::{check_claimable, is_consumer_mail_domain, CONSUMER_MAIL_DOMAINS};
pub use domain::DomainName;
pub use email::EmailAddress;
pub use error::NameError;
