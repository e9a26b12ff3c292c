//! Deadlines: when the broker's tick must look at a queue again, earliest first.
//!
//! A min-heap of (deadline, weak handle) per vhost. A queue registers a deadline only when it has
//! something due (its head message expires, an unused `x-expires` queue runs out, messages wait
//! to be dead-lettered) and only when that is earlier than what it already registered; the tick
//! pops what is due and nothing else, so queues with nothing due cost the tick nothing.
//!
//! Owns the heap alone. Its lock is a leaf: nothing is locked under it (a queue may register
//! under its own lock; the tick pops, lets go, then locks the queues). It never judges whether an
//! entry is stale: the queue does ([`crate::broker::queue::Queue`]'s registered deadline), so an
//! entry whose queue moved its deadline is skipped cheaply, and one whose queue is gone (its weak
//! handle dead) is dropped when popped.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// The deadlines of the queues (or anything, `T`) that have something due.
#[derive(Debug)]
pub struct Deadlines<T> {
    heap: Mutex<BinaryHeap<Reverse<Due<T>>>>,
}

/// One registration: `at` ms since the Unix epoch (the clock of message expiry times).
#[derive(Debug)]
struct Due<T> {
    at: u64,
    what: Weak<T>,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            heap: Mutex::new(BinaryHeap::new()),
        }
    }
}

impl<T> Deadlines<T> {
    /// Asks for `what` to be looked at once the clock reaches `at` (ms since the epoch).
    pub fn register(&self, at: u64, what: Weak<T>) {
        self.heap.lock().push(Reverse(Due { at, what }));
    }

    /// Takes out every registration due at `now` (ms since the epoch), earliest first, with the
    /// deadline it was registered for; those whose target is gone are dropped. What the caller
    /// registers meanwhile waits for the next call, even if already due.
    pub fn take_due(&self, now: u64) -> Vec<(u64, Arc<T>)> {
        let mut due = Vec::new();
        let mut heap = self.heap.lock();
        while heap.peek().is_some_and(|Reverse(next)| next.at <= now) {
            if let Some(Reverse(next)) = heap.pop() {
                if let Some(what) = next.what.upgrade() {
                    due.push((next.at, what));
                }
            }
        }
        due
    }

    /// The earliest registered deadline, if any.
    pub fn earliest(&self) -> Option<u64> {
        self.heap.lock().peek().map(|Reverse(next)| next.at)
    }

    /// Registrations held (stale ones included, until they are popped).
    pub fn len(&self) -> usize {
        self.heap.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Something to register: a name.
    fn named(name: &str) -> Arc<String> {
        Arc::new(name.to_owned())
    }

    fn at(due: &[(u64, Arc<String>)]) -> Vec<(u64, &str)> {
        due.iter().map(|(at, what)| (*at, what.as_str())).collect()
    }

    #[test]
    fn only_what_is_due_is_taken_earliest_first() {
        let deadlines = Deadlines::default();
        let (a, b, c) = (named("a"), named("b"), named("c"));
        deadlines.register(30, Arc::downgrade(&c));
        deadlines.register(10, Arc::downgrade(&a));
        deadlines.register(20, Arc::downgrade(&b));
        assert_eq!(deadlines.earliest(), Some(10));
        assert!(deadlines.take_due(9).is_empty());
        assert_eq!(at(&deadlines.take_due(20)), [(10, "a"), (20, "b")]);
        assert_eq!(deadlines.len(), 1);
        assert_eq!(at(&deadlines.take_due(u64::MAX)), [(30, "c")]);
        assert!(deadlines.is_empty());
    }

    #[test]
    fn what_is_gone_is_dropped_when_popped() {
        let deadlines = Deadlines::default();
        let kept = named("kept");
        let gone = named("gone");
        deadlines.register(1, Arc::downgrade(&gone));
        deadlines.register(2, Arc::downgrade(&kept));
        drop(gone);
        assert_eq!(at(&deadlines.take_due(5)), [(2, "kept")]);
        assert!(deadlines.is_empty());
    }

    #[test]
    fn a_registration_made_while_handling_waits_for_the_next_call() {
        let deadlines = Deadlines::default();
        let a = named("a");
        deadlines.register(1, Arc::downgrade(&a));
        for (_, what) in deadlines.take_due(5) {
            // Already due again: not taken in the same call (no endless loop).
            deadlines.register(3, Arc::downgrade(&what));
        }
        assert_eq!(deadlines.len(), 1);
        assert_eq!(at(&deadlines.take_due(5)), [(3, "a")]);
    }
}
