//! [`EmailAddress`]: a pragmatic, dot-atom email address with a normalized domain.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::{DomainName, NameError};

/// Longest local part in bytes (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;
/// Longest address in bytes (RFC 5321 path limit minus the angle brackets).
const MAX_ADDRESS_LEN: usize = 254;
/// Inputs longer than this are refused before any IDNA work is done on them.
const MAX_INPUT_LEN: usize = 1024;

/// An email address such as `Jane.Doe@acme.com`.
///
/// The local part keeps its case (some mail systems are case sensitive there); the domain is
/// a normalized [`DomainName`], so routing by domain never depends on how the user typed it.
/// Quoted local parts and comments are not supported: nobody signs in to a SaaS product with
/// them, and refusing them keeps every consumer of this type simple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    local: String,
    domain: DomainName,
}

impl EmailAddress {
    /// Parses and normalizes an email address.
    ///
    /// Rules: surrounding whitespace is trimmed; exactly one `@`; the local part is 1..=64
    /// bytes of printable non-space ASCII without `"(),:;<>@[\]`, with no leading, trailing
    /// or doubled dot; the domain passes [`DomainName::parse`]; the normalized address is at
    /// most 254 bytes.
    pub fn parse(input: &str) -> Result<EmailAddress, NameError> {
        let (local, domain) = split_checked(input)?;
        Ok(EmailAddress {
            local: local.to_owned(),
            domain: DomainName::from_normalized(domain.into_owned()),
        })
    }

    /// Checks `input` exactly like [`EmailAddress::parse`] (same errors) and returns only its
    /// normalized domain, borrowed from `input` when it is already normalized (see
    /// [`DomainName::normalize`]): what a login edge needs to route a sign-in, without
    /// allocating.
    pub fn normalized_domain(input: &str) -> Result<Cow<'_, str>, NameError> {
        split_checked(input).map(|(_, domain)| domain)
    }

    /// The local part (before the `@`), case preserved.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The normalized domain part.
    pub fn domain(&self) -> &DomainName {
        &self.domain
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl FromStr for EmailAddress {
    type Err = NameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        EmailAddress::parse(input)
    }
}

/// Every check of [`EmailAddress::parse`]: the local part as given and the normalized domain.
fn split_checked(input: &str) -> Result<(&str, Cow<'_, str>), NameError> {
    let invalid = |problem| NameError::EmailInvalid { problem };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.len() > MAX_INPUT_LEN {
        return Err(invalid("it is longer than 254 characters"));
    }
    let (local, domain) = match trimmed.split_once('@') {
        Some((local, domain)) if !domain.contains('@') => (local, domain),
        _ => return Err(invalid("it must contain exactly one `@`")),
    };
    check_local_part(local).map_err(invalid)?;
    let domain = DomainName::normalize(domain)
        .map_err(|_| invalid("the domain part is not a valid domain"))?;
    if local.len() + 1 + domain.len() > MAX_ADDRESS_LEN {
        return Err(invalid("it is longer than 254 characters"));
    }
    Ok((local, domain))
}

/// Bytes allowed in a local part: printable ASCII except `"(),:;<>@[\]`.
const LOCAL_PART_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut byte = b'!';
    while byte <= b'~' {
        allowed[byte as usize] = true;
        byte += 1;
    }
    let refused = b"\"(),:;<>@[\\]";
    let mut at = 0;
    while at < refused.len() {
        allowed[refused[at] as usize] = false;
        at += 1;
    }
    allowed
};

