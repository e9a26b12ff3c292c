//! A quorum queue's side of [`Queue`] (`x-queue-type: quorum` on a cluster): the queue keeps
//! its [`Quorum`] in its boxed `Limited` and hands it every operation (see `broker/quorum`);
//! the queue's own state stays empty. Here: attaching it, finding it, and the operations that
//! take a delivery's number (its entry's `seq`).

use std::sync::Arc;

use super::super::message::{Entry, Message};
use super::super::quorum::{block, Quorum};
use super::{Enqueued, Published, Queue};

impl Queue {
    /// A quorum queue: its messages are in `quorum`'s Raft group.
    pub fn with_quorum(mut self, quorum: Arc<Quorum>) -> Queue {
        self.limited_mut().quorum = Some(quorum);
        self
    }

    /// The replicated queue, for a quorum queue.
    #[inline]
    pub fn quorum(&self) -> Option<&Arc<Quorum>> {
        self.limited.as_ref()?.quorum.as_ref()
    }
}

/// [`Queue::publish`] for a quorum queue: taken now, written to the group by the publisher's
/// [`Queue::flush_log`], confirmed once a majority has it.
pub(super) fn publish_to_quorum(quorum: &Quorum, message: &Message, ttl: Option<u64>) -> Published {
    quorum.publish(message, ttl);
    Published {
        enqueued: Enqueued::Logged,
        logged: true,
        dropped: Vec::new(),
    }
}

/// The deliveries' numbers.
pub(super) fn deliveries(entries: impl IntoIterator<Item = Entry>) -> Vec<u64> {
    entries.into_iter().map(|entry| entry.seq).collect()
}

/// `basic.get` on a quorum queue: written through the leader, waited for here (the
/// connection's worker thread blocks for the write, up to its timeout); a failed write is an
/// empty queue to the client (and a warning in the log).
pub(super) fn get(quorum: &Quorum, no_ack: bool) -> Option<(Entry, u32)> {
    match block(quorum.get(no_ack)) {
        Ok(got) => got.map(|(entry, left)| (entry, u32::try_from(left).unwrap_or(u32::MAX))),
        Err(e) => {
            tracing::warn!(error = %e, "quorum queue: basic.get failed");
            None
        }
    }
}

/// `queue.purge` of a quorum queue: written through the leader, waited for here (a purge is
/// rare; the connection's worker thread blocks for the write, up to its timeout).
pub(super) fn purge(quorum: &Quorum) -> u32 {
    let purged = block(quorum.purge());
    match purged {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "quorum queue: purge failed");
            0
        }
    }
}
