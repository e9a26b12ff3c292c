//! A queue's messages in a segment log (`store::log`), one record per message in the layout of
//! `record.rs`: the durable queue's log (persistent messages, synced by the group commit before
//! they are confirmed), or the paging-only log of a spilling queue ([`super::Spill`]).
//!
//! Owns the log and the record layout's use; never decides what is delivered or when (the
//! queue does), never syncs (the group commit does).

use std::io;
use std::path::Path;
use std::sync::Arc;

use tracing::{error, warn};

use super::{LaneFilter, Loaded, MessageStore, NextMessages, Position, Stored};
use crate::broker::message::Message;
use crate::broker::record::RecordSummary;
use crate::broker::record::{decode_message, encode_message, encoded_len, summarize_message};
use crate::store::log::{CompactionJob, Keep, Log, Plan};
use crate::store::Store;
use warren_protocol::content::publish_checks;

/// How much of a log one read of paged-out messages takes (see [`LogStore::read_ahead`]).
const READ_AHEAD: usize = 256 * 1024;

/// What a message costs in memory at recovery (bytes, roughly: its record and the queue's slot).
const RECOVERED_OVERHEAD: usize = 96;

/// A queue's messages in a segment log.
#[derive(Debug)]
pub struct LogStore {
    log: Log,
    /// Where logs live, the memory window, and the group commit.
    store: Arc<Store>,
    /// Persistent messages are written to survive a restart (a durable queue's log); else it
    /// only pages out, and its files are never synced.
    durable: bool,
    /// The queue's name, for the logs.
    queue: String,
}

/// A message found in a durable queue's log at start, within the memory window.
#[derive(Debug)]
pub struct Recovered {
    pub position: Position,
    pub message: Arc<Message>,
    /// A delivery of it was recorded before the restart.
    pub redelivered: bool,
    /// When it expires (ms since the Unix epoch), 0 for never.
    pub expires: u64,
    /// Its `priority` property (0 if unset).
    pub priority: u8,
}

/// The messages of one priority left in the log at start (past the memory window): where the
/// first is and how many, read back when consumers reach them ([`MessageStore::read_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftInLog {
    pub priority: u8,
    pub first: Position,
    pub count: u64,
}

/// Everything a durable queue's log held at start.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Read back into memory, in log order.
    pub messages: Vec<Recovered>,
    /// Left in the log, by priority: every message after the memory window.
    pub left: Vec<LeftInLog>,
    /// The body bytes of them all.
    pub bytes: u64,
    /// Some message has an expiry time.
    pub expiring: bool,
}

impl LogStore {
    /// Opens a durable queue's log in `dir` and recovers its messages: only a memory window's
    /// worth is read back into memory; the rest stay in the log, counted per priority, and
    /// nothing per message is kept of them. Transient records (paged out before the restart)
    /// and unreadable ones are settled.
    pub fn recover(store: Arc<Store>, dir: &Path, queue: &str) -> io::Result<(LogStore, Backlog)> {
        let mut budget = store.memory_window;
        let mut backlog = Backlog::default();
        let mut decide = |position: Position, payload: &[u8]| {
            let Some(summary) = summarize_message(payload).filter(|s| s.persistent) else {
                return Keep::Drop;
            };
            backlog.bytes += summary.body_len;
            backlog.expiring |= summary.expires != 0;
            let cost = payload.len() + RECOVERED_OVERHEAD;
            if cost <= budget {
                budget -= cost;
                return Keep::Payload(summary.pack());
            }
            // Past the window: everything after stays in the log, in order.
            budget = 0;
            match backlog
                .left
                .iter_mut()
                .find(|l| l.priority == summary.priority)
            {
                Some(left) => left.count += 1,
                None => backlog.left.push(LeftInLog {
                    priority: summary.priority,
                    first: position,
                    count: 1,
                }),
            }
            Keep::Leave
        };
        let (log, recovery) = Log::open_in(&store.files, dir, store.segment_size, &mut decide)?;
        let mut this = LogStore {
            log,
            store,
            durable: true,
            queue: queue.to_owned(),
        };
        let mut unreadable = 0usize;
        for record in recovery.records {
            let (expires, priority) = RecordSummary::unpack(record.meta);
            match decode_message(&record.payload) {
                Some(stored) if stored.persistent => backlog.messages.push(Recovered {
                    position: record.position,
                    message: Arc::new(stored.message),
                    redelivered: record.delivered,
                    expires,
                    priority,
                }),
                _ => {
                    this.settle(record.position, None);
                    unreadable += 1;
                }
            }
        }
        if unreadable > 0 {
            warn!(
                queue,
                count = unreadable,
                "dropping unreadable records from the log"
            );
            this.flush()?;
        }
        Ok((this, backlog))
    }

    /// A fresh log for paging out only, in the store's spill directory.
    pub fn paging(store: Arc<Store>, queue: &str) -> io::Result<LogStore> {
        let dir = store.spill_dir();
        let (log, _) = Log::open_in(&store.files, &dir, store.segment_size, &mut |_, _| {
            Keep::Payload(0)
        })?;
        Ok(LogStore {
            log,
            store,
            durable: false,
            queue: queue.to_owned(),
        })
    }

