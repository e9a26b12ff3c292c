//! Firing the vhost's delayed messages: one pass takes what its delayed-message exchanges hold
//! and is due (`broker/delays`, in due order) and publishes each as if it were published now to
//! its exchange, routed by the exchange's `x-delayed-type`. A mandatory message routed nowhere
//! goes back to its publisher's channel if that is still open; otherwise it is dropped and
//! logged, as is a message whose exchange is gone.
//!
//! Called by the broker's firing thread with no lock held; takes the topology and queue locks
//! through the ordinary publish, never under the delays' lock.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{error, warn};
use warren_protocol::content::publish_checks;

use super::{PublishScratch, Vhost};
use crate::broker::arguments::parse_expiration;
use crate::broker::delays::record;
use crate::broker::message::{Message, Stamp};

impl Vhost {
    /// Fires what is due at `now`; returns when the next held message is due (ms since the
    /// epoch; `u64::MAX`: none).
    pub fn fire_delayed(&self, now: u64, scratch: &mut PublishScratch) -> u64 {
        let delays = self.delays();
        if !delays.due(now) {
            return delays.next_wake();
        }
        delays.begin(now);
        loop {
            let batch = delays.pop_due(now);
            if batch.is_empty() {
                break;
            }
            for fired in &batch {
                if !fired.payload.is_empty() {
                    self.fire_one(&fired.payload, scratch);
                }
            }
            let mut flushed = true;
            for queue in scratch.unflushed.drain(..) {
                if let Err(e) = queue.flush_log() {
                    error!(queue = %queue.name, error = %e, "delayed messages: writing to the log failed");
                    flushed = false;
                }
            }
            scratch.pressured.clear();
            scratch.enqueued = 0;
            delays.fired(&batch, flushed);
        }
        delays.end()
    }

    /// Publishes one held message (a record of `broker/delays`).
    fn fire_one(&self, payload: &[u8], scratch: &mut PublishScratch) {
        let Some(held) = record::decode(payload) else {
            warn!(vhost = %self.name, "a delayed message's record is malformed; dropped");
            return;
        };
        let message = Arc::new(Message::new(
            held.exchange,
            held.routing_key,
            held.properties,
            Bytes::copy_from_slice(held.body),
        ));
        let checks = publish_checks(held.properties);
        let stamp = Stamp {
            persistent: checks.delivery_mode == Some(2),
            ttl: checks.expiration.and_then(|e| parse_expiration(e).ok()),
            priority: checks.priority.unwrap_or(0),
        };
        let retry = held.origin == record::RETRY;
        match self.publish_fired(&message, stamp, !retry, scratch) {
            Ok(routed) if !routed.routed && retry => {
                warn!(vhost = %self.name, queue = %message.routing_key(), "a retried message's queue is gone; dropped");
            }
            Ok(routed) if !routed.routed && held.origin != 0 => {
                let (exchange, routing_key) = (message.exchange(), message.routing_key());
                let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
                if !self.delays().return_to(held.origin, message) {
                    warn!(vhost = %self.name, exchange, routing_key, "a mandatory delayed message is unroutable and its channel is closed; dropped");
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(vhost = %self.name, exchange = %message.exchange(), error = %e, "a delayed message cannot be routed when due; dropped")
            }
        }
    }
}
