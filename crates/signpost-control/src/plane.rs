//! [`ControlPlane`]: the one owner of command execution.
//!
//! Every mutation goes through `ControlPlane::execute` (private): read the model
//! (current up to the log head), let the aggregates decide, append the events
//! with the expected versions they were decided on, wait until the read model
//! has applied them, answer. Conflicts caused by a concurrent writer are
//! retried from fresh state unless the caller pinned an `expected_version`
//! (then the conflict is theirs to see). Commands on one connection, commands on one
//! organization, and setup form submissions (on their link and their connection) take
//! turns in the process first (`ControlPlane::stream_turn`), so a burst of them does not
//! race: each decides once, on the state its predecessor left. Locks are taken in one
//! order: the uniqueness lock, then an organization's turn or a connection's, then a
//! setup link's. Idempotent retries are answered from the log's idempotency record without
//! deciding anything again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use signpost_domain::{encode_event, event_type, Event};
use signpost_eventlog::{
    AppendOutcome, Commit, CommitMeta, EventStore, ExpectedVersion, Idempotency, IdempotencyKey,
    LogError, NewEvent, StoredOutcome, StreamId, StreamWrite,
};
use signpost_outbound::{FetchPolicy, SafeFetcher, TxtResolver};
use url::Url;

use crate::certificates::CertificateCache;
use crate::error::ControlError;
use crate::principal::Principal;
use crate::projection::{Followers, Projection};
use crate::read_model::ReadModel;
use crate::secrets::SecretBox;

/// How many times a command is re-decided after losing a race it did not pin.
/// Each loss means another command on the same stream committed, so a command
/// with N concurrent writers loses at most N - 1 times: the cap must be far
/// above any real contention (a small cap turned unpinned commands under load
/// into ABORTED `VERSION_MISMATCH` answers the caller never asked for). It
/// only stops a decide function that could never win from spinning until the
/// request deadline.
const MAX_CONFLICT_RETRIES: usize = 1024;

/// A source of the current time (a fixed or movable clock in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Settings of the control plane's application layer.
#[derive(Clone)]
pub struct ControlConfig {
    /// The base of every URL we hand out (setup links, SP entity id, ACS URL).
    pub public_base_url: Url,
    /// Limits for fetching IdP metadata and discovery documents.
    pub fetch: FetchPolicy,
    /// TEST-ONLY: accept `http` IdP URLs on loopback (discovery documents,
    /// metadata URLs). Off by default; never enable in production.
    pub allow_loopback_http_idp_for_tests: bool,
    /// The clock.
    pub clock: Clock,
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("public_base_url", &self.public_base_url.as_str())
            .field(
                "allow_loopback_http_idp_for_tests",
                &self.allow_loopback_http_idp_for_tests,
            )
            .finish_non_exhaustive()
    }
}

impl ControlConfig {
    /// Production defaults for `public_base_url`.
    pub fn new(public_base_url: Url) -> Self {
        Self {
            public_base_url,
            fetch: FetchPolicy::default(),
            allow_loopback_http_idp_for_tests: false,
            clock: Arc::new(Utc::now),
        }
    }
}

/// Per-request metadata that is not part of the command itself.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Idempotency key (AIP-155), scoped to the principal.
    pub request_id: Option<String>,
    /// The version the caller read (AIP-154); a mismatch is a conflict.
    pub expected_version: Option<u64>,
    /// Ties the events to a workflow; generated when absent.
    pub correlation_id: Option<String>,
    /// The person an internal service acts for.
    pub on_behalf_of: Option<String>,
}

impl RequestMeta {
    /// Checks the free-form parts of the metadata.
    pub fn validate(&self) -> Result<(), ControlError> {
        let check = |value: &Option<String>, field: &'static str, max: usize| match value {
            Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => {
                Err(ControlError::invalid(
                    "FIELD_INVALID",
                    field,
                    format!("`{field}` must be 1..={max} printable characters"),
                ))
            }
            _ => Ok(()),
        };
        check(&self.request_id, "request_id", 128)?;
        check(&self.correlation_id, "x-correlation-id", 128)?;
        check(&self.on_behalf_of, "x-signpost-on-behalf-of", 256)
    }
}

/// One stream's part of a plan.
pub(crate) struct PlannedWrite {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<Event>,
}

/// What a command decided: the writes, and what to remember for a replay.
pub(crate) struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub outcome: Outcome,
}

