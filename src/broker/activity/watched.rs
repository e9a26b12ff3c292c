//! A queue's storage, watched: every call goes to the storage it wraps, and the calls that
//! change what the queue holds list the queue on its vhost's [`super::Activity`]. Called under
//! the queue's lock, as the storage is.

use std::io;
use std::sync::Arc;

use super::Watch;
use crate::broker::message::Message;
use crate::broker::storage::{LaneFilter, MessageStore, NextMessages, Position, Stored};
use crate::store::log::{CompactionJob, Plan};
use crate::store::Store;

/// `S`, with the queue's [`Watch`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
    /// It may have a log to compact (else only its counters are watched).
    logged: bool,
}

impl<S: MessageStore> Watched<S> {
    /// `logged`: whether `inner` may write a log (whether compaction concerns it).
    pub fn new(inner: S, watch: Arc<Watch>, logged: bool) -> Watched<S> {
        Watched {
            inner,
            watch,
            logged,
        }
    }

    #[inline]
    fn compaction_due(&self) {
        if self.logged {
            self.watch.compaction_due();
        }
    }
}

impl<S: MessageStore + 'static> MessageStore for Watched<S> {
    #[inline]
    fn put(
        &mut self,
        message: &Message,
        persistent: bool,
        expires: u64,
        resident: usize,
    ) -> io::Result<Stored> {
        // `published` moves; a log that rolls over to a new segment may make the old one due.
        self.watch.moved();
        self.compaction_due();
        self.inner.put(message, persistent, expires, resident)
    }

    fn read_next(
        &mut self,
        from: Position,
        wanted: Option<LaneFilter>,
        max: usize,
    ) -> io::Result<NextMessages> {
        let read = self.inner.read_next(from, wanted, max);
        if read.as_ref().is_ok_and(|read| read.lost > 0) {
            // Unreadable ones were settled.
            self.compaction_due();
        }
        read
    }

    #[inline]
    fn delivered(
        &mut self,
        at: Position,
        message: &Message,
        expires: u64,
        no_ack: bool,
        redelivered: bool,
    ) {
        self.watch.moved();
        if no_ack {
            self.compaction_due();
        }
        self.inner
            .delivered(at, message, expires, no_ack, redelivered);
    }

    #[inline]
    fn settle(&mut self, at: Position, known: Option<(&Message, u64)>) {
        self.compaction_due();
        self.inner.settle(at, known);
    }

    #[inline]
    fn buffers(&self) -> bool {
        self.inner.buffers()
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn group_commit(&self) -> Option<Arc<Store>> {
        self.inner.group_commit()
    }

    fn start_compaction(&mut self) -> io::Result<Option<CompactionJob>> {
        let started = self.inner.start_compaction();
        if !matches!(started, Ok(None)) {
            // More may be due, or it failed: visit it again next time (a job started now is
            // finished by the same visit, and the next one finds nothing if it was the last).
            self.compaction_due();
        }
        started
    }

    fn record_punches(&mut self, job: &CompactionJob, plan: &Plan) -> io::Result<bool> {
        self.inner.record_punches(job, plan)
    }

    fn punch_failed(&mut self, e: io::Error) -> io::Result<u64> {
        self.inner.punch_failed(e)
    }

    fn destroy(self: Box<Self>) -> io::Result<()> {
        // The sampler forgets it.
        self.watch.moved();
        Box::new(self.inner).destroy()
    }
}
