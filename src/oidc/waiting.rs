//! `Waiting`, a bounded table of what waits for a browser to come back (sign-ins
//! until their callback, confirmations until they are submitted): each entry
//! lives a fixed time, is taken once, and past the capacity the oldest goes.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Waiting<K, V> {
    lifetime: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> std::fmt::Debug for Waiting<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("lifetime", &self.lifetime)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> Waiting<K, V> {
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            lifetime,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Adds (or replaces) `key`; expired entries are dropped first, and at the
    /// capacity the oldest entry makes room.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (since, _)| since.elapsed() < self.lifetime);
        if entries.len() >= self.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (since, _))| *since)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Removes and returns `key`'s entry when it is still alive and `accept`s
    /// it; an entry it refuses stays.
    pub fn take_if<Q>(&self, key: &Q, accept: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((since, value)) if since.elapsed() < self.lifetime && accept(value) => {
                entries.remove(key).map(|(_, value)| value)
            }
            _ => None,
        }
    }

    /// Removes and returns `key`'s entry when it is still alive.
    pub fn take<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.take_if(key, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_taken_once_expire_and_the_oldest_makes_room() {
        let waiting = Waiting::new(Duration::from_secs(60), 2);
        waiting.insert("a", 1);
        waiting.insert("b", 2);
        assert_eq!(waiting.take_if(&"a", |v| *v == 9), None, "refused, kept");
        waiting.insert("c", 3);
        assert_eq!(waiting.take(&"a"), None, "the oldest made room");
        assert_eq!(waiting.take(&"b"), Some(2));
        assert_eq!(waiting.take(&"b"), None, "taken once");
        let expired = Waiting::new(Duration::ZERO, 2);
        expired.insert("a", 1);
        assert_eq!(expired.take(&"a"), None);
    }
}
