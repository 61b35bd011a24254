//! [`CertificateCache`]: the signing certificates of SAML connections, whole
//! (DER included), by the log position of the event that set them.
//!
//! The read model keeps everything about a certificate but its DER (a
//! kilobyte each, for every SAML connection). A connection view needs the
//! DER, and every connection command answers with a view, so without this
//! each answer read and decoded that event from the log again (about 6% of
//! the server's CPU under the write benchmark). An event never changes once
//! written, so an entry is never stale; the cache only bounds its memory
//! ([`BUDGET_BYTES`]), evicting arbitrary entries (the hash order) when full,
//! which keeps a share of hits even when the connections in use outgrow it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use signpost_domain::schema;

/// Bytes of certificates the cache holds at most (by their DER and strings).
pub const BUDGET_BYTES: usize = 8 << 20;

/// Bookkeeping bytes counted per entry beyond its certificates' own.
const ENTRY_OVERHEAD: usize = 64;

/// Certificates by the position of the event that set them.
#[derive(Debug)]
pub struct CertificateCache {
    budget: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_position: HashMap<u64, (Arc<[schema::Certificate]>, usize)>,
    bytes: usize,
}

impl Default for CertificateCache {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

impl CertificateCache {
    /// A cache holding at most `budget` bytes of certificates.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            budget,
            entries: Mutex::default(),
        }
    }

    /// The certificates set at `position`, if held.
    pub fn get(&self, position: u64) -> Option<Arc<[schema::Certificate]>> {
        self.lock()
            .by_position
            .get(&position)
            .map(|(c, _)| c.clone())
    }

    /// Holds the certificates set at `position`, evicting others to stay
    /// within the budget (a set larger than the whole budget is not held).
    pub fn insert(&self, position: u64, certificates: Arc<[schema::Certificate]>) {
        let size = ENTRY_OVERHEAD
            + certificates
                .iter()
                .map(|c| c.der.len() + c.sha256_fingerprint.len() + c.subject.len() + 64)
                .sum::<usize>();
        if size > self.budget {
            return;
        }
        let mut entries = self.lock();
        if let Some((_, old)) = entries.by_position.remove(&position) {
            entries.bytes -= old;
        }
        while entries.bytes + size > self.budget {
            let Some(victim) = entries.by_position.keys().next().copied() else {
                break;
            };
            if let Some((_, freed)) = entries.by_position.remove(&victim) {
                entries.bytes -= freed;
            }
        }
        entries.bytes += size;
        entries.by_position.insert(position, (certificates, size));
    }

    /// Bytes held (as counted against the budget).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificates(der_len: usize, tag: u8) -> Arc<[schema::Certificate]> {
        vec![schema::Certificate {
            der: vec![tag; der_len],
            sha256_fingerprint: format!("{tag:02x}"),
            subject: "CN=test".into(),
            not_before: None,
            not_after: None,
        }]
        .into()
    }

    #[test]
    fn answers_what_was_set_at_a_position() {
        let cache = CertificateCache::default();
        assert!(cache.get(7).is_none());
        cache.insert(7, certificates(900, 1));
        cache.insert(8, certificates(900, 2));
        assert_eq!(cache.get(7).unwrap()[0].der, vec![1; 900]);
        assert_eq!(cache.get(8).unwrap()[0].der, vec![2; 900]);
        cache.insert(7, certificates(10, 3));
        assert_eq!(cache.get(7).unwrap()[0].der, vec![3; 10]);
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_fits() {
        let cache = CertificateCache::with_budget(20_000);
        for position in 0..1_000 {
            cache.insert(position, certificates(900, (position % 251) as u8));
            assert!(cache.bytes() <= 20_000, "{} bytes held", cache.bytes());
        }
        let held: Vec<u64> = (0..1_000).filter(|p| cache.get(*p).is_some()).collect();
        assert!(held.len() >= 15, "a full cache holds ~19 entries: {held:?}");
        assert!(held.contains(&999), "the last insert is held");
        for position in held {
            assert_eq!(
                cache.get(position).unwrap()[0].der[0],
                (position % 251) as u8
            );
        }
        cache.insert(5_000, certificates(30_000, 9));
        assert!(cache.get(5_000).is_none(), "larger than the budget");
        assert!(cache.bytes() <= 20_000);
    }
}
