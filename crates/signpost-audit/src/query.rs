//! Reading the timeline: filters, pages and export batches.
//!
//! A query maps its time range to a position range through the time index, picks the
//! most selective index the filter allows (connection, then actor, then organization,
//! then a single event type; otherwise the entries themselves), walks it in position
//! order within the range and checks every other condition on the entries it reads.
//! Everything is bounded by the projection's published position, so a query sees whole
//! commits only.
//!
//! Pages are cut by position: a page token is the last position returned plus a hash of
//! the filter (and order), so a token cannot be replayed with another filter. Appends only
//! add positions above the published one, so paging while the log grows never returns an
//! entry twice nor skips one.

use std::collections::BTreeSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use signpost_api::audit::v1 as wire;
use signpost_api::audit::v1::AuditEntry;

use crate::describe::action_name;
use crate::error::AuditError;
use crate::keys::{self, Index};
use crate::lazy::{ByOrganization, Describer, InLogOrder};
use crate::projection::AuditProjection;
use crate::store::EntryReader;

/// Entries per page when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page served.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Entries per export batch.
pub const EXPORT_BATCH: usize = 500;

/// Which entries a query wants. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this organization's entries.
    pub organization_id: Option<String>,
    /// From this time (inclusive).
    pub start_time: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub end_time: Option<DateTime<Utc>>,
    /// Only these envelope event types.
    pub event_types: BTreeSet<String>,
    /// Only entries caused by this actor id.
    pub actor_id: Option<String>,
    /// Only entries about this connection.
    pub connection_id: Option<String>,
}

fn non_empty(value: &str) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

fn time(
    value: Option<&prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, AuditError> {
    value
        .map(|t| {
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
                .ok_or_else(|| {
                    AuditError::invalid("TIME_INVALID", field, "the time is out of range")
                })
        })
        .transpose()
}

impl AuditFilter {
    /// Validates a wire filter (unknown event types are refused, not ignored).
    pub fn from_wire(filter: Option<&wire::AuditFilter>) -> Result<Self, AuditError> {
        let Some(filter) = filter else {
            return Ok(Self::default());
        };
        let mut event_types = BTreeSet::new();
        for event_type in &filter.event_types {
            if action_name(event_type).is_none() {
                return Err(AuditError::invalid(
                    "EVENT_TYPE_UNKNOWN",
                    "filter.event_types",
                    format!("unknown event type `{event_type}`"),
                ));
            }
            event_types.insert(event_type.clone());
        }
        let filter = Self {
            organization_id: non_empty(&filter.organization_id),
            start_time: time(filter.start_time.as_ref(), "filter.start_time")?,
            end_time: time(filter.end_time.as_ref(), "filter.end_time")?,
            event_types,
            actor_id: non_empty(&filter.actor_id),
            connection_id: non_empty(&filter.connection_id),
        };
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time) {
            if end < start {
                return Err(AuditError::invalid(
                    "TIME_RANGE_INVALID",
                    "filter.end_time",
                    "the end time is before the start time",
                ));
            }
        }
        Ok(filter)
    }

    /// Applies an auditor's organization scope: forces the filter to that organization and
    /// refuses a filter naming another one.
    pub fn scoped(mut self, scope: Option<&str>) -> Result<Self, AuditError> {
        let Some(scope) = scope else {
            return Ok(self);
        };
        match &self.organization_id {
            Some(asked) if asked != scope => Err(AuditError::PermissionDenied(format!(
                "this token may read organization {scope} only"
            ))),
            _ => {
                self.organization_id = Some(scope.to_owned());
                Ok(self)
            }
        }
    }

    /// Whether `entry` passes every condition but the time range (ranges are positions)
    /// and the connection (a connection filter always walks the connection index, which
    /// also lists the previous connection of a switch).
    fn admits(&self, entry: &AuditEntry) -> bool {
        let target = entry.target.as_ref();
        if let Some(organization) = &self.organization_id {
            if target.map(|t| t.organization_id.as_str()) != Some(organization.as_str()) {
                return false;
            }
        }
        if !self.event_types.is_empty() && !self.event_types.contains(&entry.event_type) {
            return false;
        }
        if let Some(actor) = &self.actor_id {
            if entry.actor.as_ref().map(|a| a.id.as_str()) != Some(actor.as_str()) {
                return false;
            }
        }
        true
    }

    /// Whether an entry listed by `source` (the index a query walks) may still fail
    /// [`AuditFilter::admits`]: an index lists exactly the entries carrying its id.
    fn checks_beyond(&self, source: &Source) -> bool {
        let indexed = |index: Index| matches!(source, Source::Index(i, _) if *i == index);
        let event_types = match self.event_types.len() {
            0 => false,
            1 => !indexed(Index::EventType),
            _ => true,
        };
        (self.organization_id.is_some() && !indexed(Index::Organization))
            || (self.actor_id.is_some() && !indexed(Index::Actor))
            || event_types
    }

    fn fingerprint(&self, order: Order) -> [u8; 8] {
        let mut hasher = Sha256::new();
        let mut field = |value: &str| {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        };
        field(self.organization_id.as_deref().unwrap_or_default());
        field(&self.start_time.map(|t| t.to_rfc3339()).unwrap_or_default());
        field(&self.end_time.map(|t| t.to_rfc3339()).unwrap_or_default());
        for event_type in &self.event_types {
            field(event_type);
        }
        field("|");
        field(self.actor_id.as_deref().unwrap_or_default());
        field(self.connection_id.as_deref().unwrap_or_default());
        field(match order {
            Order::Ascending => "asc",
            Order::Descending => "desc",
        });
        let digest = hasher.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        out
    }
}

