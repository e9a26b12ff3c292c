//! A queue: its ready messages in order, its consumers, and the dispatch that moves one to the
//! other.
//!
//! State ([`state::QueueState`]) lives behind one mutex with short critical sections: enqueue,
//! take, requeue, and dispatch (which only pushes into consumer outboxes, never waits). Every
//! operation is O(1) amortised except requeue, O(log n) in the requeued messages. Unacked
//! deliveries are not held here: the channel that received them holds them by delivery tag and
//! gives them back ([`Queue::requeue`]) or settles them.
//!
//! Order: ready messages carry an increasing `seq`, in one FIFO lane per priority level
//! ([`ready::Ready`]; one lane unless `x-max-priority`). Requeued messages wait in a min-heap by
//! (priority, `seq`) and are served before the ready ones of their priority; since a queue
//! always delivers its lowest `seq` first within a priority, a requeue restores the original
//! order. Expired messages (`x-message-ttl`, `expiration`) are dropped when they reach the head,
//! and by the vhost's tick when the queue's deadline comes ([`Queue::expire`], `timer.rs`). This
//! module never takes the topology lock (lock order: topology, then queue) and never routes:
//! what it dead-letters it hands back to the caller.

pub mod consumer;
mod limits;
mod parked;
mod quorumed;
mod ready;
mod settle;
mod state;
mod stats;
mod streamed;
mod take;
mod timer;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use tracing::error;

use super::dedup::Dedup;
use super::flow::Flow;
use super::message::{now_ms, Entry, Message, Reason, Stamp};
use super::quorum::Quorum;
use super::storage::{Backlog, MessageStore};
use super::stream::Stream;
use crate::store::Store;
pub use consumer::{ChannelCredit, Consumer, Mail, Sink};
use limits::{Limits, NO_LIMITS};
use ready::{Ready, Slot};
use state::{footprint, QueueState};
pub use stats::{ConsumerInfo, QueueStats};
pub use timer::Expired;
use timer::Timer;

/// The properties a queue is declared with.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// `x-consumer-timeout`: how long a delivery may stay unacked.
    pub consumer_timeout: Option<Duration>,
}

/// A queue. Kept small for an idle queue (100,000 durable ones are issue 19's target; a unit
/// test bounds its size): what only some queues have is boxed (`limited`, with the `x-expires`
/// idle time; the parked deliveries in [`QueueState`]), and its storage keeps nothing of an
/// empty log.
#[derive(Debug)]
pub struct Queue {
    pub name: ShortStr,
    pub options: QueueOptions,
    /// `None` for a queue declared without limiting arguments ([`Queue::limits`]).
    limited: Option<Box<Limited>>,
    /// The group commit a durable queue's persistent messages wait for before they are
    /// confirmed (its storage's [`MessageStore::group_commit`]).
    group_commit: Option<Arc<Store>>,
    state: Mutex<QueueState>,
    /// Pushes back on publishers when deliveries fall behind.
    pub flow: Flow,
    /// Its place in the vhost's deadlines (see `timer.rs`).
    timer: Timer,
}

/// What a queue declared with limiting arguments keeps.
#[derive(Debug)]
struct Limited {
    limits: Limits,
    /// When the queue was created (or recovered): the start of its first `x-expires` period.
    created: Instant,
    /// Since when the queue has been unused (for `x-expires`), in nanoseconds after `created`
    /// (0: since it was created). Here rather than in `QueueState` because only a queue with
    /// `x-expires` reads it; an atomic because `Limited` is shared, but written under the
    /// queue's lock (see [`Queue::mark_used`]).
    idle_since: AtomicU64,
    /// `x-message-deduplication`: the window of keys it has seen (see `broker/dedup.rs`).
    dedup: Option<Arc<Dedup>>,
    /// A stream queue's log and readers (`x-queue-type: stream`, see `broker/stream`): it then
    /// keeps nothing in `QueueState`, and every operation goes to the stream.
    stream: Option<Arc<Stream>>,
    /// A quorum queue's Raft group and local consumers (`x-queue-type: quorum` on a cluster,
    /// see `broker/quorum`): every operation goes to it, as for a stream.
    quorum: Option<Arc<Quorum>>,
}

impl Limited {
    fn new(limits: Limits) -> Box<Limited> {
        Box::new(Limited {
            limits,
            created: Instant::now(),
            idle_since: AtomicU64::new(0),
            dedup: None,
            stream: None,
            quorum: None,
        })
    }
}

