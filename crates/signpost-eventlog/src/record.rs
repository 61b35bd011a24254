//! The stored form of an idempotency record: the same message in both durable stores (a sled
//! value, or a record of a segment-file frame).

use bytes::Bytes;

use crate::error::LogError;
use crate::types::{Committed, IdempotencyKey, StoredOutcome, StreamId};

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct IdempotencyRecord {
    #[prost(string, tag = "1")]
    pub principal: String,
    #[prost(string, tag = "2")]
    pub request_id: String,
    #[prost(bytes = "vec", tag = "3")]
    pub request_fingerprint: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub first_position: u64,
    #[prost(uint64, tag = "5")]
    pub last_position: u64,
    #[prost(message, repeated, tag = "6")]
    pub stream_versions: Vec<StreamVersionRecord>,
    #[prost(bytes = "bytes", tag = "7")]
    pub outcome: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamVersionRecord {
    #[prost(string, tag = "1")]
    pub stream: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
}

impl IdempotencyRecord {
    pub fn new(key: &IdempotencyKey, stored: &StoredOutcome) -> Self {
        IdempotencyRecord {
            principal: key.principal.clone(),
            request_id: key.request_id.clone(),
            request_fingerprint: stored.request_fingerprint.to_vec(),
            first_position: stored.committed.first_position,
            last_position: stored.committed.last_position,
            stream_versions: stored
                .committed
                .stream_versions
                .iter()
                .map(|(stream, version)| StreamVersionRecord {
                    stream: stream.as_str().to_owned(),
                    version: *version,
                })
                .collect(),
            outcome: stored.outcome.clone(),
        }
    }

    /// Whether the record is the one stored under `key` (the file store indexes records by a
    /// hash of the key, so a lookup compares the key itself).
    pub fn matches(&self, key: &IdempotencyKey) -> bool {
        self.principal == key.principal && self.request_id == key.request_id
    }

    pub fn into_stored(self) -> Result<StoredOutcome, LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            position: self.last_position,
            reason,
        };
        let request_fingerprint: [u8; 32] = self
            .request_fingerprint
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("idempotency fingerprint is not 32 bytes".to_owned()))?;
        let stream_versions = self
            .stream_versions
            .iter()
            .map(|record| {
                StreamId::new(record.stream.clone())
                    .map(|stream| (stream, record.version))
                    .map_err(|error| corrupt(format!("idempotency record: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoredOutcome {
            committed: Committed {
                first_position: self.first_position,
                last_position: self.last_position,
                stream_versions,
            },
            request_fingerprint,
            outcome: self.outcome,
        })
    }
}
