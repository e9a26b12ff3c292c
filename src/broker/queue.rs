//! A queue: its ready messages in order, its consumers, and the dispatch that moves one to the
//! other.
//!
//! State lives behind one mutex with short critical sections: enqueue, take, requeue, and
//! dispatch (which only pushes into consumer outboxes, never waits). Every operation is O(1)
//! amortised except requeue, O(log n) in the requeued messages. Unacked deliveries are not held
//! here: the channel that received them holds them by delivery tag and gives them back
//! ([`Queue::requeue`]) or settles them.
//!
//! Order: ready messages carry an increasing `seq`. Requeued messages wait in a min-heap by `seq`
//! and are served before the rest; since a queue always delivers its lowest `seq` first, every
//! requeued message sorts before every never-delivered one, so a requeue restores the original
//! order. This module never takes the topology lock (lock order: topology, then queue).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable};

use super::values::integer;

use tracing::error;

use super::consumer::Consumer;
use super::durable::{decode_message, encode_message, encoded_len};
use super::flow::Flow;
use super::message::{Entry, Message};
use crate::store::log::{Log, Position, Recovered};
use crate::store::Store;

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

/// The queue arguments that change what a queue does (length limit and overflow, single active
/// consumer, expiry, dead-lettering), read once when it is declared.
#[derive(Debug, Clone, Default)]
struct Limits {
    max_length: Option<usize>,
    /// `reject-publish` (and `reject-publish-dlx`): refuse the new message instead of dropping
    /// the oldest (`drop-head`, the default).
    reject: bool,
    /// `reject-publish-dlx`: a refused message is dead-lettered too.
    reject_dead_letters: bool,
    /// `x-single-active-consumer`: only the oldest consumer gets messages; the next one takes
    /// over when it goes.
    single_active: bool,
    /// `x-expires`: the queue is deleted once unused for this long.
    expires: Option<Duration>,
    /// `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
    dead_letter: Option<(ShortStr, Option<ShortStr>)>,
}

impl Limits {
    fn from_arguments(arguments: &FieldTable) -> Limits {
        let table = arguments.inner();
        let max_length = table
            .get("x-max-length")
            .and_then(integer)
            .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX));
        let overflow = table
            .get("x-overflow")
            .and_then(super::values::text)
            .unwrap_or(b"drop-head");
        let reject = overflow.starts_with(b"reject-publish");
        let reject_dead_letters = overflow == b"reject-publish-dlx";
        let single_active = matches!(
            table.get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        );
        let expires = table
            .get("x-expires")
            .and_then(integer)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis);
        Limits {
            max_length,
            reject,
            reject_dead_letters,
            single_active,
            expires,
            dead_letter: super::dead_letter::target(arguments),
        }
    }
}

#[derive(Debug)]
pub struct Queue {
    pub name: ShortStr,
    pub options: QueueOptions,
    limits: Limits,
    /// When the queue was created (or recovered): the start of its first `x-expires` period.
    created: std::time::Instant,
    /// The store, for a durable queue: persistent messages go to its log, synced by group commit.
    store: Option<Arc<Store>>,
    state: Mutex<QueueState>,
    /// Pushes back on publishers when deliveries fall behind.
    pub flow: Flow,
}

/// What [`Queue::publish`] did.
#[derive(Debug)]
pub struct Published {
    pub enqueued: Enqueued,
    /// The queue has a log whose buffered writes the caller must flush ([`Queue::flush_log`])
    /// before it answers the publisher.
    pub logged: bool,
    /// Messages dropped from the head for `x-max-length`, for the caller to dead-letter.
    pub dropped: Vec<Arc<Message>>,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// In the queue (in memory; transient, or the queue is not durable).
    Queued,
    /// In the queue and written to its log: safe once the group commit has synced.
    Logged,
    /// Not taken: the queue was deleted meanwhile.
    Deleted,
    /// Not taken: the queue is at its `x-max-length` and refuses more (`x-overflow` =
    /// `reject-publish`); a confirm-mode publisher gets a nack.
    Rejected,
    /// Not taken: writing it to the log failed.
    Failed,
}

