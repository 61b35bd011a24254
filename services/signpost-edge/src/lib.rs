//! `signpost-edge`: the login edge. It follows the control plane's
//! `WatchRoutes` stream, keeps the routing table in memory, and tells the
//! sign-in page where each email signs in.
//!
//! How data moves:
//!
//! ```text
//! control plane ──WatchRoutes──▶ follower ──StreamApplier──▶ ArcSwap<Table> ◀── lookup ◀── POST /v1/discover
//!                                   │                              │
//!                                   └──── hint ────▶ persister ────┴──▶ state file (EdgeState)
//! ```
//!
//! - [`stream`]: the `WatchRoutes` messages as the edge reads them, each
//!   route left as its protobuf bytes.
//! - [`route`]: [`Route`], a validated route kept as those bytes (nothing
//!   else: the table is about as large as the routes on the wire), read in
//!   place by `encoded` when the sign-in path needs a field.
//! - [`table`]: [`Table`] (routes + revision + epoch) and [`StreamApplier`],
//!   the pure state machine of the stream contract: snapshot chunks build a
//!   pending table that replaces the live one at `snapshot_end`, `reset`
//!   discards it, deltas upsert and delete, `progress` moves the revision. An
//!   invalid message changes nothing. The routes are a copy-on-write sharded
//!   hash map keyed by each route's own domain ([`table::Routes`]).
//! - `follower`: the gRPC client loop (jittered exponential backoff, resume
//!   from the held revision and epoch, full snapshot after an invalid
//!   message) and the debounced state file writer.
//! - [`state_file`]: atomic write and validated load of the state file, so the
//!   edge serves its last good table while the control plane is down.
//! - [`signin`]: SAML AuthnRequest (HTTP-Redirect binding) and OIDC
//!   authorization-code + PKCE redirects.
//! - `deflate`: raw DEFLATE with fixed Huffman codes for SAML redirects (small, no setup).
//! - `http`: the axum API (`/v1/discover`, `/healthz`, `/readyz`, `/v1/status`).
//! - [`Edge`]: wires it together; [`Cli`] is the binary's configuration.
//!
//! # OIDC values the frontend must keep
//!
//! For an OIDC route, `/v1/discover` returns `"oidc": {"state", "nonce",
//! "code_verifier"}` next to the `redirect_url`. The sign-in frontend must keep
//! them server-side, e.g. in its session store or in an encrypted, `HttpOnly`,
//! `SameSite=Lax` cookie keyed by `state`, and never expose the verifier to
//! page scripts. Its callback handler looks the `code_verifier` and `nonce` up
//! by the `state` it receives (refusing unknown or reused states), sends the
//! verifier in the token request, and checks that the ID token carries the
//! nonce. For SAML, the ACS handler checks `InResponseTo` against the returned
//! `request_id` (and may use `relay_state` the same way).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod deflate;
mod edge;
mod encoded;
mod follower;
mod http;
pub mod route;
mod route_map;
pub mod signin;
pub mod state_file;
pub mod stream;
pub mod table;

pub use config::Cli;
pub use edge::{lookup_in, Edge, EdgeConfig, EdgeStatus, Lookup};
pub use follower::{Backoff, PERSIST_DEBOUNCE};
pub use http::DISCOVER_BODY_LIMIT;
pub use route::{OidcTarget, Route, RouteError, RouteView, SamlTarget, SsoPolicy, Target};
pub use stream::StreamMessage;
pub use table::{AppliedMessage, ApplyError, MessageKind, Routes, StreamApplier, Table};
