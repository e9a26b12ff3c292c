//! Topic exchange matching: the binding keys of one topic exchange, as a trie of words.
//!
//! A binding key and a routing key are lists of words separated by `.`, as in RabbitMQ's topic
//! exchange: the empty key has no words at all, and empty words (`a..b`, `a.`, `.`) are ordinary
//! words. In a binding key `*` matches exactly one word and `#` zero or more words, anywhere and
//! any number of times; in a routing key they are plain words.
//!
//! This module owns that index and its matching. It must never allocate while matching a routing
//! key (publishes read it under the topology's read lock), and knows nothing of queues or
//! exchanges beyond the destination type `T`.
//!
//! Matching walks the trie once, carrying for each node the set of *positions* (how many words of
//! the routing key have been consumed) at which the binding-key prefix spelled by the path to that
//! node can end. A node is visited at most once per routing key, so a binding is reported at most
//! once however many ways its `#`s could share out the words.

/// Binding keys of one topic exchange, as a trie of words; `*` and `#` are wildcard edges.
///
/// A multiset: the same (binding key, destination) may be inserted twice and is then removed
/// once per `remove`. The caller keeps bindings unique.
#[derive(Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
        }
    }
}

impl<T: PartialEq> TopicTrie<T> {
    pub fn new() -> Self {
        TopicTrie::default()
    }

    /// Adds `dest` under `binding_key`.
    pub fn insert(&mut self, binding_key: &[u8], dest: T) {
        let mut node = &mut self.root;
        for word in words(binding_key) {
            node = node.child_or_insert(word);
        }
        node.destinations.push(dest);
    }

    /// Removes one occurrence of `dest` under `binding_key`; false if there was none. Nodes left
    /// with nothing under them are dropped.
    pub fn remove(&mut self, binding_key: &[u8], dest: &T) -> bool {
        self.root.remove(words(binding_key), dest)
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Calls `f` for every destination whose binding key matches `routing_key` (possibly more
    /// than once for a destination bound by several matching keys, but once per binding).
    /// Allocates nothing for routing keys of up to 255 bytes, which is every AMQP routing key.
    pub fn for_each_match(&self, routing_key: &[u8], f: &mut dyn FnMut(&T)) {
        let key = RoutingKey::new(routing_key);
        if key.word_count < INLINE_POSITIONS {
            let start: InlinePositions = Positions::start(key.word_count);
            self.root.visit(&key, &start, f);
        } else {
            // Longer than any short string, so never from a client: the sets go on the heap.
            let start: Vec<u64> = Positions::start(key.word_count);
            self.root.visit(&key, &start, f);
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.node_count()
    }
}

/// One node of the trie: the binding keys that end here and the edges to longer ones.
#[derive(Debug)]
struct Node<T> {
    /// Destinations of the binding keys that end at this node (a multiset).
    destinations: Vec<T>,
    /// Children by literal word (never `*` or `#`, which have their own slots).
    words: super::Map<Box<[u8]>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            destinations: Vec::new(),
            words: super::Map::default(),
            star: None,
            hash: None,
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.destinations.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    fn child_or_insert(&mut self, word: &[u8]) -> &mut Node<T> {
        match word {
            [b'*'] => self.star.get_or_insert_with(Box::default).as_mut(),
            [b'#'] => self.hash.get_or_insert_with(Box::default).as_mut(),
            _ => self.words.entry(Box::from(word)).or_default(),
        }
    }

    /// Reports the destinations at and below this node whose binding keys match `key`. `active`
    /// holds the positions at which this node's binding-key prefix can end; it is never empty.
    fn visit<P: Positions>(&self, key: &RoutingKey<'_>, active: &P, f: &mut dyn FnMut(&T)) {
        if active.contains(key.word_count) {
            for dest in &self.destinations {
                f(dest);
            }
        }
        if let (Some(hash), Some(first)) = (&self.hash, active.first()) {
            // `#` consumes zero or more words: every position from the first active one on.
            let mut next = P::empty(key.word_count);
            for position in first..=key.word_count {
                next.insert(position);
            }
            hash.visit(key, &next, f);
        }
        if let Some(star) = &self.star {
            // `*` consumes exactly one word, whatever it is.
            let mut next = P::empty(key.word_count);
            for position in (0..key.word_count).filter(|&p| active.contains(p)) {
                next.insert(position + 1);
            }
            if !next.is_empty() {
                star.visit(key, &next, f);
            }
        }
        if !self.words.is_empty() {
            self.visit_words(key, active, f);
        }
    }

    /// Follows the literal-word edges: the word at each active position names a child.
    fn visit_words<P: Positions>(&self, key: &RoutingKey<'_>, active: &P, f: &mut dyn FnMut(&T)) {
        for (position, word) in key.words().enumerate() {
            if !active.contains(position) {
                continue;
            }
            let Some(child) = self.words.get(word) else {
                continue;
            };
            // Active positions holding the same word lead to the same child: visit it once,
            // from the first of them, with all of them.
            let seen = key
                .words()
                .take(position)
                .enumerate()
                .any(|(earlier, w)| w == word && active.contains(earlier));
            if seen {
                continue;
            }
            let mut next = P::empty(key.word_count);
            for (later, w) in key.words().enumerate().skip(position) {
                if w == word && active.contains(later) {
                    next.insert(later + 1);
                }
            }
            child.visit(key, &next, f);
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        1 + self.words.values().map(Node::node_count).sum::<usize>()
            + self.star.as_ref().map_or(0, |n| n.node_count())
            + self.hash.as_ref().map_or(0, |n| n.node_count())
    }
}

impl<T: PartialEq> Node<T> {
    /// Removes one `dest` under the rest of a binding key's `words`, dropping emptied children.
    fn remove<'k, I>(&mut self, mut words: I, dest: &T) -> bool
    where
        I: Iterator<Item = &'k [u8]>,
    {
        let Some(word) = words.next() else {
            let Some(index) = self.destinations.iter().position(|d| d == dest) else {
                return false;
            };
            self.destinations.swap_remove(index);
            return true;
        };
        let slot = match word {
            [b'*'] => &mut self.star,
            [b'#'] => &mut self.hash,
            _ => {
                let Some(child) = self.words.get_mut(word) else {
                    return false;
                };
                let removed = child.remove(words, dest);
                if child.is_empty() {
                    self.words.remove(word);
                }
                return removed;
            }
        };
        let Some(child) = slot else {
            return false;
        };
        let removed = child.remove(words, dest);
        if child.is_empty() {
            *slot = None;
        }
        removed
    }
}

/// The words of a key: split on `.`, except that the empty key has none.
fn words(key: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let count = if key.is_empty() { 0 } else { usize::MAX };
    key.split(|&b| b == b'.').take(count)
}

/// A routing key being matched, with its number of words.
struct RoutingKey<'a> {
    bytes: &'a [u8],
    word_count: usize,
}

impl<'a> RoutingKey<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        RoutingKey {
            bytes,
            word_count: words(bytes).count(),
        }
    }

