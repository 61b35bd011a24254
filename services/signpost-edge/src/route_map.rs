//! [`Routes`]: the routes by domain, as a persistent (copy-on-write) hash map.
//!
//! Deltas change a few routes of a table that readers may still hold, so the
//! map must be cheap to copy with a few changes; lookups must be a few cache
//! misses at most. `Routes` is a fixed number of shards, each a plain
//! `hashbrown` table of [`Route`]s behind an `Arc`: a copy clones the shard
//! pointers, a change clones only the shards it touches (a few hundred routes
//! each). Routes are stored without a separate key: a shard compares the
//! domain that leads each route's encoding. Hashing is foldhash, seeded per
//! process, so user-chosen lookups cannot aim at collisions.
//!
//! A lookup is: hash the domain, pick the shard (from hash bits that neither
//! the shard's bucket index nor its control bytes use), probe its control
//! bytes, compare the one route whose tag matches.

use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::route::Route;

/// Routes per shard a table is built for; a delta copies one shard per route
/// it changes.
const ROUTES_PER_SHARD: usize = 256;
/// The most shards a table has (a copy of the table clones every pointer).
const MAX_SHARDS: usize = 4096;

type Shard = HashTable<Route>;

/// The routes by normalized domain (see the module docs).
#[derive(Clone)]
pub struct Routes {
    /// A power of two of shards.
    shards: Vec<Arc<Shard>>,
    len: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("len", &self.len)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::with_shards(1, RandomState::default())
    }
}

impl Routes {
    /// An empty map.
    pub fn new() -> Routes {
        Routes::default()
    }

    fn with_shards(count: usize, hasher: RandomState) -> Routes {
        Routes {
            shards: (0..count).map(|_| Arc::new(Shard::new())).collect(),
            len: 0,
            hasher,
        }
    }

    fn shard_count_for(routes: usize) -> usize {
        (routes / ROUTES_PER_SHARD)
            .next_power_of_two()
            .clamp(1, MAX_SHARDS)
    }

    fn hash(&self, domain: &[u8]) -> u64 {
        self.hasher.hash_one(domain)
    }

    /// The shard of `hash`: bits 32 and up (hashbrown takes the bucket index
    /// from the low bits and the control byte from the top seven).
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    /// The route of a normalized domain, if it has one.
    pub fn get(&self, domain: &str) -> Option<&Route> {
        let domain = domain.as_bytes();
        let hash = self.hash(domain);
        self.shards[self.shard_index(hash)].find(hash, |route| route.domain_bytes() == domain)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route with its domain, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Route)> + '_ {
        self.values().map(|route| (route.domain(), route))
    }

    /// Every route, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Route> + '_ {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Adds `route`, replacing (and returning) the route of its domain.
    /// Copies the shard it lands in if another table shares it.
    pub fn insert(&mut self, route: Route) -> Option<Route> {
        let hash = self.hash(route.domain_bytes());
        let index = self.shard_index(hash);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[index]);
        let replaced = match shard.entry(
            hash,
            |existing| existing.domain_bytes() == route.domain_bytes(),
            |existing| hasher.hash_one(existing.domain_bytes()),
        ) {
            Entry::Occupied(mut occupied) => Some(std::mem::replace(occupied.get_mut(), route)),
            Entry::Vacant(vacant) => {
                vacant.insert(route);
                None
            }
        };
        if replaced.is_none() {
            self.len += 1;
            self.grow_if_crowded();
        }
        replaced
    }

    /// Removes the route of `domain`, copying its shard if shared.
    pub fn remove(&mut self, domain: &str) -> Option<Route> {
        let domain = domain.as_bytes();
        let hash = self.hash(domain);
        let index = self.shard_index(hash);
        self.shards[index].find(hash, |route| route.domain_bytes() == domain)?;
        let shard = Arc::make_mut(&mut self.shards[index]);
        let (removed, _) = shard
            .find_entry(hash, |route| route.domain_bytes() == domain)
            .ok()?
            .remove();
        self.len -= 1;
        Some(removed)
    }

    /// A table grown by deltas far past what it was built for gets more
    /// shards, so that a delta keeps copying a few hundred routes at most.
    fn grow_if_crowded(&mut self) {
        let wanted = Routes::shard_count_for(self.len);
        if wanted >= self.shards.len() * 4 {
            let mut grown = Routes::with_shards(wanted, self.hasher);
            for route in self.values() {
                grown.insert(route.clone());
            }
            *self = grown;
        }
    }
}

