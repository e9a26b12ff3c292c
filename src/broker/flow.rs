//! Publisher flow control: a queue whose deliveries fall behind tells its publishers to wait.
//!
//! A queue is *under pressure* when its backlog passes [`HIGH_MESSAGES`] (or [`HIGH_BYTES`] held
//! in memory) while the broker, not the client, holds one of its consumers back: its outbox
//! window is full, or it is at its prefetch limit with half of its deliveries not yet written
//! (`Consumer::behind`). Publishing connections that routed a message to such a queue stop
//! reading their sockets until the backlog is back under half the mark (or no consumer is behind
//! any more), as RabbitMQ's credit flow throttles a publisher to the pace of its queues. A queue
//! whose consumers are slow to ack (everything written, prefetch exhausted), or that has none,
//! never pushes back: that backlog is what a queue is for.
//!
//! The flag is an atomic set and cleared under the queue's lock; waiters use a [`Notify`]. This
//! module never locks anything and never blocks.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Ready messages past which a queue with window-held consumers pushes back.
pub const HIGH_MESSAGES: usize = 8192;
/// Bytes of ready messages in memory past which such a queue pushes back.
pub const HIGH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Flow {
    pressure: AtomicBool,
    released: Notify,
}

impl Flow {
    /// Re-evaluates the pressure after a dispatch (called under the queue's lock): `ready` and
    /// `memory` are the backlog left, `held` whether the broker holds a consumer back.
    pub fn update(&self, ready: usize, memory: usize, held: bool) {
        let on = self.pressure.load(Ordering::Relaxed);
        let next = if !held {
            false
        } else if on {
            ready >= HIGH_MESSAGES / 2 || memory >= HIGH_BYTES / 2
        } else {
            ready >= HIGH_MESSAGES || memory >= HIGH_BYTES
        };
        if next != on {
            tracing::trace!(ready, memory, pressure = next, "queue flow");
            self.pressure.store(next, Ordering::Release);
            if !next {
                self.released.notify_waiters();
            }
        }
    }

    /// Lifts the pressure for good (the queue was deleted or lost its consumers).
    pub fn release(&self) {
        if self.pressure.swap(false, Ordering::AcqRel) {
            self.released.notify_waiters();
        }
    }

    pub fn under_pressure(&self) -> bool {
        self.pressure.load(Ordering::Acquire)
    }

    /// Resolves once the queue is not under pressure.
    pub async fn released(&self) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.under_pressure() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_needs_a_held_consumer_and_a_backlog_and_releases_at_half() {
        let flow = Flow::default();
        flow.update(HIGH_MESSAGES * 10, 0, false);
        assert!(
            !flow.under_pressure(),
            "no held consumer: a backlog is fine"
        );
        flow.update(HIGH_MESSAGES - 1, 0, true);
        assert!(!flow.under_pressure());
        flow.update(HIGH_MESSAGES, 0, true);
        assert!(flow.under_pressure());
        flow.update(HIGH_MESSAGES / 2, 0, true);
        assert!(flow.under_pressure(), "hysteresis: still on at half");
        flow.update(HIGH_MESSAGES / 2 - 1, 0, true);
        assert!(!flow.under_pressure());
        flow.update(0, HIGH_BYTES, true);
        assert!(flow.under_pressure(), "bytes count too");
        flow.update(HIGH_MESSAGES, HIGH_BYTES, false);
        assert!(!flow.under_pressure(), "the consumer caught up");
    }

    #[tokio::test]
    async fn waiters_wake_on_release() {
        let flow = std::sync::Arc::new(Flow::default());
        flow.update(HIGH_MESSAGES, 0, true);
        let waiter = tokio::spawn({
            let flow = flow.clone();
            async move { flow.released().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        flow.update(0, 0, true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("released in time")
            .expect("task ran");
    }
}
