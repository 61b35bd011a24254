//! `WatchRoutes` written as an HTTP/2 response body of our own, each message in a
//! buffer of exactly its size that is freed once HTTP/2 has written it.
//!
//! tonic's streaming body encodes every message of a stream into one buffer that
//! lives as long as the stream and keeps the size of the largest message it held
//! (a delta: about 0.7 KiB), so 10,000 idle watchers kept 7 to 13 MiB of buffers
//! after a few changes (bench/FINDINGS.md, round 13). [`WatchBody`] holds no buffer
//! between messages. The request is read the way tonic reads it (one message, within
//! the server's size limit), and errors become the same `grpc-status` trailers.
//!
//! Compression is not handled here: [`super::RoutingServer`] serves `WatchRoutes`
//! through tonic when any compression encoding is enabled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use signpost_api::routing::v1 as wire;
use tonic::codegen::{http, Body, StdError};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status};

use super::{WatchFrame, WatchFrames};
use crate::status::status;

/// Bytes of a gRPC message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

/// tonic's default limit on a request message, used when the server sets none.
const DEFAULT_MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Reads a `WatchRoutesRequest` from `request` (one uncompressed message of at most
/// `max_request` bytes, `None`: tonic's default), with the call's metadata.
pub async fn read_request<B>(
    request: http::Request<B>,
    max_request: Option<usize>,
) -> Result<Request<wire::WatchRoutesRequest>, Status>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let max_request = max_request.unwrap_or(DEFAULT_MAX_REQUEST);
    let (parts, body) = request.into_parts();
    let mut body = Box::pin(body);
    let mut collected = BytesMut::new();
    // Each frame's data is copied out before the next is awaited (the body's data
    // type need not be `Send`).
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|error| {
            status(
                Code::Unavailable,
                "REQUEST_UNREADABLE",
                None,
                format!("reading the WatchRoutes request: {}", error.into()),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.remaining() > max_request.saturating_add(PREFIX) {
                return Err(too_large(max_request));
            }
            collected.put(data);
        }
    }
    let message = one_message(&collected, max_request)?;
    let message = wire::WatchRoutesRequest::decode(message)
        .map_err(|error| malformed(format!("the request is not a WatchRoutesRequest: {error}")))?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

fn too_large(max_request: usize) -> Status {
    status(
        Code::OutOfRange,
        "REQUEST_TOO_LARGE",
        Some("request"),
        format!("the WatchRoutes request is larger than {max_request} bytes"),
    )
}

/// A request body that is not one `WatchRoutesRequest`.
fn malformed(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        "REQUEST_MALFORMED",
        Some("request"),
        message.into(),
    )
}

/// The one message of a unary request body.
fn one_message(body: &[u8], max_request: usize) -> Result<&[u8], Status> {
    let Some((prefix, rest)) = body.split_first_chunk::<PREFIX>() else {
        return Err(malformed("the WatchRoutes request holds no message"));
    };
    if prefix[0] != 0 {
        return Err(status(
            Code::Unimplemented,
            "COMPRESSION_UNSUPPORTED",
            Some("grpc-encoding"),
            "the WatchRoutes request is compressed, and this server reads it uncompressed".into(),
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max_request {
        return Err(too_large(max_request));
    }
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Equal => Ok(rest),
        std::cmp::Ordering::Less => {
            Err(malformed("the WatchRoutes request ends inside its message"))
        }
        std::cmp::Ordering::Greater => Err(malformed(
            "the WatchRoutes request holds more than one message",
        )),
    }
}

/// The response to a `WatchRoutes` call: `frames`, then its status as trailers.
pub fn response(
    frames: WatchFrames,
    max_message: Option<usize>,
) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(WatchBody {
        frames: Some(frames),
        max_message: max_message.unwrap_or(usize::MAX),
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A watch stream as an HTTP/2 body: one data frame per message, then trailers.
struct WatchBody {
    /// `None` once the trailers are sent.
    frames: Option<WatchFrames>,
    /// Largest message sent.
    max_message: usize,
}

impl WatchBody {
    /// The trailers that end the body with `status` (`Ok`: grpc-status 0).
    fn trailers(status: Result<(), Status>) -> Frame<Bytes> {
        let status = status.err().unwrap_or_else(|| Status::ok(""));
        let mut trailers = http::HeaderMap::new();
        if let Err(unencodable) = status.add_header(&mut trailers) {
            trailers.clear();
            let _ = unencodable.add_header(&mut trailers);
        }
        Frame::trailers(trailers)
    }
}

/// `frame` as a gRPC message: the prefix and the encoded `WatchRoutesResponse`, in a
/// buffer of exactly that size.
fn message(frame: &WatchFrame, max_message: usize) -> Result<Bytes, Status> {
    let len = frame.encoded_len();
    if len > max_message {
        return Err(Status::out_of_range(format!(
            "a WatchRoutes message of {len} bytes is larger than the limit of {max_message}"
        )));
    }
    let Ok(prefix_len) = u32::try_from(len) else {
        return Err(Status::out_of_range(format!(
            "a WatchRoutes message of {len} bytes does not fit a gRPC frame"
        )));
    };
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    frame.encode(&mut buf);
    debug_assert_eq!(buf.len(), PREFIX + len);
    Ok(buf.freeze())
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
        Poll::Ready(Some(Ok(Self::trailers(end))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::watch_routes_response::Kind;

    fn progress(revision: u64) -> wire::WatchRoutesResponse {
        wire::WatchRoutesResponse {
            revision,
            store_epoch: "epoch".into(),
            kind: Some(Kind::Progress(wire::Progress {})),
        }
    }

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

    fn status_of(frame: Frame<Bytes>) -> String {
        let trailers = frame.into_trailers().expect("trailers");
        trailers["grpc-status"].to_str().unwrap().to_owned()
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

    #[test]
    fn a_request_body_holds_exactly_one_uncompressed_message() {
        let message = wire::WatchRoutesRequest {
            from_revision: Some(3),
            store_epoch: "e".into(),
        }
        .encode_to_vec();
        let framed = |flag: u8, len: usize, bytes: &[u8]| {
            let mut body = vec![flag];
            body.extend_from_slice(&(len as u32).to_be_bytes());
            body.extend_from_slice(bytes);
            body
        };
        let whole = framed(0, message.len(), &message);
        assert_eq!(one_message(&whole, 1024).unwrap(), &message[..]);
        let code = |body: &[u8], max: usize| one_message(body, max).unwrap_err().code();
        assert_eq!(code(&[], 1024), tonic::Code::InvalidArgument);
        assert_eq!(code(&whole[..4], 1024), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&whole[..whole.len() - 1], 1024),
            tonic::Code::InvalidArgument
        );
        let mut two = whole.clone();
        two.extend_from_slice(&whole);
        assert_eq!(code(&two, 1024), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&framed(1, message.len(), &message), 1024),
            tonic::Code::Unimplemented
        );
        assert_eq!(code(&whole, message.len() - 1), tonic::Code::OutOfRange);
    }
}
