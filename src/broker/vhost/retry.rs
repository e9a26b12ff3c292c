//! Retry with backoff (`x-retry-delays`, Warren's own queue argument): a delivery rejected or
//! nacked with `requeue=false` by a queue that lists retry delays is not dead-lettered at once.
//! It is held for the next delay (in the vhost's delayed-message store, `broker/delays`: durable
//! when the queue is durable and the message persistent) and then comes back to the end of the
//! same queue through the default exchange, with header `x-retry-count` counting the retries.
//! Once a message has been retried as many times as there are delays, the next reject
//! dead-letters it (reason `rejected`) as a queue without the argument would.
//!
//! The message that comes back is the same message again: it is not checked against the
//! queue's de-duplication window (`x-message-deduplication`), which saw it the first time.
//!
//! Called from [`Vhost::reject`] with no queue lock held. A message held durably is settled in
//! its queue's log only once the group commit has synced the held copy (so a crash in between
//! leaves the message in the queue, maybe also held: at least once, never lost); a message the
//! store cannot hold is dead-lettered instead (and logged).

use std::sync::Arc;

use warren_protocol::content::{decode_headers, publish_checks, with_header};
use warren_protocol::types::AMQPValue;

use super::super::message::Message;
use super::super::queue::Queue;
use super::super::values::integer;
use super::Vhost;
use crate::store::Store;

/// The header that counts a message's retries.
pub const RETRY_COUNT: &str = "x-retry-count";

impl Vhost {
    /// Holds `message`, rejected by `queue`, for its next retry if the queue has one left for
    /// it: `Some`, with the store whose next sync makes the held copy durable (if it is durable);
    /// `None` when it is to be dead-lettered instead.
    pub(super) fn retry(&self, queue: &Queue, message: &Message) -> Option<Option<Arc<Store>>> {
        let retried = retry_count(message.properties());
        let delay = queue.retry_delay(retried)?;
        let count = i64::try_from(retried + 1).unwrap_or(i64::MAX);
        let Some(properties) = with_header(
            message.properties(),
            RETRY_COUNT,
            AMQPValue::LongLongInt(count),
        ) else {
            tracing::warn!(queue = %queue.name, "retry: the message's properties do not decode; dead-lettered");
            return None;
        };
        let back = Message::new(
            b"",
            queue.name.as_bytes(),
            &properties,
            message.body_bytes(),
        );
        let persistent = publish_checks(&properties).delivery_mode == Some(2);
        let durable = queue.options.durable && persistent && queue.store().is_some();
        match self.delays().hold_retry(&back, &properties, delay, durable) {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::error!(queue = %queue.name, error = %e, "retry: cannot hold the message; dead-lettered");
                None
            }
        }
    }
}

/// How many times a message was retried already (its `x-retry-count`, 0 without one).
fn retry_count(properties: &[u8]) -> usize {
    decode_headers(properties)
        .and_then(|headers| headers.inner().get(RETRY_COUNT).and_then(integer))
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}
