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

use super::{MessageStore, Position, Stored};
use crate::broker::message::Message;
use crate::broker::record::RecordSummary;
use crate::broker::record::{decode_message, encode_message, encoded_len, summarize_message};
use crate::store::log::{CompactionJob, Keep, Log, Plan};
use crate::store::Store;

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

/// A message found in a durable queue's log at start.
#[derive(Debug)]
pub struct Recovered {
    pub position: Position,
    /// `None`: left in the log (past the memory window), read back when consumers reach it.
    pub message: Option<Arc<Message>>,
    /// A delivery of it was recorded before the restart.
    pub redelivered: bool,
    /// When it expires (ms since the Unix epoch), 0 for never.
    pub expires: u64,
    /// Its `priority` property (0 if unset).
    pub priority: u8,
}

/// Everything a durable queue's log held at start.
#[derive(Debug, Default)]
pub struct Backlog {
    /// In log order.
    pub messages: Vec<Recovered>,
    /// The body bytes of them all.
    pub bytes: u64,
}

impl LogStore {
    /// Opens a durable queue's log in `dir` and recovers its messages: only a memory window's
    /// worth is read back into memory, the rest stay positions in the log. Transient records
    /// (paged out before the restart) and unreadable ones are settled.
    pub fn recover(store: Arc<Store>, dir: &Path, queue: &str) -> io::Result<(LogStore, Backlog)> {
        let mut budget = store.memory_window;
        let mut bytes = 0u64;
        let mut decide = |payload: &[u8]| {
            let Some(summary) = summarize_message(payload).filter(|s| s.persistent) else {
                return Keep::Drop;
            };
            bytes += summary.body_len;
            let cost = payload.len() + RECOVERED_OVERHEAD;
            if cost > budget {
                budget = 0;
                return Keep::Position(summary.pack());
            }
            budget -= cost;
            Keep::Payload(summary.pack())
        };
        let (log, recovery) = Log::open_in(&store.files, dir, store.segment_size, &mut decide)?;
        let mut this = LogStore {
            log,
            store,
            durable: true,
            queue: queue.to_owned(),
        };
        let mut messages = Vec::with_capacity(recovery.records.len());
        let mut unreadable = 0usize;
        for record in recovery.records {
            let message = match record.payload.is_empty() {
                true => None,
                false => match decode_message(&record.payload) {
                    Some(stored) if stored.persistent => Some(Arc::new(stored.message)),
                    _ => {
                        this.settle(record.position, None);
                        unreadable += 1;
                        continue;
                    }
                },
            };
            let (expires, priority) = RecordSummary::unpack(record.meta);
            messages.push(Recovered {
                position: record.position,
                message,
                redelivered: record.delivered,
                expires,
                priority,
            });
        }
        if unreadable > 0 {
            warn!(
                queue,
                count = unreadable,
                "dropping unreadable records from the log"
            );
            this.flush()?;
        }
        Ok((this, Backlog { messages, bytes }))
    }

    /// A fresh log for paging out only, in the store's spill directory.
    pub fn paging(store: Arc<Store>, queue: &str) -> io::Result<LogStore> {
        let dir = store.spill_dir();
        let (log, _) = Log::open_in(&store.files, &dir, store.segment_size, &mut |_| {
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

    fn read(&mut self, at: Position) -> Option<Message> {
        let message = self
            .log
            .read(at)
            .ok()
            .and_then(|record| decode_message(&record));
        match message {
            Some(stored) => Some(stored.message),
            None => {
                error!(
                    queue = %self.queue,
                    segment = at.segment,
                    offset = at.offset,
                    "queue log: a paged-out message cannot be read back; dropping it"
                );
                let _ = self.log.settle(at);
                None
            }
        }
    }

    /// One `pread` of [`READ_AHEAD`] bytes from the first position: a consumer draining a
    /// backlog costs one read per run of records, not per message.
    fn read_ahead(&mut self, positions: &[Position]) -> Vec<Message> {
        let Some(first) = positions.first() else {
            return Vec::new();
        };
        let run = match self.log.read_run(*first, READ_AHEAD) {
            Ok(run)
                if run
                    .first()
                    .is_some_and(|(offset, _)| *offset == first.offset) =>
            {
                run
            }
            _ => return Vec::new(),
        };
        let mut records = run.into_iter().peekable();
        let mut messages = Vec::new();
        for at in positions {
            if at.segment != first.segment {
                break;
            }
            while records.next_if(|(offset, _)| *offset < at.offset).is_some() {}
            let Some((_, record)) = records.next_if(|(offset, _)| *offset == at.offset) else {
                break;
            };
            let Some(stored) = decode_message(&record) else {
                break;
            };
            messages.push(stored.message);
        }
        messages
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
