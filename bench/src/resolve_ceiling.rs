//! Scenario 2's answer, sent and nothing else: a do-nothing `Resolve`, run as a child
//! process like the two peers (`signpost-bench resolve-ceiling`), measured by the same
//! client with the same calls in flight as the control plane's `Resolve`.
//!
//! It serves `signpost.routing.v1.RoutingService/Resolve` and answers every call with
//! one fixed `ResolveResponse`: the control plane's own answer for one routed domain
//! (organization 0's, whose domain is the shortest, so the answer is a few bytes smaller
//! than most), fetched just before and handed over as hex, and written by the control
//! plane's own `Resolve` codec from the route kept encoded as its routing table keeps it.
//! Nothing is looked up, authorized or normalized. The do-nothing unary ceiling
//! (`grpc.health.v1.Health/Check`) answers two bytes; this one carries what a `Resolve`
//! must carry (a route, about 400 bytes), so the client decodes as much as it does from
//! the control plane. It serves on the control plane's own transport
//! ([`signpost_grpc::transport::incoming`]).
//!
//! It was meant as `Resolve`'s ceiling and is not one: measured in turns, it lands within
//! their noise of the control plane's `Resolve`, which has reached and passed it
//! (bench/FINDINGS.md, round 24). The report gives it as context: how much of `Resolve`'s
//! cost is its answer's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use signpost_api::routing::v1 as wire;
use signpost_grpc::routing::{ResolveCodec, ResolveReply};
use signpost_routing::EncodedRoute;
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::{Grpc, UnaryService};
use tonic::{Request, Response, Status};

use crate::one_method::{OneMethod, Reply, RoutingMethod};

/// What the server prints once it accepts connections (then the address).
pub const LISTENING: &str = "resolve ceiling listening on ";

/// `Resolve`, answered with [`ConstantResolve::answer`] through the control plane's own
/// `Resolve` codec (the route's bytes copied as the routing table keeps them, as `signpost
/// serve` answers).
#[derive(Clone)]
struct ConstantResolve {
    answer: Arc<ResolveReply>,
}

impl RoutingMethod for ConstantResolve {
    const PATH: &'static str = "/signpost.routing.v1.RoutingService/Resolve";
    const REFUSAL: &'static str = "the resolve ceiling only answers Resolve";

    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<Reply, Infallible>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let method = Answer(self.answer.clone());
        let mut grpc = Grpc::new(ResolveCodec);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

/// The one answer, as a tonic unary method.
struct Answer(Arc<ResolveReply>);

impl UnaryService<wire::ResolveRequest> for Answer {
    type Response = ResolveReply;
    type Future = std::future::Ready<Result<Response<ResolveReply>, Status>>;

    fn call(&mut self, request: Request<wire::ResolveRequest>) -> Self::Future {
        std::future::ready(if request.get_ref().email.is_empty() {
            Err(Status::invalid_argument("email is required"))
        } else {
            Ok(Response::new(ResolveReply::clone(&self.0)))
        })
    }
}

/// Serves until killed, on `listen` (port 0: any), answering every `Resolve` with the
/// `ResolveResponse` encoded in `answer_hex`.
pub async fn serve(listen: SocketAddr, answer_hex: &str) -> anyhow::Result<()> {
    let answer = wire::ResolveResponse::decode(hex::decode(answer_hex)?.as_slice())?;
    let Some(wire::resolve_response::Answer::Route(route)) = &answer.answer else {
        anyhow::bail!("the answer must hold a route");
    };
    let reply = ResolveReply {
        revision: answer.revision,
        route: Some(EncodedRoute::encode(route)),
        domain: answer.domain.clone(),
    };
    anyhow::ensure!(
        reply.clone().into_message() == answer,
        "the route does not encode back to the answer it came in"
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("{LISTENING}{}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(OneMethod(ConstantResolve {
            answer: Arc::new(reply),
        }))
        .serve_with_incoming(signpost_grpc::transport::incoming(listener))
        .await?;
    Ok(())
}
