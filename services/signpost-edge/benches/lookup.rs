//! In-process lookup latency among 100,000 routes.
//!
//! The table comes from a state file, as after an edge restart with the
//! control plane down, so the bench also times loading it. Run with
//! `cargo bench -p signpost-edge --bench lookup`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::Rng;
use signpost_api::log::v1 as log;
use signpost_api::routing::v1 as wire;
use signpost_edge::{signin, Edge, EdgeConfig, Table, Target};

const ROUTES: usize = 100_000;
const LOOKUPS: usize = 1_000_000;

fn route(index: usize) -> wire::Route {
    let domain = format!("customer-{index}.example");
    if index % 2 == 0 {
        wire::Route {
            domain,
            organization_id: format!("org_{index}"),
            organization_external_id: format!("ext-{index}"),
            connection_id: format!("conn_{index}"),
            protocol: log::Protocol::Saml as i32,
            saml: Some(wire::SamlRoute {
                idp_entity_id: format!("https://idp{index}.example/entity"),
                idp_sso_url: format!("https://idp{index}.example/sso"),
                idp_sso_binding: log::SamlBinding::HttpRedirect as i32,
                signing_certificates: vec![],
                sp_entity_id: format!("https://signpost.example/saml/conn_{index}"),
                acs_url: format!("https://signpost.example/saml/conn_{index}/acs"),
            }),
            sso_policy: log::SsoPolicy::Optional as i32,
            ..Default::default()
        }
    } else {
        wire::Route {
            domain,
            organization_id: format!("org_{index}"),
            organization_external_id: format!("ext-{index}"),
            connection_id: format!("conn_{index}"),
            protocol: log::Protocol::Oidc as i32,
            oidc: Some(wire::OidcRoute {
                issuer: format!("https://login{index}.example"),
                authorization_endpoint: format!("https://login{index}.example/authorize"),
                client_id: format!("client-{index}"),
                scopes: vec!["openid".to_owned(), "email".to_owned()],
                redirect_uri: format!("https://signpost.example/oidc/conn_{index}/callback"),
            }),
            sso_policy: log::SsoPolicy::Enforced as i32,
            ..Default::default()
        }
    }
}

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name:<28} n={:>8}  p50={:>6} ns  p99={:>6} ns  p999={:>7} ns  max={:>8} ns  mean={:>8.0} ns",
        histogram.len(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.mean(),
    );
}

fn measure(name: &str, inputs: &[String], mut op: impl FnMut(&str)) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    // Warm up caches and the allocator.
    for input in inputs.iter().take(10_000) {
        op(input);
    }
    for input in inputs {
        let started = Instant::now();
        op(input);
        histogram
            .record(started.elapsed().as_nanos().max(1) as u64)
            .unwrap();
    }
    report(name, &histogram);
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let directory = tempfile::tempdir().unwrap();
    let state_file = directory.path().join("state.pb");
    let table = Table::from_wire_routes((0..ROUTES).map(route), 1_000, "bench".to_owned(), None)
        .expect("valid routes");
    signpost_edge::state_file::save(&state_file, &table).unwrap();
    let size = std::fs::metadata(&state_file).unwrap().len();
    drop(table);

    let started = Instant::now();
    let edge = runtime
        .block_on(Edge::start(EdgeConfig {
            control_planes: vec!["http://127.0.0.1:9".to_owned()],
            token: "bench".to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            state_file: state_file.clone(),
            min_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
        }))
        .unwrap();
    println!(
        "state file: {ROUTES} routes, {} KiB, edge started (loaded + validated) in {:?}",
        size / 1024,
        started.elapsed()
    );
    assert_eq!(edge.table().len(), ROUTES);

    let mut rng = rand::thread_rng();
    let mut hits: Vec<String> = (0..LOOKUPS)
        .map(|_| {
            format!(
                "user{}@customer-{}.example",
                rng.gen_range(0..1000),
                rng.gen_range(0..ROUTES)
            )
        })
        .collect();
    hits.shuffle(&mut rng);
    let misses: Vec<String> = (0..LOOKUPS / 4)
        .map(|i| format!("someone@unrouted-{i}.example"))
        .collect();
    let mixed_case: Vec<String> = (0..LOOKUPS / 4)
        .map(|_| format!("Jane.Doe@Customer-{}.EXAMPLE", rng.gen_range(0..ROUTES)))
        .collect();

    measure("lookup (hit)", &hits, |email| {
        let found = edge.lookup(email).unwrap();
        assert!(found.route.is_some());
    });
    measure("lookup (miss -> password)", &misses, |email| {
        let found = edge.lookup(email).unwrap();
        assert!(found.route.is_none());
    });
    measure("lookup (mixed case)", &mixed_case, |email| {
        let found = edge.lookup(email).unwrap();
        assert!(found.route.is_some());
    });
    let table = edge.table();
    let domains: Vec<String> = (0..LOOKUPS)
        .map(|_| format!("customer-{}.example", rng.gen_range(0..ROUTES)))
        .collect();
    measure("table.get (normalized)", &domains, |domain| {
        assert!(table.get(domain).is_some());
    });
    let redirects = &hits[..100_000];
    measure("lookup + redirect (discover)", redirects, |email| {
        let found = edge.lookup(email).unwrap();
        let route = found.route.unwrap();
        let url = match route.target() {
            Target::Saml(saml) => {
                signin::saml_redirect(&saml, chrono::Utc::now())
                    .unwrap()
                    .redirect_url
            }
            Target::Oidc(oidc) => signin::oidc_redirect(&oidc, email).unwrap().redirect_url,
        };
        assert!(!url.is_empty());
    });
    drop(table);
    runtime.block_on(edge.stop());
}
