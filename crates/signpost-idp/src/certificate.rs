//! X.509 signing certificates, pasted as PEM or embedded as base64 DER in SAML metadata.
//!
//! The certificate only carries the IdP's public key: SAML trusts it directly, not through a
//! chain, so no chain is built here. What is checked is what would make the key unusable or
//! unsafe: parse errors, a pasted private key, weak keys, MD5/SHA-1 signatures, and validity
//! dates against the caller's `now` (passed in so that this module does no I/O and tests are
//! deterministic).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::SignatureAlgorithm;

use crate::error::{field, reason};
use crate::IdpError;

/// Largest accepted certificate input (PEM text or DER bytes).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Smallest accepted RSA modulus.
const MIN_RSA_BITS: u32 = 2048;
/// Longest subject or issuer text kept; longer names are cut (they are for display only).
const MAX_NAME_CHARS: usize = 512;

/// What we keep of a checked signing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The certificate as DER, exactly as received.
    pub der: Vec<u8>,
    /// SHA-256 of [`der`](Self::der), lowercase hex without colons.
    pub sha256_fingerprint: String,
    /// Subject distinguished name, e.g. `CN=okta, O=Okta`, control characters replaced.
    pub subject: String,
    /// Issuer distinguished name, same form as the subject.
    pub issuer: String,
    /// Start of the validity period.
    pub not_before: DateTime<Utc>,
    /// End of the validity period.
    pub not_after: DateTime<Utc>,
    /// Public key algorithm: `RSA`, `EC`, `Ed25519` or `Ed448`.
    pub key_algorithm: String,
    /// Key size in bits: the RSA modulus length, or the curve size.
    pub key_bits: u32,
    /// Signature algorithm of the certificate, e.g. `sha256WithRSAEncryption`.
    pub signature_algorithm: String,
}

/// Parses a certificate pasted into the form field `certificate_pem`.
///
/// The text must hold exactly one `-----BEGIN CERTIFICATE-----` block (text around it is
/// ignored) and at most 16 KiB. Any private key (`PRIVATE KEY` in any PEM label, PuTTY key
/// files) is refused with `PRIVATE_KEY_REFUSED` before anything else, and the message does
/// not echo any of the input. The decoded certificate is checked as in
/// [`parse_certificate_der`].
pub fn parse_certificate_pem(pem: &str, now: DateTime<Utc>) -> Result<CertificateInfo, IdpError> {
    let field = field::CERTIFICATE_PEM;
    if contains_private_key(pem) {
        return Err(IdpError::new(
            reason::PRIVATE_KEY_REFUSED,
            field,
            "a private key was pasted; it was not stored. paste only the public certificate \
             (`-----BEGIN CERTIFICATE-----`) and consider rotating the key",
        ));
    }
    if pem.len() > MAX_CERTIFICATE_BYTES {
        return Err(too_large(field));
    }
    let body = single_certificate_block(pem)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| invalid(field, "the certificate block is not valid base64"))?;
    parse_certificate_der(&der, now, field)
}