/// Builds [`Routes`] from routes arriving one by one (a snapshot): it keeps
/// them in a plain vector with their hashes, then lays out every shard once,
/// sized for its routes, at [`RoutesBuilder::build`].
#[derive(Debug, Default)]
pub struct RoutesBuilder {
    hasher: RandomState,
    routes: Vec<(u64, Route)>,
}

impl RoutesBuilder {
    /// No routes yet.
    pub fn new() -> RoutesBuilder {
        RoutesBuilder::default()
    }

    /// Adds `route`; a later route of the same domain replaces it.
    pub fn push(&mut self, route: Route) {
        // Hashed now, while the route's bytes are in the cache.
        let hash = self.hasher.hash_one(route.domain_bytes());
        self.routes.push((hash, route));
    }

    /// The routes, laid out in shards.
    pub fn build(self) -> Routes {
        let mut routes =
            Routes::with_shards(Routes::shard_count_for(self.routes.len()), self.hasher);
        let mut sizes = vec![0usize; routes.shards.len()];
        for (hash, _) in &self.routes {
            sizes[routes.shard_index(*hash)] += 1;
        }
        for (shard, size) in routes.shards.iter_mut().zip(sizes) {
            *shard = Arc::new(Shard::with_capacity(size));
        }
        for (hash, route) in self.routes {
            let index = routes.shard_index(hash);
            let hasher = &routes.hasher;
            let shard = Arc::get_mut(&mut routes.shards[index]).expect("a new shard is not shared");
            match shard.entry(
                hash,
                |existing| existing.domain_bytes() == route.domain_bytes(),
                |existing| hasher.hash_one(existing.domain_bytes()),
            ) {
                Entry::Occupied(mut occupied) => *occupied.get_mut() = route,
                Entry::Vacant(vacant) => {
                    vacant.insert(route);
                    routes.len += 1;
                }
            }
        }
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{oidc_route, saml_route};

    fn route(domain: &str) -> Route {
        Route::try_from(saml_route(domain)).unwrap()
    }

    #[test]
    fn inserted_routes_are_found_replaced_and_removed() {
        let mut routes = Routes::new();
        assert!(routes.insert(route("a.com")).is_none());
        assert!(routes.insert(route("b.com")).is_none());
        let oidc = Route::try_from(oidc_route("a.com")).unwrap();
        assert_eq!(routes.insert(oidc.clone()), Some(route("a.com")));
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.get("a.com"), Some(&oidc));
        assert!(routes.get("c.com").is_none());
        assert_eq!(routes.remove("b.com"), Some(route("b.com")));
        assert!(routes.remove("b.com").is_none());
        assert_eq!(routes.len(), 1);
        let mut domains: Vec<_> = routes.iter().map(|(domain, _)| domain).collect();
        domains.sort();
        assert_eq!(domains, ["a.com"]);
    }

    #[test]
    fn a_copy_is_not_changed_by_changes_to_the_original() {
        let mut builder = RoutesBuilder::new();
        for i in 0..5_000 {
            builder.push(route(&format!("d{i}.example")));
        }
        builder.push(Route::try_from(oidc_route("d7.example")).unwrap());
        let original = builder.build();
        assert_eq!(
            original.len(),
            5_000,
            "a later route of a domain replaces it"
        );
        assert_eq!(original.get("d7.example").unwrap().protocol_name(), "oidc");
        assert!(original.shards.len() > 1);
        let mut changed = original.clone();
        changed.remove("d1.example");
        changed.insert(route("new.example"));
        changed.insert(route("d7.example"));
        assert!(original.get("d1.example").is_some());
        assert!(original.get("new.example").is_none());
        assert_eq!(original.get("d7.example").unwrap().protocol_name(), "oidc");
        assert_eq!(changed.get("d7.example").unwrap().protocol_name(), "saml");
        assert_eq!(changed.len(), 5_000);
        // Untouched shards are shared, not copied.
        let shared = original
            .shards
            .iter()
            .zip(&changed.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= original.shards.len() - 3);
    }

    #[test]
    fn a_table_grown_by_deltas_gets_more_shards() {
        let mut routes = Routes::new();
        for i in 0..(ROUTES_PER_SHARD * 8) {
            routes.insert(route(&format!("d{i}.example")));
        }
        assert!(routes.shards.len() >= 4);
        assert_eq!(routes.len(), ROUTES_PER_SHARD * 8);
        for i in 0..(ROUTES_PER_SHARD * 8) {
            assert!(routes.get(&format!("d{i}.example")).is_some());
        }
        assert_eq!(routes.values().count(), routes.len());
    }
}
