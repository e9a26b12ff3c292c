//! The ready list of a queue: messages waiting for a consumer, in delivery order, one FIFO lane
//! per priority level (a single lane unless the queue has `x-max-priority`).
//!
//! A lane is the messages it holds in memory (`slots`), then, once its queue's memory window is
//! full, a *run*: the messages that are only in the queue's log, as a cursor over the log and a
//! count, nothing per message. Every message of the lane published while it has a run joins
//! the run (it is appended to the log anyway), so a lane is always slots then run, in order,
//! and the ready list of a backlog of any size costs the same memory. The queue reads a run's
//! next messages back into slots when a lane's slots run out (`state.rs`).
//!
//! Owns the slots, the runs and the count; knows nothing of logs, consumers or expiry rules.
//! Every operation is O(1) except finding the highest non-empty lane, O(levels) (at most 256).

use std::collections::VecDeque;
use std::sync::Arc;

use super::super::message::Message;
use super::super::storage::Position;

/// A ready message in memory.
#[derive(Debug)]
pub(super) struct Slot {
    pub seq: u64,
    /// When it expires (ms since the Unix epoch), 0 for never.
    pub expires: u64,
    pub message: Arc<Message>,
    /// Where the queue's storage holds it, if it does.
    pub position: Option<Position>,
    pub redelivered: bool,
}

/// Messages of a lane that are only in the log, from `cursor` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// Where the next read starts (records before it are not the run's).
    pub cursor: Position,
    /// How many messages the run holds.
    pub count: u64,
}

#[derive(Debug, Default)]
struct Lane {
    /// Oldest first; all older than the run's messages.
    slots: VecDeque<Slot>,
    run: Option<Run>,
}

impl Lane {
    fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.run.is_none()
    }
}