/// One pass over the local part; the errors are those of the rules in this order: length,
/// characters, dots.
fn check_local_part(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("the local part is empty");
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err("the local part is longer than 64 characters");
    }
    let bytes = local.as_bytes();
    let mut all_allowed = true;
    let mut doubled_dot = false;
    let mut previous = 0u8;
    for &byte in bytes {
        all_allowed &= LOCAL_PART_BYTES[usize::from(byte)];
        doubled_dot |= byte == b'.' && previous == b'.';
        previous = byte;
    }
    if !all_allowed {
        return Err("the local part has a character that is not allowed");
    }
    if bytes[0] == b'.' || previous == b'.' || doubled_dot {
        return Err("the local part has a leading, trailing or doubled dot");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_is_normalized_and_local_case_is_kept() {
        let email = EmailAddress::parse("  Jane.Doe+sso@Acme.COM. ").unwrap();
        assert_eq!(email.local(), "Jane.Doe+sso");
        assert_eq!(email.domain().as_str(), "acme.com");
        assert_eq!(email.to_string(), "Jane.Doe+sso@acme.com");
    }

    #[test]
    fn unicode_domain_is_converted_to_punycode() {
        let email = EmailAddress::parse("anna@bücher.example").unwrap();
        assert_eq!(email.to_string(), "anna@xn--bcher-kva.example");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let local_65 = format!("{}@acme.com", "a".repeat(65));
        let too_long = format!(
            "{}@{}.com",
            "a".repeat(64),
            vec!["b".repeat(60); 4].join(".")
        );
        for input in [
            "",
            "acme.com",
            "@acme.com",
            "jane@",
            "jane@@acme.com",
            "jane@doe@acme.com",
            ".jane@acme.com",
            "jane.@acme.com",
            "ja..ne@acme.com",
            "ja ne@acme.com",
            "\"jane\"@acme.com",
            "jane(x)@acme.com",
            "ja\u{7f}ne@acme.com",
            "jäne@acme.com",
            "jane@acme",
            "jane@1.2.3.4",
            "jane@[127.0.0.1]",
            local_65.as_str(),
            too_long.as_str(),
        ] {
            let error = EmailAddress::parse(input).unwrap_err();
            assert_eq!(error.reason(), "EMAIL_INVALID", "input {input:?}: {error}");
        }
    }

    #[test]
    fn local_part_rules_are_reported_in_order() {
        let allowed = |b: u8| b.is_ascii_graphic() && !b"\"(),:;<>@[\\]".contains(&b);
        for byte in 0..=255u8 {
            assert_eq!(LOCAL_PART_BYTES[usize::from(byte)], allowed(byte), "{byte}");
        }
        assert_eq!(check_local_part(""), Err("the local part is empty"));
        assert_eq!(
            check_local_part(".a(b"),
            Err("the local part has a character that is not allowed")
        );
        for dotted in [".ab", "ab.", "a..b", "."] {
            assert_eq!(
                check_local_part(dotted),
                Err("the local part has a leading, trailing or doubled dot"),
                "{dotted}"
            );
        }
        assert_eq!(check_local_part("Jane.Doe+sso"), Ok(()));
    }

    #[test]
    fn error_message_does_not_echo_the_address() {
        let error = EmailAddress::parse("secret.person@@acme.com").unwrap_err();
        assert!(!error.to_string().contains("secret.person"));
    }

    #[test]
    fn normalized_domain_borrows_a_normalized_domain() {
        let domain = EmailAddress::normalized_domain(" jane@eu.acme.com ").unwrap();
        assert!(matches!(domain, Cow::Borrowed("eu.acme.com")));
        let domain = EmailAddress::normalized_domain("jane@Acme.COM.").unwrap();
        assert_eq!(domain, "acme.com");
        assert_eq!(
            EmailAddress::normalized_domain("jane@@acme.com").unwrap_err(),
            EmailAddress::parse("jane@@acme.com").unwrap_err()
        );
    }

    proptest! {
        #[test]
        fn parsing_the_display_form_gives_the_same_address(input in "\\PC{0,40}") {
            if let Ok(first) = EmailAddress::parse(&input) {
                prop_assert_eq!(EmailAddress::parse(&first.to_string()), Ok(first));
            }
        }

        #[test]
        fn normalized_domain_agrees_with_parse(
            input in "[ ]?[a-zA-Z0-9.+_\"@-]{0,20}@[a-zA-Z0-9.:\\[\\]ü-]{0,30}[ ]?"
        ) {
            prop_assert_eq!(
                EmailAddress::normalized_domain(&input).map(Cow::into_owned),
                EmailAddress::parse(&input).map(|email| email.domain().as_str().to_owned())
            );
        }

        #[test]
        fn normalized_domain_agrees_with_parse_on_any_input(input in "\\PC{0,40}") {
            prop_assert_eq!(
                EmailAddress::normalized_domain(&input).map(Cow::into_owned),
                EmailAddress::parse(&input).map(|email| email.domain().as_str().to_owned())
            );
        }
    }
}
