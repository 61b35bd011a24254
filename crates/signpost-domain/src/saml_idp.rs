//! [`SamlIdp`]: a SAML connection's IdP settings as the connection's state keeps them.
//!
//! The settings arrive in the configuration event as a `SamlSettings` message: an entity
//! id, endpoints, certificates (each with its DER, a fingerprint, a subject and a
//! validity), a source and a metadata URL, about seven allocations and 100 bytes of
//! `String` and `Vec` headers inside the connection. State keeps them instead as that
//! message encoded again without the certificates' DER: one allocation of about 210
//! bytes, read back by [`SamlIdp::settings`] when a route, a view or an audit entry is
//! built, and by [`SamlIdp::entity_id`] (no decoding) for the read model's index of
//! entity ids. With 100,000 SAML connections this is about 17 MiB less of the control
//! plane's memory (bench/FINDINGS.md, round 16).
//!
//! The DER is what views show of a certificate; they read it from the configuration
//! event in the log, as the control plane has since round 10.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, message, string, WireType};
use prost::Message;

use crate::event::schema;

/// The field numbers of `signpost.log.v1.SamlSettings` and `Certificate` written here.
mod field {
    pub const ENTITY_ID: u32 = 1;
    pub const SSO_ENDPOINTS: u32 = 2;
    pub const SIGNING_CERTIFICATES: u32 = 3;
    pub const SOURCE: u32 = 4;
    pub const METADATA_URL: u32 = 5;

    pub const FINGERPRINT: u32 = 2;
    pub const SUBJECT: u32 = 3;
    pub const NOT_BEFORE: u32 = 4;
    pub const NOT_AFTER: u32 = 5;
}

/// A SAML IdP's settings, certificates without their DER, as one encoded
/// `SamlSettings` message (see the module's documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct SamlIdp {
    encoded: Box<[u8]>,
}

impl SamlIdp {
    /// Keeps `settings` without the certificates' DER.
    pub fn new(settings: &schema::SamlSettings) -> Self {
        let len = settings_len(settings);
        let mut out = Vec::with_capacity(len);
        // Fields in number order, defaults left out, as prost writes a message: the
        // bytes are the canonical encoding of the settings without DER.
        if !settings.idp_entity_id.is_empty() {
            string::encode(field::ENTITY_ID, &settings.idp_entity_id, &mut out);
        }
        for endpoint in &settings.sso_endpoints {
            message::encode(field::SSO_ENDPOINTS, endpoint, &mut out);
        }
        for certificate in &settings.signing_certificates {
            encode_key(
                field::SIGNING_CERTIFICATES,
                WireType::LengthDelimited,
                &mut out,
            );
            encode_varint(certificate_len(certificate) as u64, &mut out);
            encode_certificate(certificate, &mut out);
        }
        if settings.source != 0 {
            prost::encoding::int32::encode(field::SOURCE, &settings.source, &mut out);
        }
        if !settings.metadata_url.is_empty() {
            string::encode(field::METADATA_URL, &settings.metadata_url, &mut out);
        }
        debug_assert_eq!(out.len(), len);
        SamlIdp {
            encoded: out.into_boxed_slice(),
        }
    }

    /// The settings, decoded; each certificate's `der` is empty.
    pub fn settings(&self) -> schema::SamlSettings {
        schema::SamlSettings::decode(&*self.encoded)
            .expect("SamlIdp::new wrote a valid SamlSettings message")
    }

    /// The IdP's entity id, read in place: `new` writes it first (field 1), when set.
    pub fn entity_id(&self) -> &str {
        let bytes = &*self.encoded;
        let key = (field::ENTITY_ID << 3) as u8 | WireType::LengthDelimited as u8;
        if bytes.first() != Some(&key) {
            return "";
        }
        let mut rest = &bytes[1..];
        let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
            return "";
        };
        rest.get(..len as usize)
            .and_then(|text| std::str::from_utf8(text).ok())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings().fmt(f)
    }
}

fn settings_len(settings: &schema::SamlSettings) -> usize {
    let mut len = 0;
    if !settings.idp_entity_id.is_empty() {
        len += string::encoded_len(field::ENTITY_ID, &settings.idp_entity_id);
    }
    len += message::encoded_len_repeated(field::SSO_ENDPOINTS, &settings.sso_endpoints);
    for certificate in &settings.signing_certificates {
        let inner = certificate_len(certificate);
        len += prost::encoding::key_len(field::SIGNING_CERTIFICATES)
            + encoded_len_varint(inner as u64)
            + inner;
    }
    if settings.source != 0 {
        len += prost::encoding::int32::encoded_len(field::SOURCE, &settings.source);
    }
    if !settings.metadata_url.is_empty() {
        len += string::encoded_len(field::METADATA_URL, &settings.metadata_url);
    }
    len
}