    fn words(&self) -> impl Iterator<Item = &'a [u8]> {
        words(self.bytes)
    }
}

/// Blocks of an inline position set: room for positions `0..=319`, so for any key of up to 319
/// words (a 255-byte key has at most 256).
const INLINE_BLOCKS: usize = 5;
const INLINE_POSITIONS: usize = INLINE_BLOCKS * 64;

type InlinePositions = [u64; INLINE_BLOCKS];

/// A set of positions `0..=word_count` in a routing key, as a bit set.
trait Positions: Sized {
    /// An empty set with room for the positions of a key of `word_count` words.
    fn empty(word_count: usize) -> Self;
    fn blocks(&self) -> &[u64];
    fn blocks_mut(&mut self) -> &mut [u64];

    /// The set where matching begins: no word consumed yet.
    fn start(word_count: usize) -> Self {
        let mut set = Self::empty(word_count);
        set.insert(0);
        set
    }

    fn insert(&mut self, position: usize) {
        if let Some(block) = self.blocks_mut().get_mut(position / 64) {
            *block |= 1 << (position % 64);
        }
    }

    fn contains(&self, position: usize) -> bool {
        self.blocks()
            .get(position / 64)
            .is_some_and(|block| block & (1 << (position % 64)) != 0)
    }

    fn first(&self) -> Option<usize> {
        let (index, block) = self.blocks().iter().enumerate().find(|(_, b)| **b != 0)?;
        Some(index * 64 + block.trailing_zeros() as usize)
    }

    fn is_empty(&self) -> bool {
        self.blocks().iter().all(|block| *block == 0)
    }
}

impl Positions for InlinePositions {
    fn empty(_word_count: usize) -> Self {
        [0; INLINE_BLOCKS]
    }
    fn blocks(&self) -> &[u64] {
        self
    }
    fn blocks_mut(&mut self) -> &mut [u64] {
        self
    }
}

