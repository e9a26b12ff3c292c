//! A stream queue (`x-queue-type: stream`, RabbitMQ's streams over AMQP 0-9-1): an append-only
//! log that consumers read, each from its own offset, without ever removing what they read.
//!
//! What it owns: the stream's log (`store::stream`: segment files, retention by whole
//! segments) and its readers, one per consumer, each with the offset of the next message it
//! gets, and its filter. Behind one mutex, held only for bookkeeping: a publish appends to the
//! log's buffer under it; reading for a consumer happens *outside* it, from a snapshot of where
//! that consumer's next message is (a [`ReadPlan`]: large reads of the segment file, no
//! syscall per message), so a consumer far behind never holds up writers or other readers.
//! Each reader keeps its plan between rounds with the bytes it read ahead but had no credit
//! for yet (at most [`READ_BYTES`]), so every byte of the log is read from the file once; a
//! kept plan holds its segment's file open, so a reader already in a segment that retention
//! deletes reads it to its end.
//!
//! Credit: a consumer's prefetch bounds what it has unacked, as for any queue (its `Consumer`'s
//! atomics); an ack frees credit and its channel asks the queue to dispatch again, which reads
//! on for the consumers that can take more ([`Stream::serve`]). Acks, nacks and rejects never
//! touch the log. A reader being served is marked busy; a second serve that finds it busy
//! leaves a note (`again`) so that the first serves it once more before letting go, so freed
//! credit is never missed.
//!
//! Durability: every message is written to the log and handed to the group commit at the
//! publisher's flush ([`Stream::flush`]); its confirm waits for the sync, as a durable queue's.
//! Messages become readable by consumers once flushed.
//!
//! Never routes, never takes the topology lock, never waits on a connection.

pub mod args;
pub mod record;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use super::message::{now_ms, Entry, Message};
use super::queue::consumer::Consumer;
use crate::store::stream::{ReadPlan, StreamLog};
use crate::store::Store;
pub use args::{Filter, Retention, Start};

/// The most bytes read from a segment file at once for one consumer (a read is sized to what
/// its credit lets it take, between [`MIN_READ`] and this; what it cannot take yet stays in
/// its reader's buffer for the next round, never read twice).
const READ_BYTES: usize = 256 * 1024;
const MIN_READ: usize = 64 * 1024;
/// Messages handed to one consumer per turn before the others get theirs.
const TURN: usize = 1024;

#[derive(Debug)]
pub struct Stream {
    /// For logs.
    name: String,
    state: Mutex<State>,
    store: Arc<Store>,
    retention: Retention,
    /// Messages appended and delivered since start (for the management API's rates).
    published: AtomicU64,
    delivered: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// `None` once the stream is deleted.
    log: Option<StreamLog>,
    readers: Vec<Reader>,
}

/// One consumer's place in the stream.
#[derive(Debug)]
struct Reader {
    consumer: Arc<Consumer>,
    /// The offset of the next message to look at.
    next: u64,
    filter: Option<Filter>,
    /// Where it reads from, with what it read ahead (taken while it is busy).
    plan: Option<ReadPlan>,
    /// Being served (reading outside the lock).
    busy: bool,
    /// A serve came while it was busy: serve it again before letting go.
    again: bool,
}

/// Why a consumer cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefused {
    ExclusiveInUse,
    Deleted,
}

impl Stream {
    /// Opens (or creates) the stream whose log lives in `dir`.
    pub fn open(
        name: &str,
        dir: &Path,
        store: Arc<Store>,
        retention: Retention,
    ) -> io::Result<Stream> {
        let log = StreamLog::open(dir, retention.segment_bytes)?;
        Ok(Stream {
            name: name.to_owned(),
            state: Mutex::new(State {
                log: Some(log),
                readers: Vec::new(),
            }),
            store,
            retention,
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        })
    }