/// What [`Queue::publish`] did.
#[derive(Debug)]
pub struct Published {
    pub enqueued: Enqueued,
    /// The queue's storage buffers writes that the caller must flush ([`Queue::flush_log`])
    /// before it answers the publisher.
    pub logged: bool,
    /// Messages the queue gave up on (dropped for length, or expired), for the caller to
    /// dead-letter.
    pub dropped: Vec<(Arc<Message>, Reason)>,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue (in memory; transient, or the queue is not durable).
    Queued,
    /// In the queue and written to its storage: safe once the group commit has synced.
    Logged,
    /// Not taken: the queue was deleted meanwhile.
    Deleted,
    /// Not taken: the queue is at its `x-max-length` (or `-bytes`) and refuses more
    /// (`x-overflow` = `reject-publish`); a confirm-mode publisher gets a nack.
    Rejected,
    /// Not taken: writing it to the storage failed.
    Failed,
}

/// Why a consumer cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeRefused {
    /// An exclusive consumer asked for a queue with consumers, or any consumer for a queue with
    /// an exclusive one.
    ExclusiveInUse,
    Deleted,
}

impl Queue {
    /// A queue that keeps its messages in memory (until given a storage, [`Queue::with_storage`]).
    pub fn new(name: ShortStr, options: QueueOptions) -> Queue {
        let limits = Limits::from_arguments(&options.arguments);
        Queue {
            name,
            timer: Timer::default(),
            state: Mutex::new(QueueState::for_limits(&limits)),
            limited: (!limits.is_none()).then(|| Limited::new(limits)),
            options,
            group_commit: None,
            flow: Flow::default(),
        }
    }

    /// The queue drops duplicates with `dedup`'s window (`x-message-deduplication`; kept
    /// beside the limits, boxed: few queues have one).
    pub fn with_dedup(mut self, dedup: Option<Arc<Dedup>>) -> Queue {
        if let Some(dedup) = dedup {
            self.limited_mut().dedup = Some(dedup);
        }
        self
    }

    /// Its `Limited`, made (with no limits) if it had none.
    fn limited_mut(&mut self) -> &mut Limited {
        self.limited
            .get_or_insert_with(|| Limited::new(Limits::default()))
    }

    /// Its de-duplication window, if it was declared with one.
    #[inline]
    pub fn dedup(&self) -> Option<&Arc<Dedup>> {
        self.limited.as_ref()?.dedup.as_ref()
    }

    /// The queue keeps its messages in `store` (see `broker/storage`).
    pub fn with_storage(mut self, store: Box<dyn MessageStore>) -> Queue {
        self.group_commit = store.group_commit();
        self.state.get_mut().store = store;
        self
    }

    /// A durable queue on `store`, holding the messages recovered from it (a message left in
    /// the store is read back when consumers reach it).
    pub fn recovered(
        name: ShortStr,
        options: QueueOptions,
        store: Box<dyn MessageStore>,
        backlog: Backlog,
    ) -> Queue {
        let mut queue = Queue::new(name, options).with_storage(store);
        let state = queue.state.get_mut();
        state.bytes = backlog.bytes;
        state.expiring |= backlog.expiring;
        for recovered in backlog.messages {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.memory += footprint(&recovered.message);
            let lane = state.ready.lane_of(recovered.priority);
            state.ready.push_back(
                lane,
                Slot {
                    seq,
                    expires: recovered.expires,
                    message: recovered.message,
                    redelivered: recovered.redelivered,
                    position: Some(recovered.position),
                },
            );
        }
        for left in backlog.left {
            let lane = state.ready.lane_of(left.priority);
            state.ready.add_run(lane, left.first, left.count);
        }
        state.read_heads();
        queue
    }

    /// What limits the queue (its arguments, read at declare).
    #[inline]
    fn limits(&self) -> &Limits {
        self.limited.as_ref().map_or(&NO_LIMITS, |l| &l.limits)
    }

    /// Since when the queue has been unused: when it was last used ([`Queue::mark_used`]), else
    /// when it was created or recovered. Read only for a queue with `x-expires` (which keeps
    /// it; for any other, now).
    fn idle_since(&self) -> Instant {
        self.limited.as_ref().map_or_else(Instant::now, |l| {
            l.created + Duration::from_nanos(l.idle_since.load(Relaxed))
        })
    }

    /// The queue is used now: its `x-expires` period starts again. Called under the queue's
    /// lock (which orders it with the readers of [`Queue::idle_since`]), only for a queue with
    /// `x-expires`.
    fn mark_used(&self, _state: &QueueState) {
        if let Some(limited) = &self.limited {
            let since = u64::try_from(limited.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
            limited.idle_since.store(since, Relaxed);
        }
    }

    /// The queue's lock. `parking_lot`'s mutex is eventually fair: a publisher's connection that
    /// locks the queue for every message of a fast stream cannot keep a consumer's connection
    /// from getting it for seconds, as `std`'s unfair futex mutex let it (a consumer starved
    /// while a raw publisher sent 620k msg/s). It does not poison: a panic elsewhere leaves the
    /// state consistent (every mutation is a single push or pop).
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock()
    }

