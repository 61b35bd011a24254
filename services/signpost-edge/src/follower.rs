//! The follower: one task that keeps a `WatchRoutes` stream open and applies
//! its messages, and one that writes the state file.
//!
//! The follower is the only writer of the live table, so "load, apply, store"
//! needs no lock: readers always see either the table before a message or the
//! table after it. Any error (connect failure, stream end, invalid message)
//! leads to a jittered exponential backoff and a new stream; after an invalid
//! message or a reset the new stream asks for a full snapshot, otherwise it
//! resumes from the table's revision and epoch.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use signpost_api::routing::v1 as wire;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Endpoint;
use tracing::{debug, error, info, warn};

use crate::edge::Shared;
use crate::state_file;
use crate::stream;
use crate::table::{MessageKind, StreamApplier};

/// Longest gap between state file writes caused by deltas.
pub const PERSIST_DEBOUNCE: Duration = Duration::from_millis(500);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a dead connection even when the stream is idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Jittered exponential backoff ("full jitter": uniform in `0..=ceiling`,
/// the ceiling doubling from `min` up to `max`).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// A backoff starting at `min` and never exceeding `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            ceiling: min,
        }
    }

    /// The next delay; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }

    /// Back to the first delay (after a stream made progress).
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

/// What the persister is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PersistHint {
    /// Write now (a snapshot ended) rather than after the debounce.
    urgent: bool,
}

/// Settings of the follower.
#[derive(Debug, Clone)]
pub(crate) struct FollowerSettings {
    /// Each control plane as configured, and its endpoint.
    pub control_planes: Vec<(String, Endpoint)>,
    pub authorization: AsciiMetadataValue,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Builds the `authorization` header value, refusing tokens that cannot be one.
pub(crate) fn authorization(token: &str) -> anyhow::Result<AsciiMetadataValue> {
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the API token is empty");
    MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the API token has characters not allowed in a header"))
}

/// Parses a control plane address into a tonic endpoint.
pub(crate) fn endpoint(address: &str) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|e| anyhow::anyhow!("control plane address `{address}` is invalid: {e}"))?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        // A snapshot is tens of MiB: with HTTP/2's default 64 KiB window the control plane
        // would stop every 64 KiB to wait for a window update.
        .initial_stream_window_size(SNAPSHOT_WINDOW_BYTES)
        .initial_connection_window_size(SNAPSHOT_WINDOW_BYTES))
}

/// HTTP/2 flow-control window for the routing stream (stream and connection).
const SNAPSHOT_WINDOW_BYTES: u32 = 8 << 20;

enum StreamEnd {
    /// No stream was established.
    ConnectFailed(String),
    /// The stream ended or failed; `progressed` when a message was applied.
    Ended { progressed: bool, reason: String },
    /// A message was invalid; the next stream must start with a snapshot.
    Invalid { progressed: bool },
}

