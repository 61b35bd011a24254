//! The routing projection: which IdP each email domain signs in through.
//!
//! - [`routes`]: how an organization's state (verified domains, active
//!   connection, policy) becomes routes — one per verified domain, or none
//!   (password). A group event changes only the group fields of the active
//!   connection's routes: [`routes::rewrite_group_fields`] rewrites those bytes of the
//!   routes held instead of computing them again.
//! - [`projection`]: [`RoutingProjection`], folded from the log and kept
//!   current by tailing it; its revision is the last log position applied.
//!   It publishes one [`Delta`] per commit that changed routes, keeps a
//!   bounded history of them for resuming watchers, and hands out O(1)
//!   snapshots of the table. Two watches: the revision (every commit: what
//!   `Resolve`'s `min_revision` waits for) and the table (only commits that
//!   changed routes: what watch streams wait for). [`Delta::coalesce`] merges the
//!   deltas a watcher is behind by where they only change the same routes again.
//!
//! Routes are kept encoded ([`EncodedRoute`]: the wire type `signpost.routing.v1.Route`
//! as prost writes it): the table exists to be sent to login edges, so it is kept in
//! the form it is sent in. A lookup, a snapshot and a delta copy those bytes; nothing
//! re-encodes a route per reader, and 100,000 routes take about 43 MB instead of about
//! 90 MB as messages (heap profiles in bench/FINDINGS.md, round 5). The gRPC service
//! over it lives in `signpost-grpc`.
#![forbid(unsafe_code)]

pub mod projection;
pub mod routes;

pub use routes::EncodedRoute;

pub use projection::{
    Delta, HistoryGap, OwnAggregates, RouteSource, RouteTable, RoutingFeed, RoutingOptions,
    RoutingProjection, RoutingStats,
};
