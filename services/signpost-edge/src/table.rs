//! The routing table and how stream messages change it.
//!
//! [`Table`] is an immutable value (a persistent map plus revision, epoch and
//! time of last update). [`StreamApplier`] is the pure state machine of one
//! `WatchRoutes` stream: it takes the live table and a message and returns the
//! next table, or an [`ApplyError`] that leaves the live table untouched. It
//! does no I/O, so every rule of the stream contract is unit-tested here.
//!
//! Snapshot chunks accumulate in a pending table that becomes live only at
//! `snapshot_end`; until then the live table (and its revision) stays what it
//! was, so a reconnect in the middle of a snapshot never claims a revision
//! whose routes the edge does not hold. The pending routes are a plain vector
//! ([`RoutesBuilder`]) laid out into the table once, at the end; a route that
//! the live table already holds with the same bytes is shared with it rather
//! than copied, so a re-snapshot of an unchanged table costs no memory.

use chrono::{DateTime, Utc};
use signpost_api::routing::v1 as wire;

use crate::route::{check_domain, Route, RouteError};
pub use crate::route_map::{Routes, RoutesBuilder};
use crate::stream::{StreamKind, StreamMessage};

/// One immutable version of the routing table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    routes: Routes,
    revision: u64,
    store_epoch: String,
    last_update: Option<DateTime<Utc>>,
    complete: bool,
}

impl Table {
    /// The table of a complete snapshot (or a loaded state file).
    pub fn complete(
        routes: Routes,
        revision: u64,
        store_epoch: String,
        last_update: Option<DateTime<Utc>>,
    ) -> Table {
        Table {
            routes,
            revision,
            store_epoch,
            last_update,
            complete: true,
        }
    }

    /// Validates `routes` and builds a complete table of them.
    pub fn from_wire_routes(
        routes: impl IntoIterator<Item = wire::Route>,
        revision: u64,
        store_epoch: String,
        last_update: Option<DateTime<Utc>>,
    ) -> Result<Table, RouteError> {
        let mut builder = RoutesBuilder::new();
        for route in routes {
            builder.push(Route::try_from(route)?);
        }
        Ok(Table::complete(
            builder.build(),
            revision,
            store_epoch,
            last_update,
        ))
    }

    /// The route of a normalized domain, if it has one.
    pub fn get(&self, domain: &str) -> Option<&Route> {
        self.routes.get(domain)
    }

    /// Every route.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The log position the table is at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The store epoch the revision belongs to (empty before the first table).
    pub fn store_epoch(&self) -> &str {
        &self.store_epoch
    }

    /// When a message last changed the table (or the state file was written).
    pub fn last_update(&self) -> Option<DateTime<Utc>> {
        self.last_update
    }

    /// Whether the edge holds a real table: a snapshot ended or a state file
    /// was loaded. An edge without one must not answer "password" for a
    /// domain it simply has not heard of yet.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// The kind of a stream message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A snapshot chunk (added to the pending table).
    Snapshot,
    /// The end of a snapshot (the pending table became live).
    SnapshotEnd,
    /// The route changes of one command.
    Delta,
    /// Forget the table; a snapshot follows.
    Reset,
    /// A heartbeat carrying the current revision.
    Progress,
}

/// A message the edge applied, as observed through `Edge::subscribe_applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMessage {
    /// What kind of message it was.
    pub kind: MessageKind,
    /// The revision the message carried.
    pub revision: u64,
    /// The store epoch the message carried.
    pub store_epoch: String,
    /// Routes upserted (delta) or added to the pending table (snapshot chunk).
    pub upserts: usize,
    /// Domains deleted (delta).
    pub deletes: usize,
}

