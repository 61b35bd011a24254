//! The `WatchRoutes` codec: what every watcher receives alike is encoded once.
//!
//! A published delta is the same message for every stream (same revision, same
//! store epoch, same routes), so it is encoded once, framed as a gRPC message
//! ([`encode_delta`], cached in the [`Delta`]), and each stream's body sends a reference
//! to those bytes ([`WatchFrame::Delta`], [`framed_delta`]): no copy and no buffer of its
//! own. Snapshot chunks copy the table's routes, which are
//! kept encoded ([`EncodedRoute`]), into their frame ([`WatchFrame::SnapshotChunk`]).
//! A catch-up delta is built for one stream ([`WatchFrame::CatchUp`]) and can be
//! megabytes: the body writes it in pieces ([`CatchUpPieces`]), so a stream never holds
//! more than one piece of it encoded. Everything else is an ordinary message.
//!
//! The bytes are exactly those prost writes for the equivalent
//! `WatchRoutesResponse` (same field order, defaults left out), so a client
//! cannot tell the difference: the tests below hold the two side by side.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use signpost_api::routing::v1 as wire;
use signpost_routing::{Delta, EncodedRoute};
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use crate::unary::PREFIX;

/// `WatchRoutesResponse.revision`.
const RESPONSE_REVISION: u32 = 1;
/// `WatchRoutesResponse.store_epoch`.
const RESPONSE_STORE_EPOCH: u32 = 2;
/// `WatchRoutesResponse.snapshot` (a `SnapshotChunk`).
const RESPONSE_SNAPSHOT: u32 = 3;
/// `WatchRoutesResponse.delta` (a `RouteDelta`).
const RESPONSE_DELTA: u32 = 5;
/// `SnapshotChunk.routes` and `RouteDelta.upserts`.
const ROUTES: u32 = 1;
/// `RouteDelta.deletes`.
const DELETES: u32 = 2;

/// One message of a watch stream, in the form it is written to the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchFrame {
    /// A published delta: its message is encoded once, by the first stream that
    /// writes it, and shared by every other ([`Delta::encoded_message`]).
    Delta {
        /// The delta, shared with the projection's history.
        delta: Arc<Delta>,
        /// The store epoch.
        store_epoch: Arc<str>,
    },
    /// A catch-up delta built for this stream ([`signpost_routing::Pulled::CatchUp`]),
    /// encoded for it alone, in pieces by the body ([`CatchUpPieces`]).
    CatchUp {
        /// The delta.
        delta: Arc<Delta>,
        /// The store epoch.
        store_epoch: Arc<str>,
    },
    /// A snapshot chunk, encoded from the table's routes where they are.
    SnapshotChunk {
        /// The revision of the snapshot.
        revision: u64,
        /// The store epoch.
        store_epoch: Arc<str>,
        /// The chunk's routes.
        routes: Vec<EncodedRoute>,
    },
    /// Any other message, encoded for this stream.
    Message(wire::WatchRoutesResponse),
}