    pub fn is_exclusive_to_other(&self, connection: u64) -> bool {
        matches!(self.options.exclusive_owner, Some(owner) if owner != connection)
    }

    /// Appends a message and dispatches. A persistent message in a durable queue is appended to
    /// the log first (`Logged`: once the caller's [`Queue::flush_log`] has handed it to the group
    /// commit, the caller may wait for the sync with [`Store::syncer`]).
    pub fn publish(&self, message: &Arc<Message>, stamp: Stamp) -> Published {
        if let Some(stream) = self.stream() {
            return streamed::publish_to_stream(stream, message);
        }
        if let Some(quorum) = self.quorum() {
            return quorumed::publish_to_quorum(quorum, message, stamp.ttl);
        }
        let mut state = self.lock();
        let enqueued = self.enqueue(&mut state, message, stamp);
        let dropped = std::mem::take(&mut state.dropped);
        self.note_due(&state);
        Published {
            enqueued,
            logged: state.store.buffers(),
            dropped,
        }
    }

    fn enqueue(&self, state: &mut QueueState, message: &Arc<Message>, stamp: Stamp) -> Enqueued {
        if state.deleted {
            return Enqueued::Deleted;
        }
        state.drop_expired();
        let body = message.body().len() as u64;
        if self.limits().reject && self.limits().full_for(state.len(), state.bytes, body) {
            if self.limits().reject_dead_letters && self.limits().dead_letter.is_some() {
                state.dropped.push((Arc::clone(message), Reason::Maxlen));
            }
            return Enqueued::Rejected;
        }
        // The sooner of the queue's TTL and the message's own.
        let ttl = match (self.limits().message_ttl, stamp.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = ttl.map(|_| now_ms());
        let expires = match (ttl, now) {
            (Some(ttl), Some(now)) => now.saturating_add(ttl).max(1),
            _ => 0,
        };
        state.expiring |= expires != 0;
        let lane = state.ready.lane_of(stamp.priority);
        let cost = footprint(message);
        let resident = match state.ready.run(lane) {
            // Behind the lane's run: to the log, in order.
            Some(_) => usize::MAX,
            // A lane's head stays in memory.
            None if state.ready.no_slots(lane) => 0,
            None => state.memory + cost,
        };
        let Ok(stored) = state
            .store
            .put(message, stamp.persistent, expires, resident)
        else {
            return Enqueued::Failed;
        };
        state.bytes += body;
        state.published += 1;
        let seq = state.next_seq;
        state.next_seq += 1;
        let slot = Slot {
            seq,
            expires,
            message: Arc::clone(message),
            redelivered: false,
            position: stored.position,
        };
        match (stored.in_memory, stored.position, state.ready.run(lane)) {
            (false, Some(position), _) => state.ready.push_to_run(lane, position),
            (_, _, None) => {
                state.memory += cost;
                state.ready.push_back(lane, slot);
            }
            (_, _, Some(_)) => {
                // Could not be paged out behind the run: kept, served before it.
                tracing::warn!(queue = %self.name, "queue: a message could not join its lane's paged-out run; it is served out of order");
                state.requeued.push(Reverse(Entry {
                    seq: slot.seq,
                    message: slot.message,
                    redelivered: false,
                    position: slot.position,
                    priority: lane,
                    expires,
                }));
            }
        }
        self.dispatch_at(state, now);
        if ttl == Some(0) {
            state.drop_if_waiting(lane, seq);
        }
        self.trim(state);
        match stored.durable {
            true => Enqueued::Logged,
            false => Enqueued::Queued,
        }
    }

    /// Drops messages from the head while the queue holds more than `x-max-length` messages or
    /// `x-max-length-bytes` bytes (`drop-head`); what is dropped goes to the dead-letter
    /// exchange (reason maxlen), by the caller once the lock is let go.
    #[inline]
    fn trim(&self, state: &mut QueueState) {
        if !self.limits().reject && self.limits().bounded() {
            self.drop_heads(state);
        }
    }

    fn drop_heads(&self, state: &mut QueueState) {
        while self.limits().exceeded(state.len(), state.bytes) {
            if !state.drop_head() {
                break;
            }
        }
    }

    /// Gives back the disk space of mostly-settled log segments (see [`Log::compact`]); bytes
    /// freed. Blocks (reads, fsyncs, punches): call it off the async runtime. The queue's lock is
    /// held only for the log's bookkeeping steps (picking a segment, appending its punched
    /// pairs), never across the walk, the syncs or the punching.
    pub fn compact(&self) -> std::io::Result<u64> {
        /// Segments compacted per call at most; the others stay due for the next call.
        const MAX_SEGMENTS: usize = 16;
        let started = std::time::Instant::now();
        let mut held = std::time::Duration::ZERO;
        let mut freed = 0;
        let mut segments = 0;
        while segments < MAX_SEGMENTS {
            let job = {
                let mut state = self.lock();
                let locked = std::time::Instant::now();
                let job = state.store.start_compaction();
                held += locked.elapsed();
                job?
            };
            let Some(job) = job else {
                break;
            };
            segments += 1;
            let plan = job.plan()?;
            let go_on = {
                let mut state = self.lock();
                let locked = std::time::Instant::now();
                // False for a queue deleted meanwhile (its storage destroyed).
                let go_on = state.store.record_punches(&job, &plan);
                held += locked.elapsed();
                go_on?
            };
            if !go_on {
                continue;
            }
            freed += match job.sync_and_punch(&plan) {
                Ok(bytes) => bytes,
                Err(e) => self.lock().store.punch_failed(e)?,
            };
        }
        if segments > 0 {
            tracing::debug!(
                queue = %self.name,
                segments,
                freed,
                locked_us = held.as_micros() as u64,
                total_us = started.elapsed().as_micros() as u64,
                "queue log compaction"
            );
        }
        Ok(freed)
    }

    /// The group commit a durable queue's persistent messages wait for.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.group_commit.as_ref()
    }

