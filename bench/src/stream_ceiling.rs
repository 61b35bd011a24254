//! The fan-out's limit on this machine: a do-nothing streaming server, run as a child
//! process like the two peers (`signpost-bench stream-ceiling`), measured by the same
//! client with the same number of streams and connections.
//!
//! It serves `grpc.health.v1.Health`: every `Watch` stream gets one message when it
//! opens and one message per change; a `Check` of [`TRIGGER`] is the change. Nothing
//! is computed, stored or written to disk, and each message is two bytes (a route
//! delta is about 400), so this is a floor no real server reaches: the cost of waking
//! every stream, framing and writing its message, and the client receiving them all on
//! the same cores. It serves on the control plane's own transport
//! ([`signpost_grpc::transport::incoming`], the sockets `signpost serve` accepts): before
//! round 24 it did not, wrote each stream's message on its own, and was slower than the
//! control plane itself (bench/FINDINGS.md, round 24).

use std::net::SocketAddr;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The service name whose `Check` makes a change.
pub const TRIGGER: &str = "bench.trigger";
/// What the stream server prints once it accepts connections (then the address).
pub const LISTENING: &str = "stream ceiling listening on ";

struct Ceiling {
    changes: tokio::sync::watch::Sender<u64>,
}

fn message(change: u64) -> HealthCheckResponse {
    let status = if change.is_multiple_of(2) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Ceiling {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if request.get_ref().service == TRIGGER {
            self.changes.send_modify(|change| *change += 1);
        }
        Ok(Response::new(message(0)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut changes = self.changes.subscribe();
        let opened = message(*changes.borrow_and_update());
        let later = futures::stream::unfold(changes, |mut changes| async move {
            changes.changed().await.ok()?;
            let change = *changes.borrow_and_update();
            Some((Ok(message(change)), changes))
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async move { Ok(opened) }).chain(later),
        )))
    }
}

/// Serves until killed, on `listen` (port 0: any), on the control plane's transport
/// ([`signpost_grpc::transport::incoming`]).
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    let (changes, _) = tokio::sync::watch::channel(0);
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(Ceiling { changes }))
        .serve_with_incoming(signpost_grpc::transport::incoming(listener))
        .await?;
    Ok(())
}
