//! `WatchRoutes` written as an HTTP/2 response body of our own, each message in a
//! buffer of exactly its size that is freed once HTTP/2 has written it.
//!
//! tonic's streaming body encodes every message of a stream into one buffer that lives
//! as long as the stream and keeps the size of the largest message it held (a delta:
//! about 0.7 KiB), so 10,000 idle watchers kept 7 to 13 MiB of buffers after a few
//! changes (bench/FINDINGS.md, round 13). [`WatchBody`] holds no buffer between
//! messages. The request is read as every unary request is (`crate::unary`).
//!
//! Compression is not handled here: [`super::RoutingServer`] serves `WatchRoutes`
//! through tonic when any compression encoding is enabled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::codegen::{http, Body};
use tonic::Status;

use super::{WatchFrame, WatchFrames};
use crate::unary::{grpc_response, prefixed, trailers};

/// The response to a `WatchRoutes` call: `frames`, then its status as trailers.
pub fn response(
    frames: WatchFrames,
    max_message: Option<usize>,
) -> http::Response<tonic::body::Body> {
    grpc_response(tonic::body::Body::new(WatchBody {
        frames: Some(frames),
        max_message: max_message.unwrap_or(usize::MAX),
    }))
}

/// A watch stream as an HTTP/2 body: one data frame per message, then trailers.
struct WatchBody {
    /// `None` once the trailers are sent.
    frames: Option<WatchFrames>,
    /// Largest message sent.
    max_message: usize,
}

/// `frame` as a gRPC message: the prefix and the encoded `WatchRoutesResponse`, in a
/// buffer of exactly that size.
fn message(frame: &WatchFrame, max_message: usize) -> Result<Bytes, Status> {
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
        let Some(frames) = self.frames.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match frames.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
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

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_stream_with_out_of_range() {
        let len = progress(1).encoded_len();
        let mut body = body(vec![Ok(WatchFrame::Message(progress(1)))], len - 1);
        assert_eq!(status_of(next(&mut body).await.unwrap()), "11");
        let mut body = super::tests::body(vec![Ok(WatchFrame::Message(progress(1)))], len);
        assert!(next(&mut body).await.unwrap().is_data());
    }
}