impl Positions for Vec<u64> {
    fn empty(word_count: usize) -> Self {
        vec![0; word_count / 64 + 1]
    }
    fn blocks(&self) -> &[u64] {
        self
    }
    fn blocks_mut(&mut self) -> &mut [u64] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The destinations reported for `routing_key`, sorted (duplicates kept).
    fn matches(trie: &TopicTrie<u32>, routing_key: &str) -> Vec<u32> {
        let mut found = Vec::new();
        trie.for_each_match(routing_key.as_bytes(), &mut |d| found.push(*d));
        found.sort_unstable();
        found
    }

    /// A trie with one binding, destination 1.
    fn bound(binding_key: &str) -> TopicTrie<u32> {
        let mut trie = TopicTrie::new();
        trie.insert(binding_key.as_bytes(), 1);
        trie
    }

    /// Asserts that `binding_key` matches exactly the listed routing keys (once each) and none of
    /// the others.
    fn check(binding_key: &str, matching: &[&str], not_matching: &[&str]) {
        let trie = bound(binding_key);
        for key in matching {
            assert_eq!(matches(&trie, key), [1], "{binding_key:?} against {key:?}");
        }
        for key in not_matching {
            assert!(
                matches(&trie, key).is_empty(),
                "{binding_key:?} against {key:?}"
            );
        }
    }

    #[test]
    fn literal_words() {
        check(
            "a.b",
            &["a.b"],
            &["", "a", "b", "a.b.c", "x.a.b", "a.b.", "ab"],
        );
    }

    #[test]
    fn empty_key_has_no_words() {
        check("", &[""], &[".", "a", "a.b"]);
        check("*", &["a", "*", "#"], &["", ".", "a.b"]);
        check("#", &["", ".", "a", "a.b.c"], &[]);
    }

    #[test]
    fn empty_words_are_ordinary_words() {
        check("a..b", &["a..b"], &["a.b", "a...b", "a.x.b"]);
        check("a.*.b", &["a..b", "a.x.b"], &["a.b", "a...b"]);
        check("a.#.b", &["a.b", "a..b", "a...b", "a.x.y.b"], &["a.", "b"]);
        check(".", &["."], &["", "a", ".."]);
        check("*.*", &[".", "a.", ".b", "a.b"], &["", "a", ".."]);
        check("a.*", &["a.", "a.b"], &["a", "a.b.c"]);
        check("a.", &["a."], &["a", "a.b"]);
        check("#.", &[".", "a.", "a.b."], &["", "a", "a.b"]);
    }

    #[test]
    fn hash_alone_matches_every_key() {
        check("#", &["", ".", "a", "a.b", "a..b.", "#", "*"], &[]);
    }

    #[test]
    fn hash_hash_reports_once() {
        check("#.#", &["", "a", "a.b.c", "."], &[]);
        check("#.#.#", &["", "a.b.c.d"], &[]);
    }

    #[test]
    fn star_and_hash_together() {
        check("*.#", &["a", "a.b", "a.b.c", "."], &[""]);
        check("#.*", &["a", "a.b", "a.b.c", "."], &[""]);
        check("a.*.#", &["a.b", "a.b.c", "a."], &["", "a", "b.c"]);
        check("#.*.#", &["a", "a.b.c"], &[""]);
        check("*.#.*", &["a.b", "a.b.c"], &["", "a"]);
    }

    #[test]
    fn hash_in_the_middle_reports_once() {
        check(
            "a.#.#.b",
            &["a.b", "a.x.b", "a.b.b", "a.b.a.b"],
            &["a", "b", "a.b.c"],
        );
        check("#.a.#", &["a", "a.a", "a.a.a", "b.a.b"], &["", "b"]);
        check(
            "a.#.b.#",
            &["a.b", "a.b.b", "a.x.b.y", "a.b.a.b"],
            &["a", "b.a.b"],
        );
    }

    #[test]
    fn wildcard_words_in_a_routing_key_are_plain_words() {
        check("a", &["a"], &["*", "#"]);
        check("*", &["*", "#"], &["*.#"]);
        check("a.*", &["a.*", "a.#"], &["a", "*.*"]);
    }

    #[test]
    fn several_bindings_each_report_once() {
        let mut trie = TopicTrie::new();
        trie.insert(b"#", 1);
        trie.insert(b"a.#", 2);
        trie.insert(b"*.b", 3);
        trie.insert(b"a.b", 4);
        trie.insert(b"a.b", 1);
        assert_eq!(matches(&trie, "a.b"), [1, 1, 2, 3, 4]);
        assert_eq!(matches(&trie, "x.b"), [1, 3]);
        assert_eq!(matches(&trie, ""), [1]);
    }

