//! A route change sent to many `WatchRoutes` streams on a connection goes out in a few
//! writes, not one a stream: the server's sockets ([`transport::CoalescingStream`]) hold a
//! turn's messages, and h2 must be willing to buffer more than one of them (a delta is
//! larger than the 256 bytes above which h2 otherwise keeps each frame aside and waits for
//! a flush: bench/FINDINGS.md, round 26). With streams spread over many connections, a
//! change must also wake each connection's streams together (the control plane's change
//! relay, `signpost_grpc::routing::relay`, round 36), so that a turn of the runtime holds
//! each connection's messages.
//!
//! A real tonic server on loopback, the control plane's own `WatchRoutes` body and runtime
//! settings, a real HTTP/2 client; the writes counted are those the server's socket makes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use signpost_api::routing::v1 as wire;
use signpost_api::routing::v1::routing_service_client::RoutingServiceClient;
use signpost_api::routing::v1::routing_service_server::SERVICE_NAME;
use signpost_grpc::routing::relay::{connection_of, ChangeRelay, ConnectionKey};
use signpost_grpc::routing::{watch_routes_response, WatchFrame, WatchFrames};
use signpost_grpc::transport::{CoalescingStream, RUNTIME_EVENT_INTERVAL};
use signpost_routing::{Delta, EncodedRoute};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Streams on the one connection.
const STREAMS: usize = 100;

/// A socket that counts the writes made to it.
struct Counting {
    socket: tokio::net::TcpStream,
    writes: Arc<AtomicUsize>,
}

impl Connected for Counting {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.socket.connect_info()
    }
}

impl AsyncRead for Counting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.socket).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

/// `RoutingService/WatchRoutes` only: every stream sends each delta published on the
/// relayed channel, waiting on its connection's channel as the control plane's streams do.
#[derive(Clone)]
struct Deltas {
    relay: Arc<ChangeRelay<Option<Arc<Delta>>>>,
}

impl NamedService for Deltas {
    const NAME: &'static str = SERVICE_NAME;
}

impl Deltas {
    fn frames(&self, connection: ConnectionKey) -> WatchFrames {
        let changes = self.relay.subscribe(connection);
        Box::pin(futures::stream::unfold(changes, |mut changes| async move {
            changes.changed().await.ok()?;
            let delta = changes.borrow_and_update().clone()?;
            let frame = WatchFrame::Delta {
                delta,
                store_epoch: "epoch".into(),
            };
            Some((Ok(frame), changes))
        }))
    }
}

impl<B: Send + 'static> Service<http::Request<B>> for Deltas {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = watch_routes_response(self.frames(connection_of(request.extensions())));
        Box::pin(async move { Ok(response) })
    }
}

/// A SAML route of about 400 bytes, as the benchmark's.
fn route() -> wire::Route {
    wire::Route {
        domain: "customer-with-a-long-name.example.com".into(),
        organization_id: "organization-0190f0c2-7d4e-7b9a-8c3d-2e1f0a9b8c7d".into(),
        organization_external_id: "acme-corporation-external-id".into(),
        connection_id: "connection-0190f0c2-7d4e-7b9a-8c3d-2e1f0a9b8c7e".into(),
        saml: Some(wire::SamlRoute {
            idp_entity_id: "https://idp.customer-with-a-long-name.example.com/saml/metadata".into(),
            idp_sso_url: "https://idp.customer-with-a-long-name.example.com/saml/sso".into(),
            signing_certificates: vec![wire::CertificateFingerprint {
                sha256_fingerprint: "ab".repeat(32),
                not_after_unix: 2_000_000_000,
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Opens `connections` HTTP/2 connections to a server with the control plane's runtime
/// settings and `streams` `WatchRoutes` streams on them, opened in turn on each connection
/// (as the benchmark's watchers are); publishes one change of a route; returns the
/// writes the server's sockets made for it, once every stream has received it.
fn writes_for_one_change(connections: usize, streams: usize) -> usize {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .event_interval(RUNTIME_EVENT_INTERVAL)
        .enable_all()
        .build()
        .expect("server runtime");
    let writes = Arc::new(AtomicUsize::new(0));
    let (changes, source) = tokio::sync::watch::channel(None);
    let deltas = Deltas {
        relay: Arc::new(ChangeRelay::new(source)),
    };
    let listener = server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let counted = writes.clone();
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |socket| {
            socket.map(|socket| {
                let _ = socket.set_nodelay(true);
                CoalescingStream::new(Counting {
                    socket,
                    writes: counted.clone(),
                })
            })
        },
    );
    server.spawn(
        tonic::transport::Server::builder()
            .add_service(deltas)
            .serve_with_incoming(incoming),
    );

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let change_writes = client.block_on(async {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(
                tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .expect("url")
                    .connect()
                    .await
                    .expect("connect"),
            );
        }
        let mut opened = Vec::with_capacity(streams);
        for stream in 0..streams {
            let mut routing = RoutingServiceClient::new(channels[stream % connections].clone());
            opened.push(async move {
                routing
                    .watch_routes(wire::WatchRoutesRequest::default())
                    .await
                    .expect("watch")
                    .into_inner()
            });
        }
        // In order, so that the server subscribes them in turn on each connection.
        let mut watching = Vec::with_capacity(streams);
        for open in opened {
            watching.push(open.await);
        }
        // Let the server finish writing what opening the streams took.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = writes.load(Ordering::SeqCst);

        // The change is published from a task of the server's runtime, as the routing
        // projection publishes it.
        let route = EncodedRoute::encode(&route());
        let delta = Arc::new(Delta::new(1, vec![route], Vec::new()));
        server.spawn(async move { changes.send_replace(Some(delta)) });
        for stream in &mut watching {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("the change arrives")
                .expect("a message")
                .expect("not an error");
            let Some(wire::watch_routes_response::Kind::Delta(delta)) = message.kind else {
                panic!("expected a delta, got {message:?}");
            };
            assert_eq!(delta.upserts.len(), 1);
            assert!(
                prost::Message::encoded_len(&delta.upserts[0]) > 256,
                "the route is as large as a real one"
            );
        }
        writes.load(Ordering::SeqCst) - before
    });
    drop(server);
    change_writes
}

#[test]
fn a_change_to_many_streams_on_one_connection_goes_out_in_a_few_writes() {
    let change_writes = writes_for_one_change(1, STREAMS);
    // Each message alone would be 100 writes; the whole change fits in 48 KiB, so a
    // handful (the server holds 16 KiB, and its two threads write separately).
    assert!(
        change_writes <= STREAMS / 5,
        "{STREAMS} messages took {change_writes} writes"
    );
}

/// The benchmark's shape, smaller: streams opened in turn on each of many connections.
/// Woken in that scattered order, each turn of the runtime writes to nearly every
/// connection again: at [`RUNTIME_EVENT_INTERVAL`] (1,024 polls a turn) this change took
/// 597 to 700 writes with every stream on one channel (three runs; 448 to 984 in round
/// 35). Woken a connection at a time through the relay, as the control plane's streams
/// are, it took 202 to 206 (four runs).
#[test]
fn a_change_to_streams_spread_over_many_connections_goes_out_in_a_write_or_two_each() {
    let connections = 200;
    let streams = connections * 20;
    let change_writes = writes_for_one_change(connections, streams);
    // 20 messages a connection fit in 16 KiB: one write a connection, or two when both of
    // the server's threads polled some of its streams before writing.
    assert!(
        change_writes <= 2 * connections,
        "{streams} messages on {connections} connections took {change_writes} writes"
    );
}
