//! Which domains an organization may claim.

use crate::{DomainName, NameError};

/// Mail domains hosted by consumer mail providers, refused as domain claims.
///
/// Anyone can get an address at these domains, so a claim on one would let one organization
/// route strangers' sign-ins to its IdP. The list holds the big global providers plus the
/// largest regional ones; it is matched on the **exact** normalized domain only. Subdomains
/// (`corp.gmail.com` does not exist, but `mail.yahoo.com`-style hosts might) are not refused
/// here, because they are not handed out to consumers as mail domains and because refusing
/// them would need a registrable-domain walk that the public suffix check already covers
/// where it matters. Keep the list lowercase ASCII, one domain per entry.
pub const CONSUMER_MAIL_DOMAINS: &[&str] = &[
    // Google
    "gmail.com",
    "googlemail.com",
    // Microsoft
    "outlook.com",
    "hotmail.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.de",
    "live.com",
    "msn.com",
    // Yahoo
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.co.jp",
    "ymail.com",
    "rocketmail.com",
    // Apple
    "icloud.com",
    "me.com",
    "mac.com",
    // AOL
    "aol.com",
    // Proton
    "proton.me",
    "protonmail.com",
    "protonmail.ch",
    "pm.me",
    // United Internet
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "web.de",
    "mail.com",
    // Yandex, Mail.ru
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    // Independent providers
    "zoho.com",
    "fastmail.com",
    "hey.com",
    "tutanota.com",
    "tuta.io",
    // Asia
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
    // ISPs handing out consumer mailboxes
    "t-online.de",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "libero.it",
    "seznam.cz",
    "comcast.net",
    "att.net",
    "verizon.net",
];

/// Whether `domain` is exactly one of [`CONSUMER_MAIL_DOMAINS`].
pub fn is_consumer_mail_domain(domain: &DomainName) -> bool {
    CONSUMER_MAIL_DOMAINS.contains(&domain.as_str())
}

/// Checks that an organization may claim `domain`.
///
/// Refused: consumer mail domains (exact match, see [`CONSUMER_MAIL_DOMAINS`]) and public
/// suffixes from the Public Suffix List, including its private section (`co.uk`, `com`,
/// `github.io`). A registrable domain (`acme.co.uk`) or any subdomain of one
/// (`eu.acme.co.uk`) is claimable. Unknown top-level domains follow the PSL default rule, so
/// `acme.internal` is claimable but `internal` cannot be parsed at all (one label).
pub fn check_claimable(domain: &DomainName) -> Result<(), NameError> {
    if is_consumer_mail_domain(domain) {
        return Err(NameError::DomainIsConsumerMail {
            domain: domain.as_str().to_owned(),
        });
    }
    // `domain_str` returns the registrable domain (suffix plus one label); there is none when
    // the name is itself a suffix.
    if psl::domain_str(domain.as_str()).is_none() {
        return Err(NameError::DomainIsPublicSuffix {
            domain: domain.as_str().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(input: &str) -> Result<(), NameError> {
        check_claimable(&DomainName::parse(input).unwrap())
    }

    #[test]
    fn company_domains_and_their_subdomains_are_claimable() {
        for input in [
            "acme.com",
            "eu.acme.com",
            "acme.co.uk",
            "bücher.example",
            "acme.io",
        ] {
            assert_eq!(claim(input), Ok(()), "{input}");
        }
    }

    #[test]
    fn public_suffixes_are_refused() {
        for input in ["co.uk", "com.au", "github.io", "s3.amazonaws.com"] {
            let error = claim(input).unwrap_err();
            assert_eq!(error.reason(), "DOMAIN_IS_PUBLIC_SUFFIX", "{input}");
        }
        let message = claim("co.uk").unwrap_err().to_string();
        assert_eq!(
            message,
            "domain `co.uk` is a public suffix and cannot be claimed"
        );
    }

    #[test]
    fn single_label_suffix_cannot_even_be_parsed() {
        assert_eq!(
            DomainName::parse("com").unwrap_err().reason(),
            "DOMAIN_INVALID"
        );
    }

    #[test]
    fn consumer_mail_domains_are_refused() {
        for input in [
            "gmail.com",
            "Outlook.com",
            "yahoo.co.uk",
            "163.com",
            "pm.me",
        ] {
            let error = claim(input).unwrap_err();
            assert_eq!(error.reason(), "DOMAIN_IS_CONSUMER_MAIL", "{input}");
        }
        assert_eq!(
            claim("gmail.com").unwrap_err().to_string(),
            "domain `gmail.com` is a consumer mail domain and cannot be claimed"
        );
    }

    #[test]
    fn subdomains_of_consumer_mail_domains_are_not_refused_by_the_list() {
        assert_eq!(claim("team.gmail.com"), Ok(()));
    }

    #[test]
    fn consumer_list_is_normalized_unique_and_long_enough() {
        assert!(CONSUMER_MAIL_DOMAINS.len() >= 30);
        let mut seen = std::collections::HashSet::new();
        for entry in CONSUMER_MAIL_DOMAINS {
            assert_eq!(DomainName::parse(entry).unwrap().as_str(), *entry);
            assert!(seen.insert(entry), "duplicate {entry}");
        }
    }
}