    /// Where messages this queue gives up on go: (dead-letter exchange, routing key).
    pub fn dead_letter_target(&self) -> Option<(ShortStr, Option<ShortStr>)> {
        self.limits().dead_letter.clone()
    }

    /// How long a message rejected for the `retries`-th time (0: the first) is held before it
    /// comes back (`x-retry-delays`); `None`: it is dead-lettered instead.
    pub fn retry_delay(&self, retries: usize) -> Option<u64> {
        self.limits().retry_delays.as_ref()?.get(retries).copied()
    }

    /// Whether the queue retries what it rejects (`x-retry-delays`): a delivery that times
    /// out unacked is then rejected instead of parked (`server/channel/timeout.rs`).
    pub fn retries(&self) -> bool {
        self.limits().retry_delays.is_some()
    }

    /// Asks for dispatch after credit was freed.
    pub fn dispatch(&self) {
        if let Some(stream) = self.stream() {
            return stream.serve();
        }
        if self.quorum().is_some() {
            // Its machine hands out messages as settles commit.
            return;
        }
        let mut state = self.lock();
        self.dispatch_and_flush(&mut state);
    }

    /// Dispatches, and updates the pressure on publishers with what is left.
    fn dispatch_locked(&self, state: &mut QueueState) {
        self.dispatch_at(state, None);
    }

    /// Dispatches judging expiry at `now` (see `QueueState::pop_at`), and updates the pressure.
    fn dispatch_at(&self, state: &mut QueueState, now: Option<u64>) {
        let held = state.dispatch(self.limits().single_active, now);
        self.flow.update(state.len(), state.memory, held);
    }

    /// Dispatches outside a publish: the delivery marks it writes are flushed before the lock
    /// is let go.
    fn dispatch_and_flush(&self, state: &mut QueueState) {
        self.dispatch_locked(state);
        if state.store.buffers() {
            let _ = self.flush_locked(state);
        }
        self.note_due(state);
    }

    /// Writes what the queue's storage buffered and hands what must be durable to the group
    /// commit. An error means buffered records were lost: their publishes must not be
    /// confirmed.
    pub fn flush_log(&self) -> std::io::Result<()> {
        if let Some(stream) = self.stream() {
            return stream.flush();
        }
        if let Some(quorum) = self.quorum() {
            quorum.flush();
            return Ok(());
        }
        let mut state = self.lock();
        self.flush_locked(&mut state)
    }

    fn flush_locked(&self, state: &mut QueueState) -> std::io::Result<()> {
        state.store.flush()
    }

    /// (ready messages, consumers), as declare-ok reports them.
    pub fn counts(&self) -> (u32, u32) {
        if let Some(stream) = self.stream() {
            let count = u32::try_from(stream.len()).unwrap_or(u32::MAX);
            return (count, saturating_u32(stream.consumers()));
        }
        if let Some(quorum) = self.quorum() {
            let (ready, consumers) = quorum.counts();
            let clip = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            return (clip(ready), clip(consumers));
        }
        let mut state = self.lock();
        state.drop_expired();
        self.note_due(&state);
        (
            saturating_u32(state.ready_count()),
            saturating_u32(state.consumers.len()),
        )
    }