    #[test]
    fn remove_is_a_multiset() {
        let mut trie = TopicTrie::new();
        trie.insert(b"a.*", 7);
        trie.insert(b"a.*", 7);
        assert_eq!(matches(&trie, "a.b"), [7, 7]);
        assert!(trie.remove(b"a.*", &7));
        assert_eq!(matches(&trie, "a.b"), [7]);
        assert!(trie.remove(b"a.*", &7));
        assert!(matches(&trie, "a.b").is_empty());
        assert!(!trie.remove(b"a.*", &7));
    }

    #[test]
    fn remove_of_an_absent_binding_is_false() {
        let mut trie = TopicTrie::new();
        assert!(!trie.remove(b"a", &1));
        trie.insert(b"a.b", 1);
        assert!(!trie.remove(b"a.b", &2));
        assert!(!trie.remove(b"a", &1));
        assert!(!trie.remove(b"a.b.c", &1));
        assert!(!trie.remove(b"a.*", &1));
        assert!(!trie.remove(b"a.#", &1));
        assert!(!trie.remove(b"", &1));
        assert_eq!(matches(&trie, "a.b"), [1]);
    }

    #[test]
    fn removing_everything_prunes_to_empty() {
        let keys = ["", "#", "a.#.b", "a.*", "a..b", "*.#.*", "a.b.c.d"];
        let mut trie = TopicTrie::new();
        assert!(trie.is_empty());
        for key in keys {
            trie.insert(key.as_bytes(), 1);
        }
        assert!(!trie.is_empty());
        for key in keys {
            assert!(trie.remove(key.as_bytes(), &1), "{key:?}");
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn keys_longer_than_a_short_string_still_match() {
        let long = vec!["a"; 400].join(".");
        check("#.a", &[&long], &[]);
        check("a.#", &[&long], &[]);
        check(&long, &[&long], &["a"]);
        check("#.b", &[], &[&long]);
    }

    // The property test: a reference matcher, the obvious recursion over word slices.

    fn split(key: &str) -> Vec<&str> {
        if key.is_empty() {
            Vec::new()
        } else {
            key.split('.').collect()
        }
    }

    fn reference(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => (0..=words.len()).any(|skip| reference(rest, &words[skip..])),
            Some((first, rest)) => match words.split_first() {
                Some((word, more)) => (*first == "*" || first == word) && reference(rest, more),
                None => false,
            },
        }
    }

    fn key(
        alphabet: &'static [&'static str],
        words: std::ops::Range<usize>,
    ) -> BoxedStrategy<String> {
        prop::collection::vec(prop::sample::select(alphabet), words)
            .prop_map(|words| words.join("."))
            .boxed()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u32),
        Remove(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        (any::<bool>(), 0..8usize, 0..3u32).prop_map(|(insert, key, dest)| {
            if insert {
                Op::Insert(key, dest)
            } else {
                Op::Remove(key, dest)
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_the_reference_under_churn(
            binding_keys in prop::collection::vec(key(&["a", "b", "", "*", "#"], 1..6), 8),
            routing_keys in prop::collection::vec(key(&["a", "b", "", "*"], 0..6), 6),
            ops in prop::collection::vec(op(), 1..40),
        ) {
            let mut trie = TopicTrie::new();
            let mut model: Vec<(usize, u32)> = Vec::new();
            let mut routing_keys = routing_keys;
            routing_keys.extend(["".to_owned(), ".".to_owned(), "a".to_owned()]);
            for op in ops {
                match op {
                    Op::Insert(k, dest) => {
                        trie.insert(binding_keys[k].as_bytes(), dest);
                        model.push((k, dest));
                    }
                    Op::Remove(k, dest) => {
                        let at = model
                            .iter()
                            .position(|(mk, md)| binding_keys[*mk] == binding_keys[k] && *md == dest);
                        if let Some(at) = at {
                            model.swap_remove(at);
                        }
                        prop_assert_eq!(trie.remove(binding_keys[k].as_bytes(), &dest), at.is_some());
                    }
                }
                prop_assert_eq!(trie.is_empty(), model.is_empty());
                for routing_key in &routing_keys {
                    let mut expected: Vec<u32> = model
                        .iter()
                        .filter(|(k, _)| reference(&split(&binding_keys[*k]), &split(routing_key)))
                        .map(|(_, dest)| *dest)
                        .collect();
                    expected.sort_unstable();
                    prop_assert_eq!(matches(&trie, routing_key), expected, "routing key {:?}", routing_key);
                }
            }
            // Pruning: as many nodes as a trie built afresh from what is left.
            let mut fresh = TopicTrie::new();
            for (k, dest) in &model {
                fresh.insert(binding_keys[*k].as_bytes(), *dest);
            }
            prop_assert_eq!(trie.node_count(), fresh.node_count());
        }
    }
}
