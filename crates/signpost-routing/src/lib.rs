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
//!   changed routes: what watch streams wait for). [`RoutingProjection::pull`] hands a
//!   watcher what it is behind by: the published deltas (which [`Delta::coalesce`]
//!   merges where they only change the same routes again) or, further behind, one
//!   catch-up delta of every domain changed since its revision, from a bounded index of
//!   each domain's last change.
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
    Delta, Deltas, HistoryGap, OwnAggregates, Pulled, RouteSource, RouteTable, RoutingFeed,
    RoutingOptions, RoutingProjection, RoutingStats, TableChange, CATCH_UP_AFTER,
};
