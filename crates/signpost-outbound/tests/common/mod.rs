//! A tiny loopback HTTP server playing the part of an IdP in tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use signpost_outbound::{FetchPolicy, SafeFetcher};

pub const METADATA: &str = r#"<EntityDescriptor entityID="https://idp.example/"/>"#;

/// Starts the server on `127.0.0.1:0` and returns its base URL, e.g. `http://127.0.0.1:4242`.
pub async fn start_idp() -> String {
    let app = Router::new()
        .route("/metadata", get(metadata))
        .route("/large", get(|| async { "x".repeat(4096) }))
        .route("/large-chunked", get(large_chunked))
        .route("/slow-headers", get(slow_headers))
        .route("/slow-body", get(slow_body))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/redirect-to-metadata",
            get(|| async { Redirect::temporary("/metadata") }),
        )
        .route("/chain/{hops}", get(chain))
        .route(
            "/redirect-to-private",
            get(|| async { Redirect::temporary("http://10.0.0.1/metadata") }),
        )
        .route(
            "/redirect-to-metadata-service",
            get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/redirect-to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        )
        .route(
            "/redirect-without-location",
            get(|| async { StatusCode::FOUND }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// A fetcher with the test switch on and a small body cap (1 KiB).
pub fn test_fetcher() -> SafeFetcher {
    SafeFetcher::new(test_policy()).unwrap()
}

pub fn test_policy() -> FetchPolicy {
    FetchPolicy {
        max_body_bytes: 1024,
        total_timeout: Duration::from_secs(5),
        allow_loopback_http_for_tests: true,
        ..FetchPolicy::default()
    }
}

async fn metadata() -> Response {
    (
        [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
        METADATA,
    )
        .into_response()
}

async fn large_chunked() -> Body {
    // No Content-Length: the stream has no size hint, so hyper sends it chunked.
    let chunks = (0..16).map(|_| Ok::<_, Infallible>(vec![b'x'; 256]));
    Body::from_stream(futures::stream::iter(chunks))
}

async fn slow_headers() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "too late"
}

async fn slow_body() -> Body {
    let stream = futures::stream::unfold(0u32, |sent| async move {
        if sent > 0 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Some((Ok::<_, Infallible>(vec![b'x'; 8]), sent + 1))
    });
    Body::from_stream(stream)
}

async fn chain(Path(hops): Path<u32>) -> Response {
    if hops == 0 {
        metadata().await
    } else {
        Redirect::temporary(&format!("/chain/{}", hops - 1)).into_response()
    }
}