/// Why a message was not applied. The live table is unchanged; the follower
/// drops the stream and asks for a full snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The message has no `kind`.
    #[error("message at revision {revision} has no kind")]
    MissingKind {
        /// The message's revision.
        revision: u64,
    },
    /// A route in the message is invalid.
    #[error("message at revision {revision} has an invalid route: {source}")]
    InvalidRoute {
        /// The message's revision.
        revision: u64,
        /// What is wrong with the route.
        source: RouteError,
    },
    /// A delete names a domain that is not normalized.
    #[error("message at revision {revision} deletes an invalid domain: {source}")]
    InvalidDelete {
        /// The message's revision.
        revision: u64,
        /// What is wrong with the domain.
        source: RouteError,
    },
    /// A delta or progress message would move the revision backwards.
    #[error("{kind:?} at revision {revision} goes backwards from revision {current}")]
    RevisionBackwards {
        /// The message's kind.
        kind: MessageKind,
        /// The message's revision.
        revision: u64,
        /// The table's revision.
        current: u64,
    },
    /// A delta or progress message carries another store epoch than the table.
    #[error("{kind:?} carries store epoch `{epoch}` but the table is at epoch `{current}`")]
    EpochMismatch {
        /// The message's kind.
        kind: MessageKind,
        /// The message's epoch.
        epoch: String,
        /// The table's epoch.
        current: String,
    },
    /// A message arrived where the protocol does not allow it.
    #[error("{kind:?} at revision {revision} is out of order: {reason}")]
    OutOfOrder {
        /// The message's kind.
        kind: MessageKind,
        /// The message's revision.
        revision: u64,
        /// Why it is out of order.
        reason: &'static str,
    },
    /// The snapshot's route count does not match the routes received.
    #[error("snapshot at revision {revision} announced {announced} routes but {received} arrived")]
    SnapshotCountMismatch {
        /// The snapshot's revision.
        revision: u64,
        /// `SnapshotEnd.route_count`.
        announced: u64,
        /// Routes received in chunks.
        received: usize,
    },
}

/// What applying one message produced.
#[derive(Debug)]
pub struct Applied {
    /// The next live table, when the message changed it (a snapshot chunk or
    /// a reset leaves the live table as it is).
    pub table: Option<Table>,
    /// The message, for observers.
    pub message: AppliedMessage,
}

#[derive(Debug)]
struct PendingSnapshot {
    revision: u64,
    store_epoch: String,
    routes: RoutesBuilder,
}

/// The state machine of one `WatchRoutes` stream (see the module docs).
#[derive(Debug, Default)]
pub struct StreamApplier {
    pending: Option<PendingSnapshot>,
}

impl StreamApplier {
    /// A stream that has received nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a snapshot is being received.
    pub fn in_snapshot(&self) -> bool {
        self.pending.is_some()
    }