pub(crate) async fn follow(
    shared: Arc<Shared>,
    settings: FollowerSettings,
    persist: watch::Sender<PersistHint>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(settings.min_backoff, settings.max_backoff);
    let mut address = 0usize;
    let mut want_snapshot = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (configured, endpoint) =
            &settings.control_planes[address % settings.control_planes.len()];
        shared.set_control_plane(configured.clone());
        let end = tokio::select! {
            end = follow_once(&shared, endpoint, &settings.authorization, &mut want_snapshot, &persist) => end,
            _ = shutdown.changed() => break,
        };
        shared.connected.store(false, Ordering::Release);
        match end {
            StreamEnd::ConnectFailed(reason) => {
                warn!(control_plane = %endpoint.uri(), %reason, "cannot reach the control plane; trying the next one");
                address = address.wrapping_add(1);
            }
            StreamEnd::Ended { progressed, reason } => {
                if progressed {
                    backoff.reset();
                }
                warn!(control_plane = %endpoint.uri(), %reason, "routing stream ended; reconnecting");
            }
            StreamEnd::Invalid { progressed } => {
                if progressed {
                    backoff.reset();
                }
                want_snapshot = true;
            }
        }
        let delay = backoff.next_delay();
        debug!(
            delay_ms = delay.as_millis() as u64,
            "waiting before reconnecting"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    shared.connected.store(false, Ordering::Release);
}

async fn follow_once(
    shared: &Shared,
    endpoint: &Endpoint,
    authorization: &AsciiMetadataValue,
    want_snapshot: &mut bool,
    persist: &watch::Sender<PersistHint>,
) -> StreamEnd {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => return StreamEnd::ConnectFailed(error_chain(&error)),
    };
    let held = shared.table.load();
    let request = if *want_snapshot || !held.is_complete() {
        wire::WatchRoutesRequest::default()
    } else {
        wire::WatchRoutesRequest {
            from_revision: Some(held.revision()),
            store_epoch: held.store_epoch().to_owned(),
        }
    };
    drop(held);
    info!(
        control_plane = %endpoint.uri(),
        from_revision = ?request.from_revision,
        store_epoch = %request.store_epoch,
        "opening the routing stream"
    );
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    // Routes stay encoded until the applier checks them (see `stream`).
    let mut stream = match stream::watch_routes(channel, request).await {
        Ok(stream) => stream,
        Err(status) => {
            return StreamEnd::Ended {
                progressed: false,
                reason: format!("{:?}: {}", status.code(), status.message()),
            }
        }
    };
    shared.connected.store(true, Ordering::Release);
    let mut applier = StreamApplier::new();
    let mut progressed = false;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return StreamEnd::Ended {
                    progressed,
                    reason: "the control plane closed the stream".to_owned(),
                }
            }
            Err(status) => {
                return StreamEnd::Ended {
                    progressed,
                    reason: format!("{:?}: {}", status.code(), status.message()),
                }
            }
        };
        let live = shared.table.load_full();
        let applied = match applier.apply(&live, message, Utc::now()) {
            Ok(applied) => applied,
            Err(error) => {
                error!(
                    %error,
                    revision = live.revision(),
                    "invalid routing message; keeping the last good table and asking for a snapshot"
                );
                return StreamEnd::Invalid { progressed };
            }
        };
        progressed = true;
        if let Some(table) = applied.table {
            shared.table.store(Arc::new(table));
        }
        let kind = applied.message.kind;
        match kind {
            MessageKind::SnapshotEnd | MessageKind::Delta => {
                persist.send_replace(PersistHint {
                    urgent: kind == MessageKind::SnapshotEnd,
                });
            }
            _ => {}
        }
        match kind {
            MessageKind::SnapshotEnd => {
                *want_snapshot = false;
                let table = shared.table.load();
                info!(
                    revision = table.revision(),
                    routes = table.len(),
                    "routing snapshot applied"
                );
            }
            MessageKind::Reset => {
                *want_snapshot = true;
                warn!(
                    revision = applied.message.revision,
                    "the control plane reset the routing stream; a snapshot follows"
                );
            }
            MessageKind::Delta => debug!(
                revision = applied.message.revision,
                upserts = applied.message.upserts,
                deletes = applied.message.deletes,
                "routing delta applied"
            ),
            MessageKind::Snapshot | MessageKind::Progress => {}
        }
        shared.record_applied(applied.message);
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Writes the state file: at once after a snapshot end, at most once per
/// [`PERSIST_DEBOUNCE`] for deltas, and a final time when the follower stops
/// (its end drops the hint sender).
pub(crate) async fn persist(
    shared: Arc<Shared>,
    path: PathBuf,
    mut hints: watch::Receiver<PersistHint>,
) {
    let mut written = written_key(&shared);
    let mut last_write = Instant::now() - PERSIST_DEBOUNCE;
    let mut follower_gone = false;
    while !follower_gone && hints.changed().await.is_ok() {
        let mut urgent = hints.borrow_and_update().urgent;
        let due = last_write + PERSIST_DEBOUNCE;
        while !urgent && Instant::now() < due {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                changed = hints.changed() => match changed {
                    Ok(()) => urgent = hints.borrow_and_update().urgent,
                    Err(_) => {
                        follower_gone = true;
                        break;
                    }
                },
            }
        }
        written = write_if_changed(&shared, &path, written).await;
        last_write = Instant::now();
    }
    write_if_changed(&shared, &path, written).await;
}

type WrittenKey = Option<(u64, String)>;

fn written_key(shared: &Shared) -> WrittenKey {
    let table = shared.table.load();
    table
        .is_complete()
        .then(|| (table.revision(), table.store_epoch().to_owned()))
}

async fn write_if_changed(
    shared: &Shared,
    path: &std::path::Path,
    written: WrittenKey,
) -> WrittenKey {
    let table = shared.table.load_full();
    if !table.is_complete() {
        return written;
    }
    let key = Some((table.revision(), table.store_epoch().to_owned()));
    if key == written {
        return written;
    }
    let path_owned = path.to_owned();
    let revision = table.revision();
    let saved = tokio::task::spawn_blocking(move || state_file::save(&path_owned, &table)).await;
    match saved {
        Ok(Ok(())) => {
            debug!(revision, path = %path.display(), "state file written");
            key
        }
        Ok(Err(error)) => {
            error!(%error, "cannot write the state file");
            written
        }
        Err(error) => {
            error!(%error, "state file writer panicked");
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_full_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling);
            let delay = backoff.next_delay();
            assert!(delay <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[1], Duration::from_millis(200));
        assert_eq!(ceilings[7], Duration::from_secs(10));
        assert_eq!(ceilings[9], Duration::from_secs(10));
        backoff.reset();
        assert_eq!(backoff.ceiling, Duration::from_millis(100));
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_refused() {
        assert!(authorization("abc.def").is_ok());
        assert!(authorization("  ").is_err());
        assert!(authorization("bad\ntoken").is_err());
    }
}