impl WatchFrame {
    /// Length of the encoded `WatchRoutesResponse` (a delta's is encoded then, if no
    /// stream has yet).
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Delta { delta, store_epoch } => shared_delta(delta, store_epoch).len(),
            Self::CatchUp { delta, store_epoch } => delta_len(delta, store_epoch),
            Self::SnapshotChunk {
                revision,
                store_epoch,
                routes,
            } => route_list_response_len(
                *revision,
                store_epoch,
                RESPONSE_SNAPSHOT,
                route_list_len(routes, &[]),
            ),
            Self::Message(message) => message.encoded_len(),
        }
    }

    /// Writes the `WatchRoutesResponse`: the same bytes as prost writes for
    /// [`WatchFrame::into_message`]. `buf` must have room for
    /// [`WatchFrame::encoded_len`] bytes (a growing buffer always has).
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Self::Delta { delta, store_epoch } => buf.put_slice(shared_delta(delta, store_epoch)),
            Self::CatchUp { delta, store_epoch } => encode_route_list_response(
                delta.revision,
                store_epoch,
                RESPONSE_DELTA,
                &delta.upserts,
                &delta.deletes,
                buf,
            ),
            Self::SnapshotChunk {
                revision,
                store_epoch,
                routes,
            } => encode_route_list_response(
                *revision,
                store_epoch,
                RESPONSE_SNAPSHOT,
                routes,
                &[],
                buf,
            ),
            Self::Message(message) => message
                .encode(buf)
                .expect("a buffer with room for the message"),
        }
    }

    /// The message this frame carries, for a caller that needs it as a value
    /// (the generated `RoutingService` server; tests).
    pub fn into_message(self) -> wire::WatchRoutesResponse {
        use wire::watch_routes_response::Kind;
        let copy = |routes: &[EncodedRoute]| -> Vec<wire::Route> {
            routes.iter().map(EncodedRoute::decode).collect()
        };
        match self {
            Self::Delta { delta, store_epoch } | Self::CatchUp { delta, store_epoch } => {
                wire::WatchRoutesResponse {
                    revision: delta.revision,
                    store_epoch: store_epoch.as_ref().to_owned(),
                    kind: Some(Kind::Delta(wire::RouteDelta {
                        upserts: copy(&delta.upserts),
                        deletes: delta.deletes.clone(),
                    })),
                }
            }
            Self::SnapshotChunk {
                revision,
                store_epoch,
                routes,
            } => wire::WatchRoutesResponse {
                revision,
                store_epoch: store_epoch.as_ref().to_owned(),
                kind: Some(Kind::Snapshot(wire::SnapshotChunk {
                    routes: copy(&routes),
                })),
            },
            Self::Message(message) => message,
        }
    }
}

/// `delta`'s message as a gRPC message (the prefix, then the `WatchRoutesResponse`),
/// encoded once for every stream: what a stream's body sends for it, by reference.
pub(super) fn framed_delta<'a>(delta: &'a Delta, store_epoch: &str) -> &'a Bytes {
    delta.encoded_message(|delta| encode_delta(store_epoch, delta))
}

/// `delta`'s message alone ([`framed_delta`] without its prefix).
fn shared_delta<'a>(delta: &'a Delta, store_epoch: &str) -> &'a [u8] {
    &framed_delta(delta, store_epoch)[PREFIX..]
}

/// The `WatchRoutesResponse` of `delta` in the store epoch `store_epoch`, framed as a
/// gRPC message (uncompressed, its length in the prefix): what every watcher receives
/// for it, encoded once ([`Delta::encoded_message`]). A message too long for the prefix
/// is never sent: the body refuses it by its length first.
fn encode_delta(store_epoch: &str, delta: &Delta) -> Bytes {
    let len = delta_len(delta, store_epoch);
    let mut buf = Vec::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    encode_route_list_response(
        delta.revision,
        store_epoch,
        RESPONSE_DELTA,
        &delta.upserts,
        &delta.deletes,
        &mut buf,
    );
    debug_assert_eq!(buf.len(), PREFIX + len);
    buf.into()
}

/// Length of `delta`'s `WatchRoutesResponse`.
fn delta_len(delta: &Delta, store_epoch: &str) -> usize {
    route_list_response_len(
        delta.revision,
        store_epoch,
        RESPONSE_DELTA,
        route_list_len(&delta.upserts, &delta.deletes),
    )
}

/// Length of the `SnapshotChunk` or `RouteDelta` (both: routes at field 1,
/// deletions at field 2).
fn route_list_len(routes: &[EncodedRoute], deletes: &[String]) -> usize {
    routes
        .iter()
        .map(|route| route.field_len(ROUTES))
        .sum::<usize>()
        + prost::encoding::string::encoded_len_repeated(DELETES, deletes)
}

/// Length of a `WatchRoutesResponse` whose kind (field `kind_field`) is a
/// `SnapshotChunk` or a `RouteDelta` of `kind_len` bytes ([`route_list_len`]).
fn route_list_response_len(
    revision: u64,
    store_epoch: &str,
    kind_field: u32,
    kind_len: usize,
) -> usize {
    let revision_len = match revision {
        0 => 0,
        _ => prost::encoding::uint64::encoded_len(RESPONSE_REVISION, &revision),
    };
    let store_epoch_len = match store_epoch.len() {
        0 => 0,
        len => key_len(RESPONSE_STORE_EPOCH) + encoded_len_varint(len as u64) + len,
    };
    // The kind is a oneof member: written even when empty.
    revision_len
        + store_epoch_len
        + key_len(kind_field)
        + encoded_len_varint(kind_len as u64)
        + kind_len
}