/// What an idempotent replay needs to rebuild the first answer. Stored in the
/// log's idempotency record; one-time values (tokens) are sealed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub ids: Vec<String>,
    #[serde(default)]
    pub sealed_nonce: Vec<u8>,
    #[serde(default)]
    pub sealed_ciphertext: Vec<u8>,
    #[serde(skip)]
    pub secret: Option<String>,
}

/// A mutation's result.
pub(crate) struct Done {
    pub position: u64,
    pub outcome: Outcome,
}

struct Inner {
    store: Arc<dyn EventStore>,
    projection: Projection,
    secrets: SecretBox,
    fetcher: SafeFetcher,
    txt_resolver: Arc<dyn TxtResolver>,
    config: ControlConfig,
    /// Serializes commands that check a uniqueness index (domains, external
    /// ids, IdP entity ids) so that check and append cannot interleave.
    uniqueness: tokio::sync::Mutex<()>,
    /// SAML signing certificates whole, for views.
    certificates: CertificateCache,
    /// Commands' turns on their streams ([`ControlPlane::stream_turn`]).
    turns: StreamTurns,
    /// Commands decided again after losing the append's race.
    conflict_retries: AtomicU64,
}

/// Streams whose turn locks [`StreamTurns`] keeps before it drops the idle ones (those
/// no command holds or waits for).
const IDLE_TURNS_KEPT: usize = 4096;

/// One turn lock per stream that commands have asked for; the idle ones are dropped
/// once `kept` streams have one.
struct StreamTurns {
    turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    kept: usize,
}

impl StreamTurns {
    fn new(kept: usize) -> Self {
        Self {
            turns: std::sync::Mutex::new(HashMap::new()),
            kept,
        }
    }

    /// Waits for the turn on `stream`, held until the guard drops.
    async fn turn(&self, stream: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self.turns.lock().expect("turns lock");
            if turns.len() >= self.kept {
                // A turn held or waited for has a clone outside the map.
                turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            }
            turns.entry(stream.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }

    /// Streams with a turn lock kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.turns.lock().expect("turns lock").len()
    }
}

