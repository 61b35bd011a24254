//! Unary gRPC calls served without tonic's codec machinery: the request's one message
//! read into one buffer ([`read_request`]), the answer encoded once into a buffer of
//! exactly its size and sent as one data frame, then `grpc-status: 0` ([`serve`],
//! [`response`]).
//!
//! tonic's unary path sets up a decoding stream with an 8 KiB buffer for the request
//! and an encoding stream with another for the answer, for one message each way: about
//! a tenth of `Resolve`'s server CPU (bench/FINDINGS.md, round 27). The request is read
//! the way tonic reads it (one message, within the server's size limit), and errors
//! become the same statuses: a refused call is answered with its status alone (trailers
//! only), as tonic answers it. Compression is not handled here: a server with any
//! compression encoding enabled serves its calls through tonic.
//!
//! Used by [`crate::routing::RoutingServer`] (`Resolve`, and `WatchRoutes`' request) and
//! [`crate::admin::AdminServer`] (every `ConnectionAdminService` method).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use tonic::codegen::{http, Body, StdError};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::status::status;

/// Bytes of a gRPC message's prefix: a compression flag and a 4-byte length.
pub(crate) const PREFIX: usize = 5;

/// tonic's default limit on a request message, used when the server sets none.
const DEFAULT_MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Reads the one message `M` of `method`'s request (uncompressed, at most `max_request`
/// bytes, `None`: tonic's default), with the call's metadata.
pub(crate) async fn read_request<M, B>(
    method: &'static str,
    request: http::Request<B>,
    max_request: Option<usize>,
) -> Result<Request<M>, Status>
where
    M: Message + Default,
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
                format!("reading the {method} request: {}", error.into()),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.remaining() > max_request.saturating_add(PREFIX) {
                return Err(too_large(method, max_request));
            }
            collected.put(data);
        }
    }
    let message = one_message(method, &collected, max_request)?;
    let message = M::decode(message).map_err(|error| {
        malformed(format!(
            "the {method} request does not decode as {method}Request: {error}"
        ))
    })?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

fn too_large(method: &str, max_request: usize) -> Status {
    status(
        Code::OutOfRange,
        "REQUEST_TOO_LARGE",
        Some("request"),
        format!("the {method} request is larger than {max_request} bytes"),
    )
}

/// A request body that is not one message of its method's request.
fn malformed(message: impl Into<String>) -> Status {
    status(
        Code::InvalidArgument,
        "REQUEST_MALFORMED",
        Some("request"),
        message.into(),
    )
}

