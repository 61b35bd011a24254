//! Admin lists among every loaded organization (no goal; beside scenario 2): one call
//! at a time, `ListConnections` of one organization and the first page of all
//! connections, taking turns. A page is built under the read model's lock, so a list's
//! time is also time the model's writer can wait.

use std::time::Instant;

use hdrhistogram::Histogram;
use signpost_api::admin::v1 as pb;
use tonic::transport::Channel;

use crate::grpc;
use crate::populate::Organization;

/// Microsecond latencies of one kind of call.
fn summary(latencies: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "calls": latencies.len(),
        "p50_us": latencies.value_at_quantile(0.5),
        "p99_us": latencies.value_at_quantile(0.99),
        "max_us": latencies.max(),
    })
}

/// `calls` of each kind, alternating; every answer is checked (the organization's one
/// connection, a full first page), and a wrong one fails the run.
pub async fn run(
    channel: &Channel,
    token: &str,
    organizations: &[Organization],
    calls: usize,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!organizations.is_empty(), "no organizations loaded");
    let mut admin = grpc::admin(channel, token);
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut of_one, mut first_page) = (histogram(), histogram());
    for i in 0..calls {
        let organization = &organizations[(i * 7_919) % organizations.len()];
        let started = Instant::now();
        let listed = admin
            .list_connections(pb::ListConnectionsRequest {
                organization_id: organization.organization_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        of_one.record(started.elapsed().as_micros().max(1) as u64)?;
        let ids: Vec<&str> = listed
            .connections
            .iter()
            .map(|c| c.connection_id.as_str())
            .collect();
        anyhow::ensure!(
            ids == [organization.connection_id.as_str()],
            "organization {} listed {ids:?}",
            organization.organization_id
        );

        let started = Instant::now();
        let page = admin
            .list_connections(pb::ListConnectionsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        first_page.record(started.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(page.connections.len() == 1, "an empty first page");
    }
    Ok(serde_json::json!({
        "organizations": organizations.len(),
        "of_one_organization": summary(&of_one),
        "first_page_of_all": summary(&first_page),
    }))
}
