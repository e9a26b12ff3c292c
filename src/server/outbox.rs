//! A connection's outbox: what queues, the broker and the group commit send to a connection task
//! (deliveries for its consumers, cancellations, confirms that became safe). Unbounded: what one
//! consumer may have in it is bounded by its credit (see `broker::queue::consumer`), and the
//! connection drains it in batches between its reads.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::message::Entry;
use crate::broker::queue::{Consumer, Sink};

/// A publish awaiting its confirm: (channel, channel epoch, delivery tag).
pub type ConfirmTag = (u16, u64, u64);

/// What a connection task is sent.
#[derive(Debug)]
pub enum Outbound {
    /// A message for one of the connection's consumers.
    Deliver {
        consumer: Arc<Consumer>,
        entry: Entry,
    },
    /// The consumer's queue was deleted: tell the client (`basic.cancel`) and forget it.
    Cancelled { consumer: Arc<Consumer> },
    /// The group commit synced (or failed to sync) these publishes: (channel, channel epoch,
    /// delivery tag).
    Synced {
        tags: Vec<ConfirmTag>,
        /// (channel, epoch) of `tx.commit`s waiting for the sync.
        commits: Vec<(u16, u64)>,
        ok: bool,
    },
}

/// The sending side of a connection's outbox.
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::UnboundedSender<Outbound>);

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox(tx), rx)
    }

    /// Tells the connection that publisher-confirm tags are safe on disk (or not).
    pub fn synced(&self, tags: Vec<ConfirmTag>, commits: Vec<(u16, u64)>, ok: bool) {
        let _ = self.0.send(Outbound::Synced { tags, commits, ok });
    }
}

impl Sink for Outbox {
    /// Hands a delivery to the connection task; gives the entry back if that task has ended.
    #[inline]
    fn deliver(&self, consumer: Arc<Consumer>, entry: Entry) -> Result<(), Entry> {
        match self.0.send(Outbound::Deliver { consumer, entry }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Outbound::Deliver { entry, .. })) => Err(entry),
            Err(_) => Ok(()),
        }
    }

    fn cancelled(&self, consumer: Arc<Consumer>) {
        let _ = self.0.send(Outbound::Cancelled { consumer });
    }
}