/// Whether `certificate` is valid at `now` (`CERTIFICATE_NOT_YET_VALID`,
/// `CERTIFICATE_EXPIRED`), reported against `field`.
pub fn check_validity(
    certificate: &CertificateInfo,
    now: DateTime<Utc>,
    field: &'static str,
) -> Result<(), IdpError> {
    if now < certificate.not_before {
        return Err(IdpError::new(
            reason::CERTIFICATE_NOT_YET_VALID,
            field,
            format!(
                "the certificate is not valid before {}",
                certificate.not_before.to_rfc3339()
            ),
        ));
    }
    if certificate.not_after < now {
        return Err(IdpError::new(
            reason::CERTIFICATE_EXPIRED,
            field,
            format!(
                "the certificate expired on {}",
                certificate.not_after.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// Parses and checks a DER certificate, e.g. a decoded `ds:X509Certificate` from metadata.
///
/// `field` is the form field the bytes came from, reported in errors. Checks, in order:
/// size (16 KiB), DER syntax with no trailing bytes (`CERTIFICATE_INVALID`), supported key
/// and signature algorithms (`CERTIFICATE_UNSUPPORTED_ALGORITHM`), MD5/SHA-1 signatures
/// (`CERTIFICATE_WEAK_SIGNATURE`), RSA below 2048 bits or curves below 256 bits
/// (`CERTIFICATE_KEY_TOO_WEAK`), then validity against `now` (`CERTIFICATE_NOT_YET_VALID`,
/// `CERTIFICATE_EXPIRED`).
pub fn parse_certificate_der(
    der: &[u8],
    now: DateTime<Utc>,
    field: &'static str,
) -> Result<CertificateInfo, IdpError> {
    let info = inspect_certificate_der(der, field)?;
    check_validity(&info, now, field)?;
    Ok(info)
}

/// [`parse_certificate_der`] without the validity check against the clock (what IdP
/// metadata needs: it may list a retired or a next certificate beside the current one).
pub fn inspect_certificate_der(
    der: &[u8],
    field: &'static str,
) -> Result<CertificateInfo, IdpError> {
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err(too_large(field));
    }
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|_| invalid(field, "the certificate is not a valid X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(invalid(field, "the certificate has trailing data"));
    }
    let consumed = &der[..der.len() - rest.len()];

    let (key_algorithm, key_bits) = key_algorithm_and_bits(&cert, field)?;
    let signature_algorithm = signature_algorithm_name(&cert, field)?;
    let weak_key = match key_algorithm {
        "RSA" => key_bits < MIN_RSA_BITS,
        "EC" => key_bits < 256,
        _ => false,
    };
    if weak_key {
        return Err(IdpError::new(
            reason::CERTIFICATE_KEY_TOO_WEAK,
            field,
            format!(
                "the certificate has a {key_bits}-bit {key_algorithm} key; at least 2048 bits \
                 (RSA) or 256 bits (EC) are required"
            ),
        ));
    }

    let validity = cert.validity();
    let not_before = to_utc(validity.not_before.timestamp(), field)?;
    let not_after = to_utc(validity.not_after.timestamp(), field)?;
    Ok(CertificateInfo {
        sha256_fingerprint: hex::encode(Sha256::digest(consumed)),
        der: consumed.to_vec(),
        subject: display_name(&cert.subject().to_string()),
        issuer: display_name(&cert.issuer().to_string()),
        not_before,
        not_after,
        key_algorithm: key_algorithm.to_owned(),
        key_bits,
        signature_algorithm: signature_algorithm.to_owned(),
    })
}

/// True when the text looks like it holds private key material. Case-insensitive so that a
/// mangled paste is still caught; never allocates, so it is cheap on huge inputs.
pub fn contains_private_key(text: &str) -> bool {
    const MARKERS: [&[u8]; 2] = [b"PRIVATE KEY", b"PUTTY-USER-KEY-FILE"];
    MARKERS.iter().any(|marker| {
        text.as_bytes()
            .windows(marker.len())
            .any(|window| window.eq_ignore_ascii_case(marker))
    })
}

/// Returns the base64 body (whitespace removed) of the only PEM block, which must be a
/// `CERTIFICATE`.
fn single_certificate_block(pem: &str) -> Result<String, IdpError> {
    let field = field::CERTIFICATE_PEM;
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    let begin_count = pem.matches(BEGIN).count();
    if begin_count == 0 {
        return Err(invalid(
            field,
            "no `-----BEGIN CERTIFICATE-----` block was found",
        ));
    }
    if begin_count > 1 {
        return Err(invalid(
            field,
            "paste exactly one certificate; the text holds several PEM blocks",
        ));
    }
    let after_begin = &pem[pem.find(BEGIN).unwrap_or(0) + BEGIN.len()..];
    let Some(body_and_end) = after_begin.strip_prefix("CERTIFICATE-----") else {
        return Err(invalid(field, "the PEM block is not a `CERTIFICATE`"));
    };
    let Some(end_at) = body_and_end.find(END) else {
        return Err(invalid(
            field,
            "the certificate block has no `-----END CERTIFICATE-----`",
        ));
    };
    if !body_and_end[end_at + END.len()..].starts_with("CERTIFICATE-----") {
        return Err(invalid(
            field,
            "the certificate block ends with the wrong label",
        ));
    }
    let body: String = body_and_end[..end_at]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if body.is_empty() {
        return Err(invalid(field, "the certificate block is empty"));
    }
    Ok(body)
}

fn key_algorithm_and_bits(
    cert: &X509Certificate<'_>,
    field: &'static str,
) -> Result<(&'static str, u32), IdpError> {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Ok(("RSA", significant_bits(rsa.modulus))),
            _ => Err(invalid(field, "the certificate's RSA key cannot be parsed")),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|parameters| parameters.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok(("EC", 256)),
                Some("1.3.132.0.34") => Ok(("EC", 384)),
                Some("1.3.132.0.35") => Ok(("EC", 521)),
                Some("1.2.840.10045.3.1.1") => Ok(("EC", 192)),
                Some("1.3.132.0.33") => Ok(("EC", 224)),
                _ => Err(unsupported(
                    field,
                    "the certificate's elliptic curve is not supported",
                )),
            }
        }
        "1.3.101.112" => Ok(("Ed25519", 256)),
        "1.3.101.113" => Ok(("Ed448", 456)),
        _ => Err(unsupported(
            field,
            "the certificate's key algorithm is not supported; use RSA, EC or Ed25519",
        )),
    }
}

/// Bit length of a big-endian unsigned integer (DER integers may carry leading zeros).
fn significant_bits(big_endian: &[u8]) -> u32 {
    let Some(first) = big_endian.iter().position(|&b| b != 0) else {
        return 0;
    };
    // Inputs are capped at 16 KiB, so the bit count always fits.
    let bytes = u32::try_from(big_endian.len() - first).unwrap_or(u32::MAX / 8);
    (bytes - 1) * 8 + (8 - big_endian[first].leading_zeros())
}

/// Names the certificate's signature algorithm, refusing weak and unknown ones.
fn signature_algorithm_name(
    cert: &X509Certificate<'_>,
    field: &'static str,
) -> Result<&'static str, IdpError> {
    let weak = |name: &str| {
        IdpError::new(
            reason::CERTIFICATE_WEAK_SIGNATURE,
            field,
            format!("the certificate is signed with {name}, which is broken; use a SHA-256 based signature"),
        )
    };
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let name = match oid.as_str() {
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        "1.2.840.113549.1.1.2" => return Err(weak("md2WithRSAEncryption")),
        "1.2.840.113549.1.1.3" => return Err(weak("md4WithRSAEncryption")),
        "1.2.840.113549.1.1.4" | "1.3.14.3.2.3" => return Err(weak("md5WithRSAEncryption")),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => return Err(weak("sha1WithRSAEncryption")),
        "1.2.840.10045.4.1" => return Err(weak("ecdsa-with-SHA1")),
        "1.2.840.10040.4.3" => return Err(weak("dsa-with-sha1")),
        "1.2.840.113549.1.1.10" => {
            // RSASSA-PSS names its hash in the parameters, and the default is SHA-1.
            let hash = match SignatureAlgorithm::try_from(&cert.signature_algorithm) {
                Ok(SignatureAlgorithm::RSASSA_PSS(parameters)) => {
                    parameters.hash_algorithm_oid().to_id_string()
                }
                _ => {
                    return Err(invalid(
                        field,
                        "the certificate's RSASSA-PSS parameters are invalid",
                    ))
                }
            };
            match hash.as_str() {
                "2.16.840.1.101.3.4.2.1" => "rsassaPss-SHA256",
                "2.16.840.1.101.3.4.2.2" => "rsassaPss-SHA384",
                "2.16.840.1.101.3.4.2.3" => "rsassaPss-SHA512",
                "1.3.14.3.2.26" => return Err(weak("rsassaPss-SHA1")),
                _ => {
                    return Err(unsupported(
                        field,
                        "the certificate's RSASSA-PSS hash algorithm is not supported",
                    ))
                }
            }
        }
        _ => {
            return Err(unsupported(
                field,
                "the certificate's signature algorithm is not supported",
            ))
        }
    };
    Ok(name)
}

