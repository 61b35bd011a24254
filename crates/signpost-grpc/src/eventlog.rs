//! `EventLogService.Subscribe`: raw envelopes for internal services, catch-up then live,
//! in log order, over the log's own pull-on-notify [`signpost_eventlog::Subscription`].
//!
//! A subscription holds one cursor (the next position to deliver) and reads pages of what
//! is already durable; nothing is buffered per subscriber beyond one page and what the
//! transport holds. Catching up is never "lag": a new subscriber may start at position 1
//! of a long log. Once a subscriber has caught up with the head, it must stay within
//! `max_lag` events of it: a subscriber found further behind when it asks for more (it
//! stopped reading, the transport filled, the stream was not polled) is ended with
//! `ABORTED`, whose `google.rpc.ErrorInfo` carries `resume_from_position` (also in the
//! message). Nothing at or after that position was delivered, so resuming from it loses
//! and repeats nothing.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use signpost_api::eventlog::v1 as pb;
use signpost_api::eventlog::v1::event_log_service_server::EventLogService;
use signpost_control::{ControlError, ControlPlane, Role};
use signpost_eventlog::{EventStore, SUBSCRIPTION_PAGE};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::admin::bearer;
use crate::status::{invalid_field, to_status, ERROR_DOMAIN};

/// The `ErrorInfo.reason` of a subscriber ended for falling behind.
pub const SUBSCRIBER_TOO_SLOW: &str = "SUBSCRIBER_TOO_SLOW";
/// The `ErrorInfo.metadata` key saying where to resume.
pub const RESUME_FROM_POSITION: &str = "resume_from_position";

/// `EventLogService`; `admin` tokens only (envelopes carry every event as stored).
#[derive(Clone)]
pub struct EventLogApi {
    plane: ControlPlane,
    store: Arc<dyn EventStore>,
    max_lag: u64,
}

impl std::fmt::Debug for EventLogApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLogApi")
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

impl EventLogApi {
    /// Serves `store`'s events; live subscribers more than `max_lag` events behind the
    /// head are ended (see the module docs).
    pub fn new(plane: ControlPlane, store: Arc<dyn EventStore>, max_lag: u64) -> Self {
        Self {
            plane,
            store,
            max_lag: max_lag.max(1),
        }
    }
}

/// The status ending a subscriber that fell behind.
pub fn too_slow(resume_from_position: u64, head: u64) -> Status {
    let details = ErrorDetails::with_error_info(
        SUBSCRIBER_TOO_SLOW,
        ERROR_DOMAIN,
        [(
            RESUME_FROM_POSITION.to_owned(),
            resume_from_position.to_string(),
        )],
    );
    Status::with_error_details(
        Code::Aborted,
        format!(
            "the subscriber fell more than the allowed lag behind the head ({head}); resume_from_position={resume_from_position}"
        ),
        details,
    )
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventLogService for EventLogApi {
    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let principal = self
            .plane
            .authenticate_api_token(bearer(request.metadata())?)
            .map_err(to_status)?;
        principal.require(&[Role::Admin]).map_err(to_status)?;
        let r = request.into_inner();
        let types: BTreeSet<String> = r.event_types.into_iter().collect();
        if let Some(unknown) = types
            .iter()
            .find(|t| signpost_audit::action_name(t).is_none())
        {
            return Err(invalid_field(
                "EVENT_TYPE_UNKNOWN",
                "event_types",
                format!("unknown event type `{unknown}`"),
            ));
        }
        let store = self.store.clone();
        let max_lag = self.max_lag;
        let stream = async_stream::stream! {
            let mut next = r.from_position.max(1);
            let mut events = store.subscribe(next).ready_chunks(SUBSCRIPTION_PAGE);
            let mut live = false;
            loop {
                // Checked each time the client has taken the previous batch.
                let head = store.head().position;
                if next > head {
                    live = true;
                } else if live && head - (next - 1) > max_lag {
                    tracing::warn!(next, head, max_lag, "event feed subscriber too slow; ended");
                    yield Err(too_slow(next, head));
                    return;
                }
                let Some(chunk) = events.next().await else {
                    yield Err(to_status(ControlError::Unavailable("the event log closed".into())));
                    return;
                };
                let mut batch = Vec::with_capacity(chunk.len());
                let mut failure = None;
                for item in chunk {
                    match item {
                        Ok(envelope) => {
                            next = envelope.position + 1;
                            if types.is_empty() || types.contains(&envelope.event_type) {
                                batch.push(envelope);
                            }
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                if next > 1 {
                    yield Ok(pb::SubscribeResponse { events: batch, position: next - 1, head: store.head().position });
                }
                if let Some(error) = failure {
                    yield Err(to_status(error.into()));
                    return;
                }
            }
        };
        Ok(Response::new(Box::pin(stream) as SubscribeStream))
    }
}
