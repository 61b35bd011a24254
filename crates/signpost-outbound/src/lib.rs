//! Everything Signpost fetches from the outside world when an IT admin submits the SSO
//! setup form: SAML IdP metadata URLs, OIDC discovery documents, and DNS TXT records for
//! domain verification.
//!
//! The URL comes from an untrusted user, so this crate is an SSRF boundary: it must only
//! ever reach the public internet.
//!
//! # Modules
//!
//! - [`address`]: the pure classifier that says which IP addresses are forbidden
//!   (loopback, private, link-local incl. cloud metadata, CGNAT, documentation, ...,
//!   and IPv6 forms that embed such an IPv4 address).
//! - [`fetch`]: [`SafeFetcher`] and its [`FetchPolicy`].
//! - `resolve` (private): the DNS resolver plugged into reqwest, which resolves a host,
//!   checks every address, and returns only checked addresses.
//! - [`error`]: [`FetchError`] with stable reason codes.
//! - [`dns`]: the [`TxtResolver`] seam with [`SystemTxtResolver`] (hickory) and
//!   [`StaticTxtResolver`] (tests).
//!
//! # Data flow of a fetch
//!
//! ```text
//! url ─▶ validate hop (scheme, userinfo, IP-literal check)
//!     ─▶ reqwest connect ─▶ CheckedResolver: lookup_host, refuse if ANY address is
//!                           forbidden, hand back only checked addresses (pinned)
//!     ─▶ response: 3xx ─▶ Location resolved, downgrade refused, hop count checked,
//!                         back to "validate hop"
//!                  2xx ─▶ body streamed up to max_body_bytes ─▶ FetchedDocument
//!                  else ─▶ HTTP_STATUS
//! ```
//!
//! The whole loop runs under one `total_timeout`. Proxy environment variables are
//! ignored, and reqwest never follows redirects itself.
#![forbid(unsafe_code)]

pub mod address;
pub mod dns;
pub mod error;
pub mod fetch;
mod resolve;

pub use address::{check_address, forbidden_range, ForbiddenRange};
pub use dns::{DnsError, StaticTxtResolver, SystemTxtResolver, TxtResolver};
pub use error::FetchError;
pub use fetch::{FetchPolicy, FetchedDocument, SafeFetcher};
