//! The one error type of this crate.

/// Why a domain or an email address was refused.
///
/// Messages never contain a full email address (it is personal data); domains are echoed,
/// shortened when they are long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The text is not a valid domain name.
    #[error("domain `{domain}` is invalid: {problem}")]
    DomainInvalid {
        /// The offending input, shortened for display.
        domain: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The domain is itself a public suffix (`com`, `co.uk`, `github.io`, ...).
    #[error("domain `{domain}` is a public suffix and cannot be claimed")]
    DomainIsPublicSuffix {
        /// The normalized domain.
        domain: String,
    },
    /// The domain is a consumer mail provider shared by unrelated people.
    #[error("domain `{domain}` is a consumer mail domain and cannot be claimed")]
    DomainIsConsumerMail {
        /// The normalized domain.
        domain: String,
    },
    /// The text is not a valid email address.
    #[error("email address is invalid: {problem}")]
    EmailInvalid {
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl NameError {
    /// A stable, machine-readable reason code in SCREAMING_SNAKE_CASE.
    pub fn reason(&self) -> &'static str {
        match self {
            NameError::DomainInvalid { .. } => "DOMAIN_INVALID",
            NameError::DomainIsPublicSuffix { .. } => "DOMAIN_IS_PUBLIC_SUFFIX",
            NameError::DomainIsConsumerMail { .. } => "DOMAIN_IS_CONSUMER_MAIL",
            NameError::EmailInvalid { .. } => "EMAIL_INVALID",
        }
    }

    pub(crate) fn domain_invalid(input: &str, problem: &'static str) -> Self {
        NameError::DomainInvalid {
            domain: shorten(input),
            problem,
        }
    }
}

/// Keeps error messages bounded when the input is hostile or huge.
fn shorten(input: &str) -> String {
    const MAX_CHARS: usize = 80;
    if input.chars().count() <= MAX_CHARS {
        return input.to_owned();
    }
    let mut shortened: String = input.chars().take(MAX_CHARS).collect();
    shortened.push('…');
    shortened
}