    /// The group commit its messages wait for before they are confirmed.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Appends a message to the log's buffer (written and handed to the group commit by the
    /// publisher's [`Stream::flush`]). `Ok(false)`: the stream was deleted.
    pub fn publish(&self, message: &Message, payload: &mut Vec<u8>) -> io::Result<bool> {
        let filter = record::filter_value(message.properties());
        payload.clear();
        record::encode(message, payload);
        let mut state = self.state.lock();
        let Some(log) = state.log.as_mut() else {
            return Ok(false);
        };
        log.append(now_ms(), filter.as_deref(), payload)?;
        self.published.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// Writes what publishes appended, hands it to the group commit, applies retention, and
    /// serves the consumers waiting for what was just written.
    pub fn flush(&self) -> io::Result<()> {
        let waiting_at = {
            let mut state = self.state.lock();
            let Some(log) = state.log.as_mut() else {
                return Ok(());
            };
            if !log.buffered() {
                return Ok(());
            }
            let waiting_at = log.readable_end();
            let files = log.flush()?;
            self.store.syncer.dirty(files);
            let retained = log.retain(
                self.retention.max_bytes,
                self.retention.max_age_ms,
                now_ms(),
            );
            match retained {
                Ok(r) if r.segments > 0 => tracing::debug!(
                    stream = %self.name,
                    segments = r.segments,
                    messages = r.messages,
                    bytes = r.bytes,
                    "stream retention deleted old segments"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = %self.name, error = %e, "stream retention failed")
                }
            }
            waiting_at
        };
        // Only the consumers that had read everything: one behind is served by its own acks
        // (it stopped for credit), never by the publisher's connection.
        self.serve_from(waiting_at);
        Ok(())
    }

    /// Adds a consumer reading from `start` (only messages `filter` accepts, if it has one).
    pub fn subscribe(
        &self,
        consumer: Arc<Consumer>,
        start: Start,
        filter: Option<Filter>,
    ) -> Result<(), SubscribeRefused> {
        {
            let mut state = self.state.lock();
            let Some(log) = state.log.as_ref() else {
                return Err(SubscribeRefused::Deleted);
            };
            let taken = state.readers.iter().any(|r| r.consumer.exclusive);
            if taken || (consumer.exclusive && !state.readers.is_empty()) {
                return Err(SubscribeRefused::ExclusiveInUse);
            }
            let next = match start {
                Start::First => log.first_offset(),
                Start::Last => log.last_chunk_start(),
                Start::Next => log.next_offset(),
                Start::Offset(offset) => offset.max(log.first_offset()),
                Start::Timestamp(at) => match log.offset_at_timestamp(at) {
                    Ok(offset) => offset,
                    Err(e) => {
                        tracing::warn!(stream = %self.name, error = %e, "stream: cannot find a timestamp; reading from the first message");
                        log.first_offset()
                    }
                },
            };
            state.readers.push(Reader {
                consumer,
                next,
                filter,
                plan: None,
                busy: false,
                again: false,
            });
        }
        self.serve();
        Ok(())
    }

    /// Removes a consumer.
    pub fn unsubscribe(&self, consumer: &Arc<Consumer>) {
        self.state
            .lock()
            .readers
            .retain(|r| !Arc::ptr_eq(&r.consumer, consumer));
    }

    /// How many consumers it has.
    pub fn consumers(&self) -> usize {
        self.state.lock().readers.len()
    }

    /// Its consumers now.
    pub fn consumer_list(&self) -> Vec<Arc<Consumer>> {
        let state = self.state.lock();
        state
            .readers
            .iter()
            .map(|r| Arc::clone(&r.consumer))
            .collect()
    }

