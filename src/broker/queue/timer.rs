//! When a queue needs the vhost's tick: its next deadline, registered in the vhost's
//! [`Deadlines`] only when it moves earlier, and the tick's visit once it is due.
//!
//! A queue's deadline is the soonest of: now, if it holds messages to dead-letter; just after
//! its head message expires (messages expire at the head, as in RabbitMQ); when its `x-expires`
//! period runs out, if it has no consumer. Operations that may make it earlier (a publish, a
//! requeue, a dispatch that uncovered a new head, the last consumer leaving) compare it with the
//! registered one (an atomic, no lock) and register only if it is earlier; renewals (a consumer,
//! basic.get, a redeclaration) move it later and register nothing: the tick finds the old entry
//! early, does nothing and registers the real one. A queue with neither TTL nor `x-expires`, and
//! no message with an `expiration`, never registers. All of it under the queue's lock except
//! [`Queue::claim`]; nothing here takes the topology lock or routes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use super::super::deadlines::Deadlines;
use super::super::message::{now_ms, Message, Reason};
use super::state::QueueState;
use super::Queue;

/// No deadline registered.
const NONE: u64 = u64::MAX;

/// A queue's place in its vhost's deadlines.
#[derive(Debug)]
pub(super) struct Timer {
    /// The vhost's deadlines and the queue's own handle for them; unset for a queue outside a
    /// vhost (tests of the model), which never registers.
    deadlines: OnceLock<(Arc<Deadlines<Queue>>, Weak<Queue>)>,
    /// The deadline the queue last registered (ms since the epoch), [`NONE`] once the tick took
    /// it: an entry for another deadline is stale. Written under the queue's lock (but by
    /// [`Queue::claim`]).
    registered: AtomicU64,
}

impl Default for Timer {
    fn default() -> Self {
        Timer {
            deadlines: OnceLock::new(),
            registered: AtomicU64::new(NONE),
        }
    }
}

/// What the tick's visit found (see [`Queue::expire`]).
#[derive(Debug, Default)]
pub struct Expired {
    /// Messages the queue gave up on, for the caller to dead-letter.
    pub dropped: Vec<(Arc<Message>, Reason)>,
    /// The queue has been unused for its `x-expires` period.
    pub unused: bool,
}

impl QueueState {
    /// When the queue's messages need the tick: now (0) if some wait to be dead-lettered, else
    /// the millisecond after its head expires (expiry is strict, see `state::expired`).
    #[inline]
    fn messages_due(&self) -> Option<u64> {
        if !self.dropped.is_empty() {
            return Some(0);
        }
        if !self.expiring {
            return None;
        }
        self.head_expires()
            .filter(|&expires| expires != 0)
            .map(|expires| expires.saturating_add(1))
    }
}

impl Queue {
    /// Gives the queue its vhost's deadlines, and registers what is already due (a recovered
    /// backlog with expiry times, the first `x-expires` period).
    pub fn attach(self: &Arc<Self>, deadlines: &Arc<Deadlines<Queue>>) {
        let me = (Arc::clone(deadlines), Arc::downgrade(self));
        if self.timer.deadlines.set(me).is_ok() {
            let state = self.lock();
            self.reschedule(&state);
        }
    }

    /// After an operation that may have made the messages' deadline earlier: registers it if it
    /// is. Costs an atomic load when nothing changed.
    #[inline]
    pub(super) fn note_due(&self, state: &QueueState) {
        if let Some(at) = state.messages_due() {
            if at < self.timer.registered.load(Relaxed) {
                self.register(at);
            }
        }
    }

    /// Registers the queue's whole next deadline (messages and `x-expires`) if it is earlier
    /// than the registered one.
    pub(super) fn reschedule(&self, state: &QueueState) {
        let next = match (state.messages_due(), self.unused_until(state)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(at) => at,
                None => return,
            },
        };
        if next < self.timer.registered.load(Relaxed) {
            self.register(next);
        }
    }

    #[cold]
    fn register(&self, at: u64) {
        let Some((deadlines, me)) = self.timer.deadlines.get() else {
            return;
        };
        self.timer.registered.store(at, Relaxed);
        deadlines.register(at, Weak::clone(me));
    }

    /// When the `x-expires` period of a queue without consumers runs out (ms since the epoch,
    /// rounded up); `None` if it has no such period or has consumers.
    fn unused_until(&self, state: &QueueState) -> Option<u64> {
        let expires = self.limits().expires?;
        // A quorum queue's consumers are in its group: not one to delete on one node.
        if !state.consumers.is_empty() || state.deleted || self.quorum().is_some() {
            return None;
        }
        let since = self.idle_since();
        let left = (since + expires).saturating_duration_since(Instant::now());
        let left = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        Some(now_ms().saturating_add(left).saturating_add(1))
    }

    /// Something is due now (a quorum queue's dead letters): the next tick visits the queue.
    pub fn due_now(&self) {
        if self.timer.registered.load(Relaxed) > 0 {
            self.register(0);
        }
    }

    /// Takes the deadline `at` the tick popped: false if it is stale (the queue registered
    /// another since), and the tick skips the queue without locking it.
    pub fn claim(&self, at: u64) -> bool {
        self.timer
            .registered
            .compare_exchange(at, NONE, Relaxed, Relaxed)
            .is_ok()
    }

    /// The tick's visit to a queue whose deadline came ([`Queue::claim`]ed): drops expired
    /// messages at the head, hands back what the queue gave up on, says whether it is unused
    /// past its `x-expires` (judged at `now`), and registers its next deadline.
    pub fn expire(&self, now: Instant) -> Expired {
        let mut state = self.lock();
        if state.deleted {
            return Expired::default();
        }
        let before = state.len();
        state.drop_expired();
        if state.len() != before {
            // Dropping settled stored messages; perhaps room for a waiting publisher.
            self.dispatch_locked(&mut state);
            if state.store.buffers() {
                let _ = self.flush_locked(&mut state);
            }
        }
        let mut dropped = std::mem::take(&mut state.dropped);
        if let Some(quorum) = self.quorum() {
            dropped.extend(quorum.take_dead_letters());
        }
        let unused = self.unused_at(&state, now);
        self.reschedule(&state);
        Expired { dropped, unused }
    }

    /// The queue was used (declared again, passively or not): its `x-expires` period starts
    /// again (a later deadline: nothing to register).
    pub fn touch(&self) {
        if self.limits().expires.is_some() {
            self.mark_used(&self.lock());
        }
    }

    /// Whether the queue has been unused for its `x-expires` period (no consumers, no
    /// basic.get, no redeclaration).
    pub fn is_expired(&self, now: Instant) -> bool {
        if self.limits().expires.is_none() {
            return false;
        }
        self.unused_at(&self.lock(), now)
    }

    fn unused_at(&self, state: &QueueState, now: Instant) -> bool {
        let Some(expires) = self.limits().expires else {
            return false;
        };
        let since = self.idle_since();
        state.consumers.is_empty() && now.saturating_duration_since(since) >= expires
    }

    /// The deadline the queue has registered, if any (for tests).
    #[cfg(test)]
    pub(super) fn registered(&self) -> Option<u64> {
        Some(self.timer.registered.load(Relaxed)).filter(|&at| at != NONE)
    }
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
