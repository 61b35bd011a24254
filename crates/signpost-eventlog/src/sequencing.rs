//! What both durable stores' group-commit sequencers share: the request an `append` sends, the
//! thread handle that joins the sequencer on drop, how a batch is gathered, and the error a
//! poisoned store answers with. How a batch is made durable is each store's own.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::error::LogError;
use crate::types::{AppendOutcome, Commit};

/// One `append` waiting for the sequencer.
pub(crate) struct Request {
    pub commit: Commit,
    pub reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

/// The sequencer's thread; dropping it joins the thread (after the request channel closed).
pub(crate) struct SequencerThread(pub Option<JoinHandle<()>>);

impl Drop for SequencerThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            if handle.join().is_err() {
                tracing::error!("event log sequencer panicked");
            }
        }
    }
}

/// Waits for the next request, then takes every other one already waiting, up to `max` in
/// all, into `batch` (empty on entry). `false` once every sender is gone.
pub(crate) fn next_batch(
    requests: &mut mpsc::Receiver<Request>,
    batch: &mut Vec<Request>,
    max: usize,
) -> bool {
    let Some(first) = requests.blocking_recv() else {
        return false;
    };
    batch.push(first);
    while batch.len() < max.max(1) {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    true
}

/// The answer of a store whose earlier write failed: nothing more is written until it is
/// reopened (which cuts or keeps the half-written batch).
pub(crate) fn poisoned_error() -> LogError {
    LogError::Unavailable(
        "event log poisoned by an earlier failed write; restart to recover".into(),
    )
}
