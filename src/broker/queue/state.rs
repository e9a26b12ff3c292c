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
use super::super::storage::{MessageStore, Position};
use super::consumer::{ChannelCredit, Consumer};
use super::ready::{Ready, Slot};

/// Paged-out messages offered to one read-ahead at most (see `QueueState::load_ahead`).
const READ_AHEAD_MESSAGES: usize = 4096;

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
    /// Body bytes of the ready and requeued messages (`x-max-length-bytes`). Exact when
    /// `read_back` is set; otherwise paged-out messages dropped unread are not subtracted.
    pub bytes: u64,
    pub requeued: BinaryHeap<Reverse<Entry>>,
    /// Deliveries the unacked timeout took back from a channel that still holds them (see
    /// `parked.rs`): not in `len()`, counted as ready.
    pub parked: Vec<Parked>,
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
    /// The queue dead-letters: what it gives up on is read back from the log and kept in
    /// `dropped`.
    pub dead_letters: bool,
    /// Paged-out messages given up on are read back (to dead-letter them, or to count their
    /// bytes); else they are settled unread.
    pub read_back: bool,
    /// Some ready message may have an expiry time (the queue has a TTL, or was sent a message
    /// with an `expiration`).
    pub expiring: bool,
    /// Since when the queue has been unused (for `x-expires`); `None`: since it was created.
    pub idle_since: Option<std::time::Instant>,
    /// Round robin: where the next search for a consumer with credit starts.
    pub next_consumer: usize,
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

/// A message taken out of the ready list or the requeued ones, perhaps not read back yet.
struct Taken {
    seq: u64,
    priority: u8,
    expires: u64,
    message: Option<Arc<Message>>,
    position: Option<Position>,
    redelivered: bool,
}

