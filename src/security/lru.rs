//! A bounded map that evicts its least recently used entry: the key tables of the rate limiter
//! and the authentication throttle.
//!
//! Every operation is O(1) (amortised for the hash map): entries live densely in one `Vec`,
//! linked most recent first; a removal moves the last slot into the hole. Memory is at most
//! `capacity` entries plus the map's slack, whatever the keys are.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    /// The more recently used neighbour, or `NIL` at the head.
    prev: usize,
    /// The less recently used neighbour, or `NIL` at the tail.
    next: usize,
}

/// A map holding at most `capacity` entries; inserting into a full map evicts the entry used
/// least recently. Reads through [`Lru::get_mut`] and [`Lru::get_or_insert`] count as uses.
#[derive(Debug)]
pub struct Lru<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    head: usize,
    tail: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map that will hold at most `capacity` entries (at least 1). Nothing is
    /// allocated up front.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.max(1),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The value for `key`, marked most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        self.touch(i);
        Some(&mut self.slots[i].value)
    }

    /// The value for `key` without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.index.get(key).map(|&i| &self.slots[i].value)
    }

    /// The value for `key`, inserted with `make` (evicting the least recently used entry when
    /// full) if absent; either way marked most recently used.
    pub fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if let Some(&i) = self.index.get(&key) {
            self.touch(i);
            return &mut self.slots[i].value;
        }
        if self.slots.len() >= self.capacity && self.tail != NIL {
            self.remove_at(self.tail);
        }
        let i = self.slots.len();
        self.slots.push(Slot {
            key: key.clone(),
            value: make(),
            prev: NIL,
            next: NIL,
        });
        self.index.insert(key, i);
        self.link_front(i);
        &mut self.slots[i].value
    }

    /// Inserts or replaces `key`'s value, marking it most recently used.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.get_mut(&key) {
            *slot = value;
            return;
        }
        self.get_or_insert(key, || value);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = *self.index.get(key)?;
        Some(self.remove_at(i))
    }

    /// Keeps only the entries for which `keep` is true, in one pass; then gives back memory
    /// when most of it is unused.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        // Downwards: a removal moves the last slot, already visited, into the hole.
        for i in (0..self.slots.len()).rev() {
            if i < self.slots.len() && !keep(&self.slots[i].key, &self.slots[i].value) {
                self.remove_at(i);
            }
        }
        if self.slots.capacity() > 64 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to_fit();
            self.index.shrink_to_fit();
        }
    }

    /// The keys from most to least recently used (tests and diagnostics).
    pub fn keys_by_recency(&self) -> Vec<K> {
        let mut out = Vec::with_capacity(self.slots.len());
        let mut i = self.head;
        while i != NIL {
            out.push(self.slots[i].key.clone());
            i = self.slots[i].next;
        }
        out
    }

    fn touch(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    fn link_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }

    /// Unlinks slot `i` and fills the hole with the last slot.
    fn remove_at(&mut self, i: usize) -> V {
        self.unlink(i);
        let last = self.slots.len() - 1;
        if i != last {
            // The last slot moves to `i`: repoint its neighbours and its index entry.
            let (prev, next) = (self.slots[last].prev, self.slots[last].next);
            match prev {
                NIL => self.head = i,
                p => self.slots[p].next = i,
            }
            match next {
                NIL => self.tail = i,
                n => self.slots[n].prev = i,
            }
            if let Some(entry) = self.index.get_mut(&self.slots[last].key) {
                *entry = i;
            }
        }
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.key);
        slot.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut l: Lru<u32, u32> = Lru::new(3);
        l.insert(1, 10);
        l.insert(2, 20);
        l.insert(3, 30);
        // use 1: now 2 is the oldest
        assert_eq!(l.get_mut(&1).copied(), Some(10));
        l.insert(4, 40);
        assert_eq!(l.len(), 3);
        assert!(l.peek(&2).is_none());
        assert_eq!(l.keys_by_recency(), vec![4, 1, 3]);
        *l.get_or_insert(5, || 50) += 1;
        assert_eq!(l.keys_by_recency(), vec![5, 4, 1]);
        assert_eq!(l.peek(&5), Some(&51));
    }

    #[test]
    fn insert_replaces_and_remove_keeps_links() {
        let mut l: Lru<u32, u32> = Lru::new(4);
        for k in 1..=4 {
            l.insert(k, k);
        }
        l.insert(2, 200);
        assert_eq!(l.keys_by_recency(), vec![2, 4, 3, 1]);
        assert_eq!(l.remove(&4), Some(4));
        assert_eq!(l.remove(&4), None);
        assert_eq!(l.keys_by_recency(), vec![2, 3, 1]);
        assert_eq!(l.remove(&1), Some(1));
        assert_eq!(l.keys_by_recency(), vec![2, 3]);
        l.insert(9, 9);
        assert_eq!(l.keys_by_recency(), vec![9, 2, 3]);
        assert_eq!(l.peek(&2), Some(&200));
    }

    #[test]
    fn retain_drops_and_keeps_order() {
        let mut l: Lru<u32, u32> = Lru::new(100);
        for k in 0..100 {
            l.insert(k, k);
        }
        l.retain(|k, _| k % 10 == 0);
        assert_eq!(l.len(), 10);
        assert_eq!(
            l.keys_by_recency(),
            (0..100).rev().filter(|k| k % 10 == 0).collect::<Vec<_>>()
        );
        for k in (0..100).filter(|k| k % 10 == 0) {
            assert_eq!(l.peek(&k), Some(&k));
        }
        l.retain(|_, _| false);
        assert!(l.is_empty());
        l.insert(7, 7);
        assert_eq!(l.keys_by_recency(), vec![7]);
    }

    #[test]
    fn capacity_one_and_many_evictions_stay_bounded() {
        let mut l: Lru<u64, ()> = Lru::new(0);
        l.insert(1, ());
        l.insert(2, ());
        assert_eq!(l.keys_by_recency(), vec![2]);
        let mut l: Lru<u64, u64> = Lru::new(1000);
        for k in 0..100_000u64 {
            l.insert(k, k);
            if k % 7 == 0 {
                l.get_mut(&(k / 2));
            }
        }
        assert_eq!(l.len(), 1000);
        assert_eq!(l.keys_by_recency().len(), 1000);
        assert!(l.peek(&99_999).is_some());
    }
}
