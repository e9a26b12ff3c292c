//! The unacked timeout: how long a delivery may stay unacknowledged, and what happens when it
//! passes ([`UnackedTimeoutAction`]).
//!
//! A delivery's timeout is its consumer's `x-consumer-timeout`, else its queue's, else the
//! server's (zero: never). The connection's one timer fires at the earliest deadline of any
//! channel ([`Channels::next_deadline`]); [`Channels::expire`] then takes back what is due: it is
//! *parked* in its queue, away from the channel that still holds it (`broker/queue/parked.rs`),
//! so that a consumer elsewhere gets it and the holder's late settle still reaches it; with
//! `cancel` the consumer is cancelled too; with `close-channel` the channel is closed (406), as
//! RabbitMQ 3.x does. Each consumer's first timeout is logged.
//!
//! A delivery from a queue with retry delays (`x-retry-delays`, `broker/vhost/retry.rs`) that
//! times out is not parked: it is rejected (as `basic.reject` with `requeue=false` would), so it
//! is held for its next retry, or dead-lettered after the last; the holder's late settle of it
//! is then a no-op. The action's cancel or close still follows.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::unacked::Delivery;
use super::{basic, Channel, ChannelSettings, Channels};
use crate::broker::queue::Consumer;
use crate::broker::queue::Queue;
use crate::broker::vhost::Vhost;
use crate::error::{Error, Exception};
use crate::server::UnackedTimeoutAction;

impl ChannelSettings {
    /// How long a delivery from `queue` may stay unacked: the consumer's `x-consumer-timeout`,
    /// else the queue's, else the server's; `None` (never) when that is zero.
    pub(super) fn timeout(&self, consumer: Option<Duration>, queue: &Queue) -> Option<Duration> {
        let timeout = consumer
            .or(queue.options.consumer_timeout)
            .unwrap_or(self.unacked_timeout);
        (!timeout.is_zero()).then_some(timeout)
    }
}

impl Channels {
    /// The earliest unacked-timeout deadline of any channel.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|channel| channel.unacked.next_deadline())
            .min()
    }

    /// Takes back deliveries past their unacked timeout (see [`UnackedTimeoutAction`]): parked
    /// in their queue for a consumer on another channel, and the consumer cancelled too with
    /// `cancel`; or (as RabbitMQ does) the channel is closed with 406.
    pub(crate) fn expire(&mut self, out: &mut BytesMut, now: Instant) {
        let limits = self.session.limits;
        let action = limits.unacked_timeout_action;
        let vhost = Arc::clone(&self.session.vhost);
        for number in 0..self.slots.len() {
            let number = number as u16;
            let mut cancel: Vec<Arc<Consumer>> = Vec::new();
            let mut close = None;
            let Some(channel) = self.slot_mut(number) else {
                continue;
            };
            while let Some(delivery) = channel.unacked.pop_expired(now) {
                let consumer = delivery.consumer.as_ref();
                let timeout = limits
                    .timeout(consumer.and_then(|c| c.timeout), &delivery.queue)
                    .unwrap_or_default();
                report_timeout(number, &delivery, timeout, action);
                let retried = delivery.queue.retries();
                match action {
                    UnackedTimeoutAction::CloseChannel if retried => {
                        channel.retry(&vhost, delivery);
                        close = Some(timeout);
                        break;
                    }
                    UnackedTimeoutAction::CloseChannel => {
                        // Closing the channel gives it back with everything else it holds.
                        channel.unacked.restore(delivery);
                        close = Some(timeout);
                        break;
                    }
                    UnackedTimeoutAction::Cancel => {
                        let active = consumer.filter(|c| c.is_active());
                        if let Some(c) =
                            active.filter(|c| !cancel.iter().any(|x| Arc::ptr_eq(x, c)))
                        {
                            cancel.push(Arc::clone(c));
                        }
                    }
                    UnackedTimeoutAction::Redeliver => {}
                }
                match retried {
                    true => channel.retry(&vhost, delivery),
                    false => channel.park(delivery),
                }
            }
            for consumer in cancel {
                if !self.session.cancel_notify {
                    // A client that cannot hear of the cancel would wait for ever: tell it the
                    // one way it understands.
                    let timeout = limits.timeout(consumer.timeout, &consumer.queue);
                    close = Some(timeout.unwrap_or_default());
                    break;
                }
                self.output(out, number, |channels, out| {
                    channels.cancel_timed_out(out, number, &consumer)
                });
            }
            if let Some(timeout) = close {
                let error = Error::PreconditionFailed(format!(
                    "delivery acknowledgement on channel {number} timed out. Timeout value \
                     used: {} ms. This timeout value can be configured, see consumers doc \
                     guide to learn more",
                    timeout.as_millis()
                ));
                self.close_with(out, number, &Exception::from(error));
            }
        }
    }

    /// The `cancel` action: the consumer is cancelled (`basic.cancel` to the client) and every
    /// delivery it still holds is parked away from this channel.
    fn cancel_timed_out(&mut self, out: &mut BytesMut, number: u16, consumer: &Arc<Consumer>) {
        let vhost = Arc::clone(&self.session.vhost);
        let Some(channel) = self.slot_mut(number) else {
            return;
        };
        channel.consumers.remove(&consumer.tag);
        consumer.deactivate();
        let mut held = Vec::new();
        channel.unacked.take_of_consumer(consumer, &mut held);
        for delivery in held {
            channel.park(delivery);
        }
        if consumer.queue.remove_consumer(consumer) {
            vhost.delete_if_unused(&consumer.queue);
        }
        basic::send_cancel(out, number, &consumer.tag);
    }
}

impl Channel {
    /// Parks a delivery the client still holds in its queue, away from this channel (see
    /// `broker/queue/parked.rs`), remembering its tag so that a late settle still reaches it.
    fn park(&mut self, delivery: Delivery) {
        if let Some(consumer) = &delivery.consumer {
            consumer.settled(1);
        }
        if let Some(evicted) = self.unacked.remember_taken_back(&delivery) {
            let entries = evicted.queue.unpark(&self.credit, &[evicted.seq]);
            evicted.queue.requeue(entries);
        }
        delivery
            .queue
            .park(delivery.entry, Arc::clone(&self.credit));
        self.wake_consumers();
    }

    /// Rejects a timed-out delivery of a queue with retry delays (held for its next retry, or
    /// dead-lettered), remembering its tag so that the holder's late settle is a no-op.
    fn retry(&mut self, vhost: &Vhost, delivery: Delivery) {
        if let Some(consumer) = &delivery.consumer {
            consumer.settled(1);
        }
        if let Some(evicted) = self.unacked.remember_taken_back(&delivery) {
            let entries = evicted.queue.unpark(&self.credit, &[evicted.seq]);
            evicted.queue.requeue(entries);
        }
        vhost.reject(&delivery.queue, vec![delivery.entry]);
        self.wake_consumers();
    }
}

/// Logs an unacked timeout: once per consumer (and every `basic.get` delivery at debug level).
fn report_timeout(
    number: u16,
    delivery: &Delivery,
    timeout: Duration,
    action: UnackedTimeoutAction,
) {
    match &delivery.consumer {
        Some(consumer) if consumer.note_timed_out() => warn!(
            channel = number,
            consumer_tag = %consumer.tag,
            queue = %delivery.queue.name,
            timeout_ms = timeout.as_millis() as u64,
            action = ?action,
            "a delivery stayed unacknowledged past the consumer timeout (reported once per consumer)"
        ),
        _ => debug!(
            channel = number,
            delivery_tag = delivery.tag,
            queue = %delivery.queue.name,
            "unacked timeout"
        ),
    }
}