/// The control plane's application layer. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the read model from `store` and returns once it is current.
    pub async fn start(
        store: Arc<dyn EventStore>,
        secrets: SecretBox,
        txt_resolver: Arc<dyn TxtResolver>,
        config: ControlConfig,
    ) -> Result<Self, ControlError> {
        Self::start_with(store, secrets, txt_resolver, config, Followers::default()).await
    }

    /// [`ControlPlane::start`], with the read model's task also driving `followers`:
    /// the routing table (from [`signpost_routing::RoutingProjection::fed`]) and the
    /// audit timeline's feed. The log is read and decoded once for all of them.
    pub async fn start_with(
        store: Arc<dyn EventStore>,
        secrets: SecretBox,
        txt_resolver: Arc<dyn TxtResolver>,
        config: ControlConfig,
        followers: Followers,
    ) -> Result<Self, ControlError> {
        let mut fetch = config.fetch.clone();
        fetch.allow_loopback_http_for_tests = config.allow_loopback_http_idp_for_tests;
        let fetcher = SafeFetcher::new(fetch)
            .map_err(|e| ControlError::Internal(format!("http client: {e}")))?;
        let projection = Projection::start_with(store.clone(), followers).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                projection,
                secrets,
                fetcher,
                txt_resolver,
                config,
                uniqueness: tokio::sync::Mutex::new(()),
                certificates: CertificateCache::default(),
                turns: StreamTurns::new(IDLE_TURNS_KEPT),
                conflict_retries: AtomicU64::new(0),
            }),
        })
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The admin read model.
    pub fn projection(&self) -> &Projection {
        &self.inner.projection
    }

    pub(crate) fn certificates(&self) -> &CertificateCache {
        &self.inner.certificates
    }

    pub(crate) fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    pub(crate) fn fetcher(&self) -> &SafeFetcher {
        &self.inner.fetcher
    }

    pub(crate) fn txt_resolver(&self) -> &dyn TxtResolver {
        self.inner.txt_resolver.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.inner.config
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.config.clock)()
    }

    /// Takes the uniqueness lock (see [`Inner::uniqueness`]).
    pub(crate) async fn uniqueness_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.uniqueness.lock().await
    }

    /// Waits for this command's turn on `stream`, held until the guard drops: commands on
    /// one stream in this process run one after another. Without turns, concurrent
    /// commands on one stream all decide on the same state, all but one lose the
    /// append's race, and each decides again: a burst of 64 concurrent group
    /// assignments to one connection cost about 300 µs of server CPU a write, against
    /// about 45 spread over connections (bench/FINDINGS.md, round 29). Commands from
    /// elsewhere (another stream's command touching this one) still meet the append's
    /// check and retry.
    pub(crate) async fn stream_turn(&self, stream: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.turns.turn(stream).await
    }

    /// Commands decided again after losing the append's race to a concurrent one, since
    /// the start.
    pub fn conflict_retries(&self) -> u64 {
        self.inner.conflict_retries.load(Ordering::Relaxed)
    }

    /// Reads the model once it has applied everything committed so far.
    pub(crate) async fn read_current<T>(
        &self,
        f: impl FnOnce(&ReadModel) -> T,
    ) -> Result<T, ControlError> {
        self.inner
            .projection
            .wait_for(self.inner.store.head().position)
            .await?;
        Ok(self.inner.projection.read(f))
    }

    /// Runs a mutation: replay check, decide, append, wait for the read model.
    pub(crate) async fn execute(
        &self,
        principal: &Principal,
        meta: &RequestMeta,
        fingerprint: [u8; 32],
        decide: impl Fn(&ReadModel) -> Result<Plan, ControlError>,
    ) -> Result<Done, ControlError> {
        meta.validate()?;
        let key = meta.request_id.as_ref().map(|request_id| IdempotencyKey {
            principal: principal.id(),
            request_id: request_id.clone(),
        });
        if let Some(key) = &key {
            if let Some(stored) = self.inner.store.lookup_idempotency(key).await? {
                return self.replay(key, stored, fingerprint).await;
            }
        }
        let correlation_id = meta
            .correlation_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut attempts = 0;
        loop {
            let mut plan = self.read_current(&decide).await??;
            plan.writes.retain(|write| !write.events.is_empty());
            if plan.writes.is_empty() {
                // Nothing to change (e.g. the same policy set twice): answer with the current position.
                return Ok(Done {
                    position: self.inner.projection.position(),
                    outcome: plan.outcome,
                });
            }
            let idempotency = match &key {
                Some(key) => Some(Idempotency {
                    key: key.clone(),
                    request_fingerprint: fingerprint,
                    outcome: self.seal_outcome(key, &plan.outcome)?.into(),
                }),
                None => None,
            };
            let commit = Commit {
                writes: plan
                    .writes
                    .iter()
                    .map(|write| {
                        Ok(StreamWrite {
                            stream: StreamId::new(write.stream.clone())?,
                            expected: write.expected,
                            events: write
                                .events
                                .iter()
                                .map(|event| NewEvent {
                                    event_type: event_type(event).to_owned(),
                                    payload: encode_event(event).into(),
                                })
                                .collect(),
                        })
                    })
                    .collect::<Result<_, LogError>>()?,
                meta: CommitMeta {
                    actor: principal.actor(meta.on_behalf_of.as_deref()),
                    correlation_id: correlation_id.clone(),
                    request_id: meta.request_id.clone(),
                },
                idempotency,
            };
            match self.inner.store.append(commit).await {
                Ok(AppendOutcome::Committed(committed)) => {
                    self.inner
                        .projection
                        .wait_for(committed.last_position)
                        .await?;
                    return Ok(Done {
                        position: committed.last_position,
                        outcome: plan.outcome,
                    });
                }
                Ok(AppendOutcome::Duplicate(stored)) => {
                    let key = key
                        .as_ref()
                        .expect("a duplicate implies an idempotency key");
                    return self.replay(key, stored, fingerprint).await;
                }
                Err(LogError::WrongExpectedVersion { .. })
                    if meta.expected_version.is_none() && attempts < MAX_CONFLICT_RETRIES =>
                {
                    attempts += 1;
                    self.inner.conflict_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        attempts,
                        "command lost a race; deciding again on fresh state"
                    );
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn replay(
        &self,
        key: &IdempotencyKey,
        stored: StoredOutcome,
        fingerprint: [u8; 32],
    ) -> Result<Done, ControlError> {
        if stored.request_fingerprint != fingerprint {
            return Err(ControlError::RequestIdReused(key.request_id.clone()));
        }
        let mut outcome: Outcome = serde_json::from_slice(&stored.outcome)
            .map_err(|e| ControlError::Internal(format!("stored outcome: {e}")))?;
        if !outcome.sealed_ciphertext.is_empty() {
            let sealed = signpost_schema::log::v1::EncryptedSecret {
                key_id: self.inner.secrets.key_id().to_owned(),
                nonce: std::mem::take(&mut outcome.sealed_nonce),
                ciphertext: std::mem::take(&mut outcome.sealed_ciphertext),
            };
            let secret = self
                .inner
                .secrets
                .open(&sealed, &outcome_context(key))
                .map_err(|e| ControlError::Internal(e.to_string()))?;
            outcome.secret = Some(String::from_utf8_lossy(&secret).into_owned());
        }
        let position = stored.committed.last_position;
        self.inner.projection.wait_for(position).await?;
        Ok(Done { position, outcome })
    }

    fn seal_outcome(
        &self,
        key: &IdempotencyKey,
        outcome: &Outcome,
    ) -> Result<Vec<u8>, ControlError> {
        let mut stored = outcome.clone();
        if let Some(secret) = &outcome.secret {
            let sealed = self
                .inner
                .secrets
                .seal(secret.as_bytes(), &outcome_context(key));
            stored.sealed_nonce = sealed.nonce;
            stored.sealed_ciphertext = sealed.ciphertext;
        }
        serde_json::to_vec(&stored).map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// Where the bootstrap admin token is written.
    pub fn bootstrap_token_path(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("bootstrap-admin.token")
    }
}

fn outcome_context(key: &IdempotencyKey) -> String {
    format!("idempotency:{}:{}", key.principal, key.request_id)
}

/// The fingerprint of a request: what an idempotent retry must repeat exactly.
/// `input` must not print secrets in its `Debug` form.
///
/// The SHA-256 of `"{operation}\0{input:?}"`, the text fed to the hash as it is
/// formatted rather than gathered in a string first (stored fingerprints stay valid).
pub(crate) fn fingerprint(operation: &str, input: &impl std::fmt::Debug) -> [u8; 32] {
    use std::fmt::Write as _;

    /// A `fmt::Write` that hashes what is written to it.
    struct Hashing(Sha256);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0.update(text.as_bytes());
            Ok(())
        }
    }

    let mut hashing = Hashing(Sha256::new());
    write!(hashing, "{operation}\u{0}{input:?}").expect("hashing never fails");
    hashing.0.finalize().into()
}

/// The version a write expects: the caller's pin if any, else what we read.
pub(crate) fn expected_version(
    meta: &RequestMeta,
    current: u64,
) -> Result<ExpectedVersion, ControlError> {
    match meta.expected_version {
        Some(pinned) if pinned != current => {
            Err(signpost_domain::DomainError::conflict(pinned, current).into())
        }
        _ if current == 0 => Ok(ExpectedVersion::NoStream),
        _ => Ok(ExpectedVersion::Exact(current)),
    }
}

/// Encodes a page token (opaque to callers: the last id of the page).
pub(crate) fn page_token(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_id)
}