fn to_utc(timestamp: i64, field: &'static str) -> Result<DateTime<Utc>, IdpError> {
    DateTime::<Utc>::from_timestamp(timestamp, 0)
        .ok_or_else(|| invalid(field, "the certificate has an out-of-range validity date"))
}

/// Subjects come from hostile input and end up in UIs and logs: strip control characters
/// and bound the length.
fn display_name(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn invalid(field: &'static str, message: &str) -> IdpError {
    IdpError::new(reason::CERTIFICATE_INVALID, field, message)
}

fn unsupported(field: &'static str, message: &str) -> IdpError {
    IdpError::new(reason::CERTIFICATE_UNSUPPORTED_ALGORITHM, field, message)
}

fn too_large(field: &'static str) -> IdpError {
    IdpError::new(
        reason::CERTIFICATE_TOO_LARGE,
        field,
        "the certificate is larger than 16 KiB",
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) const RSA_2048_SHA256: &str = include_str!("../testdata/rsa2048_sha256.pem");
    pub(crate) const EC_P256: &str = include_str!("../testdata/ec_p256.pem");
    pub(crate) const ED25519: &str = include_str!("../testdata/ed25519.pem");
    pub(crate) const RSA_1024: &str = include_str!("../testdata/rsa1024_sha256.pem");
    pub(crate) const RSA_2048_SHA1: &str = include_str!("../testdata/rsa2048_sha1.pem");
    pub(crate) const EXPIRED_2020: &str = include_str!("../testdata/rsa2048_expired_2020.pem");
    pub(crate) const VALID_FROM_2090: &str =
        include_str!("../testdata/rsa2048_valid_from_2090.pem");
    pub(crate) const PRIVATE_KEY: &str = include_str!("../testdata/private_key_pkcs8.pem");

    /// Inside the validity of every "good" fixture (2026-11-28 to 2046-11-23).
    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
    }

    /// The base64 body of a PEM fixture, as it appears in `ds:X509Certificate`.
    pub(crate) fn base64_body(pem: &str) -> String {
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect()
    }

    fn refused(pem: &str) -> IdpError {
        parse_certificate_pem(pem, now()).unwrap_err()
    }

    #[test]
    fn good_rsa_certificate_is_described() {
        let info = parse_certificate_pem(RSA_2048_SHA256, now()).unwrap();
        assert_eq!(info.key_algorithm, "RSA");
        assert_eq!(info.key_bits, 2048);
        assert_eq!(info.signature_algorithm, "sha256WithRSAEncryption");
        assert!(
            info.subject.contains("CN=signpost-test-idp"),
            "{}",
            info.subject
        );
        assert_eq!(info.subject, info.issuer);
        assert!(info.not_before < now() && now() < info.not_after);
        assert_eq!(info.sha256_fingerprint.len(), 64);
        assert!(info
            .sha256_fingerprint
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(
            info.sha256_fingerprint,
            hex::encode(Sha256::digest(&info.der))
        );
    }

    #[test]
    fn ec_and_ed25519_certificates_are_accepted() {
        let ec = parse_certificate_pem(EC_P256, now()).unwrap();
        assert_eq!((ec.key_algorithm.as_str(), ec.key_bits), ("EC", 256));
        assert_eq!(ec.signature_algorithm, "ecdsa-with-SHA256");
        let ed = parse_certificate_pem(ED25519, now()).unwrap();
        assert_eq!((ed.key_algorithm.as_str(), ed.key_bits), ("Ed25519", 256));
        assert_eq!(ed.signature_algorithm, "ED25519");
    }

    #[test]
    fn surrounding_text_and_crlf_are_tolerated() {
        let pasted = format!(
            "Bag Attributes: none\r\n{}\r\n",
            RSA_2048_SHA256.replace('\n', "\r\n")
        );
        assert!(parse_certificate_pem(&pasted, now()).is_ok());
    }

    #[test]
    fn der_and_pem_give_the_same_fingerprint() {
        let pem = parse_certificate_pem(RSA_2048_SHA256, now()).unwrap();
        let der = parse_certificate_der(&pem.der, now(), field::METADATA_XML).unwrap();
        assert_eq!(pem, der);
    }

    #[test]
    fn private_keys_are_refused_without_echoing_them() {
        let bundle = format!("{RSA_2048_SHA256}{PRIVATE_KEY}");
        let secret_line = PRIVATE_KEY.lines().nth(1).unwrap();
        for pasted in [
            PRIVATE_KEY.to_owned(),
            bundle,
            PRIVATE_KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
            PRIVATE_KEY.replace("PRIVATE KEY", "EC PRIVATE KEY"),
            PRIVATE_KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
            PRIVATE_KEY.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY"),
            PRIVATE_KEY.repeat(20),
        ] {
            let error = refused(&pasted);
            assert_eq!(error.reason(), reason::PRIVATE_KEY_REFUSED);
            assert_eq!(error.field(), field::CERTIFICATE_PEM);
            assert!(error.message().contains("private key was pasted"));
            assert!(error.message().contains("not stored"));
            assert!(!error.message().contains(secret_line));
            assert!(!format!("{error:?}").contains(secret_line));
        }
    }

    #[test]
    fn expired_certificate_is_refused() {
        let error = refused(EXPIRED_2020);
        assert_eq!(error.reason(), reason::CERTIFICATE_EXPIRED);
        assert!(error.message().contains("2020-01-01"), "{error}");
    }

    #[test]
    fn certificate_is_refused_before_its_validity_starts() {
        assert_eq!(
            refused(VALID_FROM_2090).reason(),
            reason::CERTIFICATE_NOT_YET_VALID
        );
    }

    #[test]
    fn good_certificate_is_refused_once_it_has_expired() {
        let far_future = Utc.with_ymd_and_hms(2060, 1, 1, 0, 0, 0).unwrap();
        let error = parse_certificate_pem(RSA_2048_SHA256, far_future).unwrap_err();
        assert_eq!(error.reason(), reason::CERTIFICATE_EXPIRED);
    }

    #[test]
    fn short_rsa_key_is_refused() {
        let error = refused(RSA_1024);
        assert_eq!(error.reason(), reason::CERTIFICATE_KEY_TOO_WEAK);
        assert!(error.message().contains("1024-bit RSA"), "{error}");
    }

    #[test]
    fn sha1_signature_is_refused() {
        let error = refused(RSA_2048_SHA1);
        assert_eq!(error.reason(), reason::CERTIFICATE_WEAK_SIGNATURE);
        assert!(error.message().contains("sha1WithRSAEncryption"), "{error}");
    }

    #[test]
    fn malformed_pem_is_refused() {
        let two = format!("{RSA_2048_SHA256}{EC_P256}");
        let truncated = &RSA_2048_SHA256[..RSA_2048_SHA256.len() / 2];
        let no_end = RSA_2048_SHA256.replace("-----END CERTIFICATE-----", "");
        let wrong_end = RSA_2048_SHA256.replace("END CERTIFICATE", "END CRL");
        let public_key = RSA_2048_SHA256.replace("CERTIFICATE", "PUBLIC KEY");
        let bad_base64 = RSA_2048_SHA256.replacen("MII", "M*I", 1);
        let garbage_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for pasted in [
            "",
            "hello",
            two.as_str(),
            truncated,
            no_end.as_str(),
            wrong_end.as_str(),
            public_key.as_str(),
            bad_base64.as_str(),
            garbage_der,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
        ] {
            let error = refused(pasted);
            assert_eq!(
                error.reason(),
                reason::CERTIFICATE_INVALID,
                "{pasted:?}: {error}"
            );
            assert_eq!(error.field(), field::CERTIFICATE_PEM);
        }
    }

    #[test]
    fn der_with_trailing_bytes_is_refused() {
        let mut der = parse_certificate_pem(RSA_2048_SHA256, now()).unwrap().der;
        der.push(0);
        let error = parse_certificate_der(&der, now(), field::METADATA_XML).unwrap_err();
        assert_eq!(error.reason(), reason::CERTIFICATE_INVALID);
        assert_eq!(error.field(), field::METADATA_XML);
    }

    #[test]
    fn oversized_input_is_refused() {
        let padded = format!("{}{RSA_2048_SHA256}", " ".repeat(MAX_CERTIFICATE_BYTES));
        assert_eq!(refused(&padded).reason(), reason::CERTIFICATE_TOO_LARGE);
        let der = vec![0x30; MAX_CERTIFICATE_BYTES + 1];
        let error = parse_certificate_der(&der, now(), field::METADATA_XML).unwrap_err();
        assert_eq!(error.reason(), reason::CERTIFICATE_TOO_LARGE);
    }

    #[test]
    fn significant_bits_ignores_leading_zeros() {
        assert_eq!(significant_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(significant_bits(&[0x01, 0x00]), 9);
        assert_eq!(significant_bits(&[0x00]), 0);
        assert_eq!(significant_bits(&[]), 0);
    }
}
