//! What a queue holds behind its mutex: the ready list, the requeued messages, the consumers, and
//! its message store; and the moves between them: take the next message (reading paged-out ones
//! back from the store), drop what expired or does not fit, dispatch to consumers.
//!
//! Everything here runs under the queue's lock and never blocks on anything but the store's file
//! reads; it never routes (dead-lettered messages are collected in `dropped` for the caller).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::super::message::{now_ms, Entry, Message, Reason};
use super::super::storage::{LaneFilter, MessageStore, Position};
use super::consumer::{ChannelCredit, Consumer};
use super::ready::{Ready, Run, Slot};

/// Paged-out messages read back at once at most (see `QueueState::read_run`).
const READ_AHEAD_MESSAGES: usize = 4096;

/// How many of a run's `left` messages one read takes back.
fn read_batch(left: u64) -> usize {
    usize::try_from(left).map_or(READ_AHEAD_MESSAGES, |left| {
        left.clamp(1, READ_AHEAD_MESSAGES)
    })
}

/// What a message costs in memory while a queue holds it (bytes, roughly).
pub(super) fn footprint(message: &Message) -> usize {
    message.body().len() + message.properties().len() + 96
}

fn body_len(message: &Message) -> u64 {
    message.body().len() as u64
}

/// Whether a message stamped to expire at `expires` has expired at `now` (both in ms since the
/// epoch; 0 never expires). Strict: a message with a TTL of 0 may still go to a consumer that
/// is ready in the millisecond it arrives, as in RabbitMQ.
pub(super) fn expired(expires: u64, now: u64) -> bool {
    expires != 0 && expires < now
}

#[derive(Debug, Default)]
pub(super) struct QueueState {
    /// Where its messages are kept besides `ready` (see `broker/storage`).
    pub store: Box<dyn MessageStore>,
    pub ready: Ready,
    /// Bytes of messages `ready` holds in memory.
    pub memory: usize,
    /// Body bytes of the ready and requeued messages (`x-max-length-bytes`), those in runs
    /// too.
    pub bytes: u64,
    pub requeued: BinaryHeap<Reverse<Entry>>,
    /// Deliveries the unacked timeout took back from a channel that still holds them (see
    /// `parked.rs`): not in `len()`, counted as ready. Boxed, and `None` while there are none
    /// (almost always): 8 bytes in every queue instead of an empty `Vec`'s 24 (so the box
    /// around the `Vec` clippy warns of is the point).
    #[allow(clippy::box_collection)]
    pub parked: Option<Box<Vec<Parked>>>,
    pub next_seq: u64,
    /// Messages taken, and handed out, since the queue was created (see `stats.rs`).
    pub published: u64,
    pub delivered: u64,
    pub consumers: Vec<Arc<Consumer>>,
    /// Some consumers have another `x-priority` than others (else dispatch serves them all as
    /// one level without looking at priorities).
    pub mixed_priorities: bool,
    /// Messages given up on (expired, or dropped for length) that go to the dead-letter
    /// exchange once the lock is let go.
    pub dropped: Vec<(Arc<Message>, Reason)>,
    /// The queue dead-letters: what it gives up on is kept in `dropped`.
    pub dead_letters: bool,
    /// Some ready message may have an expiry time (the queue has a TTL, or was sent a message
    /// with an `expiration`).
    pub expiring: bool,
    /// Round robin: where the next search for a consumer with credit starts (an index into
    /// `consumers`; a `u32` packs beside the flags).
    pub next_consumer: u32,
    pub deleted: bool,
}

/// A delivery parked by the unacked timeout (see `parked.rs`): the entry and the channel (its credit, the channel's identity in the
/// broker) that must not get it again.
#[derive(Debug)]
pub(super) struct Parked {
    pub entry: Entry,
    pub holder: Arc<ChannelCredit>,
}

impl Parked {
    pub(super) fn held_by(&self, holder: &Arc<ChannelCredit>) -> bool {
        Arc::ptr_eq(&self.holder, holder)
    }
}