impl QueueState {
    pub fn for_limits(limits: &super::limits::Limits) -> QueueState {
        QueueState {
            ready: Ready::new(limits.max_priority),
            dead_letters: limits.dead_letter.is_some(),
            read_back: limits.dead_letter.is_some() || limits.max_bytes.is_some(),
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
        self.len() + self.parked.len()
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

    /// Takes the next message to be delivered: requeued ones first within the highest priority,
    /// without reading a paged-out one back.
    #[inline]
    fn take_next(&mut self) -> Option<Taken> {
        if self.requeued_first() {
            let Reverse(entry) = self.requeued.pop()?;
            self.bytes = self.bytes.saturating_sub(body_len(&entry.message));
            return Some(Taken {
                seq: entry.seq,
                priority: entry.priority,
                expires: entry.expires,
                message: Some(entry.message),
                position: entry.position,
                redelivered: entry.redelivered,
            });
        }
        let (priority, slot) = self.ready.pop_front()?;
        Some(self.taken(priority, slot))
    }

    /// Takes an in-memory ready message's cost off the queue's memory and byte counts.
    #[inline]
    fn forget(&mut self, message: &Message) {
        self.memory = self.memory.saturating_sub(footprint(message));
        self.bytes = self.bytes.saturating_sub(body_len(message));
    }

    #[inline]
    fn taken(&mut self, priority: u8, slot: Slot) -> Taken {
        if let Some(message) = &slot.message {
            self.forget(message);
        }
        Taken {
            seq: slot.seq,
            priority,
            expires: slot.expires,
            message: slot.message,
            position: slot.position,
            redelivered: slot.redelivered,
        }
    }

    /// Reads a taken message back if it was paged out; false if it cannot be (it was dropped).
    #[inline]
    fn fill(&mut self, taken: &mut Taken) -> bool {
        if taken.message.is_some() {
            return true;
        }
        let Some(message) = self.load_ahead(taken.priority, taken.position) else {
            return false;
        };
        self.bytes = self.bytes.saturating_sub(body_len(&message));
        taken.message = Some(message);
        true
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
        while self.requeued.is_empty() && !self.expiring {
            // The common case: the next ready message, nothing requeued, nothing expires.
            let (priority, slot) = self.ready.pop_front()?;
            let message = match slot.message {
                Some(message) => {
                    self.forget(&message);
                    message
                }
                None => match self.load_ahead(priority, slot.position) {
                    Some(message) => {
                        self.bytes = self.bytes.saturating_sub(body_len(&message));
                        message
                    }
                    // Unreadable (dropped with an error): the next one.
                    None => continue,
                },
            };
            return Some(Entry {
                seq: slot.seq,
                message,
                redelivered: slot.redelivered,
                position: slot.position,
                priority,
                expires: slot.expires,
            });
        }
        let mut now = now;
        loop {
            let mut taken = self.take_next()?;
            let is_expired =
                taken.expires != 0 && expired(taken.expires, *now.get_or_insert_with(now_ms));
            if (!is_expired || self.read_back) && !self.fill(&mut taken) {
                continue;
            }
            if is_expired {
                self.discard(taken, Reason::Expired);
                continue;
            }
            let Some(message) = taken.message else {
                continue;
            };
            return Some(Entry {
                seq: taken.seq,
                message,
                redelivered: taken.redelivered,
                position: taken.position,
                priority: taken.priority,
                expires: taken.expires,
            });
        }
    }

    /// Gives up on a taken message: reads it back first if the queue needs it (to dead-letter it
    /// or count its bytes), then [`QueueState::discard`]s it. An unreadable one is already
    /// dropped.
    fn give_up(&mut self, mut taken: Taken, reason: Reason) {
        if !self.read_back || self.fill(&mut taken) {
            self.discard(taken, reason);
        }
    }

    /// Settles a message the queue gives up on in its store, and keeps it for the dead-letter
    /// exchange if the queue has one (and the message is known).
    fn discard(&mut self, taken: Taken, reason: Reason) {
        if let Some(position) = taken.position {
            let known = taken.message.as_deref().map(|m| (m, taken.expires));
            self.store.settle(position, known);
        }
        if let (true, Some(message)) = (self.dead_letters, taken.message) {
            self.dropped.push((message, reason));
        }
    }

    /// Drops the next message to be delivered (`x-overflow` = `drop-head`); false if the queue
    /// was empty.
    pub fn drop_head(&mut self) -> bool {
        let Some(taken) = self.take_next() else {
            return false;
        };
        self.give_up(taken, Reason::Maxlen);
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
            self.give_up(taken, Reason::Expired);
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
            self.give_up(taken, Reason::Expired);
        }
    }

    /// Reads a paged-out message back, and with it (one read of the store's) the paged-out
    /// messages that follow it in its lane and in the store, which come back into memory: a
    /// consumer draining a backlog costs one read per run of messages, not one per message.
    fn load_ahead(&mut self, lane: u8, position: Option<Position>) -> Option<Arc<Message>> {
        let position = position?;
        let wanted: Vec<Position> = std::iter::once(position)
            .chain(
                self.ready
                    .lane_mut(lane)
                    .filter(|slot| slot.message.is_none())
                    .map_while(|slot| slot.position)
                    .take_while(|at| at.segment == position.segment),
            )
            .take(READ_AHEAD_MESSAGES)
            .collect();
        let mut read = self.store.read_ahead(&wanted).into_iter();
        let Some(first) = read.next() else {
            return self.store.read(position).map(Arc::new);
        };
        let mut read = wanted[1..].iter().zip(read).peekable();
        let mut loaded = 0;
        for slot in self.ready.lane_mut(lane) {
            let Some((at, _)) = read.peek() else {
                break;
            };
            if slot.message.is_some() || slot.position != Some(**at) {
                continue;
            }
            if let Some((_, message)) = read.next() {
                loaded += footprint(&message);
                slot.message = Some(Arc::new(message));
            }
        }
        self.memory += loaded;
        Some(Arc::new(first))
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
                let first = match self.next_consumer {
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
                    self.next_consumer = index + 1;
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