/// A ready message: in memory, or (paged out) only in the log.
#[derive(Debug)]
struct Slot {
    seq: u64,
    message: Option<Arc<Message>>,
    redelivered: bool,
    position: Option<Position>,
}

/// How much of a log one read of paged-out messages takes (see `QueueState::load_ahead`).
const READ_AHEAD: usize = 256 * 1024;

/// What a message costs in memory while a queue holds it (bytes, roughly).
fn footprint(message: &Message) -> usize {
    message.body().len() + message.properties().len() + 96
}

#[derive(Debug, Default)]
struct QueueState {
    /// The durable queue's log, or the spill log of a non-durable queue whose backlog outgrew
    /// its memory window.
    log: Option<Log>,
    /// `log` is a spill log: nothing in it survives a restart.
    spill: bool,
    ready: VecDeque<Slot>,
    /// Bytes of messages `ready` holds in memory.
    memory: usize,
    requeued: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    /// Some consumers have another `x-priority` than others (else dispatch serves them all as
    /// one level without looking at priorities).
    mixed_priorities: bool,
    /// Messages dropped for `x-max-length` that go to the dead-letter exchange.
    dropped: Vec<Arc<Message>>,
    /// Since when the queue has been unused (for `x-expires`); `None`: since it was created.
    idle_since: Option<std::time::Instant>,
    /// Round robin: where the next search for a consumer with credit starts.
    next_consumer: usize,
    deleted: bool,
}

/// Why a consumer cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeRefused {
    /// An exclusive consumer asked for a queue with consumers, or any consumer for a queue with
    /// an exclusive one.
    ExclusiveInUse,
    Deleted,
}

impl QueueState {
    /// Notes in the log that a stored message went out: settled at once for a no-ack consumer,
    /// marked delivered otherwise (so a recovered copy says `redelivered`). Written, not synced.
    fn record_delivery(&mut self, entry: &Entry, position: Position, no_ack: bool) {
        let Some(log) = &mut self.log else {
            return;
        };
        let written = match (no_ack, entry.redelivered) {
            (true, _) => log.settle_sized(position, Some(encoded_len(&entry.message))),
            (false, false) => log.mark_delivered(position),
            (false, true) => Ok(()),
        };
        if let Err(e) = written {
            error!(error = %e, "queue log: recording a delivery failed");
        }
    }

    fn len(&self) -> usize {
        self.ready.len() + self.requeued.len()
    }

    /// The next message: requeued ones first, then the ready list, reading paged-out messages
    /// back from the log.
    fn pop(&mut self) -> Option<Entry> {
        if let Some(Reverse(entry)) = self.requeued.pop() {
            return Some(entry);
        }
        loop {
            let slot = self.ready.pop_front()?;
            let message = match slot.message {
                Some(message) => {
                    self.memory = self.memory.saturating_sub(footprint(&message));
                    message
                }
                None => match self.load_ahead(slot.position) {
                    Some(message) => message,
                    None => continue,
                },
            };
            return Some(Entry {
                seq: slot.seq,
                message,
                redelivered: slot.redelivered,
                position: slot.position,
            });
        }
    }

    /// Reads a paged-out message back, and with it (one read of [`READ_AHEAD`] bytes) the
    /// paged-out messages that follow it in the ready list and in the log, which come back into
    /// memory: a consumer draining a backlog costs one `pread` per run of records, not per
    /// message.
    fn load_ahead(&mut self, position: Option<Position>) -> Option<Arc<Message>> {
        let (Some(log), Some(position)) = (&self.log, position) else {
            return None;
        };
        let run = match log.read_run(position, READ_AHEAD) {
            Ok(run)
                if run
                    .first()
                    .is_some_and(|(offset, _)| *offset == position.offset) =>
            {
                run
            }
            _ => return self.load(Some(position)),
        };
        let mut records = run.into_iter();
        let first = records
            .next()
            .and_then(|(_, record)| decode_message(&record));
        let mut records = records.peekable();
        for slot in self.ready.iter_mut() {
            let Some(at) = slot.position else {
                continue;
            };
            if slot.message.is_some() {
                continue;
            }
            if at.segment != position.segment {
                break;
            }
            while records.next_if(|(offset, _)| *offset < at.offset).is_some() {}
            let Some((_, record)) = records.next_if(|(offset, _)| *offset == at.offset) else {
                break;
            };
            if let Some((message, _)) = decode_message(&record) {
                self.memory += footprint(&message);
                slot.message = Some(Arc::new(message));
            }
        }
        match first {
            Some((message, _)) => Some(Arc::new(message)),
            None => self.load(Some(position)),
        }
    }

