//! The `WatchRoutes` stream as the edge reads it: each message decoded, but
//! each route left encoded.
//!
//! [`StreamMessage`] has the wire layout of `signpost.routing.v1.WatchRoutesResponse`
//! (the two are interchangeable on the wire; a test checks it) with every
//! `Route` as its bytes, zero-copy slices of the received frame. The edge
//! checks and keeps those bytes as they are ([`crate::route::Route::from_encoded`]),
//! so a snapshot of 100,000 routes costs no per-field allocation, decoding or
//! re-encoding for the state file. `watch_routes` opens the stream with this
//! layout; it is the generated client's `watch_routes` with another decoder.

use prost::bytes::Bytes;
use prost::Message;
use signpost_api::routing::v1 as wire;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `signpost.routing.v1.WatchRoutesResponse`, routes left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamMessage {
    /// The log position the watcher's table is at once this message is applied.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// The store epoch.
    #[prost(string, tag = "2")]
    pub store_epoch: String,
    /// What the message carries.
    #[prost(oneof = "StreamKind", tags = "3, 4, 5, 6, 7")]
    pub kind: Option<StreamKind>,
}

/// `WatchRoutesResponse.kind`, routes left encoded.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum StreamKind {
    /// Part of a snapshot.
    #[prost(message, tag = "3")]
    Snapshot(EncodedSnapshotChunk),
    /// The snapshot is complete.
    #[prost(message, tag = "4")]
    SnapshotEnd(wire::SnapshotEnd),
    /// The route changes of one command.
    #[prost(message, tag = "5")]
    Delta(EncodedRouteDelta),
    /// Forget the table; a snapshot follows.
    #[prost(message, tag = "6")]
    Reset(wire::Reset),
    /// Nothing changed up to the revision.
    #[prost(message, tag = "7")]
    Progress(wire::Progress),
}

/// `signpost.routing.v1.SnapshotChunk`, routes left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedSnapshotChunk {
    /// Each an encoded `Route`.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub routes: Vec<Bytes>,
}

/// `signpost.routing.v1.RouteDelta`, routes left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedRouteDelta {
    /// Routes added or replaced, each an encoded `Route`.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub upserts: Vec<Bytes>,
    /// Domains that now route to password.
    #[prost(string, repeated, tag = "2")]
    pub deletes: Vec<String>,
}

/// `signpost.routing.v1.EdgeState` (the state file), routes left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EncodedEdgeState {
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    #[prost(string, tag = "2")]
    pub store_epoch: String,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub routes: Vec<Bytes>,
}

fn encode_routes(routes: Vec<wire::Route>) -> Vec<Bytes> {
    routes
        .into_iter()
        .map(|route| Bytes::from(route.encode_to_vec()))
        .collect()
}

/// A decoded message (tests, benches, tools) in the edge's layout.
impl From<wire::WatchRoutesResponse> for StreamMessage {
    fn from(message: wire::WatchRoutesResponse) -> Self {
        use wire::watch_routes_response::Kind;
        StreamMessage {
            revision: message.revision,
            store_epoch: message.store_epoch,
            kind: message.kind.map(|kind| match kind {
                Kind::Snapshot(chunk) => StreamKind::Snapshot(EncodedSnapshotChunk {
                    routes: encode_routes(chunk.routes),
                }),
                Kind::SnapshotEnd(end) => StreamKind::SnapshotEnd(end),
                Kind::Delta(delta) => StreamKind::Delta(EncodedRouteDelta {
                    upserts: encode_routes(delta.upserts),
                    deletes: delta.deletes,
                }),
                Kind::Reset(reset) => StreamKind::Reset(reset),
                Kind::Progress(progress) => StreamKind::Progress(progress),
            }),
        }
    }
}

/// Opens `WatchRoutes` on `channel`, decoding messages as [`StreamMessage`]s.
pub(crate) async fn watch_routes(
    channel: Channel,
    request: tonic::Request<wire::WatchRoutesRequest>,
) -> Result<tonic::Streaming<StreamMessage>, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|error| tonic::Status::unknown(format!("service was not ready: {error}")))?;
    let codec = tonic_prost::ProstCodec::<wire::WatchRoutesRequest, StreamMessage>::default();
    let path = PathAndQuery::from_static("/signpost.routing.v1.RoutingService/WatchRoutes");
    let mut request = request;
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "signpost.routing.v1.RoutingService",
        "WatchRoutes",
    ));
    Ok(client
        .server_streaming(request, path, codec)
        .await?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};
    use wire::watch_routes_response::Kind;

    fn decoded_messages() -> Vec<wire::WatchRoutesResponse> {
        let message = |kind| wire::WatchRoutesResponse {
            revision: 9,
            store_epoch: "epoch".to_owned(),
            kind: Some(kind),
        };
        vec![
            message(Kind::Snapshot(wire::SnapshotChunk {
                routes: vec![saml_route("a.com"), oidc_route("b.com")],
            })),
            message(Kind::SnapshotEnd(wire::SnapshotEnd { route_count: 2 })),
            message(Kind::Delta(wire::RouteDelta {
                upserts: vec![oidc_route("c.com")],
                deletes: vec!["a.com".to_owned()],
            })),
            message(Kind::Reset(wire::Reset { reason: 2 })),
            message(Kind::Progress(wire::Progress {})),
            wire::WatchRoutesResponse::default(),
        ]
    }

    #[test]
    fn the_edge_layout_is_the_wire_layout() {
        for decoded in decoded_messages() {
            let bytes = decoded.encode_to_vec();
            let ours = StreamMessage::decode(Bytes::from(bytes.clone())).unwrap();
            assert_eq!(ours, StreamMessage::from(decoded.clone()));
            assert_eq!(ours.encode_to_vec(), bytes);
            assert_eq!(
                wire::WatchRoutesResponse::decode(ours.encode_to_vec().as_slice()).unwrap(),
                decoded
            );
        }
        let state = wire::EdgeState {
            revision: 3,
            store_epoch: "e".to_owned(),
            routes: vec![saml_route("a.com"), oidc_route("b.com")],
        };
        let ours = EncodedEdgeState::decode(state.encode_to_vec().as_slice()).unwrap();
        assert_eq!(ours.encode_to_vec(), state.encode_to_vec());
        assert_eq!(ours.routes[1], oidc_route("b.com").encode_to_vec());
    }
}
