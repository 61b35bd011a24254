//! [`IdpError`]: the one error type of this crate, with stable reason codes and form fields.

use std::fmt;

/// Stable, machine-readable reason codes carried by [`IdpError::reason`].
///
/// Clients switch on these, never on messages. Adding a code is fine; renaming one is a
/// breaking change.
pub mod reason {
    /// A private key was pasted where a certificate was expected; nothing was stored.
    pub const PRIVATE_KEY_REFUSED: &str = "PRIVATE_KEY_REFUSED";
    /// The certificate (PEM or DER) could not be parsed, or the PEM holds not exactly one
    /// `CERTIFICATE` block.
    pub const CERTIFICATE_INVALID: &str = "CERTIFICATE_INVALID";
    /// The certificate input is larger than 16 KiB.
    pub const CERTIFICATE_TOO_LARGE: &str = "CERTIFICATE_TOO_LARGE";
    /// The certificate's `notAfter` is in the past.
    pub const CERTIFICATE_EXPIRED: &str = "CERTIFICATE_EXPIRED";
    /// The certificate's `notBefore` is in the future.
    pub const CERTIFICATE_NOT_YET_VALID: &str = "CERTIFICATE_NOT_YET_VALID";
    /// RSA key shorter than 2048 bits, or an elliptic curve shorter than 256 bits.
    pub const CERTIFICATE_KEY_TOO_WEAK: &str = "CERTIFICATE_KEY_TOO_WEAK";
    /// The certificate is signed with an MD5 or SHA-1 based algorithm.
    pub const CERTIFICATE_WEAK_SIGNATURE: &str = "CERTIFICATE_WEAK_SIGNATURE";
    /// Key or signature algorithm we cannot use to verify SAML signatures (DSA, GOST, ...).
    pub const CERTIFICATE_UNSUPPORTED_ALGORITHM: &str = "CERTIFICATE_UNSUPPORTED_ALGORITHM";
    /// SAML metadata larger than 512 KiB.
    pub const METADATA_TOO_LARGE: &str = "METADATA_TOO_LARGE";
    /// The XML contains a `<!DOCTYPE` or `<!ENTITY` declaration.
    pub const XML_DOCTYPE_REFUSED: &str = "XML_DOCTYPE_REFUSED";
    /// The XML is not well-formed.
    pub const XML_INVALID: &str = "XML_INVALID";
    /// The XML has more than 20 000 nodes.
    pub const METADATA_TOO_MANY_NODES: &str = "METADATA_TOO_MANY_NODES";
    /// The root element is neither `md:EntityDescriptor` nor `md:EntitiesDescriptor`.
    pub const METADATA_NOT_SAML: &str = "METADATA_NOT_SAML";
    /// No `IDPSSODescriptor` (for example metadata of a service provider).
    pub const METADATA_NO_IDP_DESCRIPTOR: &str = "METADATA_NO_IDP_DESCRIPTOR";
    /// More than one `IDPSSODescriptor` in the entity.
    pub const METADATA_MULTIPLE_IDP_DESCRIPTORS: &str = "METADATA_MULTIPLE_IDP_DESCRIPTORS";
    /// An `EntitiesDescriptor` with more than one identity provider entity.
    pub const METADATA_MULTIPLE_IDP_ENTITIES: &str = "METADATA_MULTIPLE_IDP_ENTITIES";
    /// The `IDPSSODescriptor` does not list the SAML 2.0 protocol.
    pub const METADATA_NOT_SAML2: &str = "METADATA_NOT_SAML2";
    /// No `SingleSignOnService` with the HTTP-Redirect or HTTP-POST binding.
    pub const METADATA_NO_SSO_ENDPOINT: &str = "METADATA_NO_SSO_ENDPOINT";
    /// No signing certificate in the `IDPSSODescriptor`.
    pub const METADATA_NO_SIGNING_CERTIFICATE: &str = "METADATA_NO_SIGNING_CERTIFICATE";
    /// Entity ID missing, too long (over 1024 characters) or containing control characters.
    pub const ENTITY_ID_INVALID: &str = "ENTITY_ID_INVALID";
    /// A URL is not an absolute `https` URL without user name and password.
    pub const URL_NOT_HTTPS: &str = "URL_NOT_HTTPS";
    /// The issuer in the discovery document is not the issuer the admin entered.
    pub const OIDC_ISSUER_MISMATCH: &str = "OIDC_ISSUER_MISMATCH";
    /// The discovery document is larger than 1 MiB.
    pub const DISCOVERY_TOO_LARGE: &str = "DISCOVERY_TOO_LARGE";
    /// The discovery document is not valid JSON of the expected shape, or lacks a required
    /// field.
    pub const DISCOVERY_INVALID: &str = "DISCOVERY_INVALID";
}

/// The form fields an [`IdpError`] can point at, as carried by [`IdpError::field`].
pub mod field {
    /// The pasted SAML metadata XML (also the fetched document for a metadata URL).
    pub const METADATA_XML: &str = "metadata_xml";
    /// The SAML metadata URL.
    pub const METADATA_URL: &str = "metadata_url";
    /// The IdP entity ID.
    pub const ENTITY_ID: &str = "entity_id";
    /// The IdP single sign-on URL.
    pub const SSO_URL: &str = "sso_url";
    /// The pasted signing certificate.
    pub const CERTIFICATE_PEM: &str = "certificate_pem";
    /// The OIDC issuer.
    pub const ISSUER: &str = "issuer";
    /// The fetched OIDC discovery document.
    pub const DISCOVERY_DOCUMENT: &str = "discovery_document";
}

/// Why an identity provider input was refused.
///
/// Carries a stable [`reason`](IdpError::reason) code (see [`reason`]), the form
/// [`field`](IdpError::field) at fault (see [`field`]) and a human-readable message that is
/// lowercase, has no trailing period and never contains key material or other secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpError {
    reason: &'static str,
    field: &'static str,
    message: String,
}

impl IdpError {
    pub(crate) fn new(
        reason: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        IdpError {
            reason,
            field,
            message: message.into(),
        }
    }

    /// The stable reason code, one of the constants in [`reason`].
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The form field at fault, one of the constants in [`field`].
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The human-readable message (also what [`Display`](fmt::Display) prints).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for IdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IdpError {}
