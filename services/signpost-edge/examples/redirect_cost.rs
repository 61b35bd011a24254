//! What building one SAML sign-in redirect costs (the edge's `discover` answer for a SAML
//! route): `cargo run --release -p signpost-edge --example redirect_cost`.

use std::time::Instant;

use signpost_edge::signin::saml_redirect;
use signpost_edge::SamlTarget;

fn main() {
    let target = SamlTarget {
        idp_sso_url: "https://idp.example.com/app/signpost/sso/saml",
        sp_entity_id: "https://signpost.example.com/saml/01J0000000000000000000000",
        acs_url: "https://signpost.example.com/saml/01J0000000000000000000000/acs",
    };
    let rounds = 200_000;
    for round in 0..3 {
        let started = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..rounds {
            let redirect = saml_redirect(&target, chrono::Utc::now()).expect("a URL");
            bytes += redirect.redirect_url.len();
        }
        let elapsed = started.elapsed();
        println!(
            "round {round}: {:.2} µs a redirect ({bytes} bytes in all)",
            elapsed.as_secs_f64() * 1e6 / rounds as f64
        );
    }
}