/// The one message of a unary request body.
fn one_message<'a>(method: &str, body: &'a [u8], max_request: usize) -> Result<&'a [u8], Status> {
    let Some((prefix, rest)) = body.split_first_chunk::<PREFIX>() else {
        return Err(malformed(format!("the {method} request holds no message")));
    };
    if prefix[0] != 0 {
        return Err(status(
            Code::Unimplemented,
            "COMPRESSION_UNSUPPORTED",
            Some("grpc-encoding"),
            format!("the {method} request is compressed, and this server reads it uncompressed"),
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max_request {
        return Err(too_large(method, max_request));
    }
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Equal => Ok(rest),
        std::cmp::Ordering::Less => Err(malformed(format!(
            "the {method} request ends inside its message"
        ))),
        std::cmp::Ordering::Greater => Err(malformed(format!(
            "the {method} request holds more than one message"
        ))),
    }
}

/// The gRPC response headers: `content-type: application/grpc`.
pub(crate) fn grpc_response(body: tonic::body::Body) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The HTTP response to a unary call: its one message (prefix included, as
/// [`prefixed`] writes it) then `grpc-status: 0`; or, when refused, its status alone.
pub(crate) fn response(message: Result<Bytes, Status>) -> http::Response<tonic::body::Body> {
    match message {
        Ok(message) => grpc_response(tonic::body::Body::new(OneMessage {
            message: Some(message),
            done: false,
        })),
        Err(status) => status.into_http(),
    }
}

/// The gRPC prefix's length field for a `method` message of `len` bytes: refused with
/// `OUT_OF_RANGE` above `max_message` bytes (`None`: no limit) or past a gRPC frame.
pub(crate) fn prefix_len(
    method: &str,
    len: usize,
    max_message: Option<usize>,
) -> Result<u32, Status> {
    let max_message = max_message.unwrap_or(usize::MAX);
    if len > max_message {
        return Err(Status::out_of_range(format!(
            "a {method} message of {len} bytes is larger than the limit of {max_message}"
        )));
    }
    u32::try_from(len).map_err(|_| {
        Status::out_of_range(format!(
            "a {method} message of {len} bytes does not fit a gRPC frame"
        ))
    })
}

/// A message of `len` bytes, written by `encode`, as a gRPC message in a buffer of
/// exactly its size: refused with `OUT_OF_RANGE` above `max_message` bytes (`None`: no
/// limit).
pub(crate) fn prefixed(
    method: &str,
    len: usize,
    max_message: Option<usize>,
    encode: impl FnOnce(&mut BytesMut),
) -> Result<Bytes, Status> {
    let prefix_len = prefix_len(method, len, max_message)?;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    encode(&mut buf);
    debug_assert_eq!(buf.len(), PREFIX + len);
    Ok(buf.freeze())
}

/// An answer [`serve`] can send: prost's encoding for generated messages; a type that
/// writes its own (`Resolve`'s, the routing table's bytes) implements it itself.
pub(crate) trait Answer {
    /// Bytes of the encoding.
    fn answer_len(&self) -> usize;
    /// Writes exactly [`Self::answer_len`] bytes.
    fn write_answer(&self, buf: &mut BytesMut);
}

impl<M: Message> Answer for M {
    fn answer_len(&self) -> usize {
        self.encoded_len()
    }

    fn write_answer(&self, buf: &mut BytesMut) {
        self.encode_raw(buf)
    }
}

/// `answer` of `method` as a gRPC message, as [`prefixed`] writes it.
pub(crate) fn encode(
    method: &str,
    answer: &impl Answer,
    max_message: Option<usize>,
) -> Result<Bytes, Status> {
    prefixed(method, answer.answer_len(), max_message, |buf| {
        answer.write_answer(buf)
    })
}

/// The trailers that end a body with `status` (`Ok`: grpc-status 0).
pub(crate) fn trailers(status: Result<(), Status>) -> Frame<Bytes> {
    let status = status.err().unwrap_or_else(|| Status::ok(""));
    let mut trailers = http::HeaderMap::new();
    if let Err(unencodable) = status.add_header(&mut trailers) {
        trailers.clear();
        let _ = unencodable.add_header(&mut trailers);
    }
    Frame::trailers(trailers)
}

/// Request and answer size limits of a served method (`None`: tonic's defaults, 4 MiB
/// for a request and no limit for an answer).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Largest request message read.
    pub max_request: Option<usize>,
    /// Largest answer message sent.
    pub max_message: Option<usize>,
}

/// Serves one call of unary `method` with `handler`: the request read as
/// [`read_request`] reads it, the answer ([`encode`]) and the answer's metadata sent as
/// [`response`] sends them.
pub(crate) async fn serve<M, R, B, F, Fut>(
    method: &'static str,
    request: http::Request<B>,
    limits: Limits,
    handler: F,
) -> http::Response<tonic::body::Body>
where
    M: Message + Default,
    R: Answer,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    F: FnOnce(Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let answer = match read_request(method, request, limits.max_request).await {
        Ok(request) => handler(request).await,
        Err(status) => Err(status),
    };
    let (metadata, message) = match answer {
        Ok(answer) => {
            let (metadata, message, _) = answer.into_parts();
            (metadata, message)
        }
        Err(status) => return status.into_http(),
    };
    let mut response = response(encode(method, &message, limits.max_message));
    // A name comes once, before its first value; the values after it have none.
    let mut name = None;
    for (next, value) in metadata.into_headers() {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = name.as_ref() {
            if !RESERVED_HEADERS.contains(&name.as_str()) {
                response.headers_mut().append(name.clone(), value);
            }
        }
    }
    response
}

/// Headers a handler's metadata may not set (tonic drops them from answers too).
const RESERVED_HEADERS: [&str; 6] = [
    "te",
    "user-agent",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

/// A unary answer as an HTTP/2 body: its one message, then `grpc-status: 0`.
struct OneMessage {
    /// `None` once sent.
    message: Option<Bytes>,
    /// Whether the trailers are sent.
    done: bool,
}

impl Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        Poll::Ready(Some(Ok(trailers(Ok(())))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.message.as_ref().map_or(0, |m| m.len() as u64);
        http_body::SizeHint::with_exact(len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use signpost_api::routing::v1 as wire;

    /// A small message for tests.
    pub(crate) fn progress(revision: u64) -> wire::WatchRoutesResponse {
        wire::WatchRoutesResponse {
            revision,
            store_epoch: "epoch".into(),
            kind: Some(wire::watch_routes_response::Kind::Progress(
                wire::Progress {},
            )),
        }
    }

    async fn frame_of(body: &mut tonic::body::Body) -> Option<Frame<Bytes>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|frame| frame.expect("a frame"))
    }

    /// The `grpc-status` of a body's trailers.
    pub(crate) fn status_of(frame: Frame<Bytes>) -> String {
        let trailers = frame.into_trailers().expect("trailers");
        trailers["grpc-status"].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_unary_answer_is_its_message_in_one_frame_then_status_ok() {
        let encoded = progress(3).encode_to_vec();
        let message = prefixed("Resolve", encoded.len(), None, |buf| {
            progress(3).encode_raw(buf)
        })
        .unwrap();
        assert_eq!(message.len(), PREFIX + encoded.len());
        let response = response(Ok(message.clone()));
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let mut body = response.into_body();
        let data = frame_of(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(data, message);
        assert_eq!(&data[5..], &encoded[..]);
        assert!(!body.is_end_stream());
        assert_eq!(status_of(frame_of(&mut body).await.unwrap()), "0");
        assert!(body.is_end_stream());
        assert!(frame_of(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_served_call_answers_its_message_and_metadata_but_no_reserved_header() {
        let message = progress(5);
        let encoded = message.encode_to_vec();
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_u32(encoded.len() as u32);
        body.put_slice(&encoded);
        let request = http::Request::new(http_body_util::Full::new(body.freeze()));
        let response = serve(
            "WatchRoutes",
            request,
            Limits::default(),
            |request: Request<wire::WatchRoutesResponse>| async move {
                let mut response = Response::new(request.into_inner());
                let metadata = response.metadata_mut();
                metadata.append("x-seen", "one".parse().unwrap());
                metadata.append("x-seen", "two".parse().unwrap());
                metadata.insert("grpc-status", "13".parse().unwrap());
                Ok(response)
            },
        )
        .await;
        let seen: Vec<_> = response.headers().get_all("x-seen").iter().collect();
        assert_eq!(seen, ["one", "two"]);
        assert!(response.headers().get("grpc-status").is_none());
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let mut body = response.into_body();
        let data = frame_of(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(&data[PREFIX..], &encoded[..]);
        assert_eq!(status_of(frame_of(&mut body).await.unwrap()), "0");
    }

    #[test]
    fn a_refused_unary_call_is_answered_with_its_status_alone() {
        let response = response(Err(Status::permission_denied("edge or admin")));
        assert_eq!(response.headers()["grpc-status"], "7");
        assert!(response.body().is_end_stream());
    }

    #[test]
    fn a_unary_answer_over_the_limit_is_refused_with_out_of_range() {
        let len = progress(1).encoded_len();
        let encode = |buf: &mut BytesMut| progress(1).encode_raw(buf);
        let status = prefixed("Resolve", len, Some(len - 1), encode).unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(prefixed("Resolve", len, Some(len), encode).is_ok());
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
        assert_eq!(
            one_message("WatchRoutes", &whole, 1024).unwrap(),
            &message[..]
        );
        let code =
            |body: &[u8], max: usize| one_message("WatchRoutes", body, max).unwrap_err().code();
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
