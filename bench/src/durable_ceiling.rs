//! Scenario 1's durable limits on this machine: a do-nothing server that only makes each
//! call durable in Signpost's own event log, run as a child process like the two peers
//! (`signpost-bench durable-ceiling`), measured by the same client with the same calls in
//! flight as `AssignGroup`. No command is decided and no projection follows the log (no
//! read model, routing table or audit index): what a durable write costs with this log,
//! this client and these cores, and so the most a write of Signpost's could reach here.
//! Each call appends one event to a `FileEventStore` in `--data-dir` (the real log: hash
//! chain, group commit, `fdatasync` before the answer) and is answered once it is
//! durable. It serves two methods:
//!
//! - `grpc.health.v1.Health/Check`: the event's payload is 200 bytes (etcd's value size)
//!   and the answer two bytes: any durable write's limit, whatever it carries.
//! - `signpost.admin.v1.ConnectionAdminService/AssignGroup`: the request read as the
//!   control plane reads it ([`signpost_grpc::admin::read_admin_request`]), its
//!   `group_assigned` event appended to the connection's stream as the control plane
//!   would, and the answer a fixed `AssignGroupResponse`, the control plane's own to a
//!   call of the load's shape (fetched just before and handed over as hex, with the
//!   append's position), written as the control plane writes it
//!   ([`signpost_grpc::admin::admin_response`]). The load generator sends and decodes
//!   what it does with the control plane: the limit of a durable write carrying these
//!   messages (bench/FINDINGS.md, round 28).
//!
//! It serves on the control plane's own transport ([`signpost_grpc::transport::incoming`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prost::Message;
use signpost_api::admin::v1 as pb;
use signpost_domain::{encode_event, schema, Event};
use signpost_eventlog::{
    AppendOutcome, Commit, CommitMeta, EventStore, ExpectedVersion, FileEventStore, FileOptions,
    NewEvent, StreamId, StreamWrite,
};
use signpost_grpc::admin::{admin_response, read_admin_request};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::one_method::{OneMethod, Reply, ServedMethod};

/// What the server prints once it accepts connections (then the address).
pub const LISTENING: &str = "durable ceiling listening on ";

/// Streams the `Check` appends are spread over, as `AssignGroup`'s clients never share one.
const STREAMS: u64 = 4096;

/// The largest request `signpost serve` reads (its admin limit).
const MAX_REQUEST: usize = 2 * 1024 * 1024;

struct AppendOnly {
    store: FileEventStore,
    calls: AtomicU64,
    payload: bytes::Bytes,
}

impl AppendOnly {
    /// Appends one event to `stream` and waits until it is durable.
    async fn append(
        &self,
        stream: String,
        event_type: &str,
        payload: bytes::Bytes,
    ) -> Result<AppendOutcome, Status> {
        let stream = StreamId::new(stream).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let commit = Commit {
            writes: vec![StreamWrite {
                stream,
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_type: event_type.into(),
                    payload,
                }],
            }],
            meta: CommitMeta {
                actor: signpost_domain::schema::Actor {
                    kind: signpost_domain::schema::ActorKind::System as i32,
                    id: "durable-ceiling".into(),
                    ..Default::default()
                },
                correlation_id: String::new(),
                request_id: None,
            },
            idempotency: None,
        };
        self.store
            .append(commit)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl Health for AppendOnly {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        self.append(
            format!("bench-{}", call % STREAMS),
            "bench_write",
            self.payload.clone(),
        )
        .await?;
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "the durable ceiling only answers Check",
        ))
    }
}

/// `AssignGroup` made durable and answered with [`DurableAssign::answer`], nothing
/// decided: no token checked, no connection looked up, no projection moved.
#[derive(Clone)]
struct DurableAssign {
    log: Arc<AppendOnly>,
    answer: Arc<pb::AssignGroupResponse>,
}

impl DurableAssign {
    async fn assign(
        &self,
        request: pb::AssignGroupRequest,
    ) -> Result<pb::AssignGroupResponse, Status> {
        let event = Event::GroupAssigned(schema::GroupAssigned {
            idp_group: request.idp_group,
            role: request.role,
        });
        let outcome = self
            .log
            .append(
                format!("connection-{}", request.connection_id),
                signpost_domain::event_type(&event),
                encode_event(&event).into(),
            )
            .await?;
        let mut answer = pb::AssignGroupResponse::clone(&self.answer);
        if let AppendOutcome::Committed(committed) = outcome {
            answer.log_position = committed.last_position;
        }
        Ok(answer)
    }
}

impl ServedMethod for DurableAssign {
    const SERVICE: &'static str = pb::connection_admin_service_server::SERVICE_NAME;
    const PATH: &'static str = "/signpost.admin.v1.ConnectionAdminService/AssignGroup";
    const REFUSAL: &'static str = "the durable ceiling only answers AssignGroup";

    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<Reply, Infallible>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let this = self.clone();
        Box::pin(async move {
            let answer = match read_admin_request("AssignGroup", request, Some(MAX_REQUEST)).await {
                Ok(request) => this.assign(request.into_inner()).await,
                Err(status) => Err(status),
            };
            Ok(admin_response("AssignGroup", answer, None))
        })
    }
}

/// Serves until killed, on `listen` (port 0: any), with the log in `data_dir` (created
/// if missing), answering `AssignGroup` with the `AssignGroupResponse` encoded in
/// `assign_answer_hex`, on the control plane's transport
/// ([`signpost_grpc::transport::incoming`]).
pub async fn serve(
    listen: SocketAddr,
    data_dir: &Path,
    assign_answer_hex: &str,
) -> anyhow::Result<()> {
    let answer = pb::AssignGroupResponse::decode(hex::decode(assign_answer_hex)?.as_slice())?;
    std::fs::create_dir_all(data_dir)?;
    let store = FileEventStore::open(data_dir, FileOptions::default())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    let log = Arc::new(AppendOnly {
        store,
        calls: AtomicU64::new(0),
        payload: bytes::Bytes::from(vec![0x42; crate::writes::VALUE_BYTES]),
    });
    tonic::transport::Server::builder()
        .add_service(HealthServer::from_arc(log.clone()))
        .add_service(OneMethod(DurableAssign {
            log,
            answer: Arc::new(answer),
        }))
        .serve_with_incoming(signpost_grpc::transport::incoming(listener))
        .await?;
    Ok(())
}
