//! A map kept as a `Vec` sorted by key: what the request parameters and the per-client
//! rules need (lookups by name, iteration in name order, a few to a few thousand entries).
//! `BTreeMap` did the same with ~16 KB more .wasm for its node code.

/// Entries sorted by key, each key once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap { entries: Vec::new() }
    }
}

impl<V> SortedMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Adds `key`; gives both back when the key is already there (the map is unchanged).
    pub fn insert_new(&mut self, key: String, value: V) -> Result<(), (String, V)> {
        match self.position(&key) {
            Ok(_) => Err((key, value)),
            Err(at) => {
                self.entries.insert(at, (key, value));
                Ok(())
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.position(key).ok().and_then(|at| self.entries.get(at)).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.position(key).ok().map(|at| self.entries.remove(at).1)
    }
}

/// In key order.
impl<'a, V> IntoIterator for &'a SortedMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&'a (String, V)) -> (&'a String, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut m = SortedMap::new();
        for k in ["scope", "audience", "zeta", "b"] {
            assert_eq!(m.insert_new(k.to_owned(), k.len()), Ok(()));
        }
        assert_eq!(m.insert_new("audience".to_owned(), 0), Err(("audience".to_owned(), 0)));
        let keys: Vec<&str> = (&m).into_iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["audience", "b", "scope", "zeta"]);
        assert_eq!(m.get("audience"), Some(&8));
        assert_eq!(m.remove("b"), Some(1));
        assert!(!m.contains_key("b") && m.get("b").is_none() && m.remove("b").is_none());
        assert_eq!((&m).into_iter().count(), 3);
    }
}
