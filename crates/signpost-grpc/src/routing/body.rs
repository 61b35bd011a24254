//! `WatchRoutes` written as an HTTP/2 response body of our own, each message in a
//! buffer of exactly its size that is freed once HTTP/2 has written it (a published
//! delta's is shared by every stream and lives with the delta).
//!
//! tonic's streaming body encodes every message of a stream into one buffer that lives
//! as long as the stream and keeps the size of the largest message it held (a delta:
//! about 0.7 KiB), so 10,000 idle watchers kept 7 to 13 MiB of buffers after a few
//! changes (bench/FINDINGS.md, round 13). [`WatchBody`] holds no buffer between
//! messages, and writes a large catch-up delta in pieces ([`CatchUpPieces`]), so it never
//! holds more than one piece of one. The request is read as every unary request is
//! (`crate::unary`).
//!
//! Compression is not handled here: [`super::RoutingServer`] serves `WatchRoutes`
//! through tonic when any compression encoding is enabled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::codegen::{http, Body};
use tonic::Status;

use super::codec::{framed_delta, CatchUpPieces};
use super::{WatchFrame, WatchFrames};
use crate::unary::{grpc_response, prefix_len, prefixed, trailers, PREFIX};

/// The response to a `WatchRoutes` call: `frames`, then its status as trailers.
pub fn response(
    frames: WatchFrames,
    max_message: Option<usize>,
) -> http::Response<tonic::body::Body> {
    grpc_response(tonic::body::Body::new(WatchBody {
        frames: Some(frames),
        max_message: max_message.unwrap_or(usize::MAX),
        pieces: None,
    }))
}

/// A watch stream as an HTTP/2 body: one data frame per message, then trailers.
struct WatchBody {
    /// `None` once the trailers are sent.
    frames: Option<WatchFrames>,
    /// Largest message sent.
    max_message: usize,
    /// The rest of a catch-up delta being written in pieces.
    pieces: Option<CatchUpPieces>,
}

