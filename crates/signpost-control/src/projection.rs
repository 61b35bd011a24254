//! Keeps the [`ReadModel`] current by tailing the log.
//!
//! One task subscribes to the log from the model's position + 1 and applies
//! each envelope under a short write lock, then publishes the applied
//! position on a watch channel. Commands wait on that channel for their own
//! position before answering, so a caller always reads its own writes.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use signpost_eventlog::EventStore;
use tokio::sync::watch;

use crate::error::ControlError;
use crate::read_model::ReadModel;

/// The live read model and the position it has reached.
#[derive(Clone)]
pub struct Projection {
    model: Arc<RwLock<ReadModel>>,
    applied: watch::Receiver<u64>,
    failure: Arc<RwLock<Option<String>>>,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("applied", &*self.applied.borrow())
            .finish()
    }
}

impl Projection {
    /// Starts tailing `store` and returns once everything already in it is applied.
    pub async fn start(store: Arc<dyn EventStore>) -> Result<Self, ControlError> {
        let model = Arc::new(RwLock::new(ReadModel::default()));
        let (publish, applied) = watch::channel(0u64);
        let failure = Arc::new(RwLock::new(None));
        let projection = Self {
            model: model.clone(),
            applied,
            failure: failure.clone(),
        };
        let head = store.head().position;
        let mut events = store.subscribe(1);
        tokio::spawn(async move {
            while let Some(next) = events.next().await {
                let outcome = next.map_err(|e| e.to_string()).and_then(|envelope| {
                    let event = signpost_domain::decode_event(&envelope.payload)
                        .map_err(|e| format!("position {}: {e}", envelope.position))?;
                    model
                        .write()
                        .expect("read model lock")
                        .apply(&envelope, &event);
                    Ok(envelope.position)
                });
                match outcome {
                    Ok(position) => {
                        publish.send_replace(position);
                    }
                    Err(reason) => {
                        tracing::error!(%reason, "read model stopped: cannot apply the log");
                        *failure.write().expect("failure lock") = Some(reason);
                        // Wake waiters so they see the failure instead of hanging.
                        publish.send_modify(|_| {});
                        return;
                    }
                }
            }
        });
        projection.wait_for(head).await?;
        Ok(projection)
    }

    /// Waits until the model has applied `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), ControlError> {
        let mut applied = self.applied.clone();
        let failure = self.failure.clone();
        let reached = applied
            .wait_for(|applied| {
                *applied >= position || failure.read().expect("failure lock").is_some()
            })
            .await;
        if let Some(reason) = self.failure.read().expect("failure lock").clone() {
            return Err(ControlError::Internal(format!(
                "read model stopped: {reason}"
            )));
        }
        reached
            .map(|_| ())
            .map_err(|_| ControlError::Unavailable("read model stopped".into()))
    }

    /// The position applied so far.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Reads the model under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.model.read().expect("read model lock"))
    }
}
