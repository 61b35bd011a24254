//! The load generator's gRPC client: calls made on `h2` directly, each answer handed
//! over as the bytes it arrived in. Every load of scenarios 1 to 3 uses it, for Signpost,
//! etcd and every do-nothing limit alike.
//!
//! The load generator runs on the two cores the servers under test use, so whatever it
//! does per call is taken from them. tonic's client, which the loads used until round 30,
//! passes every message through hyper's body and its own layers, decodes answers whole,
//! and copies streamed messages into an 8 KiB buffer per stream; for `Resolve` it took
//! more CPU a call than the server did. Here a message that arrived in one DATA frame
//! (every answer and delta of these loads does) is a slice of that frame: nothing is
//! copied, and no buffer is kept per stream between messages. A load reads an answer
//! only as far as it checks it. The servers see the same HTTP/2 requests, connections
//! and flow-control windows (hyper's client defaults, which tonic used).

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};

/// Each stream's HTTP/2 receive window: hyper's client default, which tonic used.
const STREAM_WINDOW: u32 = 2 << 20;
/// Each connection's receive window: hyper's client default too.
const CONNECTION_WINDOW: u32 = 5 << 20;
/// The largest message accepted.
const MAX_MESSAGE: usize = 256 << 20;

/// One HTTP/2 connection to a server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

/// `count` connections to `url` (`http://host:port`).
pub async fn connect(url: &str, count: usize) -> anyhow::Result<Vec<Connection>> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// is served here"))?
        .trim_end_matches('/')
        .to_owned();
    let addr: SocketAddr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority}: no address"))?;
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or every handle is dropped.
            let _ = connection.await;
        });
        connections.push(Connection {
            send,
            authority: authority.clone(),
        });
    }
    Ok(connections)
}

impl Connection {
    /// Calls `path` with `message` (one encoded request) and `authorization` when given.
    /// The request side ends with the message unless `keep_open`: a bidirectional call,
    /// such as etcd's `Watch`, that the server would end with it.
    pub async fn call(
        &self,
        path: &str,
        authorization: Option<&str>,
        message: &[u8],
        keep_open: bool,
    ) -> anyhow::Result<Messages> {
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let mut send = self.send.clone().ready().await?;
        let (response, mut request_body) = send.send_request(request.body(())?, false)?;
        request_body.send_data(framed(message), !keep_open)?;
        let response = response.await?;
        anyhow::ensure!(
            response.status() == http::StatusCode::OK,
            "{path}: HTTP status {}",
            response.status()
        );
        if let Some(status) = grpc_error(response.headers()) {
            anyhow::bail!("{path}: {status}");
        }
        Ok(Messages {
            body: response.into_body(),
            framing: Framing::default(),
            _request: keep_open.then_some(request_body),
        })
    }

    /// A unary call: `message` sent, its one answer returned (a non-OK status, no answer
    /// or more than one are errors).
    pub async fn unary(
        &self,
        path: &str,
        authorization: Option<&str>,
        message: &[u8],
    ) -> anyhow::Result<Bytes> {
        let mut messages = self.call(path, authorization, message, false).await?;
        let answer = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("{path}: no answer"))??;
        if let Some(more) = messages.next().await {
            more?;
            anyhow::bail!("{path}: more than one answer");
        }
        Ok(answer)
    }
}

/// A response's messages, as they arrive.
pub struct Messages {
    body: h2::RecvStream,
    framing: Framing,
    /// A bidirectional call's request side, kept open.
    _request: Option<h2::SendStream<Bytes>>,
}

impl Messages {
    /// The next message, `None` once the call ended well, an error if it failed.
    pub async fn next(&mut self) -> Option<anyhow::Result<Bytes>> {
        loop {
            match self.framing.take() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
            match self.body.data().await {
                Some(Ok(frame)) => {
                    if let Err(error) = self.body.flow_control().release_capacity(frame.len()) {
                        return Some(Err(error.into()));
                    }
                    self.framing.push(frame);
                }
                Some(Err(error)) => return Some(Err(error.into())),
                None => {
                    return match self.body.trailers().await {
                        Ok(Some(trailers)) => {
                            grpc_error(&trailers).map(|e| Err(anyhow::anyhow!(e)))
                        }
                        Ok(None) => None,
                        Err(error) => Some(Err(error.into())),
                    };
                }
            }
        }
    }
}

