//! DNS TXT lookups for domain verification: the [`TxtResolver`] seam, the production
//! [`SystemTxtResolver`] and the in-memory [`StaticTxtResolver`] for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;

/// Per-query timeout of the system resolver.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a TXT lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist or has no TXT records.
    #[error("no txt record found")]
    NotFound,
    /// The lookup itself failed (timeout, server failure, bad name).
    #[error("dns lookup failed: {0}")]
    Failed(String),
}

impl DnsError {
    /// A stable, machine-readable code: `DNS_NO_RECORD` or `DNS_FAILED`.
    pub fn reason(&self) -> &'static str {
        match self {
            DnsError::NotFound => "DNS_NO_RECORD",
            DnsError::Failed(_) => "DNS_FAILED",
        }
    }
}

/// Looks up TXT records; one string per record, multi-string records concatenated.
#[async_trait::async_trait]
pub trait TxtResolver: Send + Sync + 'static {
    /// The TXT records of `name`, or [`DnsError::NotFound`] when there are none.
    async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError>;
}

/// TXT lookups through hickory with the host's resolver configuration
/// (`/etc/resolv.conf`), falling back to hickory's defaults when it is unreadable.
#[derive(Clone)]
pub struct SystemTxtResolver {
    resolver: TokioAsyncResolver,
}

impl std::fmt::Debug for SystemTxtResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemTxtResolver").finish_non_exhaustive()
    }
}

impl SystemTxtResolver {
    /// Reads the system configuration; never fails, see the type docs for the fallback.
    pub fn new() -> Self {
        let (config, mut options) = hickory_resolver::system_conf::read_system_conf()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "system dns config unreadable, using defaults");
                (ResolverConfig::default(), ResolverOpts::default())
            });
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 2;
        Self {
            resolver: TokioAsyncResolver::tokio(config, options),
        }
    }
}

impl Default for SystemTxtResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl TxtResolver for SystemTxtResolver {
    async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        // A fully qualified name keeps resolv.conf search domains out of the answer.
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let lookup = self
            .resolver
            .txt_lookup(fqdn)
            .await
            .map_err(|error| match error.kind() {
                ResolveErrorKind::NoRecordsFound { .. } => DnsError::NotFound,
                _ => DnsError::Failed(error.to_string()),
            })?;
        let records: Vec<String> = lookup
            .iter()
            .map(|txt| join_character_strings(txt.txt_data()))
            .collect();
        if records.is_empty() {
            return Err(DnsError::NotFound);
        }
        Ok(records)
    }
}

/// One TXT record may hold several character-strings (each at most 255 bytes); they
/// form one value, e.g. a long verification token split by the DNS provider.
fn join_character_strings(parts: &[Box<[u8]>]) -> String {
    let bytes: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// In-memory TXT records for tests. Clones share the same map, so a test can `set`
/// records while the code under test holds another clone.
#[derive(Debug, Clone, Default)]
pub struct StaticTxtResolver {
    records: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl StaticTxtResolver {
    /// An empty resolver: every lookup is [`DnsError::NotFound`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the records of `name` (case-insensitive, trailing dot optional).
    /// An empty list makes the name answer [`DnsError::NotFound`].
    pub fn set(&self, name: &str, records: Vec<String>) {
        self.lock().insert(normalize_name(name), records);
    }

    /// Forgets every record of `name`.
    pub fn remove(&self, name: &str) {
        self.lock().remove(&normalize_name(name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl TxtResolver for StaticTxtResolver {
    async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        match self.lock().get(&normalize_name(name)) {
            Some(records) if !records.is_empty() => Ok(records.clone()),
            _ => Err(DnsError::NotFound),
        }
    }
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_string_records_are_concatenated() {
        let parts: Vec<Box<[u8]>> = vec![
            b"signpost-verification=abc".to_vec().into_boxed_slice(),
            b"def".to_vec().into_boxed_slice(),
        ];
        assert_eq!(
            join_character_strings(&parts),
            "signpost-verification=abcdef"
        );
        assert_eq!(join_character_strings(&[]), "");
    }

    #[tokio::test]
    async fn static_resolver_answers_what_was_set_through_any_clone() {
        let resolver = StaticTxtResolver::new();
        let seen_by_code_under_test = resolver.clone();
        assert_eq!(
            seen_by_code_under_test
                .txt_records("_signpost.acme.com")
                .await,
            Err(DnsError::NotFound)
        );
        resolver.set(
            "_signpost.ACME.com.",
            vec!["token=1".into(), "other".into()],
        );
        assert_eq!(
            seen_by_code_under_test
                .txt_records("_signpost.acme.com")
                .await,
            Ok(vec!["token=1".to_owned(), "other".to_owned()])
        );
        resolver.set("_signpost.acme.com", vec![]);
        assert_eq!(
            seen_by_code_under_test
                .txt_records("_signpost.acme.com")
                .await,
            Err(DnsError::NotFound)
        );
        resolver.set("_signpost.acme.com", vec!["token=2".into()]);
        resolver.remove("_signpost.acme.com");
        assert_eq!(
            seen_by_code_under_test
                .txt_records("_signpost.acme.com")
                .await,
            Err(DnsError::NotFound)
        );
    }

    #[test]
    fn dns_reason_codes_are_stable() {
        assert_eq!(DnsError::NotFound.reason(), "DNS_NO_RECORD");
        assert_eq!(DnsError::Failed("timeout".into()).reason(), "DNS_FAILED");
    }

    #[tokio::test]
    async fn system_resolver_builds_and_works_as_a_trait_object() {
        let resolver: Arc<dyn TxtResolver> = Arc::new(SystemTxtResolver::new());
        drop(resolver);
    }
}
