//! Proxy environment variables must not route (or break) outbound fetches. Environment
//! variables are process-global, so this is the only test in its binary.

mod common;

use common::{start_idp, test_fetcher, METADATA};

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    let base = start_idp().await;
    // A closed port on loopback: any request sent through it would fail to connect.
    let bogus_proxy = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(name, &bogus_proxy);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // Built after the variables are set: reqwest reads them when a client is built.
    let document = test_fetcher()
        .fetch(&format!("{base}/metadata"))
        .await
        .unwrap();
    assert_eq!(document.body, METADATA.as_bytes());
}
