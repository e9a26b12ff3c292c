//! The vhost's periodic work: expired messages dropped or dead-lettered, and queues unused past
//! their `x-expires` deleted, as RabbitMQ does.
//!
//! Only queues whose deadline came are visited (the vhost's [`Deadlines`]; see
//! `queue/timer.rs` for what a queue registers and when): an idle vhost of any size costs the
//! tick one lock of the deadlines and a look at the earliest. Lock order: the deadlines alone,
//! then each queue alone, then the topology (to delete), never one under another; dead-lettering
//! routes with no lock held.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::*;
use crate::broker::message::now_ms;

impl Vhost {
    /// The vhost's periodic work (every 100 ms): visits the queues whose deadline came (a stale
    /// one, whose queue registered another since, is skipped without locking the queue), drops
    /// their expired head messages, dead-letters what they gave up on, and deletes those whose
    /// `x-expires` has run out (unused: no consumer, no basic.get, no redeclaration for that
    /// long), messages and all. Returns how many queues it visited.
    pub fn expire_due(&self) -> usize {
        let now = Instant::now();
        let mut visited = 0;
        let mut given_up = Vec::new();
        let mut unused = Vec::new();
        for (at, queue) in self.deadlines.take_due(now_ms()) {
            if !queue.claim(at) {
                continue;
            }
            visited += 1;
            let expired = queue.expire(now);
            if !expired.dropped.is_empty() {
                given_up.push((Arc::clone(&queue), expired.dropped));
            }
            if expired.unused {
                unused.push(queue);
            }
        }
        self.visits.fetch_add(visited as u64, Relaxed);
        let mut batch = DeadLetters::new(self);
        for (queue, dropped) in given_up {
            for (message, reason) in dropped {
                batch.send(&queue, &message, reason);
            }
        }
        drop(batch);
        for queue in unused {
            if let Some(messages) = self.remove_if(&queue, |q| q.is_expired(now)) {
                tracing::info!(vhost = %self.name, queue = %queue.name, messages, "queue expired (x-expires)");
            }
        }
        visited
    }

    /// Queues the tick has visited since the vhost was created: it grows with the queues that
    /// have something due, not with the vhost's size.
    pub fn tick_visits(&self) -> u64 {
        self.visits.load(Relaxed)
    }

    /// Deadlines registered with the tick (stale ones included until the tick pops them).
    pub fn pending_deadlines(&self) -> usize {
        self.deadlines.len()
    }
}
