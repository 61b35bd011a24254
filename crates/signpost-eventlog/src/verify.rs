//! Walking the hash chain of any [`EventStore`] to prove it intact or name the first bad event.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use signpost_schema::log::v1::EventEnvelope;

use crate::canonical::EncodedEnvelope;
use crate::chain::{self, GENESIS_HASH};
use crate::error::LogError;
use crate::store::EventStore;
use crate::types::{Head, Position};

/// Each stream's last version seen by the verifier (a seeded foldhash: one lookup an
/// event, on a start's path).
type StreamVersions = HashMap<String, u64, foldhash::fast::RandomState>;

/// How many events the verifier reads at a time.
const VERIFY_PAGE: usize = 1024;

/// What a chain verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Every event in the range checked out.
    Intact {
        /// The last verified event (the chain's head when the range ran to the store's head).
        head: Head,
        /// How many events were checked.
        events_checked: u64,
    },
    /// The first bad position, and what is wrong there.
    Broken {
        /// The first position that failed a check.
        position: Position,
        /// What failed.
        problem: ChainProblem,
    },
}

/// What can be wrong at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The stored hash does not match the envelope's content.
    HashMismatch {
        /// The hash stored in the envelope.
        stored: Vec<u8>,
        /// The hash recomputed from the content.
        computed: [u8; 32],
    },
    /// The envelope's `previous_hash` is not the hash of the event before it.
    PreviousHashMismatch {
        /// The previous event's hash.
        expected: [u8; 32],
        /// What the envelope claims.
        found: Vec<u8>,
    },
    /// The event expected at this position is missing or carries another position.
    PositionGap {
        /// The position expected next.
        expected: Position,
        /// The position read instead (`None`: nothing left to read).
        found: Option<Position>,
    },
    /// A stream's versions skip or repeat.
    StreamVersionGap {
        /// The stream.
        stream: String,
        /// The version expected next.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// The stored bytes are not an envelope.
    Undecodable {
        /// The decoder's complaint.
        reason: String,
    },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::HashMismatch { .. } => f.write_str("hash does not match content"),
            ChainProblem::PreviousHashMismatch { .. } => {
                f.write_str("previous hash does not match the previous event")
            }
            ChainProblem::PositionGap { expected, found } => match found {
                Some(found) => write!(f, "expected position {expected}, found {found}"),
                None => write!(f, "expected position {expected}, found nothing"),
            },
            ChainProblem::StreamVersionGap {
                stream,
                expected,
                found,
            } => write!(
                f,
                "stream {stream} expected version {expected}, found {found}"
            ),
            ChainProblem::Undecodable { reason } => write!(f, "undecodable: {reason}"),
        }
    }
}

/// Verifies the events at positions `from..=to` of `store` (`to` is clamped to the store's
/// head; `from` 0 is read as 1).
///
/// For each event it checks, in order: the position is the next one, `previous_hash` is the
/// previous event's hash (the zero hash before position 1; for `from > 1` the event at
/// `from - 1` is read as the anchor), the stored hash matches the content, and the stream's
/// version is one more than its previous event's. Streams first seen in a range that does not
/// start at 1 are checked from their first event in the range on.
///
/// Returns `Err` only when the store cannot be read at all; damage is a
/// [`ChainVerdict::Broken`].
pub async fn verify_chain<S>(
    store: &S,
    from: Position,
    to: Position,
) -> Result<ChainVerdict, LogError>
where
    S: EventStore + ?Sized,
{
    let from = from.max(1);
    let to = to.min(store.head().position);
    let mut previous = Head {
        position: from - 1,
        hash: GENESIS_HASH,
    };
    if from > 1 {
        match read_page(store, from - 1, 1).await? {
            Page::Events(events) => {
                let anchor = events.first().map(|bytes| {
                    with_stored(bytes, |anchor| {
                        (anchor.position, chain::hash_array(anchor.hash))
                    })
                });
                match anchor {
                    Some(Ok((position, Some(hash)))) if position == from - 1 => {
                        previous.hash = hash;
                    }
                    Some(Ok((position, None))) if position == from - 1 => {
                        return Ok(broken(from - 1, undecodable("hash is not 32 bytes")))
                    }
                    Some(Err(reason)) => {
                        return Ok(broken(from - 1, ChainProblem::Undecodable { reason }))
                    }
                    other => {
                        let found = other.and_then(Result::ok).map(|(position, _)| position);
                        return Ok(broken(
                            from - 1,
                            ChainProblem::PositionGap {
                                expected: from - 1,
                                found,
                            },
                        ));
                    }
                }
            }
            Page::Undecodable { position, reason } => {
                return Ok(broken(position, ChainProblem::Undecodable { reason }))
            }
        }
    }

    let mut stream_versions = StreamVersions::default();
    let mut checked = 0u64;
    while previous.position < to {
        let expected = previous.position + 1;
        let limit = usize::try_from(to - previous.position)
            .unwrap_or(usize::MAX)
            .min(VERIFY_PAGE);
        let events = match read_page(store, expected, limit).await? {
            Page::Events(events) => events,
            Page::Undecodable { position, reason } => {
                // Everything before the unreadable event is readable: name an earlier fault
                // first by checking the positions the store could still read.
                if position > expected {
                    if let Page::Events(before) = read_page(
                        store,
                        expected,
                        usize::try_from(position - expected).unwrap_or(usize::MAX),
                    )
                    .await?
                    {
                        for bytes in &before {
                            if let Err(verdict) =
                                check(bytes, &mut previous, &mut stream_versions, from)
                            {
                                return Ok(verdict);
                            }
                        }
                    }
                }
                return Ok(broken(position, ChainProblem::Undecodable { reason }));
            }
        };
        if events.is_empty() {
            return Ok(broken(
                expected,
                ChainProblem::PositionGap {
                    expected,
                    found: None,
                },
            ));
        }
        for bytes in &events {
            if let Err(verdict) = check(bytes, &mut previous, &mut stream_versions, from) {
                return Ok(verdict);
            }
            checked += 1;
            if previous.position >= to {
                break;
            }
        }
    }
    Ok(ChainVerdict::Intact {
        head: previous,
        events_checked: checked,
    })
}