/// Writes a `WatchRoutesResponse` whose kind (field `kind_field`) is a
/// `SnapshotChunk` or a `RouteDelta`, as prost does: fields in number order,
/// the revision and the epoch left out when they are default.
fn encode_route_list_response(
    revision: u64,
    store_epoch: &str,
    kind_field: u32,
    routes: &[EncodedRoute],
    deletes: &[String],
    buf: &mut impl BufMut,
) {
    let kind_len = route_list_len(routes, deletes);
    encode_route_list_head(revision, store_epoch, kind_field, kind_len, buf);
    for route in routes {
        route.encode_field(ROUTES, buf);
    }
    prost::encoding::string::encode_repeated(DELETES, deletes, buf);
}

/// Writes what comes before the routes of [`encode_route_list_response`], whose kind is
/// `kind_len` bytes.
fn encode_route_list_head(
    revision: u64,
    store_epoch: &str,
    kind_field: u32,
    kind_len: usize,
    buf: &mut impl BufMut,
) {
    if revision != 0 {
        prost::encoding::uint64::encode(RESPONSE_REVISION, &revision, buf);
    }
    if !store_epoch.is_empty() {
        encode_key(RESPONSE_STORE_EPOCH, WireType::LengthDelimited, buf);
        encode_varint(store_epoch.len() as u64, buf);
        buf.put_slice(store_epoch.as_bytes());
    }
    encode_key(kind_field, WireType::LengthDelimited, buf);
    encode_varint(kind_len as u64, buf);
}

/// About how many bytes each piece of a catch-up delta holds ([`CatchUpPieces`]).
pub const CATCH_UP_PIECE_BYTES: usize = 64 * 1024;

/// A catch-up delta as a gRPC message (the 5-byte prefix, then the same bytes as
/// [`WatchFrame::encode`]) in pieces of about [`CATCH_UP_PIECE_BYTES`], each encoded
/// when it is asked for: what the stream holds of it encoded is one piece, whatever the
/// delta's size. Every route and deleted domain is whole in one piece.
#[derive(Debug)]
pub struct CatchUpPieces {
    delta: Arc<Delta>,
    store_epoch: Arc<str>,
    /// The length of the `WatchRoutesResponse`, and of its `RouteDelta`.
    len: u32,
    kind_len: usize,
    started: bool,
    next_route: usize,
    next_delete: usize,
}

impl CatchUpPieces {
    /// The pieces of `delta`'s message, refused with `OUT_OF_RANGE` above `max_message`
    /// bytes (`None`: no limit).
    pub fn new(
        delta: Arc<Delta>,
        store_epoch: Arc<str>,
        max_message: Option<usize>,
    ) -> Result<Self, Status> {
        let kind_len = route_list_len(&delta.upserts, &delta.deletes);
        let len = route_list_response_len(delta.revision, &store_epoch, RESPONSE_DELTA, kind_len);
        let len = crate::unary::prefix_len("WatchRoutes", len, max_message)?;
        Ok(Self {
            delta,
            store_epoch,
            len,
            kind_len,
            started: false,
            next_route: 0,
            next_delete: 0,
        })
    }

