//! What writing a route costs when its own URLs are derived (kept out of its storage and
//! written where it is sent) against one kept verbatim: 100,000 SAML routes shaped like
//! the benchmark's, each written as a message field the way a snapshot writes them.
//!
//! `cargo run --release -p signpost-routing --example route_cost`
//!
//! Results are in bench/FINDINGS.md (round 8).

use signpost_api::routing::v1 as wire;
use signpost_routing::EncodedRoute;
use std::time::Instant;
fn main() {
    let base = "http://127.0.0.1:45678";
    let mut routes_d = Vec::new();
    let mut routes_v = Vec::new();
    for i in 0..100_000 {
        let conn = format!("0195c0de-{i:04x}-7000-8000-00000000abcd");
        let mut r = wire::Route {
            domain: format!("firm{i}.example.com"),
            organization_id: format!("0195c0de-{i:04x}-7000-8000-00000000ffff"),
            organization_external_id: format!("ext-{i}"),
            connection_id: conn.clone(),
            protocol: 1,
            saml: Some(wire::SamlRoute {
                idp_entity_id: format!("https://idp{i}.example.com/entity"),
                idp_sso_url: format!("https://idp{i}.example.com/entity/sso"),
                idp_sso_binding: 1,
                signing_certificates: vec![wire::CertificateFingerprint {
                    sha256_fingerprint: "ab".repeat(32),
                    not_after_unix: 1_900_000_000,
                }],
                sp_entity_id: String::new(),
                acs_url: String::new(),
            }),
            ..Default::default()
        };
        routes_d.push(EncodedRoute::with_service_provider_urls(&r, base));
        let s = r.saml.as_mut().unwrap();
        s.sp_entity_id = "urn:x:".to_owned() + &conn + &"y".repeat(base.len() + 4);
        s.acs_url = "urn:y:".to_owned() + &conn + &"z".repeat(base.len() + 8);
        routes_v.push(EncodedRoute::encode(&r));
    }
    println!(
        "stored: derived {} B, verbatim {} B",
        routes_d[0].stored_len(),
        routes_v[0].stored_len()
    );
    let mut out = vec![0u8; 64 << 20];
    for round in 0..5 {
        for (name, routes) in [("derived", &routes_d), ("verbatim", &routes_v)] {
            out.clear();
            let started = Instant::now();
            for r in routes.iter() {
                let _ = r.field_len(1);
                r.encode_field(1, &mut out);
            }
            println!(
                "round {round} {name}: {:?} for {} bytes",
                started.elapsed(),
                out.len()
            );
        }
    }
}