/// Oldest or newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    #[default]
    Ascending,
    /// Newest first.
    Descending,
}

/// One page of entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The entries, in the order asked for.
    pub entries: Vec<AuditEntry>,
    /// Token for the next page; empty at the end.
    pub next_page_token: String,
}

/// One batch of an export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportBatch {
    /// Matching entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The export has covered the log up to here; resume after it.
    pub position: u64,
}

/// One batch of an export, each entry encoded (an `AuditEntry` message's bytes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedExportBatch {
    /// Matching entries, oldest first, encoded.
    pub entries: Vec<Vec<u8>>,
    /// The export has covered the log up to here; resume after it.
    pub position: u64,
}

const TOKEN_VERSION: u8 = 1;

fn encode_token(last: u64, fingerprint: [u8; 8]) -> String {
    let mut bytes = Vec::with_capacity(17);
    bytes.push(TOKEN_VERSION);
    bytes.extend_from_slice(&last.to_be_bytes());
    bytes.extend_from_slice(&fingerprint);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_token(token: &str, fingerprint: [u8; 8]) -> Result<Option<u64>, AuditError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = |message: &str| AuditError::invalid("PAGE_TOKEN_INVALID", "page_token", message);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid("the page token is malformed"))?;
    if bytes.len() != 17 || bytes[0] != TOKEN_VERSION {
        return Err(invalid("the page token is malformed"));
    }
    if bytes[9..] != fingerprint {
        return Err(invalid(
            "the page token was issued for another filter or order",
        ));
    }
    Ok(Some(keys::trailing_position(&bytes[1..9])))
}

/// Where candidate positions come from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Index(Index, String),
    Entries,
}

