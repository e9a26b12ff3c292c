//! A non-durable queue's storage: in memory until its backlog outgrows the memory window, then
//! paged out to a log of its own ([`LogStore::paging`]), opened on first need. Nothing in it
//! survives a restart (the spill directory is emptied at start), so it never syncs and
//! persistent messages are treated like any other.

use std::io;
use std::sync::Arc;

use super::{LaneFilter, LogStore, MessageStore, NextMessages, Position, Stored};
use crate::broker::message::Message;
use crate::store::log::{CompactionJob, Plan};
use crate::store::Store;

#[derive(Debug)]
pub struct Spill {
    store: Arc<Store>,
    /// Opened when the backlog first outgrows the window.
    log: Option<LogStore>,
    queue: String,
}

impl Spill {
    pub fn new(store: Arc<Store>, queue: &str) -> Spill {
        Spill {
            store,
            log: None,
            queue: queue.to_owned(),
        }
    }
}

impl MessageStore for Spill {
    fn put(
        &mut self,
        message: &Message,
        _: bool,
        expires: u64,
        resident: usize,
    ) -> io::Result<Stored> {
        if !LogStore::over_window(&self.store, resident) {
            return Ok(Stored::IN_MEMORY);
        }
        if self.log.is_none() {
            match LogStore::paging(Arc::clone(&self.store), &self.queue) {
                Ok(log) => self.log = Some(log),
                Err(e) => {
                    tracing::error!(queue = %self.queue, error = %e, "queue log: paging out failed; keeping the message in memory");
                    return Ok(Stored::IN_MEMORY);
                }
            }
        }
        match &mut self.log {
            Some(log) => Ok(log.page_out(message, expires)),
            None => Ok(Stored::IN_MEMORY),
        }
    }

    fn read_next(
        &mut self,
        from: Position,
        wanted: Option<LaneFilter>,
        max: usize,
    ) -> io::Result<NextMessages> {
        match &mut self.log {
            Some(log) => log.read_next(from, wanted, max),
            None => Ok(NextMessages {
                end: true,
                ..NextMessages::default()
            }),
        }
    }

    fn delivered(
        &mut self,
        at: Position,
        message: &Message,
        expires: u64,
        no_ack: bool,
        redelivered: bool,
    ) {
        if let Some(log) = &mut self.log {
            log.delivered(at, message, expires, no_ack, redelivered);
        }
    }

    fn settle(&mut self, at: Position, known: Option<(&Message, u64)>) {
        if let Some(log) = &mut self.log {
            log.settle(at, known);
        }
    }

    fn buffers(&self) -> bool {
        self.log.is_some()
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.log {
            Some(log) => log.flush(),
            None => Ok(()),
        }
    }

    fn start_compaction(&mut self) -> io::Result<Option<CompactionJob>> {
        match &mut self.log {
            Some(log) => log.start_compaction(),
            None => Ok(None),
        }
    }

    fn record_punches(&mut self, job: &CompactionJob, plan: &Plan) -> io::Result<bool> {
        match &mut self.log {
            Some(log) => log.record_punches(job, plan),
            None => Ok(false),
        }
    }

    fn punch_failed(&mut self, e: io::Error) -> io::Result<u64> {
        match &mut self.log {
            Some(log) => log.punch_failed(e),
            None => Err(e),
        }
    }

    fn destroy(self: Box<Self>) -> io::Result<()> {
        match self.log {
            Some(log) => Box::new(log).destroy(),
            None => Ok(()),
        }
    }
}
