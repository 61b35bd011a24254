//! The fan-out's limit on this machine: a do-nothing streaming server, run as a child
//! process like the two peers (`signpost-bench stream-ceiling`), measured by the same
//! client with the same number of streams and connections.
//!
//! It serves two kinds of stream, and a `grpc.health.v1.Health/Check` of [`TRIGGER`] is
//! a change for both:
//! - `grpc.health.v1.Health/Watch`: one message when the stream opens and one per change,
//!   two bytes each. Nothing is computed, stored or written to disk, so this is a floor no
//!   real server reaches: the cost of waking every stream, framing and writing its
//!   message, and the client receiving them all on the same cores.
//! - `signpost.routing.v1.RoutingService/WatchRoutes`, when given a route: one message
//!   per change, the `RouteDelta` that upserts that route, as large as the control
//!   plane's (about 400 bytes against two, so the client decodes what it decodes from the
//!   control plane). Each change's delta is built once and its bytes encoded once, and
//!   the streams write it with the control plane's own `WatchRoutes` body
//!   ([`signpost_grpc::routing::watch_routes_response`]), as `signpost serve` does. The
//!   request is not read, nothing is authorized, no history is kept, no route computed.
//!
//! It serves on the control plane's own transport
//! ([`signpost_grpc::transport::incoming`], the sockets `signpost serve` accepts): before
//! round 24 it did not, wrote each stream's message on its own, and was slower than the
//! control plane itself (bench/FINDINGS.md, round 24). Its streams wait for a change as
//! the control plane's do, each connection's on a channel of its own moved by a
//! [`ChangeRelay`], so a change wakes them a connection at a time (round 36).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use signpost_api::routing::v1 as wire;
use signpost_grpc::routing::relay::{connection_of, ChangeRelay, ConnectionKey};
use signpost_grpc::routing::{watch_routes_response, WatchFrame, WatchFrames};
use signpost_routing::{Delta, EncodedRoute};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status};

use crate::one_method::{OneMethod, Reply, ServedMethod};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The service name whose `Check` makes a change.
pub const TRIGGER: &str = "bench.trigger";
/// What the stream server prints once it accepts connections (then the address).
pub const LISTENING: &str = "stream ceiling listening on ";

/// The latest change: its number, and the delta the `WatchRoutes` streams send for it
/// (built once, by the trigger; none before the first change or without a route).
#[derive(Clone, Default)]
struct Change {
    number: u64,
    delta: Option<Arc<Delta>>,
}

type Changes = tokio::sync::watch::Sender<Change>;

struct Ceiling {
    changes: Changes,
    /// What the `Watch` streams wait on.
    relay: Arc<ChangeRelay<Change>>,
    /// The route every change's delta upserts (none: `WatchRoutes` is not served).
    route: Option<EncodedRoute>,
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
            self.changes.send_modify(|change| {
                change.number += 1;
                change.delta = self.route.as_ref().map(|route| {
                    Arc::new(Delta::new(change.number, vec![route.clone()], Vec::new()))
                });
            });
        }
        Ok(Response::new(message(0)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut changes = self.relay.subscribe(connection_of(request.extensions()));
        let opened = message(changes.borrow_and_update().number);
        let later = futures::stream::unfold(changes, |mut changes| async move {
            changes.changed().await.ok()?;
            let change = changes.borrow_and_update().number;
            Some((Ok(message(change)), changes))
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async move { Ok(opened) }).chain(later),
        )))
    }
}

/// `WatchRoutes` (served as a [`OneMethod`]), each stream sending every later change's
/// delta (see the module documentation).
#[derive(Clone)]
struct RouteStreams {
    relay: Arc<ChangeRelay<Change>>,
    store_epoch: Arc<str>,
}

impl RouteStreams {
    /// The frames of one stream on `connection`: the delta of each change made after it
    /// opened.
    fn frames(&self, connection: ConnectionKey) -> WatchFrames {
        let changes = self.relay.subscribe(connection);
        let store_epoch = self.store_epoch.clone();
        Box::pin(futures::stream::unfold(changes, move |mut changes| {
            let store_epoch = store_epoch.clone();
            async move {
                loop {
                    changes.changed().await.ok()?;
                    let delta = changes.borrow_and_update().delta.clone();
                    if let Some(delta) = delta {
                        return Some((Ok(WatchFrame::Delta { delta, store_epoch }), changes));
                    }
                }
            }
        }))
    }
}

impl ServedMethod for RouteStreams {
    const SERVICE: &'static str = wire::routing_service_server::SERVICE_NAME;
    const PATH: &'static str = "/signpost.routing.v1.RoutingService/WatchRoutes";
    const REFUSAL: &'static str = "the stream ceiling only serves WatchRoutes";

    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<Reply, Infallible>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let response = watch_routes_response(self.frames(connection_of(request.extensions())));
        Box::pin(async move { Ok(response) })
    }
}

/// Serves until killed, on `listen` (port 0: any), on the control plane's transport
/// ([`signpost_grpc::transport::incoming`]). With `route_hex` (a `Route`, encoded, in hex)
/// it also serves `WatchRoutes`, each change a delta upserting that route, in
/// `store_epoch`.
pub async fn serve(
    listen: SocketAddr,
    route_hex: Option<&str>,
    store_epoch: &str,
) -> anyhow::Result<()> {
    let route = route_hex
        .map(|hex| anyhow::Ok(wire::Route::decode(hex::decode(hex)?.as_slice())?))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    let (changes, source) = tokio::sync::watch::channel(Change::default());
    let relay = Arc::new(ChangeRelay::new(source));
    let routes = route.as_ref().map(|_| {
        OneMethod(RouteStreams {
            relay: relay.clone(),
            store_epoch: store_epoch.into(),
        })
    });
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(Ceiling {
            changes,
            relay,
            route: route.as_ref().map(EncodedRoute::encode),
        }))
        .add_optional_service(routes)
        .serve_with_incoming(signpost_grpc::transport::incoming(listener))
        .await?;
    Ok(())
}
