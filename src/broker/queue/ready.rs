//! The ready list of a queue: messages waiting for a consumer, in delivery order, one FIFO lane
//! per priority level (a single lane unless the queue has `x-max-priority`).
//!
//! Owns the slots and their count; knows nothing of logs, consumers or expiry rules. Every
//! operation is O(1) except finding the highest non-empty lane, O(levels) (at most 256).

use std::collections::VecDeque;
use std::sync::Arc;

use super::super::message::Message;
use super::super::storage::Position;

/// A ready message: in memory, or (paged out) only in the log.
#[derive(Debug)]
pub(super) struct Slot {
    pub seq: u64,
    /// When it expires (ms since the Unix epoch), 0 for never.
    pub expires: u64,
    pub message: Option<Arc<Message>>,
    pub position: Option<Position>,
    pub redelivered: bool,
}

#[derive(Debug)]
pub(super) struct Ready {
    /// Lane `p` holds the messages of priority `p`, oldest first.
    lanes: Vec<VecDeque<Slot>>,
    len: usize,
}

impl Default for Ready {
    fn default() -> Self {
        Ready::new(0)
    }
}

impl Ready {
    /// A ready list for priorities `0..=max_priority`.
    pub fn new(max_priority: u8) -> Ready {
        Ready {
            lanes: (0..=max_priority).map(|_| VecDeque::new()).collect(),
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The lane of a message priority: a priority above the queue's maximum counts as the
    /// maximum, as in RabbitMQ.
    #[inline]
    pub fn lane_of(&self, priority: u8) -> u8 {
        let top = self.lanes.len() - 1;
        // `lanes` has at most 256 entries, so `top` fits.
        priority.min(top as u8)
    }

    #[inline]
    pub fn push_back(&mut self, priority: u8, slot: Slot) {
        let lane = usize::from(self.lane_of(priority));
        self.lanes[lane].push_back(slot);
        self.len += 1;
    }

    /// The highest priority with a waiting message.
    #[inline]
    pub fn top(&self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        if self.lanes.len() == 1 {
            return Some(0);
        }
        let lane = self.lanes.iter().rposition(|lane| !lane.is_empty())?;
        Some(lane as u8)
    }

    /// Takes the next message of the highest non-empty lane, with its priority.
    #[inline]
    pub fn pop_front(&mut self) -> Option<(u8, Slot)> {
        let lane = self.top()?;
        let slot = self.lanes[usize::from(lane)].pop_front()?;
        self.len -= 1;
        Some((lane, slot))
    }

    /// Takes the newest message of a lane (a message that was just pushed).
    pub fn pop_back(&mut self, lane: u8) -> Option<Slot> {
        let slot = self.lanes.get_mut(usize::from(lane))?.pop_back()?;
        self.len -= 1;
        Some(slot)
    }

    pub fn back(&self, lane: u8) -> Option<&Slot> {
        self.lanes.get(usize::from(lane))?.back()
    }

    /// The next message of a lane.
    pub fn front(&self, lane: u8) -> Option<&Slot> {
        self.lanes.get(usize::from(lane))?.front()
    }

    /// The slots of one lane, front first (to fill paged-out ones in place).
    pub fn lane_mut(&mut self, lane: u8) -> impl Iterator<Item = &mut Slot> {
        self.lanes
            .get_mut(usize::from(lane))
            .into_iter()
            .flat_map(|slots| slots.iter_mut())
    }

    /// Every slot, emptying the list.
    pub fn take_all(&mut self) -> impl Iterator<Item = Slot> {
        self.len = 0;
        let levels = self.lanes.len();
        std::mem::replace(
            &mut self.lanes,
            (0..levels).map(|_| VecDeque::new()).collect(),
        )
        .into_iter()
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> Slot {
        Slot {
            seq,
            expires: 0,
            message: None,
            position: None,
            redelivered: false,
        }
    }

    #[test]
    fn highest_lane_first_fifo_within_a_lane() {
        let mut ready = Ready::new(3);
        for (seq, priority) in [(0, 0), (1, 2), (2, 9), (3, 2), (4, 0)] {
            ready.push_back(priority, slot(seq));
        }
        assert_eq!(ready.len(), 5);
        let order: Vec<(u8, u64)> =
            std::iter::from_fn(|| ready.pop_front().map(|(lane, s)| (lane, s.seq))).collect();
        // Priority 9 is above the maximum (3): it counts as 3.
        assert_eq!(order, [(3, 2), (2, 1), (2, 3), (0, 0), (0, 4)]);
        assert_eq!(ready.len(), 0);
        assert_eq!(ready.top(), None);
    }

    #[test]
    fn one_lane_ignores_priorities() {
        let mut ready = Ready::default();
        ready.push_back(5, slot(0));
        ready.push_back(0, slot(1));
        assert_eq!(ready.pop_back(0).map(|s| s.seq), Some(1));
        assert_eq!(ready.pop_front().map(|(_, s)| s.seq), Some(0));
        assert!(ready.pop_front().is_none());
    }
}
