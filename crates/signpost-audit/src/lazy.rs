//! Entries described when read.
//!
//! A catch-up (the audit task's own fold: a rebuild, a start far behind, after the feed
//! let go; or the short catch-up at start that the read model's task feeds) writes an
//! organization-local entry as a *stub* (`keys::encode_stub`: the organization alone)
//! instead of describing it: describing and encoding the entries was most of a
//! rebuild's work. Live events are described as they come. A read describes the stubs it meets, from the events
//! themselves, with a fresh read model:
//! - [`ByOrganization`] (pages, single entries): folds the stub's organization's
//!   streams (`AuditProjection::organization_streams`: its own, and every connection and
//!   setup-link stream whose first event named it) in log order up to the stub; an
//!   organization-local entry is exactly what those alone describe
//!   (`describe::organization_local`, property-tested against the whole log). Each
//!   organization is folded once per read, however many of its entries the read takes.
//! - [`InLogOrder`] (exports, `dump`): folds the whole log in order, once per export, so
//!   an export of every organization costs one fold of the log, not one per
//!   organization met (the log read and decoded ahead on a task of its own).
//!
//! Either gives the entry as a read gives a described one: its stored bytes as the fold
//! would have stored them (`dump`), its encoding as the export sends it, or the entry
//! itself (the details alone go through their encoding).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use signpost_control::read_model::ReadModel;
use signpost_eventlog::{EventEnvelope, EventStore};

use signpost_api::audit::v1::AuditEntry;

use crate::describe::{describe, Described};
use crate::error::AuditError;
use crate::point_in_time::StreamsUntil;
use crate::projection::AuditProjection;
use crate::store::Store;

/// How many events a read of the log in order takes at once.
const LOG_PAGE: usize = 1024;

/// The event an envelope holds (a payload that does not decode is a damaged log).
pub(crate) fn decode(envelope: &EventEnvelope) -> Result<signpost_domain::Event, AuditError> {
    signpost_domain::decode_event(&envelope.payload)
        .map_err(|e| AuditError::Corrupt(format!("position {}: {e}", envelope.position)))
}

/// One organization's streams folded so far, and the entries of their events.
struct OrganizationFold {
    events: StreamsUntil,
    model: ReadModel,
    /// The last position folded.
    folded: u64,
    /// Whether the streams hold nothing more up to the read's limit.
    done: bool,
    /// The entries of the events folded, by position.
    described: HashMap<u64, Described>,
}

/// Describes stubs from their organizations' streams, for one read.
pub(crate) struct ByOrganization<'a> {
    projection: &'a AuditProjection,
    /// The highest position the read may take: streams are listed up to it.
    limit: u64,
    organizations: HashMap<String, OrganizationFold>,
}

impl<'a> ByOrganization<'a> {
    /// For a read of positions up to `limit`.
    pub(crate) fn new(projection: &'a AuditProjection, limit: u64) -> Self {
        Self {
            projection,
            limit,
            organizations: HashMap::new(),
        }
    }

    /// The entry at `position`, a stub of `organization_id`'s.
    async fn describe(
        &mut self,
        organization_id: &str,
        position: u64,
    ) -> Result<Described, AuditError> {
        if position > self.limit {
            return Err(AuditError::Corrupt(format!(
                "entry {position} read beyond the read's limit {}",
                self.limit
            )));
        }
        let fold = match self.organizations.entry(organization_id.to_owned()) {
            Entry::Occupied(fold) => fold.into_mut(),
            Entry::Vacant(vacant) => {
                let streams = self
                    .projection
                    .organization_streams(organization_id, self.limit)
                    .await?;
                vacant.insert(OrganizationFold {
                    events: StreamsUntil::new(&streams, self.limit)?,
                    model: ReadModel::default(),
                    folded: 0,
                    done: false,
                    described: HashMap::new(),
                })
            }
        };
        let store = &**self.projection.store();
        // Every event on the way is described: a read takes an organization's entries in
        // either order, and a page in descending order would otherwise fold again from
        // the first event for each of them.
        while fold.folded < position && !fold.done {
            match fold.events.next(store).await? {
                Some((envelope, event)) => {
                    let entry = describe(&envelope, &event, &fold.model);
                    fold.described.insert(envelope.position, entry);
                    fold.model.apply(&envelope, &event);
                    fold.folded = envelope.position;
                }
                None => fold.done = true,
            }
        }
        fold.described.remove(&position).ok_or_else(|| {
            AuditError::Corrupt(format!(
                "the entry at {position} is to be described from organization \
                 {organization_id}'s streams, which hold no event there"
            ))
        })
    }
}

/// Describes stubs from the whole log folded in order, for one export (or dump): the
/// positions asked for must increase. The log is read and decoded ahead, a few pages at
/// a time, on a task of its own, so that reading overlaps folding and describing.
#[derive(Default)]
pub struct InLogOrder {
    model: ReadModel,
    /// The next position to fold.
    next: u64,
    page: VecDeque<(EventEnvelope, signpost_domain::Event)>,
    /// The pages read ahead, from the first position this describer needed on (started
    /// then).
    ahead: Option<mpsc::Receiver<Result<Page, AuditError>>>,
}

