//! [`EmailAddress`]: a pragmatic, dot-atom email address with a normalized domain.

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
        let domain = DomainName::parse(domain)
            .map_err(|_| invalid("the domain part is not a valid domain"))?;
        if local.len() + 1 + domain.as_str().len() > MAX_ADDRESS_LEN {
            return Err(invalid("it is longer than 254 characters"));
        }
        Ok(EmailAddress {
            local: local.to_owned(),
            domain,
        })
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

fn check_local_part(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("the local part is empty");
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err("the local part is longer than 64 characters");
    }
    let allowed = |b: u8| b.is_ascii_graphic() && !b"\"(),:;<>@[\\]".contains(&b);
    if !local.bytes().all(allowed) {
        return Err("the local part has a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
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
    fn error_message_does_not_echo_the_address() {
        let error = EmailAddress::parse("secret.person@@acme.com").unwrap_err();
        assert!(!error.to_string().contains("secret.person"));
    }

    proptest! {
        #[test]
        fn parsing_the_display_form_gives_the_same_address(input in "\\PC{0,40}") {
            if let Ok(first) = EmailAddress::parse(&input) {
                prop_assert_eq!(EmailAddress::parse(&first.to_string()), Ok(first));
            }
        }
    }
}
