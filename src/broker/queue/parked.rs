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
//! enough; and rare, so the list is boxed and exists only while something is parked (an idle
//! queue pays 8 bytes for it). Everything here runs under the queue's lock.

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
        while index < self.parked_len() {
            let Some(parked) = self.parked.as_deref() else {
                return;
            };
            let holder = &parked[index].holder;
            let taker = self.consumers[..count]
                .iter()
                .find(|c| !Arc::ptr_eq(&c.credit, holder) && c.try_take())
                .map(Arc::clone);
            let Some(consumer) = taker else {
                index += 1;
                continue;
            };
            let Some(Parked { entry, holder }) = self.remove_parked(index) else {
                return;
            };
            if let Some(position) = entry.position {
                self.record_delivery(&entry, position, consumer.no_ack);
            }
            if let Err(entry) = consumer.send(entry) {
                // The consumer's connection is gone; its cleanup will remove it.
                self.parked
                    .get_or_insert_with(Box::default)
                    .insert(index, Parked { entry, holder });
                self.remove_consumer(&consumer);
                return self.dispatch_parked(count.min(self.consumers.len()));
            }
        }
    }

    /// Parks a delivery (after the ones parked before it).
    pub(super) fn park(&mut self, parked: Parked) {
        self.parked.get_or_insert_with(Box::default).push(parked);
    }

    /// The first parked message a `basic.get` on another channel than its holder's may take.
    pub(super) fn take_parked_for(&mut self, taker: &Arc<ChannelCredit>) -> Option<Entry> {
        let index = self
            .parked
            .as_deref()?
            .iter()
            .position(|p| !p.held_by(taker))?;
        self.remove_parked(index).map(|parked| parked.entry)
    }

    /// Takes the parked messages of `holder` with the given `seq`s (those no other consumer has
    /// taken meanwhile).
    pub(super) fn unpark(&mut self, holder: &Arc<ChannelCredit>, seqs: &[u64]) -> Vec<Entry> {
        let mut taken = Vec::new();
        let mut index = 0;
        while let Some(parked) = self.parked.as_deref().and_then(|p| p.get(index)) {
            if parked.held_by(holder) && seqs.contains(&parked.entry.seq) {
                taken.extend(self.remove_parked(index).map(|parked| parked.entry));
            } else {
                index += 1;
            }
        }
        taken
    }

    /// Takes every parked message out (purge, delete), freeing the list.
    pub(super) fn take_all_parked(&mut self) -> Vec<Parked> {
        self.parked.take().map_or_else(Vec::new, |parked| *parked)
    }

    /// How many messages are parked.
    #[inline]
    pub(super) fn parked_len(&self) -> usize {
        self.parked.as_ref().map_or(0, |parked| parked.len())
    }

    /// Whether any message is parked (dispatch skips the work when none is).
    #[inline]
    pub(super) fn has_parked(&self) -> bool {
        self.parked
            .as_ref()
            .is_some_and(|parked| !parked.is_empty())
    }

    /// Removes the parked message at `index`, freeing the list when it was the last (so that
    /// `parked` is `None` again once nothing is parked).
    fn remove_parked(&mut self, index: usize) -> Option<Parked> {
        let list = self.parked.as_deref_mut()?;
        let parked = (index < list.len()).then(|| list.remove(index));
        if list.is_empty() {
            self.parked = None;
        }
        parked
    }
}
