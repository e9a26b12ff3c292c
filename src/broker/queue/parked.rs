//! Deliveries the unacked timeout took back from a channel that still holds them.
//!
//! A client that holds a delivery past its timeout may still be working on it (a Celery worker
//! holds an ETA task unacked until it is due). Handing the message back to the same channel would
//! run it twice, silently; so it waits here, *parked*, for a consumer on another channel, and the
//! holder's late settle still reaches it: an ack settles it (it ran once), a requeue puts it back
//! among the ready messages, a reject drops it. When the holder's channel closes, what is still
//! parked for it becomes an ordinary requeued message.
//!
//! Parked messages count as ready (`message_count`, purge) and go out before the ready list:
//! they were at its head. They are few (bounded by what one channel had unacked), so a list is
//! enough. Everything here runs under the queue's lock.

use std::sync::Arc;

use super::super::message::Entry;
use super::consumer::ChannelCredit;
use super::state::{Parked, QueueState};

impl QueueState {
    /// Hands parked messages to consumers with credit on channels other than their holders'
    /// (the first `count` consumers: all, or the single active one), oldest first. Out of line:
    /// dispatch only comes here when something is parked.
    #[cold]
    #[inline(never)]
    pub(super) fn dispatch_parked(&mut self, count: usize) {
        let mut index = 0;
        while index < self.parked.len() {
            let holder = &self.parked[index].holder;
            let taker = self.consumers[..count]
                .iter()
                .find(|c| !Arc::ptr_eq(&c.credit, holder) && c.try_take())
                .map(Arc::clone);
            let Some(consumer) = taker else {
                index += 1;
                continue;
            };
            let Parked { entry, holder } = self.parked.remove(index);
            if let Some(position) = entry.position {
                self.record_delivery(&entry, position, consumer.no_ack);
            }
            if let Err(entry) = consumer.send(entry) {
                // The consumer's connection is gone; its cleanup will remove it.
                self.parked.insert(index, Parked { entry, holder });
                self.remove_consumer(&consumer);
                return self.dispatch_parked(count.min(self.consumers.len()));
            }
        }
    }

    /// The first parked message a `basic.get` on another channel than its holder's may take.
    pub(super) fn take_parked_for(&mut self, taker: &Arc<ChannelCredit>) -> Option<Entry> {
        let index = self.parked.iter().position(|p| !p.held_by(taker))?;
        Some(self.parked.remove(index).entry)
    }

    /// Takes the parked messages of `holder` with the given `seq`s (those no other consumer has
    /// taken meanwhile).
    pub(super) fn unpark(&mut self, holder: &Arc<ChannelCredit>, seqs: &[u64]) -> Vec<Entry> {
        let mut taken = Vec::new();
        let mut index = 0;
        while index < self.parked.len() {
            let parked = &self.parked[index];
            if parked.held_by(holder) && seqs.contains(&parked.entry.seq) {
                taken.push(self.parked.remove(index).entry);
            } else {
                index += 1;
            }
        }
        taken
    }

    /// Whether any message is parked (dispatch skips the work when none is).
    #[inline]
    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }
}
