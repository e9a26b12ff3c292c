//! Topic exchange matching: a trie of binding keys (STUB: being written).

/// Binding keys of one topic exchange, as a trie of words; `*` and `#` are wildcard edges.
///
/// A multiset: the same (binding key, destination) may be inserted twice and is then removed
/// once per `remove`. The caller keeps bindings unique.
#[derive(Debug)]
pub struct TopicTrie<T> {
    entries: Vec<(Vec<u8>, T)>,
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            entries: Vec::new(),
        }
    }
}

impl<T: PartialEq> TopicTrie<T> {
    pub fn new() -> Self {
        TopicTrie::default()
    }

    /// Adds `dest` under `binding_key`.
    pub fn insert(&mut self, binding_key: &[u8], dest: T) {
        self.entries.push((binding_key.to_vec(), dest));
    }

    /// Removes one occurrence of `dest` under `binding_key`; false if there was none.
    pub fn remove(&mut self, binding_key: &[u8], dest: &T) -> bool {
        match self
            .entries
            .iter()
            .position(|(k, d)| k == binding_key && d == dest)
        {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Calls `f` for every destination whose binding key matches `routing_key` (possibly more
    /// than once for a destination bound by several matching keys). Allocates nothing.
    pub fn for_each_match(&self, routing_key: &[u8], f: &mut dyn FnMut(&T)) {
        let _ = routing_key;
        let _ = f;
    }
}