#[derive(Debug)]
pub(super) struct Ready {
    /// Lane `p` holds the messages of priority `p`.
    lanes: Vec<Lane>,
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
            lanes: (0..=max_priority).map(|_| Lane::default()).collect(),
            len: 0,
        }
    }

    /// Messages, in memory and in runs.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The highest lane (the queue's maximum priority; 0 without `x-max-priority`).
    pub fn levels(&self) -> u8 {
        // `lanes` has at most 256 entries.
        (self.lanes.len() - 1) as u8
    }

    /// The lane of a message priority: a priority above the queue's maximum counts as the
    /// maximum, as in RabbitMQ.
    #[inline]
    pub fn lane_of(&self, priority: u8) -> u8 {
        priority.min(self.levels())
    }

    /// Appends a message held in memory (the lane must have no run: see [`Ready::run`]).
    #[inline]
    pub fn push_back(&mut self, lane: u8, slot: Slot) {
        self.lanes[usize::from(lane)].slots.push_back(slot);
        self.len += 1;
    }

    /// Appends a message that is only in the log, at `position`, to the lane's run (starting
    /// one there if it has none).
    pub fn push_to_run(&mut self, lane: u8, position: Position) {
        let run = &mut self.lanes[usize::from(lane)].run;
        match run {
            Some(run) => run.count += 1,
            None => {
                *run = Some(Run {
                    cursor: position,
                    count: 1,
                })
            }
        }
        self.len += 1;
    }

    /// Adds `count` messages in the log from `first` on to the lane's run (recovery: one call
    /// per priority found past the memory window).
    pub fn add_run(&mut self, lane: u8, first: Position, count: u64) {
        let Some(entry) = self.lanes.get_mut(usize::from(lane)) else {
            return;
        };
        let run = entry.run.get_or_insert(Run {
            cursor: first,
            count: 0,
        });
        run.cursor = run.cursor.min(first);
        run.count += count;
        self.len += usize::try_from(count).unwrap_or(usize::MAX);
    }

    /// The lane's run, if it has one.
    #[inline]
    pub fn run(&self, lane: u8) -> Option<Run> {
        self.lanes.get(usize::from(lane))?.run
    }

    /// The lane's run after a read: `loaded` of its messages became slots (pushed with
    /// [`Ready::push_loaded`]), `lost` are gone, and the next read starts at `cursor`. A run
    /// the log has no more records for (`end`) is over, whatever its count said.
    pub fn advance_run(&mut self, lane: u8, cursor: Position, loaded: u64, lost: u64, end: bool) {
        let Some(entry) = self.lanes.get_mut(usize::from(lane)) else {
            return;
        };
        let Some(run) = &mut entry.run else {
            return;
        };
        let counted = loaded.min(run.count);
        run.count -= counted;
        let lost = lost.min(run.count);
        run.count -= lost;
        run.cursor = cursor;
        // Loaded ones are counted again as slots (more than the run said: counted now).
        self.len -= usize::try_from(lost).unwrap_or(0);
        self.len += usize::try_from(loaded - counted).unwrap_or(0);
        if end && run.count > 0 {
            tracing::warn!(
                missing = run.count,
                "queue: the log ended before the messages it was to hold"
            );
            self.len -= usize::try_from(run.count).unwrap_or(0);
            run.count = 0;
        }
        if run.count == 0 {
            entry.run = None;
        }
    }

    /// A message read back from the lane's run (counted there already).
    pub fn push_loaded(&mut self, lane: u8, slot: Slot) {
        self.lanes[usize::from(lane)].slots.push_back(slot);
    }

    /// Whether the lane has a run but nothing in memory: its head must be read back.
    #[inline]
    pub fn wants_reading(&self, lane: u8) -> bool {
        self.lanes
            .get(usize::from(lane))
            .is_some_and(|l| l.slots.is_empty() && l.run.is_some())
    }

    /// Whether the lane has nothing in memory.
    #[inline]
    pub fn no_slots(&self, lane: u8) -> bool {
        self.lanes
            .get(usize::from(lane))
            .is_none_or(|l| l.slots.is_empty())
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

    /// Takes the next in-memory message of a lane.
    #[inline]
    pub fn pop_front(&mut self, lane: u8) -> Option<Slot> {
        let slot = self.lanes.get_mut(usize::from(lane))?.slots.pop_front()?;
        self.len -= 1;
        Some(slot)
    }

    /// Takes the newest message of a lane (a message that was just pushed), if in memory.
    pub fn pop_back(&mut self, lane: u8) -> Option<Slot> {
        let lane = self.lanes.get_mut(usize::from(lane))?;
        if lane.run.is_some() {
            return None;
        }
        let slot = lane.slots.pop_back()?;
        self.len -= 1;
        Some(slot)
    }

    /// The newest message of a lane, if in memory (not behind a run).
    pub fn back(&self, lane: u8) -> Option<&Slot> {
        let lane = self.lanes.get(usize::from(lane))?;
        match lane.run {
            Some(_) => None,
            None => lane.slots.back(),
        }
    }

    /// The next message of a lane, if in memory.
    pub fn front(&self, lane: u8) -> Option<&Slot> {
        self.lanes.get(usize::from(lane))?.slots.front()
    }

    /// Every in-memory slot and every run (with its lane), emptying the list.
    pub fn take_all(&mut self) -> (Vec<Slot>, Vec<(u8, Run)>) {
        self.len = 0;
        let levels = self.lanes.len();
        let lanes = std::mem::replace(
            &mut self.lanes,
            (0..levels).map(|_| Lane::default()).collect(),
        );
        let mut slots = Vec::new();
        let mut runs = Vec::new();
        for (index, lane) in lanes.into_iter().enumerate() {
            slots.extend(lane.slots);
            if let Some(run) = lane.run {
                runs.push((index as u8, run));
            }
        }
        (slots, runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> Slot {
        Slot {
            seq,
            expires: 0,
            message: Arc::new(Message::new(b"", b"", &[0, 0], bytes::Bytes::new())),
            position: None,
            redelivered: false,
        }
    }

    fn at(offset: u32) -> Position {
        Position { segment: 1, offset }
    }

    fn drain(ready: &mut Ready) -> Vec<(u8, u64)> {
        std::iter::from_fn(|| {
            let lane = ready.top()?;
            ready.pop_front(lane).map(|s| (lane, s.seq))
        })
        .collect()
    }

    #[test]
    fn highest_lane_first_fifo_within_a_lane() {
        let mut ready = Ready::new(3);
        for (seq, priority) in [(0, 0), (1, 2), (2, 9), (3, 2), (4, 0)] {
            let lane = ready.lane_of(priority);
            ready.push_back(lane, slot(seq));
        }
        assert_eq!(ready.len(), 5);
        // Priority 9 is above the maximum (3): it counts as 3.
        assert_eq!(drain(&mut ready), [(3, 2), (2, 1), (2, 3), (0, 0), (0, 4)]);
        assert_eq!(ready.len(), 0);
        assert_eq!(ready.top(), None);
    }

    #[test]
    fn one_lane_ignores_priorities() {
        let mut ready = Ready::default();
        ready.push_back(ready.lane_of(5), slot(0));
        ready.push_back(0, slot(1));
        assert_eq!(ready.pop_back(0).map(|s| s.seq), Some(1));
        assert_eq!(ready.pop_front(0).map(|s| s.seq), Some(0));
        assert!(ready.pop_front(0).is_none());
    }

    #[test]
    fn a_run_is_counted_and_read_back_behind_the_slots() {
        let mut ready = Ready::new(1);
        ready.push_back(0, slot(0));
        ready.push_to_run(0, at(100));
        ready.push_to_run(0, at(200));
        ready.push_to_run(0, at(300));
        assert_eq!(ready.len(), 4);
        // Behind a run, the newest message is not in memory.
        assert!(ready.back(0).is_none() && ready.pop_back(0).is_none());
        assert_eq!(
            ready.run(0),
            Some(Run {
                cursor: at(100),
                count: 3
            })
        );
        assert_eq!(ready.pop_front(0).map(|s| s.seq), Some(0));
        assert!(ready.wants_reading(0));
        assert_eq!(ready.top(), Some(0), "the run still counts");
        // Two read back, one lost.
        ready.push_loaded(0, slot(1));
        ready.push_loaded(0, slot(2));
        ready.advance_run(0, at(301), 2, 1, false);
        assert_eq!(ready.run(0), None);
        assert_eq!(ready.len(), 2);
        assert_eq!(drain(&mut ready), [(0, 1), (0, 2)]);
    }

    #[test]
    fn a_run_the_log_ends_early_is_over() {
        let mut ready = Ready::default();
        ready.add_run(0, at(50), 5);
        ready.add_run(0, at(10), 2);
        assert_eq!(
            ready.run(0),
            Some(Run {
                cursor: at(10),
                count: 7
            })
        );
        ready.push_loaded(0, slot(0));
        ready.advance_run(0, at(60), 1, 0, true);
        assert_eq!(ready.run(0), None);
        assert_eq!(ready.len(), 1);
        let (slots, runs) = ready.take_all();
        assert_eq!((slots.len(), runs.len(), ready.len()), (1, 0, 0));
    }
}