/// `frame` as a gRPC message: the prefix and the encoded `WatchRoutesResponse`, in a
/// buffer of exactly that size. A published delta's is the one every stream sends,
/// framed once and shared (`codec::framed_delta`): a reference, not a copy, so a change
/// reaching 10,000 streams allocates and copies its message once, not 10,000 times.
fn message(frame: &WatchFrame, max_message: usize) -> Result<Bytes, Status> {
    if let WatchFrame::Delta { delta, store_epoch } = frame {
        let framed = framed_delta(delta, store_epoch);
        prefix_len("WatchRoutes", framed.len() - PREFIX, Some(max_message))?;
        return Ok(framed.clone());
    }
    prefixed(
        "WatchRoutes",
        frame.encoded_len(),
        Some(max_message),
        |buf| frame.encode(buf),
    )
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let max_message = self.max_message;
        if let Some(pieces) = self.pieces.as_mut() {
            match pieces.next_piece() {
                Some(piece) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                None => self.pieces = None,
            }
        }
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match frames.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(WatchFrame::CatchUp { delta, store_epoch }))) => {
                match CatchUpPieces::new(delta, store_epoch, Some(max_message)) {
                    Ok(mut pieces) => {
                        // The first piece holds at least the prefix and the message's head.
                        let first = pieces.next_piece().unwrap_or_default();
                        self.pieces = Some(pieces);
                        return Poll::Ready(Some(Ok(Frame::data(first))));
                    }
                    Err(status) => Err(status),
                }
            }
            Poll::Ready(Some(Ok(frame))) => match message(&frame, max_message) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => Err(status),
            },
            Poll::Ready(Some(Err(status))) => Err(status),
            Poll::Ready(None) => Ok(()),
        };
        self.frames = None;
        Poll::Ready(Some(Ok(trailers(end))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unary::tests::{progress, status_of};
    use prost::Message;

    fn body(items: Vec<Result<WatchFrame, Status>>, max_message: usize) -> WatchBody {
        WatchBody {
            frames: Some(Box::pin(futures::stream::iter(items))),
            max_message,
            pieces: None,
        }
    }

    async fn next(body: &mut WatchBody) -> Option<Frame<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|frame| frame.expect("frames are never errors: statuses are trailers"))
    }

    #[tokio::test]
    async fn each_message_is_its_own_exact_buffer_then_the_status_ends_the_body() {
        let mut body = body(
            vec![
                Ok(WatchFrame::Message(progress(7))),
                Ok(WatchFrame::Message(progress(8))),
            ],
            usize::MAX,
        );
        for revision in [7, 8] {
            let data = next(&mut body).await.unwrap().into_data().unwrap();
            let encoded = progress(revision).encode_to_vec();
            assert_eq!(data[0], 0, "uncompressed");
            assert_eq!(&data[1..5], &(encoded.len() as u32).to_be_bytes());
            assert_eq!(&data[5..], &encoded[..]);
        }
        assert!(!body.is_end_stream());
        assert_eq!(status_of(next(&mut body).await.unwrap()), "0");
        assert!(body.is_end_stream());
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn an_error_of_the_stream_is_its_status() {
        let mut body = body(
            vec![
                Ok(WatchFrame::Message(progress(1))),
                Err(Status::unavailable("the routing projection stopped")),
                Ok(WatchFrame::Message(progress(2))),
            ],
            usize::MAX,
        );
        assert!(next(&mut body).await.unwrap().is_data());
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(trailers["grpc-message"]
            .to_str()
            .unwrap()
            .contains("projection%20stopped"));
        assert!(next(&mut body).await.is_none(), "nothing after the status");
    }

    fn catch_up(routes: usize, deletes: usize) -> WatchFrame {
        let padding = "p".repeat(300);
        let upserts = (0..routes)
            .map(|n| {
                signpost_routing::EncodedRoute::encode(&signpost_api::routing::v1::Route {
                    domain: format!("d{n}.example"),
                    organization_id: format!("organization-{n}-{padding}"),
                    ..Default::default()
                })
            })
            .collect();
        let deletes = (0..deletes).map(|n| format!("gone{n}.example")).collect();
        WatchFrame::CatchUp {
            delta: std::sync::Arc::new(signpost_routing::Delta::new(42, upserts, deletes)),
            store_epoch: "epoch".into(),
        }
    }

    /// A catch-up delta is written in pieces of about `CATCH_UP_PIECE_BYTES`, each route
    /// and deleted domain whole in one, that together are the one gRPC message prost
    /// writes for it; the stream goes on after it.
    #[tokio::test]
    async fn a_catch_up_is_written_in_pieces_that_make_its_message() {
        use crate::routing::CATCH_UP_PIECE_BYTES;
        for (routes, deletes) in [(1000, 300), (0, 3), (1, 0), (0, 0)] {
            let frame = catch_up(routes, deletes);
            let encoded = frame.clone().into_message().encode_to_vec();
            let mut body = body(
                vec![Ok(frame), Ok(WatchFrame::Message(progress(43)))],
                usize::MAX,
            );
            let mut written = Vec::new();
            let mut pieces = 0;
            while written.len() < encoded.len() + 5 {
                let piece = next(&mut body).await.unwrap().into_data().unwrap();
                assert!(
                    piece.len() <= CATCH_UP_PIECE_BYTES + 1024,
                    "{}",
                    piece.len()
                );
                written.extend_from_slice(&piece);
                pieces += 1;
            }
            assert_eq!(written[0], 0, "uncompressed");
            assert_eq!(&written[1..5], &(encoded.len() as u32).to_be_bytes());
            assert_eq!(
                &written[5..],
                &encoded[..],
                "{routes} routes, {deletes} deletes"
            );
            let expected_pieces = (encoded.len() + 5).div_ceil(CATCH_UP_PIECE_BYTES);
            assert!(
                pieces >= expected_pieces.max(1) && pieces <= expected_pieces + 1,
                "{pieces} pieces for {} bytes",
                encoded.len()
            );
            let after = next(&mut body).await.unwrap().into_data().unwrap();
            assert_eq!(&after[5..], &progress(43).encode_to_vec()[..]);
        }
    }

    #[tokio::test]
    async fn a_catch_up_over_the_limit_ends_the_stream_with_out_of_range() {
        let frame = catch_up(10, 1);
        let len = frame.encoded_len();
        let mut body = super::tests::body(vec![Ok(frame.clone())], len - 1);
        assert_eq!(status_of(next(&mut body).await.unwrap()), "11");
        let mut body = super::tests::body(vec![Ok(frame)], len);
        assert!(next(&mut body).await.unwrap().is_data());
    }

    /// A published delta is the same gRPC message on every stream: each body sends the
    /// bytes framed once (the same buffer), the message prost writes for it behind its
    /// prefix; and the message limit still holds for it.
    #[tokio::test]
    async fn a_published_delta_is_one_shared_buffer_on_every_stream() {
        let WatchFrame::CatchUp { delta, store_epoch } = catch_up(3, 1) else {
            unreachable!("catch_up makes a catch-up frame")
        };
        let frame = WatchFrame::Delta { delta, store_epoch };
        let encoded = frame.clone().into_message().encode_to_vec();
        let mut sent = Vec::new();
        for _ in 0..2 {
            let mut body = body(vec![Ok(frame.clone())], usize::MAX);
            sent.push(next(&mut body).await.unwrap().into_data().unwrap());
            assert_eq!(
                status_of(next(&mut body).await.unwrap()),
                "0",
                "then the stream ends"
            );
        }
        assert_eq!(sent[0][0], 0, "uncompressed");
        assert_eq!(&sent[0][1..5], &(encoded.len() as u32).to_be_bytes());
        assert_eq!(&sent[0][5..], &encoded[..]);
        assert_eq!(sent[0].as_ptr(), sent[1].as_ptr(), "one buffer, not a copy");

        let len = encoded.len();
        let mut body = super::tests::body(vec![Ok(frame.clone())], len - 1);
        assert_eq!(status_of(next(&mut body).await.unwrap()), "11");
        let mut body = super::tests::body(vec![Ok(frame)], len);
        assert!(next(&mut body).await.unwrap().is_data());
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_stream_with_out_of_range() {
        let len = progress(1).encoded_len();
        let mut body = body(vec![Ok(WatchFrame::Message(progress(1)))], len - 1);
        assert_eq!(status_of(next(&mut body).await.unwrap()), "11");
        let mut body = super::tests::body(vec![Ok(WatchFrame::Message(progress(1)))], len);
        assert!(next(&mut body).await.unwrap().is_data());
    }
}