    /// Reads a paged-out message back; a record that cannot be read is dropped (and settled) with
    /// an error in the log: the disk lost it.
    fn load(&mut self, position: Option<Position>) -> Option<Arc<Message>> {
        let (Some(log), Some(position)) = (&mut self.log, position) else {
            return None;
        };
        let message = log
            .read(position)
            .ok()
            .and_then(|record| decode_message(&record));
        match message {
            Some((message, _)) => Some(Arc::new(message)),
            None => {
                error!(
                    segment = position.segment,
                    offset = position.offset,
                    "queue log: a paged-out message cannot be read back; dropping it"
                );
                let _ = log.settle(position);
                None
            }
        }
    }

    /// Drops the next message to be delivered (`x-overflow` = `drop-head`) and settles it in
    /// the log; returns it if it was in memory, or (with `read_back`) read back from the log.
    /// `None` if the queue was empty.
    fn drop_head(&mut self, read_back: bool) -> Option<Option<Arc<Message>>> {
        let (message, position) = match read_back {
            true => {
                let entry = self.pop()?;
                (Some(entry.message), entry.position)
            }
            false => match self.requeued.pop() {
                Some(Reverse(entry)) => (Some(entry.message), entry.position),
                None => {
                    let slot = self.ready.pop_front()?;
                    if let Some(message) = &slot.message {
                        self.memory = self.memory.saturating_sub(footprint(message));
                    }
                    (slot.message, slot.position)
                }
            },
        };
        if let (Some(log), Some(position)) = (&mut self.log, position) {
            let len = message.as_deref().map(encoded_len);
            if let Err(e) = log.settle_sized(position, len) {
                error!(error = %e, "queue log: recording a dropped message failed");
            }
        }
        Some(message)
    }

    fn remove_consumer(&mut self, consumer: &Arc<Consumer>) {
        self.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        self.mixed_priorities = self
            .consumers
            .windows(2)
            .any(|pair| pair[0].priority != pair[1].priority);
    }

    fn push_front(&mut self, entry: Entry) {
        self.requeued.push(Reverse(entry));
    }