/// Decodes a page token and a page size.
pub(crate) fn page_request(
    page_size: i32,
    page_token: &str,
) -> Result<(usize, String), ControlError> {
    let size = match page_size {
        0 => 100,
        1..=1000 => page_size as usize,
        _ => {
            return Err(ControlError::invalid(
                "PAGE_SIZE_OUT_OF_RANGE",
                "page_size",
                "`page_size` must be between 0 and 1000",
            ))
        }
    };
    let after = if page_token.is_empty() {
        String::new()
    } else {
        URL_SAFE_NO_PAD
            .decode(page_token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                ControlError::invalid(
                    "PAGE_TOKEN_INVALID",
                    "page_token",
                    "`page_token` is not valid",
                )
            })?
    };
    Ok((size, after))
}

/// The entries of `map` whose ids sort after the cursor `after` (all when it is empty):
/// a page starts there directly instead of walking every id before it.
pub(crate) fn after_cursor<'a, K, V>(
    map: &'a std::collections::BTreeMap<K, V>,
    after: &'a str,
) -> std::collections::btree_map::Range<'a, K, V>
where
    K: std::borrow::Borrow<str> + Ord,
{
    use std::ops::Bound;
    let start = if after.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(after)
    };
    map.range::<str, _>((start, Bound::Unbounded))
}

