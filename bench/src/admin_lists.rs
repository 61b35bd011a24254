//! Admin lists among every loaded organization (no goal; beside scenario 2): one call
//! at a time, `ListConnections` of one organization and the first page of all
//! connections, taking turns. A page is built under the read model's lock, so a list's
//! time is also time the model's writer can wait. And `ListSetupLinks` page after page
//! on organizations whose links are all closed: the read model keeps a closed link's
//! state alone, so each one's view is read from its stream in the log.

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

/// `ListSetupLinks` across every organization, `pages` pages of `page_size` one after
/// another from the first (on the linked population every link is closed, so each view
/// on a page is folded from the log); every page but the last must be full.
pub async fn setup_link_pages(
    channel: &Channel,
    token: &str,
    page_size: i32,
    pages: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut admin = grpc::admin(channel, token);
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut page_token = String::new();
    let mut links = 0;
    for _ in 0..pages {
        let started = Instant::now();
        let page = admin
            .list_setup_links(pb::ListSetupLinksRequest {
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        latencies.record(started.elapsed().as_micros().max(1) as u64)?;
        links += page.setup_links.len();
        anyhow::ensure!(
            page.setup_links.len() == page_size as usize || page.next_page_token.is_empty(),
            "a short page before the end"
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(serde_json::json!({
        "page_size": page_size,
        "links": links,
        "pages": summary(&latencies),
    }))
}
