//! Messages taken out of a queue other than by its consumers: `basic.get` (one, to a channel)
//! and `queue.purge` (every ready one, dropped). A stream refuses both (its channel says so
//! first); a quorum queue writes them through its group (`quorumed.rs`).

use std::cmp::Reverse;
use std::sync::Arc;

use super::super::message::Entry;
use super::consumer::ChannelCredit;
use super::{quorumed, saturating_u32, Queue};

impl Queue {
    /// `basic.get` on the channel `taker`: the next message and how many remain.
    pub fn get(&self, no_ack: bool, taker: &Arc<ChannelCredit>) -> Option<(Entry, u32)> {
        if self.stream().is_some() {
            // Streams are read by consumers only (the channel refuses `basic.get` first).
            return None;
        }
        if let Some(quorum) = self.quorum() {
            return quorumed::get(quorum, no_ack);
        }
        let mut state = self.lock();
        if self.limits().expires.is_some() {
            self.mark_used(&state);
        }
        let entry = state.take_parked_for(taker).or_else(|| state.pop());
        // What the get uncovered at the head is not counted as left, as in RabbitMQ.
        state.drop_expired();
        self.note_due(&state);
        let entry = entry?;
        state.delivered += 1;
        if let Some(position) = entry.position {
            state.record_delivery(&entry, position, no_ack);
            let _ = self.flush_locked(&mut state);
        }
        Some((entry, saturating_u32(state.ready_count())))
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> u32 {
        if self.stream().is_some() {
            // Not for streams (the channel refuses `queue.purge` first).
            return 0;
        }
        if let Some(quorum) = self.quorum() {
            return quorumed::purge(quorum);
        }
        let mut state = self.lock();
        let count = state.ready_count();
        let (slots, runs) = state.ready.take_all();
        let requeued = std::mem::take(&mut state.requeued);
        let parked = state.take_all_parked();
        state.memory = 0;
        state.bytes = 0;
        self.flow.release();
        let slots = slots
            .iter()
            .filter_map(|slot| Some((slot.position?, &*slot.message, slot.expires)));
        let entries = requeued
            .iter()
            .map(|Reverse(entry)| entry)
            .chain(parked.iter().map(|p| &p.entry))
            .filter_map(|e| Some((e.position?, &*e.message, e.expires)));
        for (position, message, expires) in slots.chain(entries) {
            state.store.settle(position, Some((message, expires)));
        }
        for (lane, run) in runs {
            state.settle_run(lane, run);
        }
        let _ = self.flush_locked(&mut state);
        saturating_u32(count)
    }
}
