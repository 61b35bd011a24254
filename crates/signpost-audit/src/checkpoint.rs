//! Signed checkpoints of the log's head, in the spirit of CloudTrail's digest chain, and
//! their verification online (against the live log) and offline (against an exported log).
//!
//! A checkpoint states `(store epoch, position, head hash, time, previous checkpoint
//! hash)` and is signed with Ed25519 over its canonical bytes:
//!
//! ```text
//! "signpost-checkpoint-v1\n" epoch "\n" position "\n" hex(head_hash) "\n"
//!     RFC 3339 time (UTC, 9 fractional digits, "Z") "\n" hex(previous_checkpoint_hash)
//! ```
//!
//! `previous_checkpoint_hash` is the SHA-256 of the previous checkpoint's canonical bytes,
//! so checkpoints chain too. Anyone holding an earlier checkpoint and the public key can
//! show that today's log extends it unchanged: the signature is valid, the event at the
//! checkpoint's position still has the checkpoint's hash, and the hash chain from there to
//! today's head is intact. The key is a 32-byte seed, hex, in `<data-dir>/checkpoint.key`
//! (mode 0600) unless configured elsewhere. The server keeps checkpoints in a small sled
//! database of their own, `<data-dir>/checkpoints` ([`Checkpointer::open_at`]), apart from
//! the audit database, which can be deleted at any time (it is rebuilt from the log) and
//! whose rows are written without flushing: checkpoints cannot be rebuilt, so each is
//! flushed when made, and in the audit database (where earlier versions kept them, in a
//! `checkpoints` tree moved over at the first start) that flush also had to write every
//! audit row not yet on disk.
//!
//! Exported logs (for offline verification) are a plain sequence of length-delimited
//! `EventEnvelope`s: [`write_log_export`], [`read_log_export`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use signpost_api::audit::v1::Checkpoint;
use signpost_domain::event::{from_timestamp, timestamp};
use signpost_eventlog::{
    envelope_hash, verify_chain, ChainVerdict, EventEnvelope, EventStore, Head, GENESIS_HASH,
};

use sled::Transactional;

use crate::error::AuditError;
use crate::keys;

/// The first line of a checkpoint's canonical bytes.
pub const CHECKPOINT_FORMAT: &str = "signpost-checkpoint-v1";

/// The checkpoint signing key.
#[derive(Clone)]
pub struct CheckpointKey {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The id of a public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

impl CheckpointKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let key_id = key_id(signing.verifying_key().as_bytes());
        Self { signing, key_id }
    }

    /// Loads the key file (64 hex characters), creating it (mode 0600) when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let file_error = |message: String| AuditError::File {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let seed: [u8; 32] = hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| {
                        file_error("the checkpoint key must be 64 hex characters".into())
                    })?;
                Ok(Self::from_seed(seed))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                signpost_control::secrets::write_private_file(path, hex::encode(seed).as_bytes())
                    .map_err(|e| file_error(e.to_string()))?;
                Ok(Self::from_seed(seed))
            }
            Err(error) => Err(file_error(error.to_string())),
        }
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn sign(&self, checkpoint: &mut Checkpoint) {
        checkpoint.key_id = self.key_id.clone();
        checkpoint.signature = self
            .signing
            .sign(&canonical_bytes(checkpoint))
            .to_bytes()
            .to_vec();
    }
}

/// The bytes a checkpoint's signature covers (see the module docs).
pub fn canonical_bytes(checkpoint: &Checkpoint) -> Vec<u8> {
    let time = from_timestamp(checkpoint.time.as_ref())
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!(
        "{CHECKPOINT_FORMAT}\n{}\n{}\n{}\n{}\n{}",
        checkpoint.store_epoch,
        checkpoint.position,
        hex::encode(&checkpoint.head_hash),
        time,
        hex::encode(&checkpoint.previous_checkpoint_hash)
    )
    .into_bytes()
}

/// SHA-256 of a checkpoint's canonical bytes: what the next checkpoint chains to.
pub fn checkpoint_hash(checkpoint: &Checkpoint) -> [u8; 32] {
    Sha256::digest(canonical_bytes(checkpoint)).into()
}

