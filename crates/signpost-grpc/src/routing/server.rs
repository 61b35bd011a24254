//! [`RoutingServer`]: `RoutingService` as served. The generated server encodes
//! every message with prost, once per stream, from owned messages; `WatchRoutes` is
//! taken off it so a delta's shared bytes go out as they are, and `Resolve` so the
//! table's route is encoded where it is instead of copied into a message. Every other
//! method goes to the generated server.
//!
//! Both are written as response bodies of our own (`crate::unary` for `Resolve`, module
//! `body` for `WatchRoutes`), each message in a buffer of exactly its size, freed once
//! written: tonic's body keeps a buffer per stream for the stream's life, and its unary
//! path sets up a decoding and an encoding stream, each with a buffer of 8 KiB, for one
//! message each way (`Resolve` takes about a tenth less of the server's CPU without
//! them, bench/FINDINGS.md round 27). With compression enabled they go through tonic
//! with [`ResolveCodec`] and [`WatchRoutesCodec`] instead, which compress as every other
//! method does.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_server::{RoutingServiceServer, SERVICE_NAME};
use tonic::codegen::{
    http, Body, BoxFuture, CompressionEncoding, EnabledCompressionEncodings, Service, StdError,
};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

use super::{
    body, ResolveCodec, ResolveReply, RoutingApi, WatchFrame, WatchFrames, WatchRoutesCodec,
};
use crate::unary;

/// The path of `WatchRoutes` (`/{SERVICE_NAME}/WatchRoutes`).
const WATCH_ROUTES_PATH: &str = "/signpost.routing.v1.RoutingService/WatchRoutes";
/// The path of `Resolve` (`/{SERVICE_NAME}/Resolve`).
const RESOLVE_PATH: &str = "/signpost.routing.v1.RoutingService/Resolve";

/// `RoutingService` over a [`RoutingApi`], with `WatchRoutes` sending each
/// published delta's bytes, encoded once, on every stream. Compression and
/// message size settings apply to every method, as on the generated server.
#[derive(Clone)]
pub struct RoutingServer {
    api: Arc<RoutingApi>,
    generated: RoutingServiceServer<RoutingApi>,
    accept_compression_encodings: EnabledCompressionEncodings,
    send_compression_encodings: EnabledCompressionEncodings,
    max_decoding_message_size: Option<usize>,
    max_encoding_message_size: Option<usize>,
}

impl std::fmt::Debug for RoutingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingServer")
            .field("api", &self.api)
            .field("max_decoding_message_size", &self.max_decoding_message_size)
            .field("max_encoding_message_size", &self.max_encoding_message_size)
            .finish_non_exhaustive()
    }
}

impl RoutingServer {
    /// Serves `api`.
    pub fn new(api: RoutingApi) -> Self {
        let api = Arc::new(api);
        Self {
            generated: RoutingServiceServer::from_arc(api.clone()),
            api,
            accept_compression_encodings: EnabledCompressionEncodings::default(),
            send_compression_encodings: EnabledCompressionEncodings::default(),
            max_decoding_message_size: None,
            max_encoding_message_size: None,
        }
    }

    /// Accepts requests compressed with `encoding`.
    #[must_use]
    pub fn accept_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.accept_compression_encodings.enable(encoding);
        self.generated = self.generated.accept_compressed(encoding);
        self
    }

    /// Compresses responses with `encoding` when the client accepts it.
    #[must_use]
    pub fn send_compressed(mut self, encoding: CompressionEncoding) -> Self {
        self.send_compression_encodings.enable(encoding);
        self.generated = self.generated.send_compressed(encoding);
        self
    }

    /// Largest request message accepted (tonic's default: 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self.generated = self.generated.max_decoding_message_size(limit);
        self
    }

    /// Largest response message sent (tonic's default: no limit).
    #[must_use]
    pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
        self.max_encoding_message_size = Some(limit);
        self.generated = self.generated.max_encoding_message_size(limit);
        self
    }
}

impl RoutingServer {
    /// Whether any request or response compression is enabled.
    fn compression_enabled(&self) -> bool {
        !self.accept_compression_encodings.is_empty() || !self.send_compression_encodings.is_empty()
    }

    /// A tonic method handler with `codec` and this server's compression and message
    /// size settings.
    fn grpc<C: tonic::codec::Codec>(&self, codec: C) -> Grpc<C> {
        Grpc::new(codec)
            .apply_compression_config(
                self.accept_compression_encodings,
                self.send_compression_encodings,
            )
            .apply_max_message_size_config(
                self.max_decoding_message_size,
                self.max_encoding_message_size,
            )
    }
}

impl NamedService for RoutingServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for RoutingServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path != RESOLVE_PATH && path != WATCH_ROUTES_PATH {
            return self.generated.call(request);
        }
        if self.compression_enabled() {
            if path == RESOLVE_PATH {
                let method = ResolveMethod(self.api.clone());
                let mut grpc = self.grpc(ResolveCodec);
                return Box::pin(async move { Ok(grpc.unary(method, request).await) });
            }
            let method = WatchRoutesMethod(self.api.clone());
            let mut grpc = self.grpc(WatchRoutesCodec);
            return Box::pin(async move { Ok(grpc.server_streaming(method, request).await) });
        }
        // Without compression, bodies of our own: `Resolve`'s request read and its answer
        // written each in one buffer of its size, nothing held between a watch stream's
        // messages.
        let api = self.api.clone();
        let (max_request, max_message) = (
            self.max_decoding_message_size,
            self.max_encoding_message_size,
        );
        if path == RESOLVE_PATH {
            let limits = unary::Limits {
                max_request,
                max_message,
            };
            return Box::pin(async move {
                Ok(
                    unary::serve("Resolve", request, limits, |request| async move {
                        api.resolve_reply(request).await
                    })
                    .await,
                )
            });
        }
        Box::pin(async move {
            let frames = unary::read_request("WatchRoutes", request, max_request)
                .await
                .and_then(|request| api.watch(request));
            Ok(match frames {
                Ok(frames) => body::response(frames, max_message),
                // Refused: no body, the status in the response's headers.
                Err(status) => status.into_http(),
            })
        })
    }
}

/// `Resolve` as a tonic unary method answering [`ResolveReply`]s (with compression).
struct ResolveMethod(Arc<RoutingApi>);

impl UnaryService<wire::ResolveRequest> for ResolveMethod {
    type Response = ResolveReply;
    type Future = BoxFuture<Response<ResolveReply>, Status>;

    fn call(&mut self, request: Request<wire::ResolveRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.resolve_reply(request).await })
    }
}

/// `WatchRoutes` as a tonic server-streaming method over [`WatchFrame`]s (with
/// compression).
struct WatchRoutesMethod(Arc<RoutingApi>);

impl ServerStreamingService<wire::WatchRoutesRequest> for WatchRoutesMethod {
    type Response = WatchFrame;
    type ResponseStream = WatchFrames;
    type Future = std::future::Ready<Result<Response<WatchFrames>, Status>>;

    fn call(&mut self, request: Request<wire::WatchRoutesRequest>) -> Self::Future {
        std::future::ready(self.0.watch(request).map(Response::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_routes_path_is_the_generated_services() {
        assert_eq!(WATCH_ROUTES_PATH, format!("/{SERVICE_NAME}/WatchRoutes"));
        assert_eq!(RESOLVE_PATH, format!("/{SERVICE_NAME}/Resolve"));
    }
}
