//! Scenario 7, audit: with a large log over many organizations, one
//! `ListAuditEvents` page (50 entries, one organization, a time range) over
//! gRPC, one request at a time (the latency a person waits) and 64 in flight
//! (what the server sustains); `GetRoutingAt` of one organization's domain, one
//! at a time; `ExportAuditEvents` of the whole history in
//! events/s; `VerifyLog` of the whole chain in events/s. When the server does
//! not implement the audit service the figures are "not available".

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use signpost_api::audit::v1 as pb;
use tonic::transport::Channel;

use crate::populate::Populated;
use crate::{grpc, load};

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn page_load(
    channels: &[Channel],
    populated: &Populated,
    in_flight: usize,
    duration: Duration,
) -> impl std::future::Future<Output = load::LoadReport> {
    let clients: Arc<Vec<grpc::Audit>> = Arc::new(
        channels
            .iter()
            .map(|c| grpc::audit(c, &populated.token))
            .collect(),
    );
    let organizations: Arc<Vec<String>> = Arc::new(
        populated
            .organizations
            .iter()
            .map(|o| o.organization_id.clone())
            .collect(),
    );
    let start = timestamp(populated.started - chrono::Duration::seconds(1));
    let end = timestamp(populated.ended + chrono::Duration::seconds(1));
    load::run(in_flight, duration, move |worker, i| {
        let mut client = clients[worker % clients.len()].clone();
        let organization = organizations
            [((worker as u64 * 7919 + i * 104_729) % organizations.len() as u64) as usize]
            .clone();
        let (start, end) = (start, end);
        async move {
            match client
                .list_audit_events(pb::ListAuditEventsRequest {
                    filter: Some(pb::AuditFilter {
                        organization_id: organization,
                        start_time: Some(start),
                        end_time: Some(end),
                        ..Default::default()
                    }),
                    page_size: 50,
                    ..Default::default()
                })
                .await
            {
                Ok(reply) => !reply.into_inner().entries.is_empty(),
                Err(_) => false,
            }
        }
    })
}

/// `GetRoutingAt` of one organization's domain now, one call at a time: folded when
/// asked from the organization's own streams, so it costs what its history costs.
fn routing_at_load(
    channels: &[Channel],
    populated: &Populated,
    duration: Duration,
) -> impl std::future::Future<Output = load::LoadReport> {
    let client = grpc::audit(&channels[0], &populated.token);
    let organizations = populated.organizations.len() as u64;
    load::run(1, duration, move |_, i| {
        let mut client = client.clone();
        let domain = crate::populate::domain_of(((i * 104_729) % organizations) as usize);
        async move {
            match client
                .get_routing_at(pb::GetRoutingAtRequest {
                    subject: Some(pb::get_routing_at_request::Subject::Domain(domain)),
                    at: None,
                })
                .await
            {
                Ok(reply) => reply
                    .into_inner()
                    .domains
                    .first()
                    .is_some_and(|d| d.route.is_some()),
                Err(_) => false,
            }
        }
    })
}

/// Whether the server answers `AuditService` at all.
async fn available(channel: &Channel, token: &str) -> Result<(), String> {
    match grpc::audit(channel, token)
        .list_audit_events(pb::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Everything scenario 7 measured.
pub async fn run(
    channels: &[Channel],
    populated: &Populated,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    let token = &populated.token;
    if let Err(reason) = available(&channels[0], token).await {
        return Ok(serde_json::json!({ "available": false, "reason": reason }));
    }
    let one = page_load(channels, populated, 1, duration).await;
    let many = page_load(channels, populated, in_flight, duration).await;
    let routing_at = routing_at_load(channels, populated, duration / 2).await;

    let started = Instant::now();
    let mut stream = grpc::audit(&channels[0], token)
        .export_audit_events(pb::ExportAuditEventsRequest::default())
        .await?
        .into_inner();
    let mut exported = 0u64;
    let mut head = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // Decoded, as a client keeping them would (the server sends them encoded).
        exported += batch.decode_entries()?.len() as u64;
        head = batch.head;
    }
    let export_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let verified = grpc::audit(&channels[0], token)
        .verify_log(pb::VerifyLogRequest::default())
        .await?
        .into_inner();
    let verify_seconds = started.elapsed().as_secs_f64();

    Ok(serde_json::json!({
        "available": true,
        "events": populated.events,
        "organizations": populated.organizations.len(),
        "page_sequential": one.json(),
        "page_concurrent": many.json(),
        "page_in_flight": in_flight,
        "routing_at_sequential": routing_at.json(),
        "export_entries": exported, "export_head": head, "export_seconds": export_seconds,
        "export_per_second": exported as f64 / export_seconds,
        "verify_intact": verified.intact, "verify_events": verified.events_checked,
        "verify_seconds": verify_seconds,
        "verify_per_second": verified.events_checked as f64 / verify_seconds,
    }))
}
