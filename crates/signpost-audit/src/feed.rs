//! [`AuditFeed`]: the audit timeline fed by the control plane's read model task, so the
//! server folds the log into one read model instead of two.
//!
//! The audit task catches up alone on what the log held when it started (it needs a read
//! model of its own for that, dropped once it reaches that head); every later event is
//! described by the read model's task, which already holds the model just before and just
//! after it ([`Follower`]), and handed over as [`Step`]s through a bounded channel. The
//! read model's task never waits for the audit database: when the channel is full (the
//! audit task is far behind, e.g. rebuilding while writes pour in) the feed lets go, and
//! the audit task goes back to reading the log itself from where the handed-over steps
//! end, as a projection without a feed does. Either way it writes the same rows: both
//! paths call `fold::before` and `fold::after`.

use signpost_control::read_model::ReadModel;
use signpost_control::Follower;
use signpost_domain::Event;
use signpost_eventlog::EventEnvelope;
use signpost_routing::RouteChange;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::fold::{self, Before, IndexedTime, Rows};

/// One event as the audit task consumes it, whoever folded it.
#[derive(Debug)]
pub(crate) struct Step {
    pub position: u64,
    pub commit_last_position: u64,
    pub hash: Vec<u8>,
    /// `None` for an event whose rows are already in the database.
    pub rows: Option<Rows>,
}

impl Step {
    pub(crate) fn new(envelope: &EventEnvelope, rows: Option<Rows>) -> Self {
        Self {
            position: envelope.position,
            commit_last_position: envelope.commit_last_position,
            hash: envelope.hash.clone(),
            rows,
        }
    }
}

/// The read model task's side of an [`crate::AuditProjection`] started with
/// [`crate::AuditProjection::start_fed`]: give it to
/// [`signpost_control::ControlPlane::start_with`] as the follower.
pub struct AuditFeed {
    /// Events at or below this position are the audit task's own.
    from: u64,
    public_base_url: String,
    time: IndexedTime,
    before: Option<Before>,
    /// `None` once the feed has let go.
    sender: Option<mpsc::Sender<Step>>,
    /// Lowered when the feed lets go (or is dropped): the audit task's own fold, if it is
    /// still catching up, then goes on past the head instead of handing over.
    attached: Arc<AtomicBool>,
    /// Raised once the read model has applied `from`: the audit task's own catch-up waits
    /// for it, so that it never competes with the read model's start.
    model_ready: watch::Sender<bool>,
}

impl std::fmt::Debug for AuditFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeed")
            .field("from", &self.from)
            .field("attached", &self.sender.is_some())
            .finish()
    }
}

impl AuditFeed {
    pub(crate) fn new(
        from: u64,
        public_base_url: &str,
        sender: mpsc::Sender<Step>,
        model_ready: watch::Sender<bool>,
        attached: Arc<AtomicBool>,
    ) -> Self {
        Self {
            from,
            public_base_url: public_base_url.to_owned(),
            time: IndexedTime::default(),
            before: None,
            sender: Some(sender),
            attached,
            model_ready,
        }
    }

    fn let_go(&mut self) {
        self.attached.store(false, Ordering::Release);
        self.sender = None;
    }
}

impl Drop for AuditFeed {
    fn drop(&mut self) {
        self.let_go();
    }
}

impl Follower for AuditFeed {
    fn before(
        &mut self,
        envelope: &EventEnvelope,
        event: &Event,
        model: &ReadModel,
        route_changes_follow: bool,
    ) {
        // The indexed time is a running maximum from position 1, wherever the rows start.
        let time_nanos = self.time.advance(envelope);
        if envelope.position == self.from {
            self.model_ready.send_replace(true);
        }
        if envelope.position <= self.from || self.sender.is_none() {
            return;
        }
        self.before = Some(fold::before(
            envelope,
            event,
            model,
            time_nanos,
            &self.public_base_url,
            route_changes_follow,
        ));
    }

    fn after(
        &mut self,
        envelope: &EventEnvelope,
        _event: &Event,
        model: &ReadModel,
        route_changes: Option<&[RouteChange]>,
    ) {
        let Some(before) = self.before.take() else {
            return;
        };
        let Some(sender) = &self.sender else {
            return;
        };
        let rows = fold::after(
            before,
            envelope,
            model,
            &self.public_base_url,
            route_changes,
        );
        match sender.try_send(Step::new(envelope, Some(rows))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    position = envelope.position,
                    capacity = sender.max_capacity(),
                    "audit timeline fell behind the read model; it reads the log itself from here"
                );
                self.let_go();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.let_go(),
        }
    }
}