/// What is wrong with a checkpoint, or with a log that should extend it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointProblem {
    /// The checkpoint names another key.
    #[error("the checkpoint was signed with key {found}, not {expected}")]
    UnknownKey {
        /// Our key id.
        expected: String,
        /// The checkpoint's key id.
        found: String,
    },
    /// The signature does not verify.
    #[error("the checkpoint's signature is not valid")]
    BadSignature,
    /// The public key is not a valid Ed25519 key.
    #[error("the public key is not a valid Ed25519 key")]
    BadPublicKey,
    /// The checkpoint belongs to another log history.
    #[error("the checkpoint belongs to store epoch {found}, the log is epoch {expected}")]
    EpochMismatch {
        /// The log's epoch.
        expected: String,
        /// The checkpoint's epoch.
        found: String,
    },
    /// The log does not reach the checkpoint's position.
    #[error("the log ends at position {head}, before the checkpoint's position {position}")]
    LogTooShort {
        /// The checkpoint's position.
        position: u64,
        /// The log's last position.
        head: u64,
    },
    /// The exported log starts after the checkpoint's position.
    #[error(
        "the exported log starts at position {first}, after the checkpoint's position {position}"
    )]
    ExportStartsTooLate {
        /// The checkpoint's position.
        position: u64,
        /// The export's first position.
        first: u64,
    },
    /// The event at the checkpoint's position has another hash now.
    #[error("the event at position {position} no longer has the checkpoint's hash")]
    HeadHashMismatch {
        /// The checkpoint's position.
        position: u64,
    },
    /// The hash chain is broken.
    #[error("the hash chain is broken at position {position}: {problem}")]
    ChainBroken {
        /// The first bad position.
        position: u64,
        /// What is wrong there.
        problem: String,
    },
}

/// The outcome of verifying a checkpoint against the live log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerification {
    /// The signature is valid for our key.
    pub signature_valid: bool,
    /// The log still has the checkpoint's hash at its position and chains intact to the head.
    pub log_extends_checkpoint: bool,
    /// The head verified (when the chain was walked).
    pub head: Option<Head>,
    /// The first problem found.
    pub problem: Option<CheckpointProblem>,
}

/// Checks a checkpoint's signature against `public_key` (raw 32 bytes).
pub fn verify_signature(
    checkpoint: &Checkpoint,
    public_key: &[u8],
) -> Result<(), CheckpointProblem> {
    let key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| CheckpointProblem::BadPublicKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| CheckpointProblem::BadPublicKey)?;
    let expected = key_id(key.as_bytes());
    if checkpoint.key_id != expected {
        return Err(CheckpointProblem::UnknownKey {
            expected,
            found: checkpoint.key_id.clone(),
        });
    }
    let signature = Signature::from_slice(&checkpoint.signature)
        .map_err(|_| CheckpointProblem::BadSignature)?;
    key.verify(&canonical_bytes(checkpoint), &signature)
        .map_err(|_| CheckpointProblem::BadSignature)
}

/// Verifies `checkpoint` offline: its signature with `public_key`, then that `envelopes`
/// (an exported log, in position order, starting at or before the checkpoint's position)
/// hold the checkpoint's hash at its position and chain intact to their end. The first
/// envelope anchors the chain (at position 1 it must follow the genesis hash). Returns the
/// head the export reaches. The chain checks are those of
/// [`signpost_eventlog::verify_chain`]: position continuity, previous hash, content hash,
/// stream versions.
pub fn verify_checkpoint_offline(
    checkpoint: &Checkpoint,
    public_key: &[u8],
    envelopes: impl Iterator<Item = EventEnvelope>,
) -> Result<Head, CheckpointProblem> {
    verify_signature(checkpoint, public_key)?;
    let mut previous: Option<Head> = None;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut from_genesis = false;
    let mut seen_checkpoint = checkpoint.position == 0;
    for envelope in envelopes {
        let position = envelope.position;
        let broken = |problem: String| CheckpointProblem::ChainBroken { position, problem };
        let expected_previous = match previous {
            None => {
                if position > checkpoint.position.max(1) {
                    return Err(CheckpointProblem::ExportStartsTooLate {
                        position: checkpoint.position,
                        first: position,
                    });
                }
                from_genesis = position == 1;
                if from_genesis {
                    GENESIS_HASH.to_vec()
                } else {
                    envelope.previous_hash.to_vec()
                }
            }
            Some(head) => {
                if position != head.position + 1 {
                    return Err(CheckpointProblem::ChainBroken {
                        position: head.position + 1,
                        problem: format!(
                            "expected position {}, found {position}",
                            head.position + 1
                        ),
                    });
                }
                head.hash.to_vec()
            }
        };
        if envelope.previous_hash != expected_previous {
            return Err(broken(
                "previous hash does not match the previous event".into(),
            ));
        }
        let computed = envelope_hash(&envelope);
        if *envelope.hash != computed {
            return Err(broken("hash does not match content".into()));
        }
        let known = versions.get(&envelope.stream_id).copied();
        let expected_version = match known {
            Some(version) => Some(version + 1),
            None if from_genesis => Some(1),
            None => None,
        };
        if let Some(expected) = expected_version {
            if envelope.stream_version != expected {
                return Err(broken(format!(
                    "stream {} expected version {expected}, found {}",
                    envelope.stream_id, envelope.stream_version
                )));
            }
        }
        versions.insert(envelope.stream_id.clone(), envelope.stream_version);
        if position == checkpoint.position {
            if envelope.hash != checkpoint.head_hash {
                return Err(CheckpointProblem::HeadHashMismatch { position });
            }
            seen_checkpoint = true;
        }
        previous = Some(Head {
            position,
            hash: computed,
        });
    }
    let head = previous.unwrap_or(Head::EMPTY);
    if !seen_checkpoint {
        return Err(CheckpointProblem::LogTooShort {
            position: checkpoint.position,
            head: head.position,
        });
    }
    Ok(head)
}

