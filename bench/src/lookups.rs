//! Scenario 2, lookups: `Resolve` of random routed domains among all routes,
//! `in_flight` at a time, against etcd serializable `Range` of one key among
//! as many keys (values as large as an encoded Signpost route), plus two ceilings from the
//! same client: the do-nothing unary call (`grpc.health.v1.Health/Check`, a two-byte
//! answer) and the do-nothing `Resolve` of [`crate::resolve_ceiling`] (one fixed answer
//! as large as a route).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use signpost_api::routing::v1 as wire;
use tonic::transport::Channel;

use crate::h2_client::Connection;
use crate::load::Peers;
use crate::populate::domain_of;
use crate::{etcd, grpc, load};

/// Key prefix of the routing table in etcd.
pub const ETCD_PREFIX: &str = "/signpost/routes/";

fn pick(worker: usize, i: u64, routes: usize) -> usize {
    ((worker as u64 * 7919 + i * 104_729) % routes.max(1) as u64) as usize
}

/// What a `Resolve` load reads of an answer: its kind, the route left encoded
/// (`ResolveResponse.answer`'s field numbers).
#[derive(Clone, PartialEq, prost::Message)]
struct ResolveAnswer {
    #[prost(oneof = "ResolveAnswerKind", tags = "2, 3")]
    answer: Option<ResolveAnswerKind>,
}

/// [`ResolveAnswer`]'s kind.
#[derive(Clone, PartialEq, prost::Oneof)]
enum ResolveAnswerKind {
    #[prost(bytes = "bytes", tag = "2")]
    Route(bytes::Bytes),
    #[prost(bytes = "bytes", tag = "3")]
    Password(bytes::Bytes),
}

/// What an etcd `Range` load reads of an answer: the key-values, left encoded
/// (`RangeResponse.kvs`).
#[derive(Clone, PartialEq, prost::Message)]
struct RangeAnswer {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    kvs: Vec<bytes::Bytes>,
}

/// `Resolve` for random routed domains among `routes`, `in_flight` at a time; a call
/// counts when it is answered with a route.
pub async fn resolve_load(
    connections: &[Connection],
    token: &str,
    routes: usize,
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let connections: Arc<[Connection]> = connections.into();
    let bearer: Arc<str> = format!("Bearer {token}").into();
    load::run(in_flight, duration, move |worker, i| {
        let connection = connections[worker % connections.len()].clone();
        let bearer = bearer.clone();
        let request = wire::ResolveRequest {
            email: format!("user@{}", domain_of(pick(worker, i, routes))),
            min_revision: None,
        }
        .encode_to_vec();
        async move {
            let answer = connection
                .unary(RESOLVE, Some(&bearer), &request)
                .await
                .and_then(|answer| Ok(ResolveAnswer::decode(answer)?));
            matches!(
                answer,
                Ok(ResolveAnswer {
                    answer: Some(ResolveAnswerKind::Route(_))
                })
            )
        }
    })
    .await
}

/// `Resolve`'s path.
const RESOLVE: &str = "/signpost.routing.v1.RoutingService/Resolve";

/// The ceiling: a do-nothing unary handler (`grpc.health.v1.Health/Check`) from the same
/// client.
pub async fn noop_load(
    connections: &[Connection],
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let connections: Arc<[Connection]> = connections.into();
    let request: Arc<[u8]> = tonic_health::pb::HealthCheckRequest::default()
        .encode_to_vec()
        .into();
    load::run(in_flight, duration, move |worker, _| {
        let connection = connections[worker % connections.len()].clone();
        let request = request.clone();
        async move {
            connection
                .unary("/grpc.health.v1.Health/Check", None, &request)
                .await
                .is_ok()
        }
    })
    .await
}

/// etcd serializable `Range` of one random key among `keys`; a call counts when it
/// finds the key.
pub async fn etcd_range_load(
    connections: &[Connection],
    keys: usize,
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let connections: Arc<[Connection]> = connections.into();
    load::run(in_flight, duration, move |worker, i| {
        let connection = connections[worker % connections.len()].clone();
        let request = etcd::pb::RangeRequest {
            key: format!("{ETCD_PREFIX}{}", domain_of(pick(worker, i, keys))).into_bytes(),
            serializable: true,
            ..Default::default()
        }
        .encode_to_vec();
        async move {
            let answer = connection
                .unary("/etcdserverpb.KV/Range", None, &request)
                .await
                .and_then(|answer| Ok(RangeAnswer::decode(answer)?));
            matches!(answer, Ok(RangeAnswer { kvs }) if kvs.len() == 1)
        }
    })
    .await
}

