//! Pure parsing and checking of what an identity provider gives us. No I/O: callers fetch
//! documents and pass bytes and the current time in; every input is treated as hostile.
//!
//! - [`certificate`]: PEM / DER signing certificates → [`CertificateInfo`] (fingerprint,
//!   validity, key strength); refuses pasted private keys without echoing them.
//! - [`saml_metadata`]: IdP metadata XML (or the by-hand form) → [`SamlIdpMetadata`]
//!   (entity ID, SSO endpoints, checked signing certificates: an expired one is left out
//!   and one not valid yet kept, as long as one is valid now). DTDs are refused before
//!   parsing; sizes and node counts are capped.
//! - [`oidc_discovery`]: issuer normalization and the discovery document →
//!   [`OidcProviderMetadata`], issuer matched exactly, https enforced.
//! - [`sp_metadata`]: our SP metadata XML for the admin to upload to their IdP.
//! - [`presets`]: per-provider defaults (protocol, claim names) for the setup form.
//! - [`IdpError`] (`error.rs`): every refusal carries a stable [`reason`] code and the
//!   form [`field`] at fault, so clients never parse messages.
//!
//! Data flow: setup form input → `saml_metadata` / `oidc_discovery` (which use
//! `certificate` and one shared https URL rule) → checked values the domain layer stores in
//! events.
#![forbid(unsafe_code)]

pub mod certificate;
mod error;
pub mod oidc_discovery;
pub mod presets;
pub mod saml_metadata;
pub mod sp_metadata;
mod url_check;

pub use certificate::{
    check_validity, inspect_certificate_der, parse_certificate_der, parse_certificate_pem,
    CertificateInfo,
};
pub use error::{field, reason, IdpError};
pub use oidc_discovery::{
    discovery_url, normalize_issuer, parse_discovery_document,
    parse_discovery_document_with_options, DiscoveryOptions, OidcProviderMetadata,
};
pub use presets::{provider_preset, provider_presets, Protocol, ProviderPreset};
pub use saml_metadata::{
    manual_idp_config, parse_idp_metadata, SamlBinding, SamlIdpMetadata, SsoEndpoint,
};
pub use sp_metadata::{sp_metadata_xml, ServiceProviderUrls};
