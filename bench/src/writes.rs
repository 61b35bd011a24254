//! Scenario 1, durable writes: 64 concurrent clients each issuing a small
//! mutation (`AssignGroup`, spread over many organizations' connections so
//! clients never share a stream) against etcd `put` of a 200-byte value with
//! 64 in flight; one sequential client on each side; and the disk's raw
//! fdatasync rate (200-byte write + fdatasync) on the same directory; and the
//! client's own limits in the same run (a do-nothing unary call with 64 in
//! flight and one at a time), which bound what any call can reach, and the
//! durable do-nothing server's ([`crate::durable_ceiling`]: each call one append to
//! Signpost's own log and nothing else), which bounds what a durable write can, measured
//! twice: with two-byte calls, and with this load's own `AssignGroup` calls answered as
//! the control plane answers them.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use signpost_api::admin::v1 as pb;
use tonic::transport::Channel;

use crate::cpu;
use crate::h2_client::Connection;
use crate::load::Peers;
use crate::populate::Organization;
use crate::{etcd, grpc, load, lookups};

/// Value size for etcd puts (the figure).
pub const VALUE_BYTES: usize = 200;

/// 200-byte writes + fdatasync in a loop for `duration`, in `dir`: syncs per second.
pub fn fdatasync_rate(dir: &Path, duration: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x42u8; VALUE_BYTES];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < duration {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// `AssignGroup` from `in_flight` clients; worker `w` only touches connections
/// `w, w + in_flight, ...`, so no two clients write the same stream. Every call
/// changes the role, so every call appends an event (and a route change). Each asks
/// for the BASIC view in the answer, as a job that keeps group mappings in sync
/// would: the FULL view's SAML settings and SP metadata (about 2 KB) cost about a fifth
/// of a write's CPU on each side (bench/FINDINGS.md, round 25).
pub async fn signpost_assign_load(
    connections: &[Connection],
    token: &str,
    organizations: &[Organization],
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Arc<[Connection]> = connections.into();
    let bearer: Arc<str> = format!("Bearer {token}").into();
    let connection_ids: Arc<Vec<String>> = Arc::new(
        organizations
            .iter()
            .map(|o| o.connection_id.clone())
            .collect(),
    );
    let run = uuid::Uuid::now_v7().simple().to_string();
    load::run(in_flight, duration, move |worker, i| {
        let client = clients[worker % clients.len()].clone();
        let bearer = bearer.clone();
        let per_worker = (connection_ids.len() / in_flight).max(1);
        let slot = (i as usize % per_worker) * in_flight + worker;
        let request = pb::AssignGroupRequest {
            connection_id: connection_ids[slot % connection_ids.len()].clone(),
            idp_group: format!("bench-writers-{worker}"),
            role: format!("role-{run}-{worker}-{i}"),
            view: pb::ConnectionView::Basic as i32,
            ..Default::default()
        }
        .encode_to_vec();
        async move {
            client
                .unary(ASSIGN_GROUP, Some(&bearer), &request)
                .await
                .is_ok()
        }
    })
    .await
}

/// `AssignGroup`'s path.
const ASSIGN_GROUP: &str = "/signpost.admin.v1.ConnectionAdminService/AssignGroup";

/// The control plane's answer to one `AssignGroup` of [`signpost_assign_load`]'s shape
/// (worker 0's first call, BASIC view), for the durable do-nothing server to send: a
/// write made before the load, to the connection that worker writes first.
pub async fn sample_answer(
    channel: &Channel,
    token: &str,
    organizations: &[Organization],
) -> anyhow::Result<pb::AssignGroupResponse> {
    let organization = organizations
        .first()
        .ok_or_else(|| anyhow::anyhow!("no organization to write to"))?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let answer = grpc::admin(channel, token)
        .assign_group(pb::AssignGroupRequest {
            connection_id: organization.connection_id.clone(),
            idp_group: "bench-writers-0".to_owned(),
            role: format!("role-{run}-0-0"),
            view: pb::ConnectionView::Basic as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer)
}

/// etcd `put` of a 200-byte value from `in_flight` clients (each its own keys).
pub async fn etcd_put_load(
    connections: &[Connection],
    in_flight: usize,
    duration: Duration,
) -> load::LoadReport {
    let clients: Arc<[Connection]> = connections.into();
    load::run(in_flight, duration, move |worker, i| {
        let client = clients[worker % clients.len()].clone();
        let request = etcd::pb::PutRequest {
            key: format!("/bench/writes/{worker}/{}", i % 1000).into_bytes(),
            value: etcd::value_of(i as usize, VALUE_BYTES),
            ..Default::default()
        }
        .encode_to_vec();
        async move {
            client
                .unary("/etcdserverpb.KV/Put", None, &request)
                .await
                .is_ok()
        }
    })
    .await
}

/// The durable do-nothing server's connections and process id.
#[derive(Debug, Clone, Copy)]
pub struct DurableCeiling<'a> {
    pub connections: &'a [Connection],
    pub pid: Option<u32>,
}

/// Everything scenario 1 measured.
pub async fn run(
    peers: Peers<'_>,
    durable: DurableCeiling<'_>,
    token: &str,
    organizations: &[Organization],
    data_dir: &Path,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let (connections, etcd_connections, servers) = (peers.signpost, peers.etcd, peers.pids);
    // Both peers and the do-nothing ceiling in turns, so that they meet the same
    // neighbours on this shared machine. The machine's limits for this client: nothing can
    // beat a do-nothing unary call with as many in flight, and a sequential durable write
    // costs at least its round trip (below) plus one fdatasync.
    let concurrent = [
        load::measured(servers.signpost, move |turn| {
            signpost_assign_load(connections, token, organizations, in_flight, turn)
        }),
        load::measured(servers.etcd, move |turn| {
            etcd_put_load(etcd_connections, in_flight, turn)
        }),
        load::measured(servers.signpost, move |turn| {
            lookups::noop_load(connections, in_flight, turn)
        }),
        load::measured(durable.pid, move |turn| {
            lookups::noop_load(durable.connections, in_flight, turn)
        }),
        load::measured(durable.pid, move |turn| {
            signpost_assign_load(durable.connections, token, organizations, in_flight, turn)
        }),
    ];
    let [signpost, etcd_many, noop_many, durable_many, durable_assign] =
        load::in_turns(load::ROUNDS, duration, concurrent).await;
    // The disk's limit is read right next to the sequential client (it drifts while
    // the kernel writes back what the loads left dirty).
    let probe = duration.min(Duration::from_secs(3));
    let fsync_before = fdatasync_rate(data_dir, probe)?;
    let signpost_one = cpu::measure(
        servers.signpost,
        signpost_assign_load(connections, token, organizations, 1, duration),
    )
    .await;
    let fsync_after = fdatasync_rate(data_dir, probe)?;
    let etcd_one = cpu::measure(servers.etcd, etcd_put_load(etcd_connections, 1, duration)).await;
    let fsync = (fsync_before + fsync_after) / 2.0;
    let noop_one = cpu::measure(
        servers.signpost,
        lookups::noop_load(connections, 1, duration),
    )
    .await;
    let durable_one = cpu::measure(
        durable.pid,
        lookups::noop_load(durable.connections, 1, duration),
    )
    .await;
    Ok(serde_json::json!({
        "in_flight": in_flight,
        "organizations": organizations.len(),
        "signpost": signpost.json(),
        "etcd": etcd_many.json(),
        "signpost_sequential": signpost_one.json(),
        "etcd_sequential": etcd_one.json(),
        "noop_unary": noop_many.json(),
        "noop_unary_sequential": noop_one.json(),
        "durable_noop": durable_many.json(),
        "durable_noop_sequential": durable_one.json(),
        "durable_assign": durable_assign.json(),
        "fdatasync_per_second": fsync,
        "fdatasync_before": fsync_before,
        "fdatasync_after": fsync_after,
    }))
}
