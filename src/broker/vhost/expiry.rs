//! The vhost's periodic work: expired messages dropped or dead-lettered, and queues unused past
//! their `x-expires` deleted, as RabbitMQ does.

use super::*;

impl Vhost {
    /// The vhost's periodic work (every 100 ms): gives every queue its [`Queue::tick`] (expired
    /// messages dropped at the head), dead-letters what the queues gave up on, and deletes the
    /// queues whose `x-expires` has run out (unused: no consumer, no basic.get, no
    /// redeclaration for that long), as RabbitMQ does, messages and all.
    pub fn expire_unused(&self, now: std::time::Instant) {
        let mut due = Vec::new();
        let mut given_up = Vec::new();
        for queue in self.read().queues.values() {
            if queue.is_expired(now) {
                due.push(Arc::clone(queue));
            }
            let dropped = queue.tick();
            if !dropped.is_empty() {
                given_up.push((Arc::clone(queue), dropped));
            }
        }
        // Dead-lettering routes: not under the topology lock.
        let mut batch = DeadLetters::new(self);
        for (queue, dropped) in given_up {
            for (message, reason) in dropped {
                batch.send(&queue, &message, reason);
            }
        }
        drop(batch);
        for queue in due {
            if let Some(messages) = self.remove_if(&queue, |q| q.is_expired(now)) {
                tracing::info!(vhost = %self.name, queue = %queue.name, messages, "queue expired (x-expires)");
            }
        }
    }
}