    /// Applies `message` (as the follower reads it, or a decoded
    /// `wire::WatchRoutesResponse`) on top of `live`. On error nothing
    /// changes (the pending snapshot, if any, is discarded: the stream is
    /// dropped anyway).
    pub fn apply(
        &mut self,
        live: &Table,
        message: impl Into<StreamMessage>,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApplyError> {
        let result = self.apply_inner(live, message.into(), now);
        if result.is_err() {
            self.pending = None;
        }
        result
    }

    fn apply_inner(
        &mut self,
        live: &Table,
        message: StreamMessage,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApplyError> {
        let StreamMessage {
            revision,
            store_epoch,
            kind,
        } = message;
        let kind = kind.ok_or(ApplyError::MissingKind { revision })?;
        let observed = |kind, upserts, deletes, store_epoch: &str| AppliedMessage {
            kind,
            revision,
            store_epoch: store_epoch.to_owned(),
            upserts,
            deletes,
        };
        match kind {
            StreamKind::Snapshot(chunk) => {
                let routes = chunk
                    .routes
                    .iter()
                    .map(|encoded| accept(revision, encoded, live))
                    .collect::<Result<Vec<_>, _>>()?;
                let pending = self.pending.get_or_insert_with(|| PendingSnapshot {
                    revision,
                    store_epoch: store_epoch.clone(),
                    routes: RoutesBuilder::new(),
                });
                if pending.revision != revision || pending.store_epoch != store_epoch {
                    return Err(ApplyError::OutOfOrder {
                        kind: MessageKind::Snapshot,
                        revision,
                        reason: "a snapshot chunk changed revision or epoch mid-snapshot",
                    });
                }
                let count = routes.len();
                for route in routes {
                    pending.routes.push(route);
                }
                Ok(Applied {
                    table: None,
                    message: observed(MessageKind::Snapshot, count, 0, &store_epoch),
                })
            }
            StreamKind::SnapshotEnd(end) => {
                // An empty snapshot is a lone `snapshot_end`.
                let pending = self.pending.take().unwrap_or(PendingSnapshot {
                    revision,
                    store_epoch: store_epoch.clone(),
                    routes: RoutesBuilder::new(),
                });
                if pending.revision != revision || pending.store_epoch != store_epoch {
                    return Err(ApplyError::OutOfOrder {
                        kind: MessageKind::SnapshotEnd,
                        revision,
                        reason: "the snapshot end has another revision or epoch than its chunks",
                    });
                }
                let routes = pending.routes.build();
                if end.route_count != routes.len() as u64 {
                    return Err(ApplyError::SnapshotCountMismatch {
                        revision,
                        announced: end.route_count,
                        received: routes.len(),
                    });
                }
                let table = Table::complete(routes, revision, store_epoch, Some(now));
                Ok(Applied {
                    message: observed(MessageKind::SnapshotEnd, 0, 0, &table.store_epoch),
                    table: Some(table),
                })
            }
            StreamKind::Reset(_) => {
                // The live table keeps serving (and keeps its revision) until
                // the snapshot that follows is complete.
                self.pending = None;
                Ok(Applied {
                    table: None,
                    message: observed(MessageKind::Reset, 0, 0, &store_epoch),
                })
            }
            StreamKind::Delta(delta) => {
                self.check_follows(live, MessageKind::Delta, revision, &store_epoch)?;
                let upserts = delta
                    .upserts
                    .iter()
                    .map(|encoded| accept(revision, encoded, live))
                    .collect::<Result<Vec<_>, _>>()?;
                for domain in &delta.deletes {
                    check_domain(domain)
                        .map_err(|source| ApplyError::InvalidDelete { revision, source })?;
                }
                let mut routes = live.routes.clone();
                for domain in &delta.deletes {
                    routes.remove(domain);
                }
                let counts = (upserts.len(), delta.deletes.len());
                for route in upserts {
                    routes.insert(route);
                }
                let table = Table::complete(routes, revision, store_epoch, Some(now));
                Ok(Applied {
                    message: observed(MessageKind::Delta, counts.0, counts.1, &table.store_epoch),
                    table: Some(table),
                })
            }
            StreamKind::Progress(_) => {
                self.check_follows(live, MessageKind::Progress, revision, &store_epoch)?;
                // `last_update` moves too: it tells operators how fresh the
                // edge's view is, not only when routes last changed.
                let table = Table {
                    revision,
                    last_update: Some(now),
                    ..live.clone()
                };
                Ok(Applied {
                    message: observed(MessageKind::Progress, 0, 0, &store_epoch),
                    table: Some(table),
                })
            }
        }
    }

    /// A delta or progress must continue the live table: no snapshot in
    /// flight, a complete table, the same epoch, and no step backwards.
    fn check_follows(
        &self,
        live: &Table,
        kind: MessageKind,
        revision: u64,
        store_epoch: &str,
    ) -> Result<(), ApplyError> {
        if self.pending.is_some() {
            return Err(ApplyError::OutOfOrder {
                kind,
                revision,
                reason: "it arrived in the middle of a snapshot",
            });
        }
        if !live.complete {
            return Err(ApplyError::OutOfOrder {
                kind,
                revision,
                reason: "the edge holds no table to apply it to",
            });
        }
        if store_epoch != live.store_epoch {
            return Err(ApplyError::EpochMismatch {
                kind,
                epoch: store_epoch.to_owned(),
                current: live.store_epoch.clone(),
            });
        }
        if revision < live.revision {
            return Err(ApplyError::RevisionBackwards {
                kind,
                revision,
                current: live.revision,
            });
        }
        Ok(())
    }
}

/// Checks an encoded route of a message at `revision`. A route `live`
/// already holds with the same bytes was checked then: it is shared, not
/// checked and copied again.
fn accept(revision: u64, encoded: &[u8], live: &Table) -> Result<Route, ApplyError> {
    if let Some(held) = (!live.is_empty())
        .then(|| crate::encoded::leading_domain(encoded))
        .flatten()
        .and_then(|domain| std::str::from_utf8(domain).ok())
        .and_then(|domain| live.get(domain))
        .filter(|held| held.encoded() == encoded)
    {
        return Ok(held.clone());
    }
    Route::from_encoded(encoded).map_err(|source| ApplyError::InvalidRoute { revision, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};
    use signpost_api::routing::v1::watch_routes_response::Kind;

    const EPOCH: &str = "epoch-1";

    fn message(revision: u64, kind: Kind) -> wire::WatchRoutesResponse {
        wire::WatchRoutesResponse {
            revision,
            store_epoch: EPOCH.to_owned(),
            kind: Some(kind),
        }
    }

    fn chunk(revision: u64, routes: Vec<wire::Route>) -> wire::WatchRoutesResponse {
        message(revision, Kind::Snapshot(wire::SnapshotChunk { routes }))
    }

    fn end(revision: u64, route_count: u64) -> wire::WatchRoutesResponse {
        message(
            revision,
            Kind::SnapshotEnd(wire::SnapshotEnd { route_count }),
        )
    }

    fn delta(
        revision: u64,
        upserts: Vec<wire::Route>,
        deletes: &[&str],
    ) -> wire::WatchRoutesResponse {
        message(
            revision,
            Kind::Delta(wire::RouteDelta {
                upserts,
                deletes: deletes.iter().map(|d| d.to_string()).collect(),
            }),
        )
    }

    fn progress(revision: u64) -> wire::WatchRoutesResponse {
        message(revision, Kind::Progress(wire::Progress {}))
    }

    fn reset(revision: u64) -> wire::WatchRoutesResponse {
        message(
            revision,
            Kind::Reset(wire::Reset {
                reason: wire::ResetReason::HistoryNotKept as i32,
            }),
        )
    }

    /// Applies every message, swapping tables like the follower does.
    #[allow(clippy::result_large_err)] // a test helper; the size does not matter
    fn run(
        applier: &mut StreamApplier,
        mut live: Table,
        messages: Vec<wire::WatchRoutesResponse>,
    ) -> Result<Table, (Table, ApplyError)> {
        for message in messages {
            match applier.apply(&live, message, Utc::now()) {
                Ok(applied) => {
                    if let Some(table) = applied.table {
                        live = table;
                    }
                }
                Err(error) => return Err((live, error)),
            }
        }
        Ok(live)
    }

    fn snapshot_table(revision: u64, domains: &[&str]) -> Table {
        let mut applier = StreamApplier::new();
        let routes: Vec<_> = domains.iter().map(|d| saml_route(d)).collect();
        let count = routes.len() as u64;
        run(
            &mut applier,
            Table::default(),
            vec![chunk(revision, routes), end(revision, count)],
        )
        .unwrap()
    }

    #[test]
    fn snapshot_chunks_become_live_only_at_snapshot_end() {
        let mut applier = StreamApplier::new();
        let live = Table::default();
        let first = applier
            .apply(&live, chunk(7, vec![saml_route("a.com")]), Utc::now())
            .unwrap();
        assert!(first.table.is_none());
        assert_eq!(first.message.kind, MessageKind::Snapshot);
        assert_eq!(first.message.upserts, 1);
        let second = applier
            .apply(&live, chunk(7, vec![oidc_route("b.com")]), Utc::now())
            .unwrap();
        assert!(second.table.is_none());
        assert!(applier.in_snapshot());
        let done = applier.apply(&live, end(7, 2), Utc::now()).unwrap();
        let table = done.table.unwrap();
        assert!(table.is_complete());
        assert_eq!(table.revision(), 7);
        assert_eq!(table.store_epoch(), EPOCH);
        assert_eq!(table.len(), 2);
        assert!(table.get("b.com").is_some());
        assert!(!applier.in_snapshot());
    }

    #[test]
    fn an_empty_snapshot_is_a_lone_snapshot_end() {
        let table = run(&mut StreamApplier::new(), Table::default(), vec![end(3, 0)]).unwrap();
        assert!(table.is_complete());
        assert!(table.is_empty());
        assert_eq!(table.revision(), 3);
    }

    #[test]
    fn a_snapshot_replaces_the_previous_table() {
        let live = snapshot_table(5, &["old.com"]);
        let table = run(
            &mut StreamApplier::new(),
            live,
            vec![chunk(9, vec![saml_route("new.com")]), end(9, 1)],
        )
        .unwrap();
        assert!(table.get("old.com").is_none());
        assert!(table.get("new.com").is_some());
    }

    #[test]
    fn a_new_snapshot_shares_the_routes_the_live_table_already_holds() {
        let live = snapshot_table(5, &["same.com", "changed.com"]);
        let mut changed = saml_route("changed.com");
        changed.connection_id = "conn_new".to_owned();
        let table = run(
            &mut StreamApplier::new(),
            live.clone(),
            vec![
                chunk(
                    9,
                    vec![saml_route("same.com"), changed, saml_route("new.com")],
                ),
                end(9, 3),
            ],
        )
        .unwrap();
        let same = table.get("same.com").unwrap();
        assert!(same.shares_allocation_with(live.get("same.com").unwrap()));
        assert_eq!(
            table.get("changed.com").unwrap().connection_id(),
            "conn_new"
        );
        assert!(!table
            .get("changed.com")
            .unwrap()
            .shares_allocation_with(live.get("changed.com").unwrap()));
        assert_eq!(
            live.get("changed.com").unwrap().connection_id(),
            "conn_saml"
        );
    }

    #[test]
    fn reset_discards_the_pending_snapshot_and_keeps_the_live_table() {
        let live = snapshot_table(5, &["live.com"]);
        let mut applier = StreamApplier::new();
        let table = run(
            &mut applier,
            live,
            vec![chunk(8, vec![saml_route("half.com")]), reset(9)],
        )
        .unwrap();
        assert!(!applier.in_snapshot());
        assert_eq!(
            table.revision(),
            5,
            "a reset does not move the live revision"
        );
        assert!(table.get("live.com").is_some());
        let table = run(
            &mut applier,
            table,
            vec![chunk(9, vec![saml_route("fresh.com")]), end(9, 1)],
        )
        .unwrap();
        assert!(
            table.get("half.com").is_none(),
            "the discarded chunk never lands"
        );
        assert!(table.get("live.com").is_none());
        assert!(table.get("fresh.com").is_some());
        assert_eq!(table.revision(), 9);
    }

    #[test]
    fn delta_applies_upserts_and_explicit_deletes() {
        let live = snapshot_table(5, &["a.com", "b.com"]);
        let table = run(
            &mut StreamApplier::new(),
            live.clone(),
            vec![delta(
                6,
                vec![oidc_route("a.com"), saml_route("c.com")],
                &["b.com"],
            )],
        )
        .unwrap();
        assert_eq!(table.revision(), 6);
        assert_eq!(table.get("a.com").unwrap().protocol_name(), "oidc");
        assert!(table.get("b.com").is_none());
        assert!(table.get("c.com").is_some());
        // The old table value is untouched (persistent map).
        assert_eq!(live.get("a.com").unwrap().protocol_name(), "saml");
        assert!(live.get("b.com").is_some());
    }

    #[test]
    fn progress_only_moves_the_revision() {
        let live = snapshot_table(5, &["a.com"]);
        let table = run(&mut StreamApplier::new(), live, vec![progress(12)]).unwrap();
        assert_eq!(table.revision(), 12);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_invalid_route_is_rejected_and_the_table_is_unchanged() {
        let live = snapshot_table(5, &["a.com"]);
        let mut bad = oidc_route("a.com");
        bad.oidc.as_mut().unwrap().authorization_endpoint = "http://insecure.example".to_owned();
        let (table, error) = run(
            &mut StreamApplier::new(),
            live,
            vec![delta(6, vec![saml_route("b.com"), bad], &[])],
        )
        .unwrap_err();
        assert!(matches!(
            error,
            ApplyError::InvalidRoute { revision: 6, .. }
        ));
        assert_eq!(table.revision(), 5);
        assert_eq!(table.get("a.com").unwrap().protocol_name(), "saml");
        assert!(
            table.get("b.com").is_none(),
            "no part of the message is applied"
        );
    }

    #[test]
    fn an_invalid_route_in_a_snapshot_keeps_the_last_good_table() {
        let live = snapshot_table(5, &["a.com"]);
        let mut applier = StreamApplier::new();
        let (table, error) = run(
            &mut applier,
            live,
            vec![chunk(9, vec![saml_route("Not-Normalized.com")])],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::InvalidRoute { .. }));
        assert_eq!(table.revision(), 5);
        assert!(!applier.in_snapshot());
    }

    #[test]
    fn a_delete_of_an_unnormalized_domain_is_rejected() {
        let live = snapshot_table(5, &["a.com"]);
        let (_, error) = run(
            &mut StreamApplier::new(),
            live,
            vec![delta(6, vec![], &["A.com"])],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::InvalidDelete { .. }));
    }

    #[test]
    fn a_revision_going_backwards_is_rejected() {
        let live = snapshot_table(5, &["a.com"]);
        let (table, error) = run(
            &mut StreamApplier::new(),
            live.clone(),
            vec![delta(4, vec![saml_route("b.com")], &[])],
        )
        .unwrap_err();
        assert!(matches!(
            error,
            ApplyError::RevisionBackwards {
                revision: 4,
                current: 5,
                ..
            }
        ));
        assert!(table.get("b.com").is_none());
        let (_, error) = run(&mut StreamApplier::new(), live, vec![progress(2)]).unwrap_err();
        assert!(matches!(error, ApplyError::RevisionBackwards { .. }));
    }

    #[test]
    fn a_delta_from_another_epoch_is_rejected() {
        let live = snapshot_table(5, &["a.com"]);
        let mut message = delta(6, vec![], &["a.com"]);
        message.store_epoch = "epoch-2".to_owned();
        let (table, error) = run(&mut StreamApplier::new(), live, vec![message]).unwrap_err();
        assert!(matches!(error, ApplyError::EpochMismatch { .. }));
        assert!(table.get("a.com").is_some());
    }

    #[test]
    fn a_delta_without_a_table_or_mid_snapshot_is_out_of_order() {
        let (_, error) = run(
            &mut StreamApplier::new(),
            Table::default(),
            vec![delta(1, vec![], &[])],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::OutOfOrder { .. }));
        let live = snapshot_table(5, &["a.com"]);
        let (_, error) = run(
            &mut StreamApplier::new(),
            live,
            vec![chunk(6, vec![saml_route("b.com")]), delta(7, vec![], &[])],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::OutOfOrder { .. }));
    }

    #[test]
    fn a_snapshot_with_missing_chunks_is_rejected() {
        let (table, error) = run(
            &mut StreamApplier::new(),
            Table::default(),
            vec![chunk(3, vec![saml_route("a.com")]), end(3, 2)],
        )
        .unwrap_err();
        assert!(matches!(error, ApplyError::SnapshotCountMismatch { .. }));
        assert!(!table.is_complete());
    }

    #[test]
    fn a_message_without_kind_is_rejected() {
        let message = wire::WatchRoutesResponse {
            revision: 1,
            store_epoch: EPOCH.to_owned(),
            kind: None,
        };
        let (_, error) =
            run(&mut StreamApplier::new(), Table::default(), vec![message]).unwrap_err();
        assert_eq!(error, ApplyError::MissingKind { revision: 1 });
    }
}
