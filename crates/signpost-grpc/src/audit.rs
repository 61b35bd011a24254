//! `AuditService` over the audit projection and the checkpointer: authenticate, convert,
//! call `signpost_audit`, map errors through [`crate::status::to_status`].
//!
//! Authorization: `auditor` and `admin` tokens; `CreateCheckpoint` is `admin` only. An
//! auditor token scoped to one organization passes its scope to every timeline and
//! point-in-time call, which forces lists and exports to that organization and answers
//! `NOT_FOUND` for another organization's domain, organization or connection (the same
//! answer as for one that does not exist, so nothing leaks). `VerifyLog` and the
//! checkpoint calls are about the whole log, not an organization: they reveal hashes and
//! positions only, never an event's content, so scoped auditors may use them too.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use signpost_api::audit::v1 as pb;
use signpost_api::audit::v1::audit_service_server::AuditService;
use signpost_audit::{
    AuditFilter, AuditProjection, Checkpointer, ExportState, Order, PointInTime, RoutingSubject,
    EXPORT_BATCH,
};
use signpost_control::{ControlError, ControlPlane, Principal, Role};
use signpost_domain::event::from_timestamp;
use signpost_eventlog::{verify_chain, ChainVerdict};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::admin::bearer;
use crate::convert::ToWire;
use crate::status::{invalid_field, to_status};

/// How long a read waits for the audit projection to reach the log head seen at its start
/// (read-your-writes); past it, the read is refused as UNAVAILABLE (`AUDIT_CATCHING_UP`),
/// never answered from an index that is silently behind.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// `AuditService`; `auditor` and `admin` tokens.
#[derive(Clone)]
pub struct AuditApi {
    plane: ControlPlane,
    audit: AuditProjection,
    checkpoints: Arc<Checkpointer>,
}

impl std::fmt::Debug for AuditApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditApi").finish_non_exhaustive()
    }
}

fn audit_error(error: signpost_audit::AuditError) -> Status {
    to_status(ControlError::from(error))
}

type Reply<T> = Result<Response<T>, Status>;
/// Export batches made ahead of the one being sent.
const EXPORT_BATCHES_AHEAD: usize = 2;

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportAuditEventsResponse, Status>> + Send>>;

impl AuditApi {
    /// Serves `audit` and `checkpoints`, authenticating callers with `plane`.
    pub fn new(
        plane: ControlPlane,
        audit: AuditProjection,
        checkpoints: Arc<Checkpointer>,
    ) -> Self {
        Self {
            plane,
            audit,
            checkpoints,
        }
    }

    /// Authenticates the caller and returns its organization scope (`None`: everything).
    fn authorize(&self, metadata: &MetadataMap, roles: &[Role]) -> Result<Option<String>, Status> {
        let principal = self
            .plane
            .authenticate_api_token(bearer(metadata)?)
            .map_err(to_status)?;
        principal.require(roles).map_err(to_status)?;
        Ok(match principal {
            Principal::ApiToken {
                organization_scope, ..
            } => organization_scope,
            _ => None,
        })
    }

    fn reader(&self, metadata: &MetadataMap) -> Result<Option<String>, Status> {
        self.authorize(metadata, &[Role::Auditor, Role::Admin])
    }

    /// Waits (briefly) until the projection has applied the current log head.
    async fn catch_up(&self) -> Result<(), Status> {
        let head = self.audit.store().head().position;
        match tokio::time::timeout(CATCH_UP_WAIT, self.audit.wait_for(head)).await {
            Ok(result) => result.map_err(audit_error),
            Err(_) => Err(crate::status::unavailable(
                "AUDIT_CATCHING_UP",
                format!(
                    "the audit timeline is catching up with the log (at position {} of {head}); retry shortly",
                    self.audit.position()
                ),
            )),
        }
    }
}

