//! SafeFetcher against a real loopback server.

mod common;

use std::time::{Duration, Instant};

use common::{start_idp, test_fetcher, test_policy, METADATA};
use signpost_outbound::{FetchPolicy, SafeFetcher};

#[tokio::test]
async fn metadata_is_fetched_under_the_test_switch() {
    let base = start_idp().await;
    let document = test_fetcher()
        .fetch(&format!("{base}/metadata#frag"))
        .await
        .unwrap();
    assert_eq!(document.body, METADATA.as_bytes());
    assert_eq!(
        document.content_type.as_deref(),
        Some("application/samlmetadata+xml")
    );
    assert_eq!(document.final_url, format!("{base}/metadata"));
}

#[tokio::test]
async fn loopback_server_is_refused_without_the_test_switch() {
    let base = start_idp().await;
    let fetcher = SafeFetcher::new(FetchPolicy::default()).unwrap();

    let error = fetcher
        .fetch(&format!("{base}/metadata"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "URL_NOT_HTTPS", "{error}");

    let https = base.replace("http://", "https://");
    let error = fetcher
        .fetch(&format!("{https}/metadata"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ADDRESS_FORBIDDEN", "{error}");
}

#[tokio::test]
async fn internal_hosts_are_refused_before_any_connection() {
    let fetcher = SafeFetcher::new(FetchPolicy::default()).unwrap();
    for url in [
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://0.0.0.0/",
        "https://localhost/",
        "https://100.64.0.1/",
        "https://[fd00::1]/",
    ] {
        // These addresses are unroutable here; a connection attempt would fail with
        // CONNECT_FAILED or TIMEOUT instead, and would take time.
        let started = Instant::now();
        let error = fetcher.fetch(url).await.unwrap_err();
        assert_eq!(error.reason(), "ADDRESS_FORBIDDEN", "{url}: {error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{url}");
        let message = error.to_string();
        assert!(
            !message.contains("127.0.0.1") || url.contains("127.0.0.1"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn test_switch_still_refuses_private_and_metadata_addresses() {
    let fetcher = test_fetcher();
    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://192.168.1.1/",
    ] {
        let error = fetcher.fetch(url).await.unwrap_err();
        assert_eq!(error.reason(), "ADDRESS_FORBIDDEN", "{url}: {error}");
    }
}

#[tokio::test]
async fn localhost_name_is_allowed_only_under_the_test_switch() {
    let base = start_idp().await;
    let by_name = base.replace("127.0.0.1", "localhost");
    // localhost may also resolve to ::1 where nothing listens; happy eyeballs copes.
    let document = test_fetcher()
        .fetch(&format!("{by_name}/metadata"))
        .await
        .unwrap();
    assert_eq!(document.body, METADATA.as_bytes());
}

#[tokio::test]
async fn body_over_the_cap_with_content_length_is_refused() {
    let base = start_idp().await;
    let error = test_fetcher()
        .fetch(&format!("{base}/large"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "RESPONSE_TOO_LARGE", "{error}");
    assert!(!error.to_string().contains("xxx"));
}

#[tokio::test]
async fn chunked_body_over_the_cap_is_refused_while_streaming() {
    let base = start_idp().await;
    let error = test_fetcher()
        .fetch(&format!("{base}/large-chunked"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "RESPONSE_TOO_LARGE", "{error}");
}

#[tokio::test]
async fn chunked_body_within_the_cap_is_accepted() {
    let base = start_idp().await;
    let fetcher = SafeFetcher::new(FetchPolicy {
        max_body_bytes: 4096,
        ..test_policy()
    })
    .unwrap();
    let document = fetcher
        .fetch(&format!("{base}/large-chunked"))
        .await
        .unwrap();
    assert_eq!(document.body.len(), 4096);
}

#[tokio::test]
async fn slow_server_hits_the_total_timeout() {
    let base = start_idp().await;
    let policy = FetchPolicy {
        total_timeout: Duration::from_millis(300),
        ..test_policy()
    };
    let fetcher = SafeFetcher::new(policy).unwrap();
    for path in ["/slow-headers", "/slow-body"] {
        let started = Instant::now();
        let error = fetcher.fetch(&format!("{base}{path}")).await.unwrap_err();
        assert_eq!(error.reason(), "TIMEOUT", "{path}: {error}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
}

#[tokio::test]
async fn non_success_status_is_reported() {
    let base = start_idp().await;
    let error = test_fetcher()
        .fetch(&format!("{base}/missing"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "HTTP_STATUS");
    assert_eq!(error.to_string(), "server answered with http status 404");
}

#[tokio::test]
async fn redirect_to_an_allowed_loopback_url_is_followed() {
    let base = start_idp().await;
    let document = test_fetcher()
        .fetch(&format!("{base}/redirect-to-metadata"))
        .await
        .unwrap();
    assert_eq!(document.body, METADATA.as_bytes());
    assert_eq!(document.final_url, format!("{base}/metadata"));
}

#[tokio::test]
async fn redirect_chain_up_to_the_limit_is_followed() {
    let base = start_idp().await;
    let document = test_fetcher()
        .fetch(&format!("{base}/chain/3"))
        .await
        .unwrap();
    assert_eq!(document.final_url, format!("{base}/chain/0"));
}

#[tokio::test]
async fn redirect_chain_longer_than_the_limit_is_refused() {
    let base = start_idp().await;
    let error = test_fetcher()
        .fetch(&format!("{base}/chain/4"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "TOO_MANY_REDIRECTS", "{error}");

    let no_redirects = SafeFetcher::new(FetchPolicy {
        max_redirects: 0,
        ..test_policy()
    })
    .unwrap();
    let error = no_redirects
        .fetch(&format!("{base}/chain/1"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "TOO_MANY_REDIRECTS", "{error}");
}

#[tokio::test]
async fn redirect_to_a_forbidden_address_is_refused() {
    let base = start_idp().await;
    for path in ["/redirect-to-private", "/redirect-to-metadata-service"] {
        let error = test_fetcher()
            .fetch(&format!("{base}{path}"))
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "ADDRESS_FORBIDDEN", "{path}: {error}");
    }
}

#[tokio::test]
async fn redirect_to_another_scheme_or_without_location_is_refused() {
    let base = start_idp().await;
    let error = test_fetcher()
        .fetch(&format!("{base}/redirect-to-file"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "URL_NOT_HTTPS", "{error}");
    let error = test_fetcher()
        .fetch(&format!("{base}/redirect-without-location"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "REDIRECT_REFUSED", "{error}");
}

#[tokio::test]
async fn closed_port_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error = test_fetcher()
        .fetch(&format!("http://{address}/"))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "CONNECT_FAILED", "{error}");
}

#[tokio::test]
async fn concurrent_fetches_share_one_fetcher() {
    let base = start_idp().await;
    let fetcher = test_fetcher();
    let fetches = (0..8).map(|_| {
        let fetcher = fetcher.clone();
        let url = format!("{base}/metadata");
        tokio::spawn(async move { fetcher.fetch(&url).await })
    });
    for result in futures::future::join_all(fetches).await {
        assert_eq!(result.unwrap().unwrap().body, METADATA.as_bytes());
    }
}
