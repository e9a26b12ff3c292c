//! Where a queue's messages are kept: behind one trait, [`MessageStore`], so that the queue
//! keeps only order, limits and dispatch, and a new kind of storage (a replicated log) is a new
//! implementation, not new branches in the queue. (A stream is not a storage: its consumers
//! each read from their own offset; see `broker/stream`.)
//!
//! Three implementations:
//! - [`Memory`]: every message in memory; nothing written (a broker without a data directory).
//! - [`LogStore`]: a durable queue's segment log (`store::log`). Persistent messages are
//!   written and synced by the group commit before they are confirmed; messages beyond the
//!   memory window are *paged out*: written, not kept in memory, read back when consumers reach
//!   them.
//! - [`Spill`]: a non-durable queue: in memory until its backlog outgrows the memory window,
//!   then paged out to a log of its own that is never synced and is removed at the next start.
//!
//! The queue calls its store under its own lock; a store never takes a lock of the broker's and
//! never knows about consumers or routing. Writes are buffered until [`MessageStore::flush`],
//! which the queue calls once per batch of operations.

mod log;
mod memory;
mod spill;

use std::fmt;
use std::io;
use std::sync::Arc;

use super::message::Message;
pub use crate::store::log::Position;
use crate::store::log::{CompactionJob, Plan};
use crate::store::Store;
pub use log::{Backlog, LeftInLog, LogStore, Recovered};
pub use memory::Memory;
pub use spill::Spill;

/// What [`MessageStore::put`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Where the store holds it (`None`: only in the queue's memory).
    pub position: Option<Position>,
    /// The queue keeps the message in memory (else it is paged out: read back by position).
    pub in_memory: bool,
    /// Written to survive a restart: safe to confirm once the store's group commit has synced.
    pub durable: bool,
}

impl Stored {
    /// Kept in the queue's memory only.
    pub const IN_MEMORY: Stored = Stored {
        position: None,
        in_memory: true,
        durable: false,
    };
}

/// A paged-out message read back by [`MessageStore::read_next`].
#[derive(Debug)]
pub struct Loaded {
    pub position: Position,
    pub message: Message,
    /// When it expires (ms since the Unix epoch), 0 for never.
    pub expires: u64,
    /// A delivery of it was recorded before a restart.
    pub redelivered: bool,
}

/// The messages of one priority lane of a queue with `x-max-priority` (a reader of a run
/// skips the other lanes' records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneFilter {
    pub lane: u8,
    /// The queue's highest lane: a priority above it counts as it.
    pub levels: u8,
}

impl LaneFilter {
    #[inline]
    pub fn accepts(self, priority: u8) -> bool {
        priority.min(self.levels) == self.lane
    }
}

/// What [`MessageStore::read_next`] read.
#[derive(Debug, Default)]
pub struct NextMessages {
    /// In store order.
    pub messages: Vec<Loaded>,
    /// Where the next read starts.
    pub next: Position,
    /// Nothing is stored after `next`.
    pub end: bool,
    /// Messages found but unreadable (settled, the error logged): gone from the queue.
    pub lost: u64,
}

/// How a queue keeps the messages it holds. Called under the queue's lock: every method is
/// short and never waits on anything but file I/O.
pub trait MessageStore: Send + Sync + fmt::Debug {
    /// Takes a message the queue enqueues. `resident`: the bytes of ready messages the queue
    /// would hold in memory with this one. An error means a message that had to be made
    /// durable was not: the publish fails.
    fn put(
        &mut self,
        message: &Message,
        persistent: bool,
        expires: u64,
        resident: usize,
    ) -> io::Result<Stored>;

    /// Reads paged-out messages back in store order from `from` (the queue's cursor over
    /// them, see `queue/ready.rs`): up to `max` of those `wanted` accepts (`None`: all),
    /// with one read of the store's for a run of them. A store that pages nothing out has
    /// nothing to read (`end`). An error leaves the cursor where it was (try again later).
    fn read_next(
        &mut self,
        _from: Position,
        _wanted: Option<LaneFilter>,
        _max: usize,
    ) -> io::Result<NextMessages> {
        Ok(NextMessages {
            end: true,
            ..NextMessages::default()
        })
    }

    /// A message at `at` (expiring at `expires`) was delivered: settled at once for a no-ack
    /// consumer, else marked delivered (so a recovered copy is `redelivered`).
    fn delivered(
        &mut self,
        at: Position,
        message: &Message,
        expires: u64,
        no_ack: bool,
        redelivered: bool,
    );

    /// The message at `at` is gone (acked, dropped, purged). `known`: the message and its
    /// expiry time, when the queue still has it.
    fn settle(&mut self, at: Position, known: Option<(&Message, u64)>);

    /// Whether it buffers writes that [`MessageStore::flush`] must make before a publish is
    /// answered.
    fn buffers(&self) -> bool;

    /// Writes what is buffered, and hands what must be durable to the group commit. An error
    /// means buffered messages were lost: their publishes must not be confirmed.
    fn flush(&mut self) -> io::Result<()>;

    /// The group commit that [`Stored::durable`] messages wait for.
    fn group_commit(&self) -> Option<Arc<Store>> {
        None
    }

    /// Starts giving back the space of mostly-settled data (see `store::log::compact`).
    fn start_compaction(&mut self) -> io::Result<Option<CompactionJob>> {
        Ok(None)
    }

    /// Records the plan of a compaction job before it punches; false: nothing to punch.
    fn record_punches(&mut self, _job: &CompactionJob, _plan: &Plan) -> io::Result<bool> {
        Ok(false)
    }

    /// A compaction job's punching failed.
    fn punch_failed(&mut self, e: io::Error) -> io::Result<u64> {
        Err(e)
    }

    /// Deletes everything it holds (the queue was deleted).
    fn destroy(self: Box<Self>) -> io::Result<()>;
}

/// A queue's storage until it is given another: memory only.
impl Default for Box<dyn MessageStore> {
    fn default() -> Self {
        Box::new(Memory)
    }
}

#[cfg(test)]
mod tests;