/// The encoded length of `certificate` without its DER (field 1).
fn certificate_len(certificate: &schema::Certificate) -> usize {
    let mut len = 0;
    if !certificate.sha256_fingerprint.is_empty() {
        len += string::encoded_len(field::FINGERPRINT, &certificate.sha256_fingerprint);
    }
    if !certificate.subject.is_empty() {
        len += string::encoded_len(field::SUBJECT, &certificate.subject);
    }
    if let Some(at) = &certificate.not_before {
        len += message::encoded_len(field::NOT_BEFORE, at);
    }
    if let Some(at) = &certificate.not_after {
        len += message::encoded_len(field::NOT_AFTER, at);
    }
    len
}

/// `certificate`'s fields but its DER, in number order.
fn encode_certificate(certificate: &schema::Certificate, out: &mut Vec<u8>) {
    if !certificate.sha256_fingerprint.is_empty() {
        string::encode(field::FINGERPRINT, &certificate.sha256_fingerprint, out);
    }
    if !certificate.subject.is_empty() {
        string::encode(field::SUBJECT, &certificate.subject, out);
    }
    if let Some(at) = &certificate.not_before {
        message::encode(field::NOT_BEFORE, at, out);
    }
    if let Some(at) = &certificate.not_after {
        message::encode(field::NOT_AFTER, at, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn without_der(mut settings: schema::SamlSettings) -> schema::SamlSettings {
        for certificate in &mut settings.signing_certificates {
            certificate.der.clear();
        }
        settings
    }

    fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
        proptest::option::of(
            (any::<i64>(), 0..1_000_000_000i32)
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        )
    }

    fn certificate() -> impl Strategy<Value = schema::Certificate> {
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            "[0-9a-f]{0,64}",
            ".{0,80}",
            timestamp(),
            timestamp(),
        )
            .prop_map(
                |(der, sha256_fingerprint, subject, not_before, not_after)| schema::Certificate {
                    der,
                    sha256_fingerprint,
                    subject,
                    not_before,
                    not_after,
                },
            )
    }

    fn settings() -> impl Strategy<Value = schema::SamlSettings> {
        (
            ".{0,200}",
            proptest::collection::vec((0..4i32, ".{0,120}"), 0..4),
            proptest::collection::vec(certificate(), 0..4),
            0..3i32,
            ".{0,100}",
        )
            .prop_map(
                |(idp_entity_id, endpoints, signing_certificates, source, metadata_url)| {
                    schema::SamlSettings {
                        idp_entity_id,
                        sso_endpoints: endpoints
                            .into_iter()
                            .map(|(binding, location)| schema::SamlEndpoint { binding, location })
                            .collect(),
                        signing_certificates,
                        source,
                        metadata_url,
                    }
                },
            )
    }

    proptest! {
        /// What is kept reads back as the settings without DER, in prost's own encoding.
        #[test]
        fn the_settings_read_back_whole_but_the_der(settings in settings()) {
            let kept = SamlIdp::new(&settings);
            let expected = without_der(settings.clone());
            prop_assert_eq!(kept.settings(), expected.clone());
            prop_assert_eq!(kept.entity_id(), settings.idp_entity_id.as_str());
            prop_assert_eq!(kept.encoded.to_vec(), expected.encode_to_vec());
        }
    }

    #[test]
    fn empty_settings_keep_no_bytes_and_no_entity_id() {
        let kept = SamlIdp::new(&schema::SamlSettings::default());
        assert_eq!(kept.encoded.len(), 0);
        assert_eq!(kept.entity_id(), "");
        assert_eq!(kept.settings(), schema::SamlSettings::default());
    }

    #[test]
    fn an_entity_id_longer_than_127_bytes_reads_back() {
        let settings = schema::SamlSettings {
            idp_entity_id: format!("https://idp.example/{}", "x".repeat(300)),
            metadata_url: "https://idp.example/metadata".into(),
            ..Default::default()
        };
        assert_eq!(SamlIdp::new(&settings).entity_id(), settings.idp_entity_id);
    }

    #[test]
    fn the_der_is_not_kept() {
        let settings = schema::SamlSettings {
            idp_entity_id: "https://idp.example/entity".into(),
            signing_certificates: vec![schema::Certificate {
                der: vec![7; 1200],
                sha256_fingerprint: "ab".repeat(32),
                subject: "CN=idp.example".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let kept = SamlIdp::new(&settings);
        assert!(kept.encoded.len() < 150, "{} bytes", kept.encoded.len());
        assert!(kept.settings().signing_certificates[0].der.is_empty());
    }
}