    /// Hands ready messages to consumers with credit, round robin, until either runs out.
    /// Returns whether messages are left while the broker is what holds a consumer back
    /// ([`Consumer::behind`], see [`super::flow`]).
    fn dispatch(&mut self, single_active: bool) -> bool {
        // Consumers are kept sorted by priority, highest first (registration order within one
        // priority); a single-active-consumer queue serves only the first.
        let count = match single_active {
            true => self.consumers.len().min(1),
            false => self.consumers.len(),
        };
        if count == 0 {
            return false;
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
                    let Some(entry) = self.pop() else {
                        return false;
                    };
                    self.next_consumer = index + 1;
                    if let Some(position) = entry.position {
                        self.record_delivery(&entry, position, consumer.no_ack);
                    }
                    if let Err(entry) = consumer.send(entry) {
                        // The consumer's connection is gone; its cleanup will remove it.
                        self.push_front(entry);
                        self.remove_consumer(&consumer);
                        return self.dispatch(single_active);
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

impl Queue {
    pub fn new(name: ShortStr, options: QueueOptions) -> Queue {
        Queue {
            name,
            limits: Limits::from_arguments(&options.arguments),
            created: std::time::Instant::now(),
            options,
            store: None,
            state: Mutex::new(QueueState::default()),
            flow: Flow::default(),
        }
    }

    /// A durable queue backed by `log`, holding the messages recovered from it (`None`: a message
    /// left in the log, read back when consumers reach it).
    pub fn with_log(
        name: ShortStr,
        options: QueueOptions,
        store: Arc<Store>,
        log: Log,
        recovered: impl IntoIterator<Item = (Recovered, Option<Arc<Message>>)>,
    ) -> Queue {
        let mut state = QueueState {
            log: Some(log),
            ..QueueState::default()
        };
        for (record, message) in recovered {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.memory += message.as_deref().map_or(0, footprint);
            state.ready.push_back(Slot {
                seq,
                message,
                redelivered: record.delivered,
                position: Some(record.position),
            });
        }
        Queue {
            name,
            limits: Limits::from_arguments(&options.arguments),
            created: std::time::Instant::now(),
            options,
            store: Some(store),
            state: Mutex::new(state),
            flow: Flow::default(),
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
    pub fn publish(&self, message: &Arc<Message>, persistent: bool) -> Published {
        let mut state = self.lock();
        let enqueued = self.enqueue(&mut state, message, persistent);
        Published {
            enqueued,
            logged: state.log.is_some(),
            dropped: std::mem::take(&mut state.dropped),
        }
    }

    fn enqueue(
        &self,
        state: &mut QueueState,
        message: &Arc<Message>,
        persistent: bool,
    ) -> Enqueued {
        if state.deleted {
            return Enqueued::Deleted;
        }
        if self.limits.reject && self.limits.max_length.is_some_and(|max| state.len() >= max) {
            if self.limits.reject_dead_letters && self.limits.dead_letter.is_some() {
                state.dropped.push(Arc::clone(message));
            }
            return Enqueued::Rejected;
        }
        let cost = footprint(message);
        let over_window = self
            .store
            .as_ref()
            .is_some_and(|store| state.memory + cost > store.memory_window);
        let durable_log = state.log.is_some() && !state.spill;
        let mut position = None;
        let mut logged = false;
        if persistent && durable_log {
            match self.append(state, message, true) {
                Ok(at) => {
                    position = Some(at);
                    logged = true;
                }
                Err(e) => {
                    error!(queue = %self.name, error = %e, "queue log: append failed");
                    return Enqueued::Failed;
                }
            }
        } else if over_window {
            // Paged out: written (not synced: it need not survive a restart), not kept.
            match self.append(state, message, false) {
                Ok(at) => position = Some(at),
                Err(e) => {
                    error!(queue = %self.name, error = %e, "queue log: paging out failed; keeping the message in memory")
                }
            }
        }
        let keep = !(over_window && position.is_some());
        if keep {
            state.memory += cost;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.ready.push_back(Slot {
            seq,
            message: keep.then(|| Arc::clone(message)),
            redelivered: false,
            position,
        });
        self.dispatch_locked(state);
        if let Some(max) = self.limits.max_length {
            // What is dropped for length goes to the dead-letter exchange (reason maxlen), by
            // the caller once the lock is let go.
            let dead_letter = self.limits.dead_letter.is_some();
            while state.len() > max {
                match state.drop_head(dead_letter) {
                    None => break,
                    Some(Some(message)) if dead_letter => state.dropped.push(message),
                    Some(_) => {}
                }
            }
        }
        match logged {
            true => Enqueued::Logged,
            false => Enqueued::Queued,
        }
    }

    /// Appends a message to the queue's log (opening a spill log for a non-durable queue), and
    /// hands a persistent message's files to the group commit.
    fn append(
        &self,
        state: &mut QueueState,
        message: &Message,
        persistent: bool,
    ) -> std::io::Result<Position> {
        let Some(store) = &self.store else {
            return Err(std::io::Error::other("no store"));
        };
        if state.log.is_none() {
            let (log, _) = Log::open(&store.spill_dir(), store.segment_size)?;
            state.log = Some(log);
            state.spill = true;
        }
        let Some(log) = &mut state.log else {
            return Err(std::io::Error::other("no log"));
        };
        // Buffered: written by the publisher's `flush_log` (or sooner), then synced.
        log.append(&encode_message(message, persistent))
    }

    /// A non-durable queue that may page its backlog out to a spill log in `store`.
    pub fn with_store(mut self, store: Arc<Store>) -> Queue {
        self.store = Some(store);
        self
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
                let job = match &mut state.log {
                    Some(log) => log.start_compaction(),
                    None => Ok(None),
                };
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
                // `None`: the queue was deleted meanwhile (its log destroyed).
                let go_on = match &mut state.log {
                    Some(log) => log.record_punches(&job, &plan),
                    None => Ok(false),
                };
                held += locked.elapsed();
                go_on?
            };
            if !go_on {
                continue;
            }
            freed += match job.sync_and_punch(&plan) {
                Ok(bytes) => bytes,
                Err(e) => match &mut self.lock().log {
                    Some(log) => log.punch_failed(e)?,
                    None => 0,
                },
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

    /// The store of a durable queue.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Records in the log that stored messages were acked or dropped (written; synced by the next
    /// group commit, without waiting for it).
    /// Each position comes with its record's payload length when the caller knows it.
    pub fn settle_stored(&self, positions: impl IntoIterator<Item = (Position, Option<u64>)>) {
        let mut state = self.lock();
        let Some(log) = &mut state.log else {
            return;
        };
        for (position, len) in positions {
            if let Err(e) = log.settle_sized(position, len) {
                error!(queue = %self.name, error = %e, "queue log: recording an ack failed");
            }
        }
        let _ = self.flush_locked(&mut state);
    }

    /// Puts taken messages back at their original places, marked redelivered, and dispatches.
    pub fn requeue(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        for mut entry in entries {
            entry.redelivered = true;
            state.push_front(entry);
        }
        self.dispatch_and_flush(&mut state);
    }

    /// Puts back a message that was handed to a consumer but never sent (its consumer went away
    /// first): its place and its `redelivered` flag are as they were.
    pub fn return_unsent(&self, entry: Entry) {
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        state.push_front(entry);
        self.dispatch_and_flush(&mut state);
    }

    /// Like [`Queue::requeue`], but tries the consumers after `skip` first: used when `skip`
    /// held the message too long.
    pub fn requeue_away_from(&self, entry: Entry, skip: &Arc<Consumer>) {
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        if let Some(index) = state.consumers.iter().position(|c| Arc::ptr_eq(c, skip)) {
            state.next_consumer = (index + 1) % state.consumers.len();
        }
        let mut entry = entry;
        entry.redelivered = true;
        state.push_front(entry);
        self.dispatch_and_flush(&mut state);
    }

    /// Where messages this queue gives up on go: (dead-letter exchange, routing key).
    pub fn dead_letter_target(&self) -> Option<(ShortStr, Option<ShortStr>)> {
        self.limits.dead_letter.clone()
    }

    /// The queue was used (declared again, passively or not): its `x-expires` period starts
    /// again.
    pub fn touch(&self) {
        if self.limits.expires.is_some() {
            self.lock().idle_since = Some(std::time::Instant::now());
        }
    }

    /// Whether the queue has been unused for its `x-expires` period (no consumers, no
    /// basic.get, no redeclaration).
    pub fn is_expired(&self, now: std::time::Instant) -> bool {
        let Some(expires) = self.limits.expires else {
            return false;
        };
        let state = self.lock();
        let since = state.idle_since.unwrap_or(self.created);
        state.consumers.is_empty() && now.saturating_duration_since(since) >= expires
    }

    /// Asks for dispatch after credit was freed.
    pub fn dispatch(&self) {
        let mut state = self.lock();
        self.dispatch_and_flush(&mut state);
    }

    /// Dispatches, and updates the pressure on publishers with what is left.
    fn dispatch_locked(&self, state: &mut QueueState) {
        let held = state.dispatch(self.limits.single_active);
        self.flow.update(state.len(), state.memory, held);
    }

    /// Dispatches outside a publish: the delivery marks it writes are flushed before the lock
    /// is let go.
    fn dispatch_and_flush(&self, state: &mut QueueState) {
        self.dispatch_locked(state);
        if state.log.is_some() {
            let _ = self.flush_locked(state);
        }
    }

    /// Writes the log's buffered records and entries and hands the files of a durable log to
    /// the group commit. An error means buffered records were lost: their publishes must not be
    /// confirmed.
    pub fn flush_log(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        self.flush_locked(&mut state)
    }

    fn flush_locked(&self, state: &mut QueueState) -> std::io::Result<()> {
        let spill = state.spill;
        let Some(log) = &mut state.log else {
            return Ok(());
        };
        let (files, flushed) = log.take_dirty();
        if let (false, false, Some(store)) = (spill, files.is_empty(), &self.store) {
            store.syncer.dirty(files);
        }
        if let Err(e) = &flushed {
            error!(queue = %self.name, error = %e, "queue log: writing buffered records failed");
        }
        flushed
    }

    /// `basic.get`: the next message and how many remain.
    pub fn get(&self, no_ack: bool) -> Option<(Entry, u32)> {
        let mut state = self.lock();
        if self.limits.expires.is_some() {
            state.idle_since = Some(std::time::Instant::now());
        }
        let entry = state.pop()?;
        if let Some(position) = entry.position {
            state.record_delivery(&entry, position, no_ack);
            let _ = self.flush_locked(&mut state);
        }
        Some((entry, saturating_u32(state.len())))
    }

    /// (ready messages, consumers), as declare-ok reports them.
    pub fn counts(&self) -> (u32, u32) {
        let state = self.lock();
        (
            saturating_u32(state.len()),
            saturating_u32(state.consumers.len()),
        )
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        let mut state = self.lock();
        let count = state.len();
        let ready = std::mem::take(&mut state.ready);
        let requeued = std::mem::take(&mut state.requeued);
        state.memory = 0;
        self.flow.release();
        if let Some(log) = &mut state.log {
            let stored = ready
                .iter()
                .filter_map(|slot| slot.position)
                .chain(requeued.iter().filter_map(|Reverse(entry)| entry.position));
            for position in stored {
                if let Err(e) = log.settle(position) {
                    error!(queue = %self.name, error = %e, "queue log: recording a purge failed");
                }
            }
            let _ = self.flush_locked(&mut state);
        }
        saturating_u32(count)
    }

    pub fn add_consumer(&self, consumer: Arc<Consumer>) -> Result<(), ConsumeRefused> {
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
        let at = match self.limits.single_active {
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
        let mut state = self.lock();
        let before = state.consumers.len();
        state.remove_consumer(consumer);
        if state.consumers.len() != before && state.next_consumer >= state.consumers.len() {
            state.next_consumer = 0;
        }
        let held = state.consumers.iter().any(|c| c.behind());
        self.flow.update(state.len(), state.memory, held);
        if self.limits.expires.is_some() && state.consumers.is_empty() {
            state.idle_since = Some(std::time::Instant::now());
        }
        self.options.auto_delete
            && !state.deleted
            && before != state.consumers.len()
            && state.consumers.is_empty()
    }

    pub fn has_consumers(&self) -> bool {
        !self.lock().consumers.is_empty()
    }

    /// Marks the queue deleted, drops its messages and returns its consumers (to be cancelled)
    /// and the number of messages it held.
    pub(crate) fn delete(&self) -> (Vec<Arc<Consumer>>, u32) {
        let mut state = self.lock();
        state.deleted = true;
        self.flow.release();
        let count = saturating_u32(state.len());
        state.ready = VecDeque::new();
        state.requeued = BinaryHeap::new();
        if let Some(log) = state.log.take() {
            if let Err(e) = log.destroy() {
                error!(queue = %self.name, error = %e, "queue log: deleting it failed");
            }
        }
        (std::mem::take(&mut state.consumers), count)
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
