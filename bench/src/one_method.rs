//! [`OneMethod`]: a gRPC service that serves one method of its own and refuses the
//! others with `UNIMPLEMENTED`. The do-nothing `Resolve` ([`crate::resolve_ceiling`]),
//! the route-sized `WatchRoutes` of the stream limit ([`crate::stream_ceiling`]) and the
//! durable do-nothing `AssignGroup` ([`crate::durable_ceiling`]) are each one
//! [`ServedMethod`] behind it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::NamedService;
use tonic::Status;

/// The HTTP response of a gRPC call.
pub type Reply = http::Response<tonic::body::Body>;

/// The one method a [`OneMethod`] serves.
pub trait ServedMethod: Clone + Send + 'static {
    /// Its service's name (`signpost.routing.v1.RoutingService`).
    const SERVICE: &'static str;
    /// Its path (`/<service>/<method>`).
    const PATH: &'static str;
    /// The message every other method is refused with.
    const REFUSAL: &'static str;

    /// Answers a call of [`Self::PATH`].
    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<Reply, Infallible>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static;
}

/// `M`'s service, serving only `M`.
#[derive(Clone)]
pub struct OneMethod<M>(pub M);

impl<M: ServedMethod> NamedService for OneMethod<M> {
    const NAME: &'static str = M::SERVICE;
}

impl<M, B> Service<http::Request<B>> for OneMethod<M>
where
    M: ServedMethod,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = Reply;
    type Error = Infallible;
    type Future = BoxFuture<Reply, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != M::PATH {
            let refused = Status::unimplemented(M::REFUSAL).into_http();
            return Box::pin(async move { Ok(refused) });
        }
        self.0.call(request)
    }
}
