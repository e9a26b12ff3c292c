//! Deliveries and cancellations from queues, as the connection's mailbox hands them over: a
//! delivery is written to the output buffer and, unless `no-ack`, kept unacked with its timeout;
//! a delivery for a consumer or channel that is gone goes straight back to its queue. Never
//! blocks on a queue: dispatch is only asked to run again.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use super::unacked::Delivery;
use super::{basic, give_back, ChannelState, Channels};
use crate::broker::message::Entry;
use crate::broker::queue::Consumer;

impl Channels {
    /// Writes a delivery from a queue to one of this connection's consumers, or gives it back
    /// to the queue if the consumer was cancelled or its channel closed meanwhile.
    #[inline]
    pub(crate) fn deliver(
        &mut self,
        out: &mut BytesMut,
        consumer: Arc<Consumer>,
        entry: Entry,
        now: Instant,
    ) {
        if self.held.is_empty() {
            return self.write_delivery(out, consumer, entry, now);
        }
        self.output(out, consumer.channel, |channels, out| {
            channels.write_delivery(out, consumer, entry, now)
        })
    }

    fn write_delivery(
        &mut self,
        out: &mut BytesMut,
        consumer: Arc<Consumer>,
        entry: Entry,
        now: Instant,
    ) {
        let window_freed = consumer.written();
        let frame_max = self.session.frame_max;
        let timeout = self
            .session
            .limits
            .timeout(consumer.timeout, &consumer.queue);
        let channel = match self.slot_mut(consumer.channel) {
            Some(channel) if consumer.is_active() && channel.state == ChannelState::Open => channel,
            _ => return give_back(consumer, entry),
        };
        let tag = channel.take_delivery_tag();
        let redelivered = u64::from(entry.redelivered);
        basic::encode_delivery(out, consumer.channel, &consumer.tag, tag, &entry, frame_max);
        // Dispatch again once half the window is free, or once this consumer stops holding up
        // a queue that pushes back on its publishers.
        if window_freed || (consumer.queue.flow.under_pressure() && !consumer.behind()) {
            consumer.queue.dispatch();
        }
        if consumer.no_ack {
            self.count_delivery(redelivered);
            return;
        }
        let queue = Arc::clone(&consumer.queue);
        let delivery = Delivery {
            tag,
            entry,
            queue,
            consumer: Some(consumer),
        };
        channel.unacked.push(delivery, timeout, now);
        self.count_delivery(redelivered);
    }

    #[inline]
    pub(super) fn count_delivery(&mut self, redelivered: u64) {
        self.counts.delivered += 1;
        self.counts.redelivered += redelivered;
    }

    /// The consumer's queue was deleted: forget the consumer and tell the client.
    pub(crate) fn cancelled(&mut self, out: &mut BytesMut, consumer: Arc<Consumer>) {
        if !consumer.is_active() {
            return;
        }
        consumer.deactivate();
        let cancel_notify = self.session.cancel_notify;
        let number = consumer.channel;
        self.output(out, number, |channels, out| {
            let Some(channel) = channels.slot_mut(number) else {
                return;
            };
            if channel.state == ChannelState::Open {
                channel.consumers.remove(&consumer.tag);
                if cancel_notify {
                    basic::send_cancel(out, number, &consumer.tag);
                }
            }
        })
    }
}
