//! `RoutingService`: `Resolve` and `WatchRoutes` over the routing projection.
//!
//! A watch stream is a small state machine with one cursor (the revision the
//! watcher holds; module `watch`). It pulls deltas from the projection's shared history
//! when the table changes (not at every commit: most change no route), so the
//! projection never waits for a watcher and a watcher costs no memory beyond
//! its cursor and what its transport buffers. A table change carries its delta, so a
//! stream one change behind, as almost every stream is, takes it from the change
//! without asking the projection (`signpost_routing::TableChange`). When its progress
//! message is due (its connection's channel ticks, below), it catches up to the revision
//! reached and says so with a progress message.
//! A watcher that stops reading simply stops pulling; when it reads again far
//! behind, it gets one catch-up delta of every route changed since its cursor
//! (`RoutingProjection::pull`), and when even the projection's last-change index no
//! longer reaches back to its cursor, a reset and a fresh snapshot instead of a silent
//! gap.
//!
//! The stream yields [`WatchFrame`]s: a published delta is the same message for
//! every watcher, so it is encoded once and its bytes are shared by every
//! stream (module `codec`). [`RoutingServer`] writes them as a response body of its
//! own that holds no buffer between messages (module `body`), and serves everything
//! else through the generated server (module `server`).
//!
//! A stream waits for table changes on its connection's channel, which a relay task
//! moves for each connection in turn (module `relay`): the streams of one connection
//! are woken and run together, rather than scattered among 10,000 others. The same
//! channel ticks once every progress interval, so the streams keep no timer each.

mod body;
mod codec;
pub mod relay;
mod resolve;
mod server;
mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_server::RoutingService;
use signpost_control::{ControlError, ControlPlane, Role};
use signpost_routing::RoutingProjection;
use tonic::{Request, Response, Status};

use crate::admin::bearer;
use crate::status::{invalid_field, to_status};

pub use codec::{
    CatchUpPieces, WatchFrame, WatchFrameEncoder, WatchRoutesCodec, CATCH_UP_PIECE_BYTES,
    WATCH_BUFFER_BYTES, WATCH_REQUEST_BUFFER_BYTES,
};
pub use resolve::{ResolveCodec, ResolveReply, ResolveReplyEncoder};
pub use server::RoutingServer;

/// The HTTP response `signpost serve` writes for a `WatchRoutes` call without
/// compression: `frames`, each message in a buffer of exactly its size, then the status
/// as trailers. [`RoutingServer`] answers with it; it is public so that a server streaming
/// frames of its own (the benchmark's fan-out floor) writes them the same way.
pub fn watch_routes_response(
    frames: WatchFrames,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    body::response(frames, None)
}

/// Reads a `Resolve` request as `signpost serve` does without compression (one message
/// of at most `max_request` bytes, `None`: tonic's default of 4 MiB), with its metadata.
/// Public, with [`resolve_response`], so that a server answering `Resolve` on its own
/// (the benchmark's do-nothing `Resolve`) reads and writes it the same way.
pub async fn read_resolve_request<B>(
    request: tonic::codegen::http::Request<B>,
    max_request: Option<usize>,
) -> Result<Request<wire::ResolveRequest>, Status>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    crate::unary::read_request("Resolve", request, max_request).await
}

/// The HTTP response `signpost serve` writes for a `Resolve` call without compression:
/// the answer encoded once into a buffer of its size, then `grpc-status: 0`; a refusal
/// is its status alone, as tonic writes it.
pub fn resolve_response(
    answer: Result<ResolveReply, Status>,
    max_message: Option<usize>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    crate::unary::response(
        answer.and_then(|reply| crate::unary::encode("Resolve", &reply, max_message)),
    )
}

/// Routes per snapshot message.
pub const SNAPSHOT_CHUNK: usize = 1000;

/// Longest a `Resolve` waits for `min_revision` when the call has no deadline.
pub const MAX_REVISION_WAIT: Duration = Duration::from_secs(30);

/// `RoutingService` over a [`RoutingProjection`]; `edge` and `admin` tokens.
#[derive(Clone)]
pub struct RoutingApi {
    plane: ControlPlane,
    routing: RoutingProjection,
    /// Table changes and progress ticks, to each connection's streams together.
    relay: Arc<relay::ChangeRelay<signpost_routing::TableChange>>,
}

impl std::fmt::Debug for RoutingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingApi").finish_non_exhaustive()
    }
}

