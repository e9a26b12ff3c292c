//! The deliveries a channel has handed out and not yet had settled, by delivery tag, with the
//! deadlines of the unacked timeout.
//!
//! Delivery tags are assigned in increasing order, so deliveries sit in a deque sorted by tag: a
//! delivery is appended in O(1), acks of the oldest delivery (the usual case) pop the front in O(1),
//! acks elsewhere binary-search and leave a tombstone that is dropped when it reaches the front
//! (or by a compaction once tombstones outnumber live deliveries). `multiple` acks drain the
//! front.
//!
//! Deadlines: one FIFO of `(deadline, tag)` per distinct timeout value (normally one per channel).
//! Within one FIFO deadlines only grow, so the earliest deadline of the channel is the minimum of
//! the fronts, and a settled delivery's deadline is skipped when it comes up: no timer per
//! delivery, nothing to cancel on ack.
//!
//! Owns nothing but bookkeeping: it never talks to a queue or a consumer; the channel does that
//! with what this module hands back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::message::Entry;
use crate::broker::queue::Consumer;
use crate::broker::queue::Queue;

/// How many timed-out delivery tags are remembered so that their late settles still reach the
/// parked message; the oldest beyond are let go (and their messages requeued by the channel).
const EXPIRED_MEMORY: usize = 64 * 1024;

/// A delivery the unacked timeout took back while the client still holds it: its queue keeps
/// the message parked away from this channel until another channel's consumer takes it (see
/// `broker/queue/parked.rs`); a late settle of the tag reaches it there.
#[derive(Debug)]
pub(crate) struct TakenBack {
    pub queue: Arc<Queue>,
    /// The message's place in its queue (`Entry::seq`).
    pub seq: u64,
}

/// One delivery awaiting its ack.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub tag: u64,
    pub entry: Entry,
    pub queue: Arc<Queue>,
    /// The consumer it went to; `None` for `basic.get`.
    pub consumer: Option<Arc<Consumer>>,
}

#[derive(Debug, Default)]
pub(crate) struct Unacked {
    /// Sorted by tag; `None` is a settled delivery not yet dropped.
    slots: VecDeque<(u64, Option<Delivery>)>,
    live: usize,
    deadlines: Vec<(Duration, VecDeque<(Instant, u64)>)>,
    /// Tags taken back by the unacked timeout, by tag.
    expired: BTreeMap<u64, TakenBack>,
}

impl Unacked {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Records a delivery; its tag is greater than every tag recorded before. `timeout`: how
    /// long it may stay unacked (`None`: for ever).
    pub fn push(&mut self, delivery: Delivery, timeout: Option<Duration>, now: Instant) {
        let tag = delivery.tag;
        self.slots.push_back((tag, Some(delivery)));
        self.live += 1;
        let Some(timeout) = timeout else {
            return;
        };
        let deadline = now + timeout;
        match self.deadlines.iter_mut().find(|(t, _)| *t == timeout) {
            Some((_, queue)) => queue.push_back((deadline, tag)),
            None => self
                .deadlines
                .push((timeout, VecDeque::from([(deadline, tag)]))),
        }
    }

    fn index(&self, tag: u64) -> Option<usize> {
        match self.slots.front() {
            Some((first, _)) if *first == tag => Some(0),
            _ => self.slots.binary_search_by_key(&tag, |(t, _)| *t).ok(),
        }
    }

    pub fn contains(&self, tag: u64) -> bool {
        self.index(tag)
            .is_some_and(|index| self.slots[index].1.is_some())
    }

    /// Takes one delivery.
    pub fn take(&mut self, tag: u64) -> Option<Delivery> {
        let index = self.index(tag)?;
        let delivery = self.slots[index].1.take()?;
        self.live -= 1;
        self.tidy();
        Some(delivery)
    }

    /// Takes every delivery with a tag up to and including `tag`, in tag order.
    pub fn take_through(&mut self, tag: u64, out: &mut Vec<Delivery>) {
        while let Some((first, _)) = self.slots.front() {
            if *first > tag {
                break;
            }
            if let Some((_, Some(delivery))) = self.slots.pop_front() {
                self.live -= 1;
                out.push(delivery);
            }
        }
        self.tidy();
    }

    /// Takes every delivery, in tag order.
    pub fn take_all(&mut self, out: &mut Vec<Delivery>) {
        out.extend(self.slots.drain(..).filter_map(|(_, d)| d));
        self.live = 0;
        self.deadlines.clear();
    }