    /// The next piece; `None` once the message is written.
    pub fn next_piece(&mut self) -> Option<bytes::Bytes> {
        let delta = &*self.delta;
        let done = |this: &Self| {
            this.next_route == delta.upserts.len() && this.next_delete == delta.deletes.len()
        };
        if self.started && done(self) {
            return None;
        }
        let mut buf = bytes::BytesMut::with_capacity(CATCH_UP_PIECE_BYTES + 1024);
        if !self.started {
            self.started = true;
            buf.put_u8(0);
            buf.put_u32(self.len);
            encode_route_list_head(
                delta.revision,
                &self.store_epoch,
                RESPONSE_DELTA,
                self.kind_len,
                &mut buf,
            );
        }
        while buf.len() < CATCH_UP_PIECE_BYTES && self.next_route < delta.upserts.len() {
            delta.upserts[self.next_route].encode_field(ROUTES, &mut buf);
            self.next_route += 1;
        }
        while buf.len() < CATCH_UP_PIECE_BYTES
            && self.next_route == delta.upserts.len()
            && self.next_delete < delta.deletes.len()
        {
            prost::encoding::string::encode(DELETES, &delta.deletes[self.next_delete], &mut buf);
            self.next_delete += 1;
        }
        Some(buf.freeze())
    }
}

/// The codec `WatchRoutes` is served with: [`WatchFrame`]s out, prost-decoded
/// `WatchRoutesRequest`s in.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchRoutesCodec;

impl Codec for WatchRoutesCodec {
    type Encode = WatchFrame;
    type Decode = wire::WatchRoutesRequest;
    type Encoder = WatchFrameEncoder;
    type Decoder = ProstDecoder<wire::WatchRoutesRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        WatchFrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(
            WATCH_REQUEST_BUFFER_BYTES,
            WATCH_YIELD_BYTES,
        ))
    }
}

/// The first size of the buffer a `WatchRoutesRequest` is read into (tonic's default:
/// 8 KiB). The request is an epoch and a revision, under 100 bytes; a larger one grows
/// the buffer as it arrives, up to the server's message limit. With 10,000 edges opening
/// their streams at once, thousands of requests are read at the same moment, and 8 KiB
/// each was the largest item of the server's memory at that moment (heaptrack: 15.6 MB).
pub const WATCH_REQUEST_BUFFER_BYTES: usize = 256;

/// Writes [`WatchFrame`]s into the frames tonic sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchFrameEncoder;

/// The first size of a watch stream's encode buffer (tonic's default: 8 KiB): 64 bytes.
/// (Used when the server compresses, which routes `WatchRoutes` through tonic; without
/// compression the stream holds no buffer between messages: module `body`.)
/// A stream is idle most of its life, and the buffer lives as long as the stream: with
/// 10,000 edges watching, 8 KiB each was most of a stream's memory, and 1 KiB still
/// about a sixth of it. The first message sizes the buffer (each frame reserves its
/// `encoded_len` in one step), and later ones reuse it. Not zero: with compression on,
/// tonic grows its output buffer in steps of this size.
pub const WATCH_BUFFER_BYTES: usize = 64;

/// How much a watch stream gathers before handing it to HTTP/2 when messages are
/// ready back to back (tonic's default).
const WATCH_YIELD_BYTES: usize = 32 * 1024;

