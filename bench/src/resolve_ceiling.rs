//! Scenario 2's answer, sent and nothing else: a do-nothing `Resolve`, run as a child
//! process like the two peers (`signpost-bench resolve-ceiling`), measured by the same
//! client with the same calls in flight as the control plane's `Resolve`.
//!
//! It serves `signpost.routing.v1.RoutingService/Resolve` and answers every call with
//! one fixed `ResolveResponse`: the control plane's own answer for one routed domain
//! (organization 0's, whose domain is the shortest, so the answer is a few bytes smaller
//! than most), fetched just before and handed over as hex. The request is read and the
//! answer written by the control plane's own functions, from the route kept encoded as
//! its routing table keeps it.
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
use signpost_grpc::routing::{self, ResolveReply};
use signpost_routing::EncodedRoute;
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::Status;

use crate::one_method::{OneMethod, Reply, ServedMethod};

/// What the server prints once it accepts connections (then the address).
pub const LISTENING: &str = "resolve ceiling listening on ";

/// `Resolve`, answered with [`ConstantResolve::answer`] as `signpost serve` answers it
/// without compression: the request read and the answer written by the control plane's
/// own functions ([`signpost_grpc::routing::read_resolve_request`],
/// [`signpost_grpc::routing::resolve_response`]), the route's bytes copied as the routing
/// table keeps them.
#[derive(Clone)]
struct ConstantResolve {
    answer: Arc<ResolveReply>,
}

impl ServedMethod for ConstantResolve {
    const SERVICE: &'static str = wire::routing_service_server::SERVICE_NAME;
    const PATH: &'static str = "/signpost.routing.v1.RoutingService/Resolve";
    const REFUSAL: &'static str = "the resolve ceiling only answers Resolve";

    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<Reply, Infallible>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let answer = self.answer.clone();
        Box::pin(async move {
            let reply = match routing::read_resolve_request(request, None).await {
                Ok(request) if request.get_ref().email.is_empty() => {
                    Err(Status::invalid_argument("email is required"))
                }
                Ok(_) => Ok(ResolveReply::clone(&answer)),
                Err(status) => Err(status),
            };
            Ok(routing::resolve_response(reply, None))
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