    /// Puts back a delivery taken earlier (a rolled-back transactional ack).
    pub fn restore(&mut self, delivery: Delivery) {
        let tag = delivery.tag;
        match self.slots.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(index) => {
                if self.slots[index].1.is_none() {
                    self.live += 1;
                }
                self.slots[index].1 = Some(delivery);
            }
            Err(index) => {
                self.slots.insert(index, (tag, Some(delivery)));
                self.live += 1;
            }
        }
    }

    /// Whether `tag` was taken back by the unacked timeout (and not settled since).
    pub fn was_taken_back(&self, tag: u64) -> bool {
        self.expired.contains_key(&tag)
    }

    /// Whether any delivery was taken back by the timeout (and not settled since).
    #[inline]
    pub fn has_taken_back(&self) -> bool {
        !self.expired.is_empty()
    }

    /// Takes the record of the timed-out deliveries with tags in `from..=through`.
    pub fn take_taken_back(&mut self, from: u64, through: u64, out: &mut Vec<TakenBack>) {
        let mut taken = self.expired.split_off(&from);
        if let Some(next) = through.checked_add(1) {
            let mut later = taken.split_off(&next);
            self.expired.append(&mut later);
        }
        out.extend(taken.into_values());
    }

    /// Remembers that `delivery` was taken back by the timeout; returns a record that had to
    /// be let go to keep the memory bounded (its message is to be requeued by the caller).
    pub fn remember_taken_back(&mut self, delivery: &Delivery) -> Option<TakenBack> {
        let evicted = match self.expired.len() >= EXPIRED_MEMORY {
            true => self.expired.pop_first().map(|(_, record)| record),
            false => None,
        };
        let record = TakenBack {
            queue: Arc::clone(&delivery.queue),
            seq: delivery.entry.seq,
        };
        self.expired.insert(delivery.tag, record);
        evicted
    }

    /// Takes every delivery that went to `consumer`, in tag order.
    pub fn take_of_consumer(&mut self, consumer: &Arc<Consumer>, out: &mut Vec<Delivery>) {
        for (_, slot) in self.slots.iter_mut() {
            let of_consumer = slot
                .as_ref()
                .and_then(|d| d.consumer.as_ref())
                .is_some_and(|c| Arc::ptr_eq(c, consumer));
            if of_consumer {
                if let Some(delivery) = slot.take() {
                    self.live -= 1;
                    out.push(delivery);
                }
            }
        }
        self.tidy();
    }

    /// The earliest deadline of a delivery still unacked (or of one settled since, which then
    /// costs one wasted wake-up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .iter()
            .filter_map(|(_, queue)| queue.front().map(|(at, _)| *at))
            .min()
    }

    /// Takes one delivery whose deadline has passed (the caller remembers it with
    /// [`Unacked::remember_taken_back`] if it parks it).
    pub fn pop_expired(&mut self, now: Instant) -> Option<Delivery> {
        for i in 0..self.deadlines.len() {
            while let Some(&(at, tag)) = self.deadlines[i].1.front() {
                if at > now {
                    break;
                }
                self.deadlines[i].1.pop_front();
                if let Some(delivery) = self.take(tag) {
                    return Some(delivery);
                }
            }
        }
        self.deadlines.retain(|(_, queue)| !queue.is_empty());
        None
    }

    /// Drops tombstones at the front, and everywhere once they outnumber live deliveries.
    fn tidy(&mut self) {
        while matches!(self.slots.front(), Some((_, None))) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + 32 {
            self.slots.retain(|(_, d)| d.is_some());
        }
        if self.live == 0 {
            self.slots.clear();
            self.deadlines.clear();
            return;
        }
        // Deadlines of settled deliveries: those before the oldest live delivery go at once (acks
        // mostly come in order), the rest once they outnumber live deliveries, so that this
        // bookkeeping stays proportional to what is unacked, not to what went through.
        let oldest = self.slots.front().map_or(u64::MAX, |(tag, _)| *tag);
        let live = self.live;
        let slots = &self.slots;
        for (_, queue) in &mut self.deadlines {
            while queue.front().is_some_and(|(_, tag)| *tag < oldest) {
                queue.pop_front();
            }
            if queue.len() > 2 * live + 32 {
                queue.retain(|(_, tag)| {
                    slots
                        .binary_search_by_key(tag, |(t, _)| *t)
                        .is_ok_and(|i| slots[i].1.is_some())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn acks_in_any_order_and_multiple() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        for tag in 1..=10 {
            unacked.push(delivery(&q, tag), Some(MINUTE), now);
        }
        assert_eq!(unacked.take(5).map(|d| d.entry.seq), Some(5));
        assert!(
            unacked.take(5).is_none(),
            "a second ack of a tag finds nothing"
        );
        assert!(!unacked.contains(5));
        let mut out = Vec::new();
        unacked.take_through(7, &mut out);
        let seqs: Vec<u64> = out.iter().map(|d| d.entry.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 6, 7]);
        assert_eq!(unacked.len(), 3);
        out.clear();
        unacked.take_all(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(unacked.len(), 0);
        assert!(unacked.take(9).is_none());
    }

    #[test]
    fn tombstones_do_not_accumulate() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        unacked.push(delivery(&q, 1), Some(MINUTE), now);
        for tag in 2..10_000 {
            unacked.push(delivery(&q, tag), Some(MINUTE), now);
            assert!(unacked.take(tag).is_some());
        }
        assert_eq!(unacked.len(), 1);
        assert!(unacked.slots.len() < 100, "{} slots", unacked.slots.len());
        assert!(unacked.contains(1));
        let deadlines: usize = unacked.deadlines.iter().map(|(_, q)| q.len()).sum();
        assert!(
            deadlines < 100,
            "{deadlines} deadlines kept for 1 live delivery"
        );
        assert_eq!(unacked.next_deadline(), Some(now + MINUTE));
    }

    #[test]
    fn deadlines_of_acked_deliveries_are_not_kept() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        let mut taken = Vec::new();
        for tag in 1..100_000 {
            unacked.push(delivery(&q, tag), Some(MINUTE), now);
            if tag % 100 == 0 {
                unacked.take_through(tag, &mut taken);
                taken.clear();
            }
        }
        let deadlines: usize = unacked.deadlines.iter().map(|(_, q)| q.len()).sum();
        assert!(
            deadlines <= 100,
            "{deadlines} deadlines kept for 99 live deliveries"
        );
        unacked.take_through(u64::MAX, &mut taken);
        assert_eq!(unacked.next_deadline(), None);
    }

    #[test]
    fn deadlines_expire_in_order_and_skip_settled_deliveries() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        unacked.push(delivery(&q, 1), Some(Duration::from_secs(1)), now);
        unacked.push(delivery(&q, 2), Some(Duration::from_secs(1)), now);
        unacked.push(delivery(&q, 3), Some(Duration::from_secs(5)), now);
        assert_eq!(unacked.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(unacked.take(1).is_some());
        assert!(unacked.pop_expired(now).is_none());
        let later = now + Duration::from_secs(2);
        let expired = unacked.pop_expired(later).expect("tag 2 expired");
        assert_eq!(expired.tag, 2);
        assert!(unacked.remember_taken_back(&expired).is_none());
        assert!(unacked.pop_expired(later).is_none());
        assert_eq!(unacked.next_deadline(), Some(now + Duration::from_secs(5)));
        assert!(unacked.was_taken_back(2));
        assert!(
            !unacked.was_taken_back(1),
            "an acked tag was never taken back"
        );
        let mut late = Vec::new();
        unacked.take_taken_back(2, 2, &mut late);
        assert_eq!(late.iter().map(|t| t.seq).collect::<Vec<_>>(), [2]);
        assert!(!unacked.was_taken_back(2), "a late settle is taken once");
    }

    #[test]
    fn restore_puts_a_delivery_back_in_tag_order() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        for tag in 1..=3 {
            unacked.push(delivery(&q, tag), Some(MINUTE), now);
        }
        let one = unacked.take(1).expect("tag 1");
        let two = unacked.take(2).expect("tag 2");
        unacked.restore(two);
        unacked.restore(one);
        let mut out = Vec::new();
        unacked.take_all(&mut out);
        let seqs: Vec<u64> = out.iter().map(|d| d.entry.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}

#[cfg(test)]
mod taken_back_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn no_timeout_means_no_deadline() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        unacked.push(delivery(&q, 1), None, now);
        assert_eq!(unacked.next_deadline(), None);
        assert!(unacked
            .pop_expired(now + Duration::from_secs(86_400))
            .is_none());
        assert!(unacked.contains(1));
    }

    #[test]
    fn taken_back_tags_are_taken_by_range() {
        let q = queue();
        let now = Instant::now();
        let mut unacked = Unacked::default();
        for tag in 1..=5 {
            unacked.push(delivery(&q, tag), Some(Duration::ZERO), now);
        }
        while let Some(d) = unacked.pop_expired(now) {
            assert!(unacked.remember_taken_back(&d).is_none());
        }
        let mut out = Vec::new();
        unacked.take_taken_back(0, 3, &mut out);
        assert_eq!(out.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3]);
        out.clear();
        unacked.take_taken_back(0, u64::MAX, &mut out);
        assert_eq!(out.iter().map(|t| t.seq).collect::<Vec<_>>(), [4, 5]);
        assert!(!unacked.was_taken_back(5));
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::broker::message::Message;
    use crate::broker::queue::QueueOptions;
    use bytes::Bytes;
    use warren_protocol::method::ShortStr;

    pub fn delivery(queue: &Arc<Queue>, seq: u64) -> Delivery {
        let message = Arc::new(Message::new(b"", b"q", &[0, 0], Bytes::new()));
        Delivery {
            tag: seq,
            entry: Entry {
                seq,
                message,
                redelivered: false,
                position: None,
                priority: 0,
                expires: 0,
            },
            queue: Arc::clone(queue),
            consumer: None,
        }
    }

    pub fn queue() -> Arc<Queue> {
        Arc::new(Queue::new(
            ShortStr::from_static("q"),
            QueueOptions {
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: Default::default(),
                consumer_timeout: None,
            },
        ))
    }
}