impl Encoder for WatchFrameEncoder {
    type Item = WatchFrame;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(WATCH_BUFFER_BYTES, WATCH_YIELD_BYTES)
    }

    fn encode(&mut self, frame: WatchFrame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(frame.encoded_len());
        frame.encode(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::watch_routes_response::Kind;

    fn route(domain: &str, connection_id: &str) -> EncodedRoute {
        EncodedRoute::encode(&wire::Route {
            domain: domain.to_owned(),
            connection_id: connection_id.to_owned(),
            ..Default::default()
        })
    }

    /// A route with every kind of field set: strings, enums, nested and
    /// repeated messages, a map.
    fn full_route(domain: &str) -> EncodedRoute {
        EncodedRoute::encode(&wire::Route {
            domain: domain.to_owned(),
            organization_id: format!("organization-of-{domain}"),
            organization_external_id: "ext-1".to_owned(),
            connection_id: format!("connection-of-{domain}"),
            protocol: 1,
            saml: Some(wire::SamlRoute {
                idp_entity_id: "https://idp.example.com/e".to_owned(),
                idp_sso_url: "https://idp.example.com/sso".to_owned(),
                idp_sso_binding: 1,
                signing_certificates: vec![wire::CertificateFingerprint {
                    sha256_fingerprint: "ab".repeat(32),
                    not_after_unix: 1_900_000_000,
                }],
                sp_entity_id: "https://signpost.example.com/sp".to_owned(),
                acs_url: "https://signpost.example.com/acs".to_owned(),
            }),
            oidc: Some(wire::OidcRoute {
                issuer: "https://issuer.example.com".to_owned(),
                scopes: vec!["openid".to_owned(), "email".to_owned()],
                ..Default::default()
            }),
            claim_mapping: Some(Default::default()),
            group_roles: [
                ("admins", "admin"),
                ("staff", "member"),
                ("ops", "operator"),
            ]
            .into_iter()
            .map(|(group, role)| (group.to_owned(), role.to_owned()))
            .collect(),
            require_group: true,
            sso_policy: 2,
        })
    }

    /// The message the stream built per watcher before deltas were shared.
    fn delta_message(epoch: &str, delta: &Delta) -> wire::WatchRoutesResponse {
        wire::WatchRoutesResponse {
            revision: delta.revision,
            store_epoch: epoch.to_owned(),
            kind: Some(Kind::Delta(wire::RouteDelta {
                upserts: delta.upserts.iter().map(EncodedRoute::decode).collect(),
                deletes: delta.deletes.clone(),
            })),
        }
    }

    fn frame_bytes(frame: &WatchFrame) -> Vec<u8> {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        buf
    }

    fn deltas() -> Vec<Delta> {
        let mut deltas = Vec::new();
        for (revision, upserts, deletes) in [
            (
                42,
                vec![full_route("acme.com"), full_route("acme.co.uk")],
                vec![],
            ),
            (
                7,
                vec![],
                vec!["gone.com".to_owned(), "also-gone.org".to_owned()],
            ),
            (
                u64::MAX,
                vec![route("a.example", "c1"), route(&"long".repeat(100), "c2")],
                vec!["x.example".to_owned()],
            ),
            (0, vec![], vec![]),
        ] {
            deltas.push(Delta::new(revision, upserts, deletes));
        }
        deltas
    }

    #[test]
    fn a_shared_delta_is_byte_for_byte_the_message_built_per_stream() {
        for epoch in ["c4d713b9-4e47-4641-a9c4-2d75981738a8", ""] {
            for delta in deltas() {
                let old = delta_message(epoch, &delta);
                let framed = encode_delta(epoch, &delta);
                assert_eq!(&framed[PREFIX..], &old.encode_to_vec()[..]);
                let frame = WatchFrame::Delta {
                    delta: Arc::new(delta),
                    store_epoch: epoch.into(),
                };
                let sent = frame_bytes(&frame);
                assert_eq!(sent, old.encode_to_vec());
                assert_eq!(wire::WatchRoutesResponse::decode(&sent[..]).unwrap(), old);
                assert_eq!(frame.into_message(), old);
            }
        }
    }

    #[test]
    fn a_delta_is_encoded_once_for_every_stream() {
        let delta = Arc::new(deltas().remove(0));
        let frame = |delta: &Arc<Delta>| WatchFrame::Delta {
            delta: delta.clone(),
            store_epoch: "epoch".into(),
        };
        let first = frame_bytes(&frame(&delta));
        let shared = delta.encoded_message(|_| unreachable!("encoded by the first frame"));
        assert_eq!(&shared[PREFIX..], &first[..]);
        assert_eq!(shared[0], 0, "uncompressed");
        assert_eq!(&shared[1..PREFIX], &(first.len() as u32).to_be_bytes());
        assert_eq!(frame_bytes(&frame(&delta)), first);
        // Every stream sends the same bytes, not a copy of them.
        let framed = framed_delta(&delta, "epoch");
        assert_eq!(framed.as_ptr(), shared.as_ptr());
        // A clone (which may be changed) does not carry the encoding along.
        let clone = Delta::clone(&delta);
        assert_eq!(clone, *delta);
        assert!(clone.encoded_message(|_| Bytes::new()).is_empty());
    }

    #[test]
    fn a_snapshot_chunk_is_byte_for_byte_the_message_built_per_stream() {
        let routes: Vec<_> = (0..300)
            .map(|i| full_route(&format!("domain-{i}.example")))
            .collect();
        for (revision, epoch, routes) in [
            (500_001, "epoch", routes.clone()),
            (0, "", routes[..1].to_vec()),
            (3, "epoch", vec![]),
        ] {
            let old = wire::WatchRoutesResponse {
                revision,
                store_epoch: epoch.to_owned(),
                kind: Some(Kind::Snapshot(wire::SnapshotChunk {
                    routes: routes.iter().map(EncodedRoute::decode).collect(),
                })),
            };
            let frame = WatchFrame::SnapshotChunk {
                revision,
                store_epoch: epoch.into(),
                routes,
            };
            assert_eq!(frame_bytes(&frame), old.encode_to_vec());
            assert_eq!(frame.into_message(), old);
        }
    }

    /// What tonic sends for `items` encoded by `encoder` (gRPC framing, compressed or
    /// not): the data, and the trailers.
    fn sent_by_tonic<E>(
        encoder: E,
        items: Vec<Result<E::Item, Status>>,
        compression: Option<tonic::codec::CompressionEncoding>,
    ) -> (Vec<u8>, Vec<(String, Vec<u8>)>)
    where
        E: Encoder<Error = Status>,
    {
        use tonic::codegen::Body;
        let body = tonic::codec::EncodeBody::new_server(
            encoder,
            futures::stream::iter(items),
            compression,
            Default::default(),
            None,
        );
        let mut body = std::pin::pin!(body);
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        while let Some(frame) =
            futures::executor::block_on(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)))
        {
            match frame.expect("a frame").into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers.extend(
                    frame
                        .into_trailers()
                        .expect("trailers")
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())),
                ),
            }
        }
        (data, trailers)
    }

    #[test]
    fn a_stream_of_frames_goes_out_as_the_stream_of_messages_did() {
        let epoch = "c4d713b9-4e47-4641-a9c4-2d75981738a8";
        let snapshot: Vec<_> = (0..5)
            .map(|i| full_route(&format!("d{i}.example")))
            .collect();
        let reset = wire::WatchRoutesResponse {
            revision: 12,
            store_epoch: epoch.to_owned(),
            kind: Some(Kind::Reset(wire::Reset {
                reason: wire::ResetReason::HistoryNotKept as i32,
            })),
        };
        let mut frames = vec![
            Ok(WatchFrame::Message(reset.clone())),
            Ok(WatchFrame::SnapshotChunk {
                revision: 12,
                store_epoch: epoch.into(),
                routes: snapshot.clone(),
            }),
        ];
        let mut messages = vec![
            Ok(reset),
            Ok(wire::WatchRoutesResponse {
                revision: 12,
                store_epoch: epoch.to_owned(),
                kind: Some(Kind::Snapshot(wire::SnapshotChunk {
                    routes: snapshot.iter().map(EncodedRoute::decode).collect(),
                })),
            }),
        ];
        for delta in deltas() {
            messages.push(Ok(delta_message(epoch, &delta)));
            frames.push(Ok(WatchFrame::Delta {
                delta: Arc::new(delta),
                store_epoch: epoch.into(),
            }));
        }
        frames.push(Err(Status::unavailable("the routing projection stopped")));
        messages.push(Err(Status::unavailable("the routing projection stopped")));
        for compression in [None, Some(tonic::codec::CompressionEncoding::Gzip)] {
            let new = sent_by_tonic(WatchFrameEncoder, frames.clone(), compression);
            let old = sent_by_tonic(
                tonic_prost::ProstEncoder::<wire::WatchRoutesResponse>::default(),
                messages.clone(),
                compression,
            );
            assert!(new.0.len() > 100);
            assert_eq!(new, old);
        }
    }

    #[test]
    fn other_messages_are_encoded_as_prost_does() {
        let message = wire::WatchRoutesResponse {
            revision: 9,
            store_epoch: "epoch".to_owned(),
            kind: Some(Kind::Reset(wire::Reset {
                reason: wire::ResetReason::TooSlow as i32,
            })),
        };
        let frame = WatchFrame::Message(message.clone());
        assert_eq!(frame_bytes(&frame), message.encode_to_vec());
        assert_eq!(frame.into_message(), message);
    }
}