impl AuditProjection {
    /// One page of entries matching `filter` (after applying `scope`, an auditor's
    /// organization). `page_size` 0 means [`DEFAULT_PAGE_SIZE`]; above [`MAX_PAGE_SIZE`]
    /// it is lowered to it.
    pub async fn list(
        &self,
        filter: AuditFilter,
        scope: Option<&str>,
        page_size: i32,
        page_token: &str,
        order: Order,
    ) -> Result<AuditPage, AuditError> {
        let filter = filter.scoped(scope)?;
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(AuditError::invalid(
                    "PAGE_SIZE_INVALID",
                    "page_size",
                    "the page size must not be negative",
                ))
            }
            n => usize::try_from(n)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let fingerprint = filter.fingerprint(order);
        let cursor = decode_token(page_token, fingerprint)?;
        let Some((mut low, mut high)) = self.position_range(&filter)? else {
            return Ok(AuditPage::default());
        };
        match (order, cursor) {
            (Order::Ascending, Some(last)) => low = low.max(last.saturating_add(1)),
            (Order::Descending, Some(last)) => high = high.min(last.saturating_sub(1)),
            (_, None) => {}
        }
        let mut describer = Describer::ByOrganization(ByOrganization::new(self, high));
        let mut entries: Vec<AuditEntry> = self
            .collect(
                &filter,
                Span { low, high, order },
                size + 1,
                &mut describer,
                Form::Message,
            )
            .await?
            .into_iter()
            .filter_map(Taken::message)
            .collect();
        let next_page_token = if entries.len() > size {
            entries.truncate(size);
            encode_token(
                entries.last().map(|e| e.position).unwrap_or_default(),
                fingerprint,
            )
        } else {
            String::new()
        };
        Ok(AuditPage {
            entries,
            next_page_token,
        })
    }

    /// The next export batch: entries matching `filter` (scoped) with positions in
    /// `after + 1 ..= until`, at most `max_entries` of them, oldest first. `export` is the
    /// export's own state (start each export with a new one, and pass it to each of its
    /// batches): entries described when read are described from the log folded in
    /// order, once for the whole export.
    pub async fn export_batch(
        &self,
        filter: &AuditFilter,
        scope: Option<&str>,
        after: u64,
        until: u64,
        max_entries: usize,
        export: &mut ExportState,
    ) -> Result<ExportBatch, AuditError> {
        use prost::Message as _;
        let batch = self
            .export_batch_encoded(filter, scope, after, until, max_entries, export)
            .await?;
        let entries = batch
            .entries
            .iter()
            .map(|entry| AuditEntry::decode(entry.as_slice()))
            .collect::<Result<_, _>>()?;
        Ok(ExportBatch {
            entries,
            position: batch.position,
        })
    }

    /// [`AuditProjection::export_batch`] with each entry encoded (an `AuditEntry`
    /// message's bytes), as the export RPC sends them: an entry described when folded is
    /// sent as stored, without being decoded.
    pub async fn export_batch_encoded(
        &self,
        filter: &AuditFilter,
        scope: Option<&str>,
        after: u64,
        until: u64,
        max_entries: usize,
        export: &mut ExportState,
    ) -> Result<EncodedExportBatch, AuditError> {
        let filter = filter.clone().scoped(scope)?;
        let until = until.min(self.position());
        let Some((low, high)) = self.position_range(&filter)? else {
            return Ok(EncodedExportBatch {
                entries: Vec::new(),
                position: until.max(after),
            });
        };
        let low = low.max(after.saturating_add(1));
        let high = high.min(until);
        let store = self.store();
        let mut describer = Describer::InLogOrder(&mut export.in_log_order, store);
        let max = max_entries.max(1);
        let span = Span {
            low,
            high,
            order: Order::Ascending,
        };
        let taken = self
            .collect(&filter, span, max, &mut describer, Form::Encoded)
            .await?;
        let position = match taken.last() {
            Some(last) if taken.len() >= max => last.position(),
            _ => until.max(after),
        };
        let entries = taken
            .into_iter()
            .filter_map(|taken| match taken {
                Taken::Encoded(_, encoded) => Some(encoded),
                Taken::Message(_) => None,
            })
            .collect();
        Ok(EncodedExportBatch { entries, position })
    }

    /// The positions `[low, high]` the filter's time range covers (bounded by the
    /// published position); `None` when empty.
    fn position_range(&self, filter: &AuditFilter) -> Result<Option<(u64, u64)>, AuditError> {
        let applied = self.position();
        let low = match filter.start_time {
            Some(start) => self.first_position_at_or_after(start)?,
            None => 1,
        };
        let high = match filter.end_time {
            Some(end) => self.first_position_at_or_after(end)?.saturating_sub(1),
            None => applied,
        }
        .min(applied);
        Ok((low <= high).then_some((low, high)))
    }

    /// The first position whose (non-decreasing) indexed time is `>= time`; one past the
    /// published position when none is.
    pub fn first_position_at_or_after(&self, time: DateTime<Utc>) -> Result<u64, AuditError> {
        let applied = self.position();
        let nanos = time
            .timestamp_nanos_opt()
            .unwrap_or(if time.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            });
        let first = self.shared.timeline.first_at_or_after(nanos)?;
        Ok(match first {
            Some(position) if position <= applied => position,
            _ => applied + 1,
        })
    }

    /// The log position as of `time`: the last event recorded at or before it (0 if none).
    pub fn position_at_time(&self, time: DateTime<Utc>) -> Result<u64, AuditError> {
        let after = time + chrono::Duration::nanoseconds(1);
        Ok(self.first_position_at_or_after(after)?.saturating_sub(1))
    }

    /// The entry at `position`, if it is applied.
    pub async fn entry(&self, position: u64) -> Result<Option<AuditEntry>, AuditError> {
        if position == 0 || position > self.position() {
            return Ok(None);
        }
        let stored = EntryReader::default().stored(&*self.shared.timeline.tree()?, position)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut describer = Describer::ByOrganization(ByOrganization::new(self, position));
        describer.entry(position, &stored).await.map(Some)
    }

    /// The last position indexed under `id` in `index` at or before `position`.
    pub(crate) fn last_indexed(
        &self,
        index: Index,
        id: &str,
        position: u64,
    ) -> Result<Option<u64>, AuditError> {
        let mut last = None;
        self.shared.timeline.positions(
            index,
            id,
            1,
            position.min(self.position()),
            Order::Descending,
            |found| {
                last = Some(found);
                Ok(false)
            },
        )?;
        Ok(last)
    }

    /// The last entry about `connection_id` at or before `position`.
    pub(crate) async fn last_connection_entry(
        &self,
        connection_id: &str,
        position: u64,
    ) -> Result<Option<AuditEntry>, AuditError> {
        match self.last_indexed(Index::Connection, connection_id, position)? {
            Some(position) => self.entry(position).await,
            None => Ok(None),
        }
    }

    /// Whether any entry of `organization_id` exists at or before `position`.
    pub(crate) fn organization_known(
        &self,
        organization_id: &str,
        position: u64,
    ) -> Result<bool, AuditError> {
        Ok(self
            .last_indexed(Index::Organization, organization_id, position)?
            .is_some())
    }

    fn source(filter: &AuditFilter) -> Source {
        if let Some(connection) = &filter.connection_id {
            Source::Index(Index::Connection, connection.clone())
        } else if let Some(actor) = &filter.actor_id {
            Source::Index(Index::Actor, actor.clone())
        } else if let Some(organization) = &filter.organization_id {
            Source::Index(Index::Organization, organization.clone())
        } else if filter.event_types.len() == 1 {
            let only = filter
                .event_types
                .iter()
                .next()
                .cloned()
                .unwrap_or_default();
            Source::Index(Index::EventType, only)
        } else {
            Source::Entries
        }
    }

    /// Up to `limit` entries matching `filter` in `span`, stubs described by
    /// `describer`, in `form`.
    async fn collect(
        &self,
        filter: &AuditFilter,
        span: Span,
        limit: usize,
        describer: &mut Describer<'_, '_>,
        form: Form,
    ) -> Result<Vec<Taken>, AuditError> {
        let Span {
            mut low,
            mut high,
            order,
        } = span;
        let mut out = Vec::new();
        // Whether an entry the index lists may still fail the filter.
        let checked = filter.checks_beyond(&Self::source(filter));
        while low <= high && out.len() < limit {
            // Stored entries read a batch at a time, then described and admitted
            // (describing may read the log: not while the database is being walked): as
            // many as are still wanted, or, when the filter may turn some down, at least
            // a walk's worth, so that a rare match does not cost a walk per candidate.
            let wanted = limit - out.len();
            let batch = if checked {
                wanted.max(CANDIDATE_BATCH)
            } else {
                wanted
            };
            let candidates = self.candidates(filter, low, high, order, batch)?;
            let Some(&(last, _)) = candidates.last() else {
                break;
            };
            let exhausted = candidates.len() < batch;
            for (position, stored) in candidates {
                if out.len() == limit {
                    break;
                }
                match form {
                    Form::Message => {
                        let entry = describer.entry(position, &stored).await?;
                        if filter.admits(&entry) {
                            out.push(Taken::Message(Box::new(entry)));
                        }
                    }
                    Form::Encoded => {
                        let encoded = describer.encoded(position, &stored).await?;
                        let admitted = !checked || {
                            use prost::Message as _;
                            filter.admits(&AuditEntry::decode(encoded.as_slice())?)
                        };
                        if admitted {
                            out.push(Taken::Encoded(position, encoded));
                        }
                    }
                }
            }
            if exhausted {
                break;
            }
            match order {
                Order::Ascending => low = last + 1,
                Order::Descending if last == 0 => break,
                Order::Descending => high = last - 1,
            }
        }
        Ok(out)
    }

    /// Up to `limit` stored entries (position, stored bytes) that `filter`'s most
    /// selective index lists in `[low, high]`, in `order`.
    fn candidates(
        &self,
        filter: &AuditFilter,
        low: u64,
        high: u64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let mut out = Vec::new();
        if low > high || limit == 0 {
            return Ok(out);
        }
        match Self::source(filter) {
            Source::Entries => {
                self.scan_entries(low, high, order, |position, bytes| {
                    out.push((position, bytes.to_vec()));
                    Ok(out.len() < limit)
                })?;
            }
            Source::Index(index, id) => {
                let tree = self.shared.timeline.tree()?;
                let mut reader = EntryReader::default();
                self.shared
                    .timeline
                    .positions(index, &id, low, high, order, |position| {
                        let Some(stored) = reader.stored(&tree, position)? else {
                            return Err(AuditError::Corrupt(format!(
                                "index {} points at missing entry {position}",
                                index.name()
                            )));
                        };
                        out.push((position, stored));
                        Ok(out.len() < limit)
                    })?;
            }
        }
        Ok(out)
    }
}