impl RoutingApi {
    /// Serves `routing`, authenticating callers with `plane`; idle watchers
    /// get a progress message every `progress_interval`.
    pub fn new(
        plane: ControlPlane,
        routing: RoutingProjection,
        progress_interval: Duration,
    ) -> Self {
        Self {
            plane,
            relay: Arc::new(relay::ChangeRelay::with_progress(
                routing.watch_table(),
                progress_interval,
            )),
            routing,
        }
    }

    fn authorize(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        self.plane
            .authorize_api_token(bearer(metadata)?, &[Role::Edge, Role::Admin])
            .map_err(to_status)
    }
}

/// The call's deadline from `grpc-timeout`, if the client sent one.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn message(revision: u64, epoch: &str, kind: wire::watch_routes_response::Kind) -> WatchFrame {
    WatchFrame::Message(wire::WatchRoutesResponse {
        revision,
        store_epoch: epoch.to_owned(),
        kind: Some(kind),
    })
}

/// The messages of one watch stream, as [`WatchRoutesCodec`] writes them.
pub type WatchFrames = Pin<Box<dyn Stream<Item = Result<WatchFrame, Status>> + Send>>;

type WatchStream = Pin<Box<dyn Stream<Item = Result<wire::WatchRoutesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    /// `Resolve` through the generated server, which wants an owned message (a copy of
    /// the route). [`RoutingServer`] serves it without that copy.
    async fn resolve(
        &self,
        request: Request<wire::ResolveRequest>,
    ) -> Result<Response<wire::ResolveResponse>, Status> {
        let reply = self.resolve_reply(request).await?;
        Ok(Response::new(reply.into_inner().into_message()))
    }

    type WatchRoutesStream = WatchStream;

    /// `WatchRoutes` through the generated server, which wants messages: each frame is
    /// turned back into one. [`RoutingServer`] serves it without that step.
    async fn watch_routes(
        &self,
        request: Request<wire::WatchRoutesRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let frames = self.watch(request)?;
        let messages = frames.map(|frame| frame.map(WatchFrame::into_message));
        Ok(Response::new(Box::pin(messages) as WatchStream))
    }
}

impl RoutingApi {
    /// Answers a `Resolve` with the routing table's own route (no copy).
    pub async fn resolve_reply(
        &self,
        request: Request<wire::ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        self.authorize(request.metadata())?;
        // Answer a little before the caller's deadline, so it gets our DEADLINE_EXCEEDED
        // (with the revision reached) rather than cancelling on its own.
        let deadline = grpc_timeout(request.metadata())
            .map(|timeout| timeout * 9 / 10)
            .unwrap_or(MAX_REVISION_WAIT)
            .min(MAX_REVISION_WAIT);
        let request = request.into_inner();
        // Only the normalized domain is needed (checked exactly like a full parse).
        let domain = signpost_names::EmailAddress::normalized_domain(&request.email)
            .map_err(|e| invalid_field(e.reason(), "email", e.to_string()))?;
        if let Some(min_revision) = request.min_revision {
            match tokio::time::timeout(deadline, self.routing.wait_for(min_revision)).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(to_status(ControlError::Internal(reason))),
                Err(_) => {
                    return Err(to_status(ControlError::DeadlineExceeded(format!(
                        "the routing table did not reach revision {min_revision} within the deadline (it is at {})",
                        self.routing.revision()
                    ))))
                }
            }
        }
        let (revision, route) = self.routing.lookup(&domain);
        Ok(Response::new(ResolveReply {
            revision,
            route,
            domain: domain.into_owned(),
        }))
    }

    /// Authorizes a `WatchRoutes` call and returns its stream; nothing is streamed to
    /// a caller that is refused.
    pub fn watch(&self, request: Request<wire::WatchRoutesRequest>) -> Result<WatchFrames, Status> {
        self.authorize(request.metadata())?;
        let connection = relay::connection_of(request.extensions());
        Ok(self.watch_frames(request.into_inner(), connection))
    }

    fn watch_frames(
        &self,
        request: wire::WatchRoutesRequest,
        connection: relay::ConnectionKey,
    ) -> WatchFrames {
        // Woken when the table changes, not at every commit (`watch_table`), and when a
        // progress message is due, with the other streams of this connection (`relay`).
        let changes = self.relay.subscribe(connection);
        Box::pin(watch::WatchStream::open(
            self.routing.clone(),
            changes,
            request,
        ))
    }
}
