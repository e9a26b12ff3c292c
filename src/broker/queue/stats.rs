//! A queue's figures for the management API and metrics: counts read under the queue's lock in
//! one short critical section, and the consumers as they are. Counting costs the hot path one
//! addition under a lock it already holds (`published`, `delivered` in [`super::state::QueueState`]);
//! rates are the management's to derive by sampling these totals.

use std::sync::Arc;

use warren_protocol::method::ShortStr;

use super::consumer::Consumer;
use super::Queue;

/// A queue's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery (RabbitMQ's `messages_ready`).
    pub ready: u64,
    /// Messages delivered to its consumers and not yet settled (`messages_unacknowledged`;
    /// `basic.get` deliveries still unacked are not counted).
    pub unacked: u64,
    pub consumers: u32,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Bytes of ready messages held in memory.
    pub memory: u64,
    /// Messages it has taken since it was created or recovered.
    pub published: u64,
    /// Messages it has handed to consumers or `basic.get` since then.
    pub delivered: u64,
}

/// One consumer of a queue, as the management API shows it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    pub tag: ShortStr,
    pub channel: u16,
    /// The connection that consumes (its id in the server's registry).
    pub connection: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    pub priority: i64,
    pub prefetch: u32,
    pub active: bool,
    /// Its unacked timeout: its own `x-consumer-timeout`, else its queue's (`None`: the
    /// server's).
    pub timeout: Option<std::time::Duration>,
}

impl ConsumerInfo {
    fn of(consumer: &Consumer) -> ConsumerInfo {
        ConsumerInfo {
            tag: consumer.tag.clone(),
            channel: consumer.channel,
            connection: consumer.connection(),
            no_ack: consumer.no_ack,
            exclusive: consumer.exclusive,
            priority: consumer.priority,
            prefetch: consumer.prefetch(),
            active: consumer.is_active(),
            timeout: consumer.timeout.or(consumer.queue.options.consumer_timeout),
        }
    }
}

impl Queue {
    /// Its figures now.
    pub fn stats(&self) -> QueueStats {
        if let Some(stream) = self.stream() {
            let consumers = stream.consumer_list();
            let (published, delivered) = stream.totals();
            return QueueStats {
                ready: stream.len(),
                unacked: consumers.iter().map(|c| u64::from(c.unacked())).sum(),
                consumers: u32::try_from(consumers.len()).unwrap_or(u32::MAX),
                ready_bytes: stream.bytes(),
                memory: 0,
                published,
                delivered,
            };
        }
        let state = self.lock();
        if let Some(quorum) = self.quorum() {
            let (ready, unacked, consumers, bytes) = quorum.stats();
            return QueueStats {
                ready,
                unacked,
                consumers: u32::try_from(consumers).unwrap_or(u32::MAX),
                ready_bytes: bytes,
                memory: 0,
                published: state.published,
                delivered: state.delivered,
            };
        }
        QueueStats {
            ready: state.ready_count() as u64,
            unacked: state.consumers.iter().map(|c| u64::from(c.unacked())).sum(),
            consumers: u32::try_from(state.consumers.len()).unwrap_or(u32::MAX),
            ready_bytes: state.bytes,
            memory: state.memory as u64,
            published: state.published,
            delivered: state.delivered,
        }
    }

    /// Its consumers now.
    pub fn consumer_infos(&self) -> Vec<ConsumerInfo> {
        let consumers: Vec<Arc<Consumer>> = match self.stream() {
            Some(stream) => stream.consumer_list(),
            None => self.lock().consumers.clone(),
        };
        consumers.iter().map(|c| ConsumerInfo::of(c)).collect()
    }
}
