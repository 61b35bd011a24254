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

use crate::load::Peers;
use crate::populate::domain_of;
use crate::{etcd, grpc, load};

/// Key prefix of the routing table in etcd.
pub const ETCD_PREFIX: &str = "/signpost/routes/";

fn pick(worker: usize, i: u64, routes: usize) -> usize {
    ((worker as u64 * 7919 + i * 104_729) % routes.max(1) as u64) as usize
}

/// `Resolve` for random routed domains among `routes`, `in_flight` at a time.
pub async fn resolve_load(
    channels: &[Channel],
    token: &str,
    routes: usize,
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Arc<Vec<grpc::Routing>> =
        Arc::new(channels.iter().map(|c| grpc::routing(c, token)).collect());
    load::run(in_flight, duration, move |worker, i| {
        let mut client = clients[worker % clients.len()].clone();
        let domain = domain_of(pick(worker, i, routes));
        async move {
            match client
                .resolve(wire::ResolveRequest {
                    email: format!("user@{domain}"),
                    min_revision: None,
                })
                .await
            {
                Ok(reply) => matches!(
                    reply.into_inner().answer,
                    Some(wire::resolve_response::Answer::Route(_))
                ),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The ceiling: a do-nothing unary handler from the same client.
pub async fn noop_load(
    channels: &[Channel],
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Arc<Vec<_>> = Arc::new(
        channels
            .iter()
            .map(|c| tonic_health::pb::health_client::HealthClient::new(c.clone()))
            .collect(),
    );
    load::run(in_flight, duration, move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        async move {
            client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
        }
    })
    .await
}

/// etcd serializable `Range` of one random key among `keys`.
pub async fn etcd_range_load(
    channels: &[Channel],
    keys: usize,
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Arc<Vec<etcd::Kv>> = Arc::new(channels.iter().map(etcd::kv).collect());
    load::run(in_flight, duration, move |worker, i| {
        let mut client = clients[worker % clients.len()].clone();
        let key = format!("{ETCD_PREFIX}{}", domain_of(pick(worker, i, keys))).into_bytes();
        async move {
            match client
                .range(etcd::pb::RangeRequest {
                    key,
                    serializable: true,
                    ..Default::default()
                })
                .await
            {
                Ok(reply) => reply.into_inner().kvs.len() == 1,
                Err(_) => false,
            }
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
    pub channels: &'a [Channel],
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
    let (channels, etcd_channels, servers) = (peers.signpost, peers.etcd, peers.pids);
    // In turns, so that the ceilings, `Resolve` and etcd meet the same neighbours.
    let phases = [
        load::measured(servers.signpost, move |turn| {
            noop_load(channels, in_flight, turn)
        }),
        load::measured(servers.signpost, move |turn| {
            resolve_load(channels, token, routes, in_flight, turn)
        }),
        load::measured(servers.etcd, move |turn| {
            etcd_range_load(etcd_channels, routes, in_flight, turn)
        }),
        load::measured(answer.pid, move |turn| {
            resolve_load(answer.channels, token, routes, in_flight, turn)
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