    pub fn add_consumer(&self, consumer: Arc<Consumer>) -> Result<(), ConsumeRefused> {
        if let Some(stream) = self.stream() {
            // The channel subscribes with the consumer's offset and filter; this reads from
            // the next message published.
            return stream
                .subscribe(consumer, super::stream::Start::Next, None)
                .map_err(ConsumeRefused::from);
        }
        if let Some(quorum) = self.quorum() {
            if self.lock().deleted {
                return Err(ConsumeRefused::Deleted);
            }
            quorum.subscribe(consumer);
            return Ok(());
        }
        let mut state = self.lock();
        if state.deleted {
            return Err(ConsumeRefused::Deleted);
        }
        let taken = state.consumers.iter().any(|c| c.exclusive);
        if taken || (consumer.exclusive && !state.consumers.is_empty()) {
            return Err(ConsumeRefused::ExclusiveInUse);
        }
        // Sorted by priority, highest first; a newcomer goes after its equals. A single active
        // consumer keeps its place whatever the newcomer's priority.
        let at = match self.limits().single_active {
            true => state.consumers.len(),
            false => state
                .consumers
                .iter()
                .position(|c| c.priority < consumer.priority)
                .unwrap_or(state.consumers.len()),
        };
        state.mixed_priorities |= state
            .consumers
            .first()
            .is_some_and(|c| c.priority != consumer.priority);
        state.consumers.insert(at, consumer);
        self.dispatch_and_flush(&mut state);
        Ok(())
    }

    /// Removes a consumer; true if the queue is auto-delete and now has none.
    pub fn remove_consumer(&self, consumer: &Arc<Consumer>) -> bool {
        if let Some(stream) = self.stream() {
            stream.unsubscribe(consumer);
            return false;
        }
        if let Some(quorum) = self.quorum() {
            quorum.unsubscribe(consumer);
            return false;
        }
        let mut state = self.lock();
        let before = state.consumers.len();
        state.remove_consumer(consumer);
        if state.consumers.len() != before && state.next_consumer as usize >= state.consumers.len()
        {
            state.next_consumer = 0;
        }
        let held = state.consumers.iter().any(|c| c.behind());
        self.flow.update(state.len(), state.memory, held);
        if self.limits().expires.is_some() && state.consumers.is_empty() {
            self.mark_used(&state);
            self.reschedule(&state);
        }
        self.options.auto_delete
            && !state.deleted
            && before != state.consumers.len()
            && state.consumers.is_empty()
    }

    pub fn has_consumers(&self) -> bool {
        if let Some(stream) = self.stream() {
            return stream.consumers() > 0;
        }
        if let Some(quorum) = self.quorum() {
            return quorum.has_consumers();
        }
        !self.lock().consumers.is_empty()
    }

    /// Marks the queue deleted, drops its messages and returns its consumers (to be cancelled)
    /// and the number of messages it held.
    pub(crate) fn delete(&self) -> (Vec<Arc<Consumer>>, u32) {
        if let Some(stream) = self.stream() {
            self.lock().deleted = true;
            let (consumers, count) = stream.delete();
            return (consumers, u32::try_from(count).unwrap_or(u32::MAX));
        }
        if let Some(quorum) = self.quorum() {
            self.lock().deleted = true;
            let (ready, _) = quorum.counts();
            let consumers = quorum.cancel_consumers();
            return (consumers, u32::try_from(ready).unwrap_or(u32::MAX));
        }
        let mut state = self.lock();
        state.deleted = true;
        self.flow.release();
        let count = saturating_u32(state.ready_count());
        state.ready = Ready::default();
        state.requeued = BinaryHeap::new();
        state.take_all_parked();
        state.dropped.clear();
        if let Err(e) = std::mem::take(&mut state.store).destroy() {
            error!(queue = %self.name, error = %e, "queue storage: deleting it failed");
        }
        (std::mem::take(&mut state.consumers), count)
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every queue pays for its `Queue` (`Arc<Queue>`: 16 bytes of counts, then this), idle or
    /// not: 100,000 durable queues have to fit in 150 MB (issue 19). What only some queues use
    /// is boxed (`limited`, `parked`); raise the bound only knowingly.
    #[test]
    fn an_idle_queue_stays_small() {
        let size = std::mem::size_of::<Queue>();
        assert!(size <= 368, "Queue is {size} bytes");
    }
}