impl std::fmt::Debug for InLogOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InLogOrder")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// A page of the log, decoded.
type Page = Vec<(EventEnvelope, signpost_domain::Event)>;

/// Pages the reader of an [`InLogOrder`] keeps ready.
const PAGES_AHEAD: usize = 4;

/// Reads the log from `from` on, decoded, a page at a time into `pages`, until the head
/// or until nobody receives.
async fn read_ahead(
    store: Arc<dyn EventStore>,
    mut from: u64,
    pages: mpsc::Sender<Result<Page, AuditError>>,
) {
    loop {
        let page = match store.read_range(from, LOG_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                let _ = pages.send(Err(error.into())).await;
                return;
            }
        };
        let Some(last) = page.last() else {
            return;
        };
        from = last.position + 1;
        let decoded = page
            .into_iter()
            .map(|envelope| decode(&envelope).map(|event| (envelope, event)))
            .collect::<Result<Page, _>>();
        let failed = decoded.is_err();
        if pages.send(decoded).await.is_err() || failed {
            return;
        }
    }
}

impl InLogOrder {
    /// The entry at `position` (a stub's).
    async fn describe(
        &mut self,
        store: &Arc<dyn EventStore>,
        position: u64,
    ) -> Result<Described, AuditError> {
        self.next = self.next.max(1);
        if position < self.next {
            return Err(AuditError::Corrupt(format!(
                "entry {position} asked for after the fold in log order passed it"
            )));
        }
        let beyond =
            || AuditError::Corrupt(format!("the entry at {position} is beyond the log's head"));
        loop {
            if self.page.is_empty() {
                let ahead = self.ahead.get_or_insert_with(|| {
                    let (pages, ahead) = mpsc::channel(PAGES_AHEAD);
                    tokio::spawn(read_ahead(store.clone(), self.next, pages));
                    ahead
                });
                let page = ahead.recv().await.ok_or_else(beyond)??;
                self.page.extend(page);
            }
            let Some((envelope, event)) = self.page.pop_front() else {
                continue;
            };
            self.next = envelope.position + 1;
            if envelope.position == position {
                let entry = describe(&envelope, &event, &self.model);
                self.model.apply(&envelope, &event);
                return Ok(entry);
            }
            self.model.apply(&envelope, &event);
        }
    }
}

/// How a read describes the stubs it meets.
pub(crate) enum Describer<'r, 'a> {
    /// From their organizations' streams (pages, single entries).
    ByOrganization(ByOrganization<'a>),
    /// From the log folded in order (exports, `dump`).
    InLogOrder(&'r mut InLogOrder, &'a Arc<dyn EventStore>),
}

impl Describer<'_, '_> {
    /// The entry of a stub of `organization_id`'s at `position`.
    async fn describe(
        &mut self,
        organization_id: &str,
        position: u64,
    ) -> Result<Described, AuditError> {
        match self {
            Self::ByOrganization(describer) => describer.describe(organization_id, position).await,
            Self::InLogOrder(describer, store) => describer.describe(store, position).await,
        }
    }

    /// `stored` (the stored entry at `position`) with a stub's entry described: the
    /// entry's bytes as stored then, followed by what was stored after the stub (the
    /// domains the event changed).
    pub(crate) async fn resolve(
        &mut self,
        position: u64,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, AuditError> {
        let (entry, changes) = crate::keys::split_stored(&stored)?;
        let Some(organization_id) = crate::keys::stub_organization(entry)? else {
            return Ok(stored);
        };
        let mut described = self.describe(organization_id, position).await?.stored();
        described.extend_from_slice(changes);
        Ok(described)
    }

    /// The encoding of the entry stored at `position` (`stored`) as a read gives it,
    /// described if it is a stub: a described one is not decoded.
    pub(crate) async fn encoded(
        &mut self,
        position: u64,
        stored: &[u8],
    ) -> Result<Vec<u8>, AuditError> {
        let (entry, _) = crate::keys::split_stored(stored)?;
        match crate::keys::stub_organization(entry)? {
            None => Ok(crate::keys::wire_entry(entry, position)?),
            Some(organization_id) => Ok(self.describe(organization_id, position).await?.encoded()),
        }
    }

    /// The entry stored at `position` (`stored`), described if it is a stub.
    pub(crate) async fn entry(
        &mut self,
        position: u64,
        stored: &[u8],
    ) -> Result<AuditEntry, AuditError> {
        let (entry, _) = crate::keys::split_stored(stored)?;
        match crate::keys::stub_organization(entry)? {
            None => Store::decode(stored, position),
            Some(organization_id) => Ok(self
                .describe(organization_id, position)
                .await?
                .into_entry()?),
        }
    }
}