/// The control plane's `Resolve` answer for organization 0's domain, which must hold a
/// route: its route's encoded size is the value size etcd's keys get (so both peers move
/// as many bytes), and the whole answer is what the do-nothing `Resolve` of
/// [`crate::resolve_ceiling`] sends.
pub async fn routed_answer(
    channel: &Channel,
    token: &str,
) -> anyhow::Result<wire::ResolveResponse> {
    let reply = grpc::routing(channel, token)
        .resolve(wire::ResolveRequest {
            email: format!("user@{}", domain_of(0)),
            min_revision: None,
        })
        .await?
        .into_inner();
    anyhow::ensure!(
        matches!(reply.answer, Some(wire::resolve_response::Answer::Route(_))),
        "{} has no route",
        domain_of(0)
    );
    Ok(reply)
}

/// The encoded size of the route in `answer` (0 when it holds none).
pub fn route_bytes(answer: &wire::ResolveResponse) -> usize {
    match &answer.answer {
        Some(wire::resolve_response::Answer::Route(route)) => route.encoded_len(),
        _ => 0,
    }
}

/// Loads `routes` keys `<ETCD_PREFIX><domain>` of `value_bytes` into etcd.
pub async fn load_etcd_table(
    channels: &[Channel],
    routes: usize,
    value_bytes: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..in_flight {
        let mut client = etcd::kv(&channels[worker % channels.len()]);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= routes {
                    return anyhow::Ok(());
                }
                etcd::put(
                    &mut client,
                    format!("{ETCD_PREFIX}{}", domain_of(i)).into_bytes(),
                    etcd::value_of(i, value_bytes),
                )
                .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The do-nothing `Resolve` server's connections and process id.
#[derive(Debug, Clone, Copy)]
pub struct AnswerCeiling<'a> {
    pub connections: &'a [Connection],
    pub pid: Option<u32>,
}

/// Everything scenario 2 measured.
pub async fn run(
    peers: Peers<'_>,
    answer: AnswerCeiling<'_>,
    token: &str,
    routes: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let (connections, etcd_connections, servers) = (peers.signpost, peers.etcd, peers.pids);
    // In turns, so that the ceilings, `Resolve` and etcd meet the same neighbours.
    let phases = [
        load::measured(servers.signpost, move |turn| {
            noop_load(connections, in_flight, turn)
        }),
        load::measured(servers.signpost, move |turn| {
            resolve_load(connections, token, routes, in_flight, turn)
        }),
        load::measured(servers.etcd, move |turn| {
            etcd_range_load(etcd_connections, routes, in_flight, turn)
        }),
        load::measured(answer.pid, move |turn| {
            resolve_load(answer.connections, token, routes, in_flight, turn)
        }),
    ];
    let [noop, resolve, etcd, constant] = load::in_turns(load::ROUNDS, duration, phases).await;
    Ok(serde_json::json!({
        "routes": routes,
        "in_flight": in_flight,
        "signpost": resolve.json(),
        "noop_unary": noop.json(),
        "etcd": etcd.json(),
        "ratio_to_noop": resolve.rate() / noop.rate().max(f64::MIN_POSITIVE),
        "answer_ceiling": constant.json(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Resolve` load reads an answer's kind from the whole answer's bytes.
    #[test]
    fn a_resolve_answer_is_read_as_its_kind() {
        let routed = wire::ResolveResponse {
            revision: 7,
            answer: Some(wire::resolve_response::Answer::Route(wire::Route {
                domain: "acme.example".into(),
                ..Default::default()
            })),
            domain: "acme.example".into(),
        };
        let read = ResolveAnswer::decode(routed.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(read.answer, Some(ResolveAnswerKind::Route(_))));
        let password = wire::ResolveResponse {
            answer: Some(wire::resolve_response::Answer::Password(wire::Password {})),
            ..routed
        };
        let read = ResolveAnswer::decode(password.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(read.answer, Some(ResolveAnswerKind::Password(_))));
    }

    /// An etcd `Range` load counts the key-values of the whole answer.
    #[test]
    fn a_range_answer_is_read_as_its_key_values() {
        let answer = etcd::pb::RangeResponse {
            header: Some(Default::default()),
            kvs: vec![etcd::pb::KeyValue {
                key: b"/signpost/routes/acme.example".to_vec(),
                value: vec![7; 414],
                ..Default::default()
            }],
            count: 1,
            ..Default::default()
        };
        let read = RangeAnswer::decode(answer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.kvs.len(), 1);
        let empty = etcd::pb::RangeResponse::default();
        assert!(RangeAnswer::decode(empty.encode_to_vec().as_slice())
            .unwrap()
            .kvs
            .is_empty());
    }
}