    /// (messages appended, messages delivered) since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.published.load(Relaxed), self.delivered.load(Relaxed))
    }

    /// How many messages it holds.
    pub fn len(&self) -> u64 {
        self.state.lock().log.as_ref().map_or(0, StreamLog::len)
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of its segment files.
    pub fn bytes(&self) -> u64 {
        self.state.lock().log.as_ref().map_or(0, StreamLog::bytes)
    }

    /// Deletes the log; returns the consumers (to be cancelled) and how many messages it held.
    pub fn delete(&self) -> (Vec<Arc<Consumer>>, u64) {
        let mut state = self.state.lock();
        let readers = std::mem::take(&mut state.readers);
        let count = state.log.as_ref().map_or(0, StreamLog::len);
        if let Some(log) = state.log.take() {
            if let Err(e) = log.destroy() {
                tracing::error!(stream = %self.name, error = %e, "stream: deleting its log failed");
            }
        }
        (readers.into_iter().map(|r| r.consumer).collect(), count)
    }

    /// Hands each consumer what it can take from where it is: one turn each, round after
    /// round, until each has no credit left or has read everything. Called after a subscribe
    /// and when credit was freed.
    pub fn serve(&self) {
        self.serve_from(0);
    }

    /// [`Stream::serve`] for the consumers whose next offset is at least `at`.
    fn serve_from(&self, at: u64) {
        let mut index = 0;
        // A reader stopped at the end of its turn in this round: another round follows.
        let mut another_round = false;
        loop {
            // Pick the next reader to serve and take a snapshot of where it reads.
            let picked = {
                let mut state = self.state.lock();
                let State { log, readers } = &mut *state;
                let Some(log) = log.as_ref() else {
                    return;
                };
                let end = log.readable_end();
                // The average record, to size reads to what a consumer may take.
                let average = usize::try_from(log.bytes() / log.len().max(1)).unwrap_or(READ_BYTES);
                let mut picked = None;
                while index < readers.len() {
                    let reader = &mut readers[index];
                    index += 1;
                    if reader.busy {
                        reader.again = true;
                        continue;
                    }
                    if reader.next >= end || reader.next < at || !reader.consumer.is_active() {
                        continue;
                    }
                    if let Some(plan) = log.replan(reader.next, reader.plan.take()) {
                        reader.busy = true;
                        picked = Some((
                            Arc::clone(&reader.consumer),
                            reader.next,
                            reader.filter.clone(),
                            plan,
                            average,
                        ));
                        break;
                    }
                }
                picked
            };
            let Some((consumer, next, filter, plan, average)) = picked else {
                if std::mem::take(&mut another_round) {
                    index = 0;
                    continue;
                }
                return;
            };
            let mut plan = plan;
            let (reached, outcome) =
                self.read_for(&consumer, next, filter.as_ref(), &mut plan, average);
            let mut state = self.state.lock();
            if let Some(reader) = state
                .readers
                .iter_mut()
                .find(|r| Arc::ptr_eq(&r.consumer, &consumer))
            {
                reader.next = reader.next.max(reached);
                reader.plan = Some(plan);
                reader.busy = false;
                let again = std::mem::take(&mut reader.again);
                // Its snapshot ran out (the rest is in the next segment, or was written
                // since), or credit may have been freed while it was busy: serve it again.
                let read_on = outcome == Outcome::SnapshotRead && reached > next;
                another_round |= outcome == Outcome::TurnOver;
                if again || read_on {
                    index = index.saturating_sub(1);
                }
            }
        }
    }

    /// Reads for one consumer from `next` until it has no credit, the snapshot is read, or its
    /// turn is over; returns the offset it reached and why it stopped.
    ///
    /// Credit for a delivery is taken before its record is visited (the plan moves past every
    /// record it visits), so a stop for credit comes right after a delivery and leaves the
    /// plan at the reader's next offset, its read-ahead kept for the next round.
    fn read_for(
        &self,
        consumer: &Arc<Consumer>,
        mut next: u64,
        filter: Option<&Filter>,
        plan: &mut ReadPlan,
        average: usize,
    ) -> (u64, Outcome) {
        // Credit for one delivery first: a consumer without any costs no read.
        if !consumer.try_take() {
            return (next, Outcome::Stopped);
        }
        let mut holding = true;
        let mut sent = 0;
        let outcome = loop {
            let mut outcome = None;
            let credit = match consumer.prefetch() {
                0 => usize::MAX,
                prefetch => prefetch.saturating_sub(consumer.unacked()) as usize + 1,
            };
            let bytes = credit
                .saturating_mul(average.max(1))
                .clamp(MIN_READ, READ_BYTES);
            let read = plan.read(next, bytes, |record| {
                next = record.offset + 1;
                if filter.is_some_and(|f| !f.accepts(record.filter)) {
                    return true;
                }
                let Some(message) = record::decode(record.payload, record.offset) else {
                    tracing::error!(stream = %self.name, offset = record.offset, "stream: a stored message does not decode; skipped");
                    return true;
                };
                let entry = Entry {
                    seq: record.offset,
                    message: Arc::new(message),
                    redelivered: false,
                    position: None,
                    priority: 0,
                    expires: 0,
                };
                holding = false;
                // A consumer whose connection is gone gets its credit back in `send`.
                if consumer.send(entry).is_err() {
                    outcome = Some(Outcome::Stopped);
                    return false;
                }
                sent += 1;
                self.delivered.fetch_add(1, Relaxed);
                if sent >= TURN {
                    outcome = Some(Outcome::TurnOver);
                    return false;
                }
                holding = consumer.try_take();
                if !holding {
                    outcome = Some(Outcome::Stopped);
                }
                holding
            });
            if let Some(outcome) = outcome {
                break outcome;
            }
            match read {
                Ok(true) => {}
                Ok(false) => break Outcome::SnapshotRead,
                Err(e) => {
                    tracing::error!(stream = %self.name, offset = next, error = %e, "stream: reading the log failed");
                    break Outcome::Stopped;
                }
            }
        };
        if holding {
            consumer.give_back();
        }
        (next, outcome)
    }
}

/// Why [`Stream::read_for`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No credit, the consumer is gone, or a read failed.
    Stopped,
    /// It had its turn ([`TURN`] messages): the others get theirs, then it goes on.
    TurnOver,
    /// The snapshot's end was reached: there may be more beyond it.
    SnapshotRead,
}