fn point_in_time(at: Option<&pb::PointInTime>) -> PointInTime {
    match at.and_then(|at| at.at.as_ref()) {
        None => PointInTime::Now,
        Some(pb::point_in_time::At::Position(position)) => PointInTime::Position(*position),
        Some(pb::point_in_time::At::Time(time)) => PointInTime::Time(from_timestamp(Some(time))),
    }
}

fn order(order: pb::Order) -> Order {
    match order {
        pb::Order::Descending => Order::Descending,
        pb::Order::Ascending | pb::Order::Unspecified => Order::Ascending,
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let scope = self.reader(request.metadata())?;
        let r = request.into_inner();
        let filter = AuditFilter::from_wire(r.filter.as_ref()).map_err(audit_error)?;
        self.catch_up().await?;
        let page = self
            .audit
            .list(
                filter,
                scope.as_deref(),
                r.page_size,
                &r.page_token,
                order(r.order()),
            )
            .await
            .map_err(audit_error)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            entries: page.entries,
            next_page_token: page.next_page_token,
        }))
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Reply<ExportStream> {
        let scope = self.reader(request.metadata())?;
        let r = request.into_inner();
        let filter = AuditFilter::from_wire(r.filter.as_ref())
            .and_then(|f| f.scoped(scope.as_deref()))
            .map_err(audit_error)?;
        self.catch_up().await?;
        let audit = self.audit.clone();
        let head = audit.position();
        // The batches are made on a task of their own, a batch or two ahead of the
        // connection's task, which encodes and sends them: the two run on both cores
        // instead of taking turns. The task ends when the export does, or when the
        // caller goes away (nobody receives).
        let (batches, mut received) = tokio::sync::mpsc::channel(EXPORT_BATCHES_AHEAD);
        tokio::spawn(async move {
            let mut after = r.after_position;
            let mut export = ExportState::default();
            loop {
                let batch = audit
                    .export_batch_encoded(&filter, None, after, head, EXPORT_BATCH, &mut export)
                    .await;
                let (reply, done) = match batch {
                    Ok(batch) => {
                        after = batch.position;
                        let done = batch.position >= head;
                        let reply = pb::ExportAuditEventsResponse {
                            entries: batch.entries,
                            position: batch.position,
                            head,
                        };
                        (Ok(reply), done)
                    }
                    Err(error) => (Err(audit_error(error)), true),
                };
                if batches.send(reply).await.is_err() || done {
                    return;
                }
            }
        });
        let stream = async_stream::stream! {
            while let Some(reply) = received.recv().await {
                yield reply;
            }
        };
        Ok(Response::new(Box::pin(stream) as ExportStream))
    }

    async fn verify_log(
        &self,
        request: Request<pb::VerifyLogRequest>,
    ) -> Reply<pb::VerifyLogResponse> {
        self.reader(request.metadata())?;
        let r = request.into_inner();
        let store = self.audit.store();
        let log_head_position = store.head().position;
        let to = if r.to_position == 0 {
            log_head_position
        } else {
            r.to_position
        };
        let verdict = verify_chain(store.as_ref(), r.from_position, to)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(match verdict {
            ChainVerdict::Intact {
                head,
                events_checked,
            } => pb::VerifyLogResponse {
                intact: true,
                head_position: head.position,
                head_hash: head.hash.to_vec(),
                events_checked,
                log_head_position,
                ..Default::default()
            },
            ChainVerdict::Broken { position, problem } => pb::VerifyLogResponse {
                intact: false,
                bad_position: position,
                problem: problem.to_string(),
                log_head_position,
                ..Default::default()
            },
        }))
    }

    async fn create_checkpoint(
        &self,
        request: Request<pb::CreateCheckpointRequest>,
    ) -> Reply<pb::CreateCheckpointResponse> {
        let principal = self
            .plane
            .authenticate_api_token(bearer(request.metadata())?)
            .map_err(to_status)?;
        principal.require(&[Role::Admin]).map_err(to_status)?;
        let request_id = request.get_ref().request_id.as_str();
        let checkpoint = self
            .checkpoints
            .create_requested(
                self.plane.now(),
                &principal.id(),
                (!request_id.is_empty()).then_some(request_id),
            )
            .await
            .map_err(audit_error)?;
        Ok(Response::new(pb::CreateCheckpointResponse {
            checkpoint: Some(checkpoint),
        }))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Reply<pb::ListCheckpointsResponse> {
        self.reader(request.metadata())?;
        let r = request.get_ref();
        let (checkpoints, next_page_token) = self
            .checkpoints
            .list(r.page_size, &r.page_token)
            .map_err(audit_error)?;
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints,
            next_page_token,
        }))
    }

    async fn get_checkpoint_public_key(
        &self,
        request: Request<pb::GetCheckpointPublicKeyRequest>,
    ) -> Reply<pb::GetCheckpointPublicKeyResponse> {
        self.reader(request.metadata())?;
        let key = self.checkpoints.key();
        Ok(Response::new(pb::GetCheckpointPublicKeyResponse {
            public_key: key.public_key().to_vec(),
            key_id: key.key_id().to_owned(),
        }))
    }

    async fn verify_checkpoint(
        &self,
        request: Request<pb::VerifyCheckpointRequest>,
    ) -> Reply<pb::VerifyCheckpointResponse> {
        self.reader(request.metadata())?;
        let checkpoint = request.into_inner().checkpoint.ok_or_else(|| {
            invalid_field("FIELD_REQUIRED", "checkpoint", "a checkpoint is required")
        })?;
        let verdict = self
            .checkpoints
            .verify(&checkpoint)
            .await
            .map_err(audit_error)?;
        Ok(Response::new(pb::VerifyCheckpointResponse {
            signature_valid: verdict.signature_valid,
            log_extends_checkpoint: verdict.log_extends_checkpoint,
            head_position: verdict.head.map(|h| h.position).unwrap_or_default(),
            head_hash: verdict.head.map(|h| h.hash.to_vec()).unwrap_or_default(),
            problem: verdict.problem.map(|p| p.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_routing_at(
        &self,
        request: Request<pb::GetRoutingAtRequest>,
    ) -> Reply<pb::GetRoutingAtResponse> {
        let scope = self.reader(request.metadata())?;
        let r = request.into_inner();
        let subject = match r.subject {
            Some(pb::get_routing_at_request::Subject::Domain(domain)) => {
                RoutingSubject::Domain(domain)
            }
            Some(pb::get_routing_at_request::Subject::OrganizationId(id)) => {
                RoutingSubject::Organization(id)
            }
            None => {
                return Err(invalid_field(
                    "FIELD_REQUIRED",
                    "subject",
                    "give a domain or an organization id",
                ))
            }
        };
        self.catch_up().await?;
        let answer = self
            .audit
            .routing_at(&subject, point_in_time(r.at.as_ref()), scope.as_deref())
            .await
            .map_err(audit_error)?;
        Ok(Response::new(pb::GetRoutingAtResponse {
            position: answer.position,
            domains: answer
                .domains
                .into_iter()
                .map(|d| pb::RoutingAtDomain {
                    domain: d.domain,
                    route: d.route,
                    cause: d.cause,
                })
                .collect(),
        }))
    }

    async fn get_connection_at(
        &self,
        request: Request<pb::GetConnectionAtRequest>,
    ) -> Reply<pb::GetConnectionAtResponse> {
        let scope = self.reader(request.metadata())?;
        let r = request.into_inner();
        if r.connection_id.trim().is_empty() {
            return Err(invalid_field(
                "FIELD_REQUIRED",
                "connection_id",
                "a connection id is required",
            ));
        }
        self.catch_up().await?;
        let answer = self
            .audit
            .connection_at(
                r.connection_id.trim(),
                point_in_time(r.at.as_ref()),
                scope.as_deref(),
            )
            .await
            .map_err(audit_error)?;
        Ok(Response::new(pb::GetConnectionAtResponse {
            position: answer.position,
            connection: Some(answer.view.to_wire()),
            last_change: Some(answer.last_change),
        }))
    }
}