/// A message taken out of the ready list or the requeued ones.
struct Taken {
    seq: u64,
    priority: u8,
    expires: u64,
    message: Arc<Message>,
    position: Option<Position>,
    redelivered: bool,
}

impl QueueState {
    pub fn for_limits(limits: &super::limits::Limits) -> QueueState {
        QueueState {
            ready: Ready::new(limits.max_priority),
            dead_letters: limits.dead_letter.is_some(),
            expiring: limits.message_ttl.is_some(),
            ..QueueState::default()
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.ready.len() + self.requeued.len()
    }

    /// The messages counted as ready (`message_count`): those in the ready list and the
    /// requeued ones, and the parked ones too.
    pub fn ready_count(&self) -> usize {
        self.len() + self.parked_len()
    }

    /// Tells the store that a stored message went out (see [`MessageStore::delivered`]).
    pub fn record_delivery(&mut self, entry: &Entry, position: Position, no_ack: bool) {
        self.store.delivered(
            position,
            &entry.message,
            entry.expires,
            no_ack,
            entry.redelivered,
        );
    }

    /// Puts a message back among the requeued ones (served first, in their original order).
    #[inline]
    pub fn push_front(&mut self, entry: Entry) {
        self.bytes += body_len(&entry.message);
        self.requeued.push(Reverse(entry));
    }

    /// Whether the next message to be delivered is a requeued one: requeued ones go first
    /// within their priority.
    #[inline]
    fn requeued_first(&self) -> bool {
        match (self.requeued.peek(), self.ready.top()) {
            (Some(Reverse(entry)), Some(top)) => entry.priority >= top,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Takes the next message to be delivered: requeued ones first within the highest priority.
    #[inline]
    fn take_next(&mut self) -> Option<Taken> {
        if self.requeued_first() {
            let Reverse(entry) = self.requeued.pop()?;
            self.bytes = self.bytes.saturating_sub(body_len(&entry.message));
            return Some(Taken {
                seq: entry.seq,
                priority: entry.priority,
                expires: entry.expires,
                message: entry.message,
                position: entry.position,
                redelivered: entry.redelivered,
            });
        }
        let (priority, slot) = self.pop_slot()?;
        Some(self.taken(priority, slot))
    }

    /// Takes the next in-memory message of the highest lane, reading the lane's run back
    /// first if its slots are empty, and after, if that emptied them: a lane's head is kept in
    /// memory (for its expiry time, and for the next taker).
    #[inline]
    fn pop_slot(&mut self) -> Option<(u8, Slot)> {
        loop {
            let lane = self.ready.top()?;
            if let Some(slot) = self.ready.pop_front(lane) {
                if self.ready.wants_reading(lane) {
                    self.read_run(lane);
                }
                return Some((lane, slot));
            }
            if !self.read_run(lane) {
                return None;
            }
        }
    }

    /// What a reader of `lane`'s run skips: nothing in a queue with one lane.
    fn lane_filter(&self, lane: u8) -> Option<LaneFilter> {
        let levels = self.ready.levels();
        (levels > 0).then_some(LaneFilter { lane, levels })
    }

    /// Reads the head of every lane that has a run and nothing in memory (after recovery).
    pub fn read_heads(&mut self) {
        for lane in 0..=self.ready.levels() {
            if self.ready.wants_reading(lane) {
                self.read_run(lane);
            }
        }
    }

    /// Settles every message of a lane's run (a purge), reading them back in runs to know
    /// which records are the lane's; how many it settled.
    pub fn settle_run(&mut self, lane: u8, run: Run) -> u64 {
        let wanted = self.lane_filter(lane);
        let (mut cursor, mut left, mut settled) = (run.cursor, run.count, 0);
        while left > 0 {
            let max = read_batch(left);
            let read = match self.store.read_next(cursor, wanted, max) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(error = %e, "queue: purging paged-out messages failed");
                    break;
                }
            };
            for loaded in &read.messages {
                self.store
                    .settle(loaded.position, Some((&loaded.message, loaded.expires)));
            }
            let count = read.messages.len() as u64 + read.lost;
            settled += count;
            left = left.saturating_sub(count);
            if read.end || (count == 0 && read.next == cursor) {
                break;
            }
            cursor = read.next;
        }
        settled
    }

    /// Reads the next messages of a lane's run back into its slots (one read of the store's,
    /// more while it finds only other lanes' records): false if it cannot now (an error,
    /// logged; the run is left as it was, for a later try).
    fn read_run(&mut self, lane: u8) -> bool {
        let wanted = self.lane_filter(lane);
        while let Some(run) = self.ready.run(lane) {
            let max = read_batch(run.count);
            let read = match self.store.read_next(run.cursor, wanted, max) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(error = %e, "queue: reading paged-out messages back failed");
                    return false;
                }
            };
            let loaded = read.messages.len() as u64;
            let stuck = loaded == 0 && read.next == run.cursor && !read.end && read.lost == 0;
            for loaded in read.messages {
                let message = Arc::new(loaded.message);
                self.memory += footprint(&message);
                self.expiring |= loaded.expires != 0;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.ready.push_loaded(
                    lane,
                    Slot {
                        seq,
                        expires: loaded.expires,
                        message,
                        position: Some(loaded.position),
                        redelivered: loaded.redelivered,
                    },
                );
            }
            self.ready
                .advance_run(lane, read.next, loaded, read.lost, read.end);
            if stuck {
                tracing::error!(
                    segment = run.cursor.segment,
                    offset = run.cursor.offset,
                    "queue: reading paged-out messages back does not move past a record"
                );
                return false;
            }
            if loaded > 0 || read.end {
                break;
            }
        }
        true
    }

    /// Takes an in-memory ready message's cost off the queue's memory and byte counts.
    #[inline]
    fn forget(&mut self, message: &Message) {
        self.memory = self.memory.saturating_sub(footprint(message));
        self.bytes = self.bytes.saturating_sub(body_len(message));
    }

    #[inline]
    fn taken(&mut self, priority: u8, slot: Slot) -> Taken {
        self.forget(&slot.message);
        Taken {
            seq: slot.seq,
            priority,
            expires: slot.expires,
            message: slot.message,
            position: slot.position,
            redelivered: slot.redelivered,
        }
    }

    /// The next message: requeued ones first, then the ready list, reading paged-out messages
    /// back from the log. Expired messages met on the way are dropped (or dead-lettered).
    pub fn pop(&mut self) -> Option<Entry> {
        self.pop_at(None)
    }

    /// [`QueueState::pop`], judging expiry at `now` (ms since the epoch) if given, else at the
    /// clock's time when an expiring message comes up. A publish passes the time it stamped
    /// the message with, so that a message with a TTL of 0 still reaches a consumer ready for
    /// it however the clock ticks meanwhile.
    fn pop_at(&mut self, now: Option<u64>) -> Option<Entry> {
        if self.requeued.is_empty() && !self.expiring {
            // The common case: the next ready message, nothing requeued, nothing expires.
            let (priority, slot) = self.pop_slot()?;
            self.forget(&slot.message);
            return Some(Entry {
                seq: slot.seq,
                message: slot.message,
                redelivered: slot.redelivered,
                position: slot.position,
                priority,
                expires: slot.expires,
            });
        }
        let mut now = now;
        loop {
            let taken = self.take_next()?;
            if taken.expires != 0 && expired(taken.expires, *now.get_or_insert_with(now_ms)) {
                self.discard(taken, Reason::Expired);
                continue;
            }
            return Some(Entry {
                seq: taken.seq,
                message: taken.message,
                redelivered: taken.redelivered,
                position: taken.position,
                priority: taken.priority,
                expires: taken.expires,
            });
        }
    }

    /// Settles a message the queue gives up on in its store, and keeps it for the dead-letter
    /// exchange if the queue has one (and the message is known).
    fn discard(&mut self, taken: Taken, reason: Reason) {
        if let Some(position) = taken.position {
            self.store
                .settle(position, Some((&taken.message, taken.expires)));
        }
        if self.dead_letters {
            self.dropped.push((taken.message, reason));
        }
    }

    /// Drops the next message to be delivered (`x-overflow` = `drop-head`); false if the queue
    /// was empty.
    pub fn drop_head(&mut self) -> bool {
        let Some(taken) = self.take_next() else {
            return false;
        };
        self.discard(taken, Reason::Maxlen);
        true
    }

    /// Drops the next message to be delivered while it has expired. A message behind an
    /// unexpired one (in a priority queue: behind a higher priority) waits for it, as in
    /// RabbitMQ.
    #[inline]
    pub fn drop_expired(&mut self) {
        if self.expiring {
            self.drop_expired_heads();
        }
    }

    fn drop_expired_heads(&mut self) {
        let now = now_ms();
        while self
            .head_expires()
            .is_some_and(|expires| expired(expires, now))
        {
            let Some(taken) = self.take_next() else {
                break;
            };
            self.discard(taken, Reason::Expired);
        }
    }

    /// The expiry time of the next message to be delivered (see `take_next`).
    pub(super) fn head_expires(&self) -> Option<u64> {
        match self.requeued_first() {
            true => self.requeued.peek().map(|Reverse(entry)| entry.expires),
            false => {
                let top = self.ready.top()?;
                self.ready.front(top).map(|slot| slot.expires)
            }
        }
    }

    /// Drops the just-published message `seq` (priority lane `lane`) if no consumer took it: a
    /// message with a TTL of 0 is delivered at once or never.
    pub fn drop_if_waiting(&mut self, lane: u8, seq: u64) {
        if self.ready.back(lane).is_none_or(|slot| slot.seq != seq) {
            return;
        }
        if let Some(slot) = self.ready.pop_back(lane) {
            let taken = self.taken(lane, slot);
            self.discard(taken, Reason::Expired);
        }
    }

    pub fn remove_consumer(&mut self, consumer: &Arc<Consumer>) {
        self.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.mixed_priorities = self
            .consumers
            .windows(2)
            .any(|pair| pair[0].priority != pair[1].priority);
    }

    /// Hands ready messages to consumers with credit, round robin, until either runs out.
    /// Returns whether messages are left while the broker is what holds a consumer back
    /// ([`Consumer::behind`], see [`super::super::flow`]).
    /// `now`: the time to judge expiry at (see [`QueueState::pop_at`]).
    pub fn dispatch(&mut self, single_active: bool, now: Option<u64>) -> bool {
        // Consumers are kept sorted by priority, highest first (registration order within one
        // priority); a single-active-consumer queue serves only the first.
        let count = match single_active {
            true => self.consumers.len().min(1),
            false => self.consumers.len(),
        };
        if count == 0 {
            return false;
        }
        if self.has_parked() {
            self.dispatch_parked(count);
        }
        'messages: while self.len() > 0 {
            // The highest priority level with a consumer that has credit, round robin within it.
            let mut start = 0;
            while start < count {
                let level = self.consumers[start].priority;
                let width = match self.mixed_priorities {
                    false => count - start,
                    true => self.consumers[start..count]
                        .iter()
                        .take_while(|c| c.priority == level)
                        .count(),
                };
                let first = match self.next_consumer as usize {
                    next if next > start && next < start + width => next - start,
                    _ => 0,
                };
                for step in 0..width {
                    let index = start + (first + step) % width;
                    let consumer = &self.consumers[index];
                    if !consumer.try_take() {
                        continue;
                    }
                    let consumer = Arc::clone(consumer);
                    let Some(entry) = self.pop_at(now) else {
                        // Only expired or unreadable messages were left.
                        consumer.give_back();
                        return false;
                    };
                    // Consumers are far fewer than 2^32: the cast never truncates.
                    self.next_consumer = (index + 1) as u32;
                    self.delivered += 1;
                    if let Some(position) = entry.position {
                        self.record_delivery(&entry, position, consumer.no_ack);
                    }
                    if let Err(entry) = consumer.send(entry) {
                        // The consumer's connection is gone; its cleanup will remove it.
                        self.push_front(entry);
                        self.remove_consumer(&consumer);
                        return self.dispatch(single_active, now);
                    }
                    continue 'messages;
                }
                start += width;
            }
            return self.consumers[..count].iter().any(|c| c.behind());
        }
        false
    }
}
