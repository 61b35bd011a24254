//! Scenario 1's durable limit on this machine: a do-nothing server that only makes each
//! call durable in Signpost's own event log, run as a child process like the two peers
//! (`signpost-bench durable-ceiling`), measured by the same client with the same calls in
//! flight as `AssignGroup`.
//!
//! It serves `grpc.health.v1.Health`: every `Check` appends one event with a 200-byte
//! payload (etcd's value size) to a `FileEventStore` in `--data-dir` (the real log: hash
//! chain, group commit, `fdatasync` before the answer) and answers once it is durable.
//! No command is decided, no projection follows the log (no read model, routing table or
//! audit index), and the answer is two bytes: what any durable write costs with this log,
//! this client and these cores, and so the most a write of Signpost's could reach here.
//! It serves on the control plane's own transport
//! ([`signpost_grpc::transport::incoming`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use signpost_eventlog::{
    Commit, CommitMeta, EventStore, ExpectedVersion, FileEventStore, FileOptions, NewEvent,
    StreamId, StreamWrite,
};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What the server prints once it accepts connections (then the address).
pub const LISTENING: &str = "durable ceiling listening on ";

/// Streams the appends are spread over, as `AssignGroup`'s clients never share one.
const STREAMS: u64 = 4096;

struct AppendOnly {
    store: FileEventStore,
    calls: AtomicU64,
    payload: bytes::Bytes,
}

impl AppendOnly {
    fn commit(&self) -> Result<Commit, Status> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let stream = StreamId::new(format!("bench-{}", call % STREAMS))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Commit {
            writes: vec![StreamWrite {
                stream,
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_type: "bench_write".into(),
                    payload: self.payload.clone(),
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
        })
    }
}

#[tonic::async_trait]
impl Health for AppendOnly {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.store
            .append(self.commit()?)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
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

/// Serves until killed, on `listen` (port 0: any), with the log in `data_dir` (created
/// if missing), on the control plane's transport ([`signpost_grpc::transport::incoming`]).
pub async fn serve(listen: SocketAddr, data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let store = FileEventStore::open(data_dir, FileOptions::default())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    let ceiling = AppendOnly {
        store,
        calls: AtomicU64::new(0),
        payload: bytes::Bytes::from(vec![0x42; crate::writes::VALUE_BYTES]),
    };
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(ceiling))
        .serve_with_incoming(signpost_grpc::transport::incoming(listener))
        .await?;
    Ok(())
}