/// What the chain checks of one stored envelope, read from its canonical bytes or, when
/// they are not canonical, decoded (see `canonical.rs`): either way `chain_hash` is the
/// definition's.
struct Stored<'a> {
    position: Position,
    stream_id: &'a str,
    stream_version: u64,
    previous_hash: &'a [u8],
    hash: &'a [u8],
    chain_hash: [u8; 32],
}

/// Calls `f` with the envelope stored as `bytes`; `Err` with the decoder's complaint when
/// they are not an envelope at all.
fn with_stored<R>(bytes: &[u8], f: impl FnOnce(&Stored<'_>) -> R) -> Result<R, String> {
    if let Some(encoded) = EncodedEnvelope::read(bytes) {
        return Ok(f(&Stored {
            position: encoded.position,
            stream_id: encoded.stream_id,
            stream_version: encoded.stream_version,
            previous_hash: encoded.previous_hash,
            hash: encoded.hash,
            chain_hash: encoded.chain_hash(),
        }));
    }
    let envelope =
        EventEnvelope::decode(bytes).map_err(|error| format!("undecodable event: {error}"))?;
    Ok(f(&Stored {
        position: envelope.position,
        stream_id: &envelope.stream_id,
        stream_version: envelope.stream_version,
        previous_hash: &envelope.previous_hash,
        hash: &envelope.hash,
        chain_hash: chain::envelope_hash(&envelope),
    }))
}

/// Checks the envelope stored as `bytes` against its predecessor and advances `previous`;
/// `Err` with the verdict naming the first problem.
fn check(
    bytes: &[u8],
    previous: &mut Head,
    stream_versions: &mut StreamVersions,
    from: Position,
) -> Result<(), ChainVerdict> {
    let expected = previous.position + 1;
    match with_stored(bytes, |stored| {
        check_fields(stored, previous, stream_versions, from)
    }) {
        Ok(Ok(())) => Ok(()),
        Ok(Err((position, problem))) => Err(broken(position, problem)),
        Err(reason) => Err(broken(expected, ChainProblem::Undecodable { reason })),
    }
}

/// Checks one envelope against its predecessor and advances `previous`.
fn check_fields(
    envelope: &Stored<'_>,
    previous: &mut Head,
    stream_versions: &mut StreamVersions,
    from: Position,
) -> Result<(), (Position, ChainProblem)> {
    let expected = previous.position + 1;
    if envelope.position != expected {
        return Err((
            expected,
            ChainProblem::PositionGap {
                expected,
                found: Some(envelope.position),
            },
        ));
    }
    if envelope.previous_hash != previous.hash {
        return Err((
            expected,
            ChainProblem::PreviousHashMismatch {
                expected: previous.hash,
                found: envelope.previous_hash.to_vec(),
            },
        ));
    }
    let computed = envelope.chain_hash;
    if envelope.hash != computed {
        return Err((
            expected,
            ChainProblem::HashMismatch {
                stored: envelope.hash.to_vec(),
                computed,
            },
        ));
    }
    let known = stream_versions.get_mut(envelope.stream_id);
    let expected_version = match &known {
        Some(version) => Some(**version + 1),
        // From position 1 on every stream is seen from its start.
        None if from == 1 => Some(1),
        None => None,
    };
    if let Some(expected_version) = expected_version {
        if envelope.stream_version != expected_version {
            return Err((
                expected,
                ChainProblem::StreamVersionGap {
                    stream: envelope.stream_id.to_owned(),
                    expected: expected_version,
                    found: envelope.stream_version,
                },
            ));
        }
    }
    match known {
        Some(version) => *version = envelope.stream_version,
        None => {
            stream_versions.insert(envelope.stream_id.to_owned(), envelope.stream_version);
        }
    }
    *previous = Head {
        position: envelope.position,
        hash: computed,
    };
    Ok(())
}

enum Page {
    Events(Vec<Bytes>),
    Undecodable { position: Position, reason: String },
}

async fn read_page<S>(store: &S, from: Position, limit: usize) -> Result<Page, LogError>
where
    S: EventStore + ?Sized,
{
    match store.read_range_encoded(from, limit).await {
        Ok(events) => Ok(Page::Events(events)),
        Err(LogError::Corrupt { position, reason }) => Ok(Page::Undecodable { position, reason }),
        Err(error) => Err(error),
    }
}

fn broken(position: Position, problem: ChainProblem) -> ChainVerdict {
    ChainVerdict::Broken { position, problem }
}

fn undecodable(reason: &str) -> ChainProblem {
    ChainProblem::Undecodable {
        reason: reason.to_owned(),
    }
}