/// Writes `envelopes` as an exported log (length-delimited `EventEnvelope`s); returns how
/// many were written.
pub fn write_log_export(
    mut writer: impl Write,
    envelopes: impl IntoIterator<Item = EventEnvelope>,
) -> std::io::Result<u64> {
    let mut count = 0;
    let mut buffer = Vec::new();
    for envelope in envelopes {
        buffer.clear();
        envelope
            .encode_length_delimited(&mut buffer)
            .map_err(std::io::Error::other)?;
        writer.write_all(&buffer)?;
        count += 1;
    }
    writer.flush()?;
    Ok(count)
}

/// Reads an exported log written by [`write_log_export`], one envelope at a time.
pub fn read_log_export<R: Read>(reader: R) -> LogExportReader<R> {
    LogExportReader {
        reader,
        failed: false,
    }
}

/// The iterator of [`read_log_export`]: ends at a clean end of file, yields an error (and
/// then ends) on a truncated or undecodable record.
#[derive(Debug)]
pub struct LogExportReader<R> {
    reader: R,
    failed: bool,
}

impl<R: Read> LogExportReader<R> {
    fn read_record(&mut self) -> std::io::Result<Option<EventEnvelope>> {
        // A varint length (at most 10 bytes), then the message.
        let mut length: u64 = 0;
        let mut shift = 0;
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte)? {
                0 if shift == 0 => return Ok(None),
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "truncated record length",
                    ))
                }
                _ => {}
            }
            length |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "record length is not a varint",
                ));
            }
        }
        let length = usize::try_from(length).map_err(std::io::Error::other)?;
        if length > 64 * 1024 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("record of {length} bytes is too large"),
            ));
        }
        let mut buffer = vec![0u8; length];
        self.reader.read_exact(&mut buffer)?;
        EventEnvelope::decode(buffer.as_slice())
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl<R: Read> Iterator for LogExportReader<R> {
    type Item = std::io::Result<EventEnvelope>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_record() {
            Ok(Some(envelope)) => Some(Ok(envelope)),
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Creates, stores, lists and verifies checkpoints of one log.
pub struct Checkpointer {
    store: Arc<dyn EventStore>,
    tree: sled::Tree,
    /// (who asked, their request id) → the sequence of the checkpoint that request made.
    requests: sled::Tree,
    key: CheckpointKey,
    /// Serializes creation, so each checkpoint chains to the one before.
    create: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Checkpoints per page when the caller asks for 0.
pub const DEFAULT_CHECKPOINT_PAGE: usize = 50;

impl Checkpointer {
    /// Checkpoints of `store`, kept in a sled database of their own at `path` (created
    /// if missing), signed with `key`. Checkpoints found in `moved_from`'s `checkpoints`
    /// tree (the audit database, where earlier versions kept them) are moved over first:
    /// copied, flushed, then that tree is dropped; a move cut short by a crash is
    /// finished at the next open.
    pub fn open_at(
        path: &Path,
        moved_from: Option<&sled::Db>,
        store: Arc<dyn EventStore>,
        key: CheckpointKey,
    ) -> Result<Self, AuditError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(1024 * 1024)
            .flush_every_ms(None);
        let db = signpost_eventlog::open_sled_waiting_for_lock(
            &config,
            signpost_eventlog::DEFAULT_LOCK_WAIT,
        )?;
        let checkpoints = Self::open(&db, store, key)?;
        if let Some(old) = moved_from {
            let names = old.tree_names();
            if names
                .iter()
                .any(|n| n.as_ref() == keys::CHECKPOINTS.as_bytes())
            {
                let moved = old.open_tree(keys::CHECKPOINTS)?;
                let mut count = 0usize;
                for row in moved.iter() {
                    let (key, value) = row?;
                    if checkpoints.tree.get(&key)?.is_none() {
                        checkpoints.tree.insert(key, value)?;
                        count += 1;
                    }
                }
                checkpoints.tree.flush()?;
                drop(moved);
                old.drop_tree(keys::CHECKPOINTS)?;
                if count > 0 {
                    tracing::info!(count, "checkpoints moved out of the audit database");
                }
            }
        }
        Ok(checkpoints)
    }

    /// Checkpoints of `store`, kept in `db`'s `checkpoints` tree, signed with `key`.
    pub fn open(
        db: &sled::Db,
        store: Arc<dyn EventStore>,
        key: CheckpointKey,
    ) -> Result<Self, AuditError> {
        Ok(Self {
            store,
            tree: db.open_tree(keys::CHECKPOINTS)?,
            requests: db.open_tree(keys::CHECKPOINT_REQUESTS)?,
            key,
            create: tokio::sync::Mutex::new(()),
        })
    }

    /// The signing key's public half and id.
    pub fn key(&self) -> &CheckpointKey {
        &self.key
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.tree
            .last()?
            .map(|(_, value)| Checkpoint::decode(value.as_ref()).map_err(AuditError::from))
            .transpose()
    }

    /// Signs and stores a checkpoint of the current head, stamped `now`.
    pub async fn create(&self, now: DateTime<Utc>) -> Result<Checkpoint, AuditError> {
        let _guard = self.create.lock().await;
        self.create_locked(now, None)
    }

    /// [`Checkpointer::create`] for a caller's request: with a request id, a retry (same
    /// `principal`, same id) gets the checkpoint the first attempt made instead of a new
    /// one. `request_id`: 1 to 128 printable characters.
    pub async fn create_requested(
        &self,
        now: DateTime<Utc>,
        principal: &str,
        request_id: Option<&str>,
    ) -> Result<Checkpoint, AuditError> {
        let Some(request_id) = request_id else {
            return self.create(now).await;
        };
        if request_id.is_empty()
            || request_id.len() > 128
            || request_id.chars().any(char::is_control)
        {
            return Err(AuditError::invalid(
                "FIELD_INVALID",
                "request_id",
                "`request_id` must be 1..=128 printable characters",
            ));
        }
        let key = format!("{principal}\n{request_id}");
        let _guard = self.create.lock().await;
        if let Some(sequence) = self.requests.get(key.as_bytes())? {
            let stored = self.tree.get(&sequence)?.ok_or_else(|| {
                AuditError::Corrupt(format!("request {request_id} names a missing checkpoint"))
            })?;
            return Ok(Checkpoint::decode(stored.as_ref())?);
        }
        self.create_locked(now, Some(key.as_bytes()))
    }

    /// Creates a checkpoint unless the newest one already covers the current head (same
    /// epoch and position). Returns the one created.
    pub async fn create_if_moved(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let _guard = self.create.lock().await;
        let head = self.store.head();
        let epoch = self.store.store_epoch().to_string();
        if let Some(latest) = self.latest()? {
            if latest.position == head.position && latest.store_epoch == epoch {
                return Ok(None);
            }
        }
        self.create_locked(now, None).map(Some)
    }

    fn create_locked(
        &self,
        now: DateTime<Utc>,
        request: Option<&[u8]>,
    ) -> Result<Checkpoint, AuditError> {
        let head = self.store.head();
        let previous = self.latest()?;
        let mut checkpoint = Checkpoint {
            position: head.position,
            head_hash: head.hash.to_vec(),
            time: Some(timestamp(now)),
            previous_checkpoint_hash: previous
                .as_ref()
                .map(|p| checkpoint_hash(p).to_vec())
                .unwrap_or_default(),
            store_epoch: self.store.store_epoch().to_string(),
            key_id: String::new(),
            signature: Vec::new(),
        };
        self.key.sign(&mut checkpoint);
        let sequence = match self.tree.last()? {
            Some((key, _)) => keys::trailing_position(&key) + 1,
            None => 1,
        };
        let encoded = checkpoint.encode_to_vec();
        // The checkpoint and the request that made it, in one transaction.
        (&self.tree, &self.requests)
            .transaction(|(tree, requests)| {
                tree.insert(&keys::position(sequence), encoded.as_slice())?;
                if let Some(request) = request {
                    requests.insert(request, &keys::position(sequence))?;
                }
                Ok(())
            })
            .map_err(
                |error: sled::transaction::TransactionError<()>| match error {
                    sled::transaction::TransactionError::Storage(error) => AuditError::from(error),
                    sled::transaction::TransactionError::Abort(()) => {
                        AuditError::Corrupt("checkpoint transaction aborted".into())
                    }
                },
            )?;
        // Checkpoints cannot be rebuilt from the log: make each one durable.
        self.tree.flush()?;
        tracing::info!(
            position = checkpoint.position,
            head_hash = %hex::encode(&checkpoint.head_hash),
            key_id = %checkpoint.key_id,
            "log checkpoint signed"
        );
        Ok(checkpoint)
    }

    /// Checkpoints newest first, paginated (the token is the last sequence returned).
    pub fn list(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Checkpoint>, String), AuditError> {
        let size = match page_size {
            0 => DEFAULT_CHECKPOINT_PAGE,
            n if n < 0 => {
                return Err(AuditError::invalid(
                    "PAGE_SIZE_INVALID",
                    "page_size",
                    "the page size must not be negative",
                ))
            }
            n => usize::try_from(n).unwrap_or(1000).min(1000),
        };
        let before = if page_token.is_empty() {
            u64::MAX
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| {
                    AuditError::invalid(
                        "PAGE_TOKEN_INVALID",
                        "page_token",
                        "the page token is malformed",
                    )
                })?
        };
        let mut out = Vec::new();
        let mut last_sequence = 0;
        let mut more = false;
        for row in self.tree.range(..keys::position(before)).rev() {
            let (key, value) = row?;
            if out.len() == size {
                more = true;
                break;
            }
            last_sequence = keys::trailing_position(&key);
            out.push(Checkpoint::decode(value.as_ref())?);
        }
        let token = if more {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_sequence.to_be_bytes())
        } else {
            String::new()
        };
        Ok((out, token))
    }

    /// Verifies `checkpoint` against our key and the live log.
    pub async fn verify(
        &self,
        checkpoint: &Checkpoint,
    ) -> Result<CheckpointVerification, AuditError> {
        let mut outcome = CheckpointVerification {
            signature_valid: false,
            log_extends_checkpoint: false,
            head: None,
            problem: None,
        };
        if let Err(problem) = verify_signature(checkpoint, &self.key.public_key()) {
            outcome.problem = Some(problem);
            return Ok(outcome);
        }
        outcome.signature_valid = true;
        let epoch = self.store.store_epoch().to_string();
        if checkpoint.store_epoch != epoch {
            outcome.problem = Some(CheckpointProblem::EpochMismatch {
                expected: epoch,
                found: checkpoint.store_epoch.clone(),
            });
            return Ok(outcome);
        }
        let head = self.store.head();
        if checkpoint.position > head.position {
            outcome.problem = Some(CheckpointProblem::LogTooShort {
                position: checkpoint.position,
                head: head.position,
            });
            return Ok(outcome);
        }
        match verify_chain(
            self.store.as_ref(),
            checkpoint.position.max(1),
            head.position,
        )
        .await?
        {
            ChainVerdict::Broken { position, problem } => {
                outcome.problem = Some(CheckpointProblem::ChainBroken {
                    position,
                    problem: problem.to_string(),
                });
                return Ok(outcome);
            }
            ChainVerdict::Intact { head, .. } => outcome.head = Some(head),
        }
        if checkpoint.position > 0 {
            let at = self.store.read_range(checkpoint.position, 1).await?;
            if at.first().map(|e| &e.hash[..]) != Some(checkpoint.head_hash.as_slice()) {
                outcome.problem = Some(CheckpointProblem::HeadHashMismatch {
                    position: checkpoint.position,
                });
                return Ok(outcome);
            }
        }
        outcome.log_extends_checkpoint = true;
        Ok(outcome)
    }
}