/// Merges two iterators of ids sorted ascending into one, sorted, each id once.
pub(crate) fn merge_sorted<'a>(
    a: impl Iterator<Item = &'a str>,
    b: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(x), Some(y)) if x > y => b.next(),
        (Some(_), Some(_)) => {
            b.next();
            a.next()
        }
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// Takes one page of `items` (id and source, sorted by id) after `after`, and builds the
/// view of each item on the page only. Callers start `items` at the cursor
/// ([`after_cursor`]) where they can; items at or before it are skipped here anyway.
pub(crate) fn paginate<'a, S, T>(
    items: impl Iterator<Item = (&'a str, S)>,
    size: usize,
    after: &str,
    mut view: impl FnMut(S) -> T,
) -> crate::views::Page<T> {
    let mut page: Vec<(&str, S)> = items
        .filter(|(id, _)| after.is_empty() || *id > after)
        .take(size + 1)
        .collect();
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last()
            .map(|(id, _)| page_token(id))
            .unwrap_or_default()
    } else {
        String::new()
    };
    crate::views::Page {
        items: page.into_iter().map(|(_, source)| view(source)).collect(),
        next_page_token,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A fingerprint is the hash of the formatted request, whatever the text holds
        /// (quotes, escapes, any character): fingerprints stored before it was hashed as it
        /// is formatted still match their retries.
        #[test]
        fn a_fingerprint_hashes_the_formatted_request(
            operation in "[a-z_]{1,20}",
            a in any::<String>(),
            b in any::<String>(),
            flag in any::<bool>(),
        ) {
            let input = (a.as_str(), b.as_str(), flag);
            let formatted: [u8; 32] =
                Sha256::digest(format!("{operation}\u{0}{input:?}")).into();
            prop_assert_eq!(fingerprint(&operation, &input), formatted);
        }

        /// Starting at the cursor and merging the two maps lists what sorting every id and
        /// skipping to the cursor did.
        #[test]
        fn cursor_ranges_and_merges_list_what_a_full_sort_did(
            a in proptest::collection::btree_set("[a-d]{0,3}", 0..12),
            b in proptest::collection::btree_set("[a-d]{0,3}", 0..12),
            after in "[a-d]{0,3}",
        ) {
            let a: std::collections::BTreeMap<std::sync::Arc<str>, ()> =
                a.iter().map(|id| (id.as_str().into(), ())).collect();
            let b: std::collections::BTreeMap<String, ()> =
                b.iter().map(|id| (id.clone(), ())).collect();
            let merged: Vec<&str> = merge_sorted(
                after_cursor(&a, &after).map(|(id, _)| &**id),
                after_cursor(&b, &after).map(|(id, _)| id.as_str()),
            )
            .collect();
            let mut expected: Vec<&str> = a
                .keys()
                .map(|id| &**id)
                .chain(b.keys().map(String::as_str))
                .filter(|id| after.is_empty() || *id > after.as_str())
                .collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(merged, expected);
        }
    }

    /// A stored fingerprint, computed before fingerprints were hashed as formatted: a
    /// retry of that request still matches it.
    #[test]
    fn a_fingerprint_stored_earlier_still_matches() {
        assert_eq!(
            hex::encode(fingerprint(
                "assign_group",
                &("conn-1", "engineering", "admin")
            )),
            "eede1af98a89562620ad0e78d2ef522d9287cc7f6fb79a8c86534f92e8513ce5"
        );
    }

    #[test]
    fn pages_cover_every_item_once_and_build_views_for_the_page_only() {
        let ids: Vec<String> = (1..=7).map(|n| format!("id-{n}")).collect();
        let mut built = 0;
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = paginate(ids.iter().map(|id| (id.as_str(), id)), 3, &after, |id| {
                built += 1;
                id.clone()
            });
            assert!(page.items.len() <= 3);
            seen.extend(page.items);
            if page.next_page_token.is_empty() {
                break;
            }
            after = page_request(3, &page.next_page_token).unwrap().1;
        }
        assert_eq!(seen, ids);
        assert_eq!(
            built,
            ids.len(),
            "one view per item listed, none for skipped items"
        );
    }

    #[tokio::test]
    async fn commands_on_one_stream_take_turns_and_other_streams_do_not_wait() {
        let turns = Arc::new(StreamTurns::new(IDLE_TURNS_KEPT));
        let first = turns.turn("connection-a").await;
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _turn = turns.turn("connection-a").await;
            })
        };
        // Another stream's turn is free at once.
        tokio::time::timeout(Duration::from_secs(5), turns.turn("connection-b"))
            .await
            .expect("another stream's turn does not wait");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the same stream's turn waits");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the turn passes on once released")
            .unwrap();
    }

    #[tokio::test]
    async fn idle_turns_are_dropped_and_held_ones_kept() {
        let turns = StreamTurns::new(8);
        let held = turns.turn("held").await;
        for stream in 0..20 {
            drop(turns.turn(&format!("idle-{stream}")).await);
        }
        assert!(turns.len() <= 8, "{} turns kept", turns.len());
        // The held turn survived every clean-up: asking for it again waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), turns.turn("held"))
                .await
                .is_err(),
            "the held turn is still the one held"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), turns.turn("held"))
            .await
            .expect("free once released");
    }
}