/// Fewest stored entries a query reads from the database at once when its filter may
/// turn some of them down.
const CANDIDATE_BATCH: usize = 256;

/// The positions a read walks: `[low, high]`, in `order`.
#[derive(Debug, Clone, Copy)]
struct Span {
    low: u64,
    high: u64,
    order: Order,
}

/// How a read hands its entries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// As messages.
    Message,
    /// Encoded, as the export sends them (a described entry is not decoded).
    Encoded,
}

/// An entry a read took, in its [`Form`].
enum Taken {
    Message(Box<AuditEntry>),
    /// Its position and its encoding.
    Encoded(u64, Vec<u8>),
}

impl Taken {
    fn position(&self) -> u64 {
        match self {
            Taken::Message(entry) => entry.position,
            Taken::Encoded(position, _) => *position,
        }
    }

    fn message(self) -> Option<AuditEntry> {
        match self {
            Taken::Message(entry) => Some(*entry),
            Taken::Encoded(..) => None,
        }
    }
}

/// One export's state, from batch to batch: entries described when read are described
/// from the log folded in order, once for the whole export.
#[derive(Debug, Default)]
pub struct ExportState {
    in_log_order: InLogOrder,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_is_refused_for_another_filter() {
        let a = AuditFilter {
            organization_id: Some("a".into()),
            ..Default::default()
        };
        let b = AuditFilter {
            organization_id: Some("b".into()),
            ..Default::default()
        };
        let token = encode_token(42, a.fingerprint(Order::Ascending));
        assert_eq!(
            decode_token(&token, a.fingerprint(Order::Ascending)).unwrap(),
            Some(42)
        );
        assert!(decode_token(&token, b.fingerprint(Order::Ascending)).is_err());
        assert!(decode_token(&token, a.fingerprint(Order::Descending)).is_err());
        assert!(decode_token("not-a-token", a.fingerprint(Order::Ascending)).is_err());
    }

    #[test]
    fn a_scoped_auditor_is_forced_to_its_organization() {
        let open = AuditFilter::default().scoped(Some("org-a")).unwrap();
        assert_eq!(open.organization_id.as_deref(), Some("org-a"));
        let other = AuditFilter {
            organization_id: Some("org-b".into()),
            ..Default::default()
        };
        assert!(matches!(
            other.scoped(Some("org-a")),
            Err(AuditError::PermissionDenied(_))
        ));
    }
}
