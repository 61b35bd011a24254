//! [`VecMap`]: an ordered map kept as one sorted `Vec`, for the maps inside an aggregate
//! that hold a handful of entries for life (an organization's domain claims, a
//! connection's group assignments, an organization's routes).
//!
//! Why not `BTreeMap`: its first node is sized for eleven entries however few it holds
//! (about 900 bytes for one domain claim), and the control plane keeps one such map per
//! aggregate for every organization it serves. A sorted `Vec` that grows one slot at a
//! time while small holds one entry in the entry's own size. Lookups are binary searches;
//! inserts and removals shift the entries after the slot, which is cheap at the sizes the
//! domain allows (at most a few hundred entries, see `MAX_DOMAINS_PER_ORGANIZATION` and
//! `MAX_GROUPS`).
//!
//! The API is the part of `BTreeMap`'s the code needs, with the same semantics:
//! iteration in key order, `insert` replacing the value of an equal key (keeping the
//! key), `collect` keeping the last value of equal keys. A property test checks it
//! against `BTreeMap`.

use std::borrow::Borrow;
use std::fmt;
use std::iter::FusedIterator;

/// Below this many entries a full `VecMap` grows by exactly one slot: most of these maps
/// hold one to three entries for life, and `Vec`'s first allocation (four slots) would
/// waste the rest. From here on it grows as a `Vec` does (amortized doubling).
const EXACT_GROWTH_BELOW: usize = 8;

/// An ordered map in one sorted `Vec`. See the module documentation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VecMap<K, V> {
    /// Sorted by key, keys unique.
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            entries: self.entries.iter(),
        }
    }

    /// Entries in key order, values mutable.
    pub fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Values in key order, mutable.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The entry with the smallest key.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.entries.first().map(|(k, v)| (k, v))
    }

    /// The entry with the largest key.
    pub fn last_key_value(&self) -> Option<(&K, &V)> {
        self.entries.last().map(|(k, v)| (k, v))
    }

    /// Removes every entry (keeping the allocation).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Keeps the entries for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// Makes room for one more entry: one slot at a time while small.
    fn reserve_one(&mut self) {
        if self.entries.len() == self.entries.capacity() {
            if self.entries.len() < EXACT_GROWTH_BELOW {
                self.entries.reserve_exact(1);
            } else {
                self.entries.reserve(1);
            }
        }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// Where `key` is (`Ok`) or would go (`Err`).
    fn search<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.search(key).ok().map(|i| &self.entries[i].1)
    }

    /// Replaces the key equal to `key` (if any) with `key` itself: how equal keys come
    /// to share one allocation. The order is unchanged, since the keys are equal.
    pub fn share_key(&mut self, key: &K)
    where
        K: Clone,
    {
        if let Ok(at) = self.search(key) {
            self.entries[at].0 = key.clone();
        }
    }

    /// The stored key equal to `key`, and its value.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.search(key).ok().map(|i| {
            let (k, v) = &self.entries[i];
            (k, v)
        })
    }

    /// The value of `key`, mutable.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.search(key) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.search(key).is_ok()
    }

    /// Sets the value of `key`; returns the value it replaces. As `BTreeMap::insert`, an
    /// equal key already present is kept.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.reserve_one();
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.remove_entry(key).map(|(_, v)| v)
    }

    /// Removes `key`; returns the stored key and its value.
    pub fn remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.search(key).ok()?;
        let entry = self.entries.remove(i);
        // A map that shrank to a quarter of its room gives the rest back.
        if self.entries.capacity() > 4 * self.entries.len().max(1) {
            self.entries.shrink_to_fit();
        }
        Some(entry)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// As `BTreeMap`'s: in key order, the last value of equal keys wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: of equal keys, the last one given stays last, and is the one kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduplicated: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match deduplicated.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduplicated.push(entry),
            }
        }
        deduplicated.shrink_to_fit();
        Self {
            entries: deduplicated,
        }
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K, Q, V> std::ops::Index<&Q> for VecMap<K, V>
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = V;

    /// The value of `key`; panics when there is none, as `BTreeMap`'s.
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    /// Entries in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The entries of a [`VecMap`] in key order.
#[derive(Debug, Clone)]
pub struct Iter<'a, K, V> {
    entries: std::slice::Iter<'a, (K, V)>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries.next_back().map(|(k, v)| (k, v))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K, V> FusedIterator for Iter<'_, K, V> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u8),
        Retain(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space, so inserts hit existing keys and removals hit present ones.
        prop_oneof![
            6 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u8..24).prop_map(Op::Remove),
            1 => (1u8..5).prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    fn assert_same(map: &VecMap<u8, u16>, model: &BTreeMap<u8, u16>) {
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
        assert!(map.iter().eq(model.iter()));
        assert!(map.iter().rev().eq(model.iter().rev()));
        assert!(map.keys().eq(model.keys()));
        assert!(map.values().eq(model.values()));
        assert_eq!(map.first_key_value(), model.first_key_value());
        assert_eq!(map.last_key_value(), model.last_key_value());
        for key in 0..26u8 {
            assert_eq!(map.get(&key), model.get(&key));
            assert_eq!(map.contains_key(&key), model.contains_key(&key));
            assert_eq!(map.get_key_value(&key), model.get_key_value(&key));
        }
        assert_eq!(format!("{map:?}"), format!("{model:?}"));
    }

    proptest! {
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut map = VecMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::Retain(m) => {
                        map.retain(|k, v| (*k as u16).wrapping_add(*v) % m as u16 == 0);
                        model.retain(|k, v| (*k as u16).wrapping_add(*v) % m as u16 == 0);
                    }
                    Op::Clear => {
                        map.clear();
                        model.clear();
                    }
                }
                assert_same(&map, &model);
            }
            for (_, v) in map.iter_mut() {
                *v = v.wrapping_add(1);
            }
            for v in model.values_mut() {
                *v = v.wrapping_add(1);
            }
            assert_same(&map, &model);
            prop_assert!(map.clone().into_iter().eq(model.clone()));
        }

        #[test]
        fn collects_as_a_btree_map(entries in proptest::collection::vec((0u8..24, any::<u16>()), 0..60)) {
            let map: VecMap<u8, u16> = entries.iter().copied().collect();
            let model: BTreeMap<u8, u16> = entries.iter().copied().collect();
            assert_same(&map, &model);
            let mut extended = VecMap::new();
            extended.extend(entries.iter().copied());
            assert_same(&extended, &model);
        }
    }

    #[test]
    fn one_entry_takes_one_slot() {
        let mut map = VecMap::new();
        map.insert("example.com".to_owned(), 1);
        assert_eq!(map.entries.capacity(), 1);
        map.insert("example.org".to_owned(), 2);
        assert_eq!(map.entries.capacity(), 2);
    }

    #[test]
    fn looks_up_string_keys_by_str() {
        let map: VecMap<String, u8> = [("b".to_owned(), 2), ("a".to_owned(), 1)].into();
        assert_eq!(map.get("a"), Some(&1));
        assert_eq!(map["b"], 2);
        assert!(!map.contains_key("c"));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