/// Response bytes cut into messages by their gRPC prefixes.
#[derive(Default)]
struct Framing {
    /// What is left of the last DATA frame, when no message is split across frames.
    current: Bytes,
    /// A message split across DATA frames, gathered (empty otherwise).
    pending: BytesMut,
}

impl Framing {
    /// A DATA frame arrived.
    fn push(&mut self, frame: Bytes) {
        if self.pending.is_empty() && self.current.is_empty() {
            self.current = frame;
        } else {
            self.pending.extend_from_slice(&self.current);
            self.current = Bytes::new();
            self.pending.extend_from_slice(&frame);
        }
    }

    /// A whole message from what has arrived, if there is one.
    fn take(&mut self) -> anyhow::Result<Option<Bytes>> {
        let gathered = !self.pending.is_empty();
        let buffered: &[u8] = if gathered {
            &self.pending
        } else {
            &self.current
        };
        let Some(header) = buffered.get(..5) else {
            return Ok(None);
        };
        anyhow::ensure!(header[0] == 0, "a compressed message (none was asked for)");
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        anyhow::ensure!(length <= MAX_MESSAGE, "a message of {length} bytes");
        if buffered.len() < 5 + length {
            return Ok(None);
        }
        Ok(Some(if gathered {
            self.pending.advance(5);
            self.pending.split_to(length).freeze()
        } else {
            self.current.advance(5);
            self.current.split_to(length)
        }))
    }
}

/// `message` with gRPC's prefix: not compressed, its length.
fn framed(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// The gRPC status in `headers` (a trailers-only answer's headers, or trailers), when it
/// is not OK.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let status = headers.get("grpc-status")?.to_str().unwrap_or("?");
    (status != "0").then(|| {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default();
        format!("gRPC status {status}: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages are cut where their prefixes say, whether a frame holds one, several or
    /// part of one.
    #[test]
    fn messages_are_cut_from_frames_whatever_their_boundaries() {
        let messages: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![7; 300], Vec::new(), b"xyz".to_vec()];
        let stream: Vec<u8> = messages.iter().flat_map(|m| framed(m).to_vec()).collect();
        for cut in [1, 2, 5, 6, 64, 305, stream.len()] {
            let mut taken = Vec::new();
            let mut framing = Framing::default();
            for frame in stream.chunks(cut) {
                framing.push(Bytes::copy_from_slice(frame));
                while let Some(message) = framing.take().unwrap() {
                    taken.push(message.to_vec());
                }
            }
            assert_eq!(taken, messages, "frames of {cut} bytes");
            assert!(framing.current.is_empty() && framing.pending.is_empty());
        }
    }

    /// A message in one frame is a slice of it, not a copy.
    #[test]
    fn a_message_in_one_frame_is_not_copied() {
        let frame = Bytes::from([framed(b"first"), framed(b"second")].concat());
        let mut framing = Framing::default();
        framing.push(frame.clone());
        let first = framing.take().unwrap().unwrap();
        assert_eq!(&first[..], b"first");
        assert_eq!(first.as_ptr(), frame[5..].as_ptr());
        assert_eq!(&framing.take().unwrap().unwrap()[..], b"second");
        assert!(framing.take().unwrap().is_none());
    }

    /// A compressed message, or one longer than the limit, is refused.
    #[test]
    fn compressed_or_oversized_messages_are_refused() {
        let mut framing = Framing::default();
        framing.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        assert!(framing.take().is_err());
        let mut framing = Framing::default();
        framing.push(Bytes::from(
            [&[0u8][..], &((MAX_MESSAGE + 1) as u32).to_be_bytes()].concat(),
        ));
        assert!(framing.take().is_err());
    }
}
