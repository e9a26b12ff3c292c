//! What comes back to a queue after dispatch: acked messages settled in its storage,
//! requeued ones put back at their places, messages handed out but never sent, and deliveries
//! the unacked timeout parked away from the channel that holds them (`parked.rs`).

use std::sync::Arc;

use super::super::message::Entry;
use super::consumer::ChannelCredit;
use super::state::{self, QueueState};
use super::Queue;

impl Queue {
    /// Taken messages that were acked (or rejected, or dropped): the stored ones are settled in
    /// the queue's storage (written; synced by the next group commit, without waiting for it).
    /// The queue's lock is not taken when none is stored.
    pub fn settle(&self, entries: impl IntoIterator<Item = Entry>) {
        if let Some(quorum) = self.quorum() {
            return quorum.settle(super::quorumed::deliveries(entries));
        }
        let mut stored = entries
            .into_iter()
            .filter(|entry| entry.position.is_some())
            .peekable();
        if stored.peek().is_none() {
            return;
        }
        let mut state = self.lock();
        for entry in stored {
            if let Some(position) = entry.position {
                state
                    .store
                    .settle(position, Some((&entry.message, entry.expires)));
            }
        }
        let _ = self.flush_locked(&mut state);
    }

    /// Puts taken messages back at their original places, marked redelivered, and dispatches.
    pub fn requeue(&self, entries: impl IntoIterator<Item = Entry>) {
        if self.stream().is_some() {
            // A stream keeps every message: nothing comes back to it.
            return;
        }
        if let Some(quorum) = self.quorum() {
            return quorum.requeue(super::quorumed::deliveries(entries));
        }
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        for mut entry in entries {
            entry.redelivered = true;
            state.push_front(entry);
        }
        self.requeued(&mut state);
    }

    /// Puts back a message that was handed to a consumer but never sent (its consumer went away
    /// first): its place and its `redelivered` flag are as they were.
    pub fn return_unsent(&self, entry: Entry) {
        if self.stream().is_some() {
            // A stream keeps every message: nothing comes back to it.
            return;
        }
        if let Some(quorum) = self.quorum() {
            return quorum.requeue(vec![entry.seq]);
        }
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        state.push_front(entry);
        self.requeued(&mut state);
    }

    /// The unacked timeout took `entry` back from the channel `holder`, which still holds it:
    /// it goes to a consumer on another channel, never back to the holder (see `parked.rs`).
    pub fn park(&self, mut entry: Entry, holder: Arc<ChannelCredit>) {
        if self.stream().is_some() {
            // A stream keeps every message: nothing comes back to it.
            return;
        }
        if let Some(quorum) = self.quorum() {
            // Back to the queue, for any consumer (its machine does not know channels).
            return quorum.requeue(vec![entry.seq]);
        }
        let mut state = self.lock();
        if state.deleted {
            return;
        }
        entry.redelivered = true;
        state.park(state::Parked { entry, holder });
        self.dispatch_and_flush(&mut state);
    }

    /// The parked messages of `holder` with these `seq`s, taken out for the holder's late
    /// settle (or its channel's close): those no other consumer has taken meanwhile.
    pub fn unpark(&self, holder: &Arc<ChannelCredit>, seqs: &[u64]) -> Vec<Entry> {
        self.lock().unpark(holder, seqs)
    }

    /// After messages came back: a `drop-head` queue over its limits drops from the head first
    /// (the requeued messages, usually), as RabbitMQ does; then dispatch.
    fn requeued(&self, state: &mut QueueState) {
        self.trim(state);
        self.dispatch_and_flush(state);
    }
}