    /// Whether `resident` bytes in memory are more than the queue may hold.
    pub(super) fn over_window(store: &Store, resident: usize) -> bool {
        resident > store.memory_window
    }

    /// Writes a message out of memory (not to be recovered); kept in memory if that fails.
    pub(super) fn page_out(&mut self, message: &Message, expires: u64) -> Stored {
        match self.log.append(&encode_message(message, false, expires)) {
            Ok(at) => Stored {
                position: Some(at),
                in_memory: false,
                durable: false,
            },
            Err(e) => {
                error!(queue = %self.queue, error = %e, "queue log: paging out failed; keeping the message in memory");
                Stored::IN_MEMORY
            }
        }
    }
}

impl MessageStore for LogStore {
    fn put(
        &mut self,
        message: &Message,
        persistent: bool,
        expires: u64,
        resident: usize,
    ) -> io::Result<Stored> {
        let over = LogStore::over_window(&self.store, resident);
        if persistent && self.durable {
            // Buffered: written by the publisher's flush (or sooner), then synced.
            let at = self
                .log
                .append(&encode_message(message, true, expires))
                .inspect_err(
                    |e| error!(queue = %self.queue, error = %e, "queue log: append failed"),
                )?;
            return Ok(Stored {
                position: Some(at),
                in_memory: !over,
                durable: true,
            });
        }
        match over {
            true => Ok(self.page_out(message, expires)),
            false => Ok(Stored::IN_MEMORY),
        }
    }

    /// One read of [`READ_AHEAD`] bytes of the log from `from` (more if the reader's
    /// messages are sparse among other priorities' records): a consumer draining a backlog
    /// costs one `pread` per run of messages, not one per message.
    fn read_next(
        &mut self,
        from: Position,
        wanted: Option<LaneFilter>,
        max: usize,
    ) -> io::Result<NextMessages> {
        let live = self.log.read_live(from, READ_AHEAD)?;
        let mut next = NextMessages {
            next: live.next,
            end: live.end,
            ..NextMessages::default()
        };
        for record in live.records {
            if next.messages.len() >= max {
                next.next = record.position;
                next.end = false;
                break;
            }
            let Some(stored) = decode_message(&record.payload) else {
                error!(
                    queue = %self.queue,
                    segment = record.position.segment,
                    offset = record.position.offset,
                    "queue log: a paged-out message cannot be read back; dropping it"
                );
                let _ = self.log.settle(record.position);
                // Whose it was is unknown among several priorities: counted by the caller's
                // reconciliation at the log's end.
                next.lost += u64::from(wanted.is_none());
                continue;
            };
            if let Some(wanted) = wanted {
                let priority = publish_checks(stored.message.properties())
                    .priority
                    .unwrap_or(0);
                if !wanted.accepts(priority) {
                    continue;
                }
            }
            next.messages.push(Loaded {
                position: record.position,
                message: stored.message,
                expires: stored.expires,
                redelivered: record.delivered,
            });
        }
        Ok(next)
    }

    fn delivered(
        &mut self,
        at: Position,
        message: &Message,
        expires: u64,
        no_ack: bool,
        redelivered: bool,
    ) {
        let written = match (no_ack, redelivered) {
            (true, _) => self
                .log
                .settle_sized(at, Some(encoded_len(message, expires))),
            (false, false) => self.log.mark_delivered(at),
            (false, true) => Ok(()),
        };
        if let Err(e) = written {
            error!(queue = %self.queue, error = %e, "queue log: recording a delivery failed");
        }
    }

    fn settle(&mut self, at: Position, known: Option<(&Message, u64)>) {
        let len = known.map(|(message, expires)| encoded_len(message, expires));
        if let Err(e) = self.log.settle_sized(at, len) {
            error!(queue = %self.queue, error = %e, "queue log: recording a settle failed");
        }
    }

    fn buffers(&self) -> bool {
        true
    }

    fn flush(&mut self) -> io::Result<()> {
        let (files, flushed) = self.log.take_dirty();
        if self.durable && !files.is_empty() {
            self.store.syncer.dirty(files);
        }
        if let Err(e) = &flushed {
            error!(queue = %self.queue, error = %e, "queue log: writing buffered records failed");
        }
        flushed
    }

    fn group_commit(&self) -> Option<Arc<Store>> {
        self.durable.then(|| Arc::clone(&self.store))
    }

    fn start_compaction(&mut self) -> io::Result<Option<CompactionJob>> {
        self.log.start_compaction()
    }

    fn record_punches(&mut self, job: &CompactionJob, plan: &Plan) -> io::Result<bool> {
        self.log.record_punches(job, plan)
    }

    fn punch_failed(&mut self, e: io::Error) -> io::Result<u64> {
        self.log.punch_failed(e)
    }

    fn destroy(self: Box<Self>) -> io::Result<()> {
        self.log.destroy()
    }
}
