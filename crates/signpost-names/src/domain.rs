//! [`DomainName`]: the normalized form of an email domain.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::NameError;

/// Longest domain name in its ASCII form (RFC 1035, without the root dot).
const MAX_DOMAIN_LEN: usize = 253;
/// Longest single label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;
/// Inputs longer than this are refused before any IDNA work is done on them.
const MAX_INPUT_LEN: usize = 1024;

/// A normalized DNS domain name, e.g. `acme.com` or `xn--bcher-kva.example`.
///
/// Invariants, established by [`DomainName::parse`] and never broken afterwards: ASCII
/// lowercase (IDNA UTS-46 to ASCII), no trailing dot, at least two labels, each label 1..=63
/// characters of `[a-z0-9-]` not starting or ending with `-`, at most 253 characters in total,
/// not an IP address and not ending in an all-digit label. Parsing a [`DomainName::as_str`]
/// again yields the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Normalizes and validates `input`.
    ///
    /// Leading and trailing whitespace and one trailing dot are removed; Unicode labels are
    /// converted to punycode (`bücher.example` → `xn--bcher-kva.example`).
    pub fn parse(input: &str) -> Result<DomainName, NameError> {
        DomainName::normalize(input).map(|domain| DomainName(domain.into_owned()))
    }

    /// Checks and normalizes `input` exactly like [`DomainName::parse`] (same result, same
    /// errors), but borrows from `input` instead of allocating when it is already normalized
    /// apart from surrounding whitespace and a trailing dot: the common case on a login edge,
    /// which normalizes the domain of every email it is asked about.
    pub fn normalize(input: &str) -> Result<Cow<'_, str>, NameError> {
        let trimmed = input.trim();
        let without_root = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if is_plain_normalized(without_root) {
            return Ok(Cow::Borrowed(without_root));
        }
        normalize_fully(input).map(Cow::Owned)
    }

    /// The normalized ASCII form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps text that [`DomainName::normalize`] returned.
    pub(crate) fn from_normalized(normalized: String) -> DomainName {
        DomainName(normalized)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DomainName {
    type Err = NameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        DomainName::parse(input)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The borrowing fast path of [`DomainName::normalize`]: `text` (already trimmed, root dot
/// removed) is plain lowercase ASCII of DNS shape without `--`. The full path would return it
/// unchanged: it cannot be an IP literal (no `:` or `[`, and its top-level label is not all
/// digits, which every IPv4 form needs), it takes the ASCII path below (no `--`, nothing but
/// letters, digits, dots and hyphens), lowercasing changes nothing, and the shape check is the
/// same. One pass over the bytes; property tests check it against `check_ascii_shape` and the
/// whole against the full path.
fn is_plain_normalized(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() > MAX_DOMAIN_LEN {
        return false;
    }
    let mut labels = 1;
    let mut label_start = 0;
    let mut label_all_digits = true;
    // A virtual dot before the first label: it must not start with `.` or `-`.
    let mut previous = b'.';
    for (at, &byte) in bytes.iter().enumerate() {
        match byte {
            b'a'..=b'z' => label_all_digits = false,
            b'0'..=b'9' => {}
            // Not at the start of a label, and never `--`.
            b'-' if previous != b'.' && previous != b'-' => label_all_digits = false,
            // Not after an empty label or a hyphen, and ending a label short enough.
            b'.' if previous != b'.' && previous != b'-' && at - label_start <= MAX_LABEL_LEN => {
                labels += 1;
                label_start = at + 1;
                label_all_digits = true;
            }
            _ => return false,
        }
        previous = byte;
    }
    labels >= 2
        && previous != b'.'
        && previous != b'-'
        && bytes.len() - label_start <= MAX_LABEL_LEN
        && !label_all_digits
}

/// The complete normalization: whitespace, root dot, IP literals, IDNA, DNS shape.
fn normalize_fully(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NameError::domain_invalid(trimmed, "it is empty"));
    }
    if trimmed.len() > MAX_INPUT_LEN {
        return Err(NameError::domain_invalid(trimmed, "it is too long"));
    }
    let without_root = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if is_ip_literal(without_root) {
        return Err(NameError::domain_invalid(
            trimmed,
            "an IP address is not a domain name",
        ));
    }
    let ascii = match plain_ascii(without_root) {
        Some(lowercase) => lowercase,
        None => idna::domain_to_ascii_strict(without_root).map_err(|_| {
            NameError::domain_invalid(trimmed, "it is not a valid internationalized domain name")
        })?,
    };
    check_ascii_shape(&ascii).map_err(|problem| NameError::domain_invalid(trimmed, problem))?;
    Ok(ascii)
}

/// The fast path for the common case (login edges parse an email on every
/// sign-in): plain letters, digits, dots and single hyphens need no IDNA
/// processing beyond lowercasing. Anything else — non-ASCII, `--` (punycode
/// `xn--` labels and the hyphen rules), other characters — takes the full
/// UTS-46 path. A property test checks both paths agree.
fn plain_ascii(text: &str) -> Option<String> {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    (plain && !text.contains("--")).then(|| text.to_ascii_lowercase())
}

fn is_ip_literal(text: &str) -> bool {
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<Ipv4Addr>().is_ok() || unbracketed.parse::<Ipv6Addr>().is_ok()
}

/// Checks the result of IDNA against the DNS hostname rules; IDNA alone lets through
/// empty labels and single-label names.
fn check_ascii_shape(ascii: &str) -> Result<(), &'static str> {
    if ascii.is_empty() {
        return Err("it is empty");
    }
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err("it is longer than 253 characters");
    }
    if !ascii.contains('.') {
        return Err("it needs at least two labels");
    }
    let mut top_level = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("it has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("a label has characters other than letters, digits and hyphens");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with a hyphen");
        }
        top_level = label;
    }
    if top_level.bytes().all(|b| b.is_ascii_digit()) {
        // Also catches IPv4 forms that `Ipv4Addr` does not accept, like `1.2.3.04`.
        return Err("the top-level label is all digits");
    }
    Ok(())
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_ascii_fast_path_agrees_with_full_idna(input in "[a-zA-Z0-9.-]{1,40}") {
            if let Some(fast) = plain_ascii(&input) {
                let full = idna::domain_to_ascii_strict(&input);
                // Whenever full IDNA accepts, it gives the same text; when it refuses, the
                // shape check that follows refuses the fast result too.
                match full {
                    Ok(full) => prop_assert_eq!(fast, full),
                    Err(_) => prop_assert!(check_ascii_shape(&fast).is_err(), "{} passed only by the fast path", fast),
                }
            }
        }

        #[test]
        fn the_one_pass_check_is_the_shape_check_without_double_hyphens(
            input in "([a-z0-9-]{0,5}[.]?){0,6}"
        ) {
            prop_assert_eq!(
                is_plain_normalized(&input),
                !input.contains("--") && check_ascii_shape(&input).is_ok(),
                "{:?}", input
            );
        }

        #[test]
        fn the_borrowing_path_agrees_with_full_normalization_on_domain_shaped_input(
            input in "[ ]?[a-zA-Z0-9.-]{1,40}[.]?[ ]?"
        ) {
            prop_assert_eq!(
                DomainName::normalize(&input).map(Cow::into_owned),
                normalize_fully(&input)
            );
        }

        #[test]
        fn the_borrowing_path_agrees_with_full_normalization_on_label_shaped_input(
            input in "[ ]?([a-zA-Z0-9-]{0,6}[a-z0-9]{1,4}[.]){1,4}[a-zA-Z0-9-]{0,5}[.]?"
        ) {
            prop_assert_eq!(
                DomainName::normalize(&input).map(Cow::into_owned),
                normalize_fully(&input)
            );
        }

        #[test]
        fn the_borrowing_path_agrees_with_full_normalization_on_ip_like_input(
            input in "[0-9.:\\[\\]a-f]{1,20}"
        ) {
            prop_assert_eq!(
                DomainName::normalize(&input).map(Cow::into_owned),
                normalize_fully(&input)
            );
        }

        #[test]
        fn the_borrowing_path_agrees_with_full_normalization_on_any_input(input in "\\PC{0,40}") {
            prop_assert_eq!(
                DomainName::normalize(&input).map(Cow::into_owned),
                normalize_fully(&input)
            );
        }
    }

    #[test]
    fn the_one_pass_check_follows_label_and_name_lengths() {
        let label_63 = "a".repeat(63);
        let label_64 = "a".repeat(64);
        for (input, plain) in [
            (format!("{label_63}.com"), true),
            (format!("{label_64}.com"), false),
            (format!("com.{label_63}"), true),
            (format!("com.{label_64}"), false),
            (
                format!("{}{}", format!("{label_63}.").repeat(3), "a".repeat(61)),
                true,
            ),
            (
                format!("{}{}", format!("{label_63}.").repeat(3), "a".repeat(62)),
                false,
            ),
            ("a.1b".to_owned(), true),
            ("a.12".to_owned(), false),
            ("a.1-2".to_owned(), true),
        ] {
            assert_eq!(is_plain_normalized(&input), plain, "{input}");
            assert_eq!(
                plain,
                !input.contains("--") && check_ascii_shape(&input).is_ok(),
                "{input}"
            );
        }
    }

    #[test]
    fn normalized_input_is_borrowed_and_anything_else_is_not() {
        for (input, expected) in [
            ("acme.com", "acme.com"),
            ("  eu.acme-corp.co.uk. ", "eu.acme-corp.co.uk"),
            ("a1.b2.example", "a1.b2.example"),
        ] {
            let normalized = DomainName::normalize(input).unwrap();
            assert!(matches!(normalized, Cow::Borrowed(_)), "{input}");
            assert_eq!(normalized, expected);
        }
        for (input, expected) in [
            ("Acme.com", "acme.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a--b.example", "a--b.example"),
        ] {
            let normalized = DomainName::normalize(input).unwrap();
            assert!(matches!(normalized, Cow::Owned(_)), "{input}");
            assert_eq!(normalized, expected);
        }
        for input in [
            "1.2.3.4",
            "acme",
            "ab--c.com",
            "",
            "acme..com",
            "-a.com",
            " . ",
        ] {
            assert_eq!(
                DomainName::normalize(input).map(Cow::into_owned),
                normalize_fully(input),
                "{input}"
            );
            assert!(DomainName::normalize(input).is_err(), "{input}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn normalized(input: &str) -> String {
        DomainName::parse(input).unwrap().as_str().to_owned()
    }

    fn refused(input: &str) -> NameError {
        DomainName::parse(input).unwrap_err()
    }

    #[test]
    fn case_whitespace_and_trailing_dot_are_normalized() {
        assert_eq!(normalized("  Acme.COM. "), "acme.com");
        assert_eq!(normalized("sub.Acme.com"), "sub.acme.com");
    }

    #[test]
    fn unicode_labels_become_punycode() {
        assert_eq!(normalized("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(normalized("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(normalized("xn--bcher-kva.example"), "xn--bcher-kva.example");
    }

    #[test]
    fn display_shows_the_normalized_form() {
        assert_eq!(
            DomainName::parse("Acme.com").unwrap().to_string(),
            "acme.com"
        );
    }

    #[test]
    fn malformed_domains_are_refused() {
        for input in [
            "",
            "   ",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "acme",
            "acme.com..",
            ".acme.com",
            "ac me.com",
            "acme_corp.com",
            "acme.com/path",
            "user@acme.com",
            "1.2.3.4",
            "1.2.3.4.",
            "[::1]",
            "::1",
            "acme.123",
        ] {
            let error = refused(input);
            assert_eq!(error.reason(), "DOMAIN_INVALID", "input {input:?}: {error}");
        }
    }

    #[test]
    fn overlong_domains_and_labels_are_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        assert_eq!(refused(&long_label).reason(), "DOMAIN_INVALID");
        let label_63 = format!("{}.com", "a".repeat(63));
        assert!(DomainName::parse(&label_63).is_ok());
        let three_hundred = format!("{}.com", ["abcdefghi"; 30].join("."));
        assert!(three_hundred.len() > 253);
        assert_eq!(refused(&three_hundred).reason(), "DOMAIN_INVALID");
        assert_eq!(refused(&"a".repeat(300)).reason(), "DOMAIN_INVALID");
        assert_eq!(refused(&"a.".repeat(5000)).reason(), "DOMAIN_INVALID");
    }

    #[test]
    fn error_messages_are_lowercase_and_bounded() {
        let message = refused(&format!("{}.com", "a".repeat(500))).to_string();
        assert!(message.starts_with("domain `"));
        assert!(message.len() < 200, "{message}");
        assert!(!message.ends_with('.'));
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(input in "\\PC{0,40}") {
            if let Ok(first) = DomainName::parse(&input) {
                let second = DomainName::parse(first.as_str());
                prop_assert_eq!(second, Ok(first));
            }
        }

        #[test]
        fn normalization_is_idempotent_on_domain_shaped_input(
            input in "[ A-Za-z0-9äöüßé.-]{1,30}\\.[A-Za-zü]{2,6}\\.?"
        ) {
            if let Ok(first) = DomainName::parse(&input) {
                let second = DomainName::parse(first.as_str());
                prop_assert_eq!(second, Ok(first));
            }
        }
    }
}
