//! The commands a quorum queue's log holds and what applying them answers ([`Command`],
//! [`Response`]), and what applying tells this node ([`ToNode`] through [`Local`]): the
//! vocabulary between a quorum queue's machine (`machine.rs`) and its node.
//!
//! Owns those types only; never applies anything.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::broker::message::Reason;
use crate::cluster::NodeId;

/// A consumer: the node it is attached to and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsumerKey {
    pub node: NodeId,
    pub id: u64,
}

/// Which writer sent an enqueue, and its number among that writer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub node: NodeId,
    /// The writer's start (a node's writers of before a restart are others).
    pub incarnation: u64,
    pub seq: u64,
}

/// A published message as the queue keeps it: its exchange, routing key, properties and body
/// in one buffer (one allocation a message, in the state and in the log's entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Exchange, routing key, properties, body, one after the other.
    data: Box<[u8]>,
    /// The lengths of the exchange, the routing key and the properties.
    lens: (u8, u8, u32),
    /// Its `expiration` property, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl Stored {
    /// A message; `None` if a name is longer than a short string (255 bytes) or the
    /// properties longer than 4 GiB (a frame never carries those).
    pub fn new(
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        body: &[u8],
        ttl: Option<u64>,
    ) -> Option<Stored> {
        let lens = (
            u8::try_from(exchange.len()).ok()?,
            u8::try_from(routing_key.len()).ok()?,
            u32::try_from(properties.len()).ok()?,
        );
        let data = [exchange, routing_key, properties, body]
            .concat()
            .into_boxed_slice();
        Some(Stored { data, lens, ttl })
    }

    /// Where each part ends (a damaged entry's lengths are cut to the buffer).
    fn ends(&self) -> [usize; 3] {
        let (exchange, routing_key, properties) = self.lens;
        let len = self.data.len();
        let exchange = usize::from(exchange).min(len);
        let routing_key = (exchange + usize::from(routing_key)).min(len);
        let properties = (routing_key + properties as usize).min(len);
        [exchange, routing_key, properties]
    }

    pub fn exchange(&self) -> &[u8] {
        &self.data[..self.ends()[0]]
    }

    pub fn routing_key(&self) -> &[u8] {
        let [exchange, routing_key, _] = self.ends();
        &self.data[exchange..routing_key]
    }

    pub fn properties(&self) -> &[u8] {
        let [_, routing_key, properties] = self.ends();
        &self.data[routing_key..properties]
    }

    pub fn body(&self) -> &[u8] {
        &self.data[self.ends()[2]..]
    }

    /// The whole buffer and where the body starts in it (to share it, uncopied).
    pub fn into_parts(self) -> (Box<[u8]>, usize) {
        let body = self.ends()[2];
        (self.data, body)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Messages published: one entry for a round of a node's writer. `from` numbers it, so
    /// that the same entry sent again (its answer was lost) is applied once.
    Enqueue {
        from: Option<Batch>,
        messages: Vec<Stored>,
        /// When it was written (ms since the epoch, the writer's clock): the machine's time.
        #[serde(default)]
        at: u64,
    },
    /// `basic.consume`: the consumer takes up to `prefetch` unsettled deliveries (0: no
    /// limit); a `no_ack` consumer's deliveries are settled as they are made.
    Checkout {
        consumer: ConsumerKey,
        prefetch: u32,
        no_ack: bool,
        #[serde(default)]
        at: u64,
    },
    /// `basic.cancel`: no more deliveries; what it holds stays held until settled or returned.
    Cancel { consumer: ConsumerKey },
    /// Its channel closed: what it holds goes back to the queue.
    Down { consumer: ConsumerKey },
    /// Acked deliveries (of consumers on `node`).
    Settle { node: NodeId, deliveries: Vec<u64> },
    /// `basic.get` on `node`: the next ready message, held under (node, [`GET`]) until settled
    /// unless `no_ack`.
    Get {
        node: NodeId,
        no_ack: bool,
        #[serde(default)]
        at: u64,
    },
    /// Requeued deliveries: back to the queue, their delivery count one higher.
    Return { node: NodeId, deliveries: Vec<u64> },
    /// `node` started: every consumer it had before is gone.
    NodeUp { node: NodeId },
    /// `node` has been silent too long (node `by`, the leader, saw it): its consumers'
    /// messages go to others. The node, when it hears of it, attaches its consumers again.
    NodeDown {
        node: NodeId,
        #[serde(default)]
        by: NodeId,
    },
    /// `queue.purge`: the ready messages are removed.
    Purge,
    /// Time passed (written by the leader, node `by`, when a waiting message's time to live
    /// ran out): expired messages go.
    Tick { at: u64, by: NodeId },
    /// The queue was declared again (on node `by`): it counts as used (`x-expires`).
    Touch { at: u64, by: NodeId },
}

impl Command {
    /// The node whose command it is: the one that dead-letters what applying it gives up on.
    pub(super) fn actor(&self) -> Option<NodeId> {
        match self {
            Command::Enqueue { from, .. } => from.map(|b| b.node),
            Command::Checkout { consumer, .. }
            | Command::Cancel { consumer }
            | Command::Down { consumer } => Some(consumer.node),
            Command::Settle { node, .. }
            | Command::Return { node, .. }
            | Command::Get { node, .. }
            | Command::NodeUp { node } => Some(*node),
            Command::NodeDown { by, .. } | Command::Tick { by, .. } | Command::Touch { by, .. } => {
                Some(*by)
            }
            Command::Purge => None,
        }
    }

    /// When it was written, for those that carry the time.
    pub(super) fn at(&self) -> Option<u64> {
        match self {
            Command::Enqueue { at, .. }
            | Command::Checkout { at, .. }
            | Command::Get { at, .. }
            | Command::Tick { at, .. }
            | Command::Touch { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// What applying a command returns to its writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Done,
    /// Messages a purge removed.
    Purged(u64),
    /// An enqueue refused whole: the queue was full (`x-overflow: reject-publish`).
    Refused,
    /// `basic.get`: the next message (none: the queue had none ready).
    Got(Option<Got>),
}

/// A message taken by `basic.get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Got {
    pub delivery: u64,
    pub message: Stored,
    pub returns: u32,
    /// Messages still ready after it.
    pub remaining: u64,
}

/// The consumer number `basic.get`s of a node hold their unacked messages under (never in
/// the turn of consumers).
pub const GET: u64 = u64::MAX;

/// What applying tells this node.
#[derive(Debug)]
pub enum ToNode {
    /// A message for one of its consumers.
    Deliver(Assigned),
    /// The queue forgot this node's consumers (a `NodeDown` for it).
    Forgotten,
    /// A message given up on (returned more often than the delivery limit, expired, dropped
    /// for length), for this node to dead-letter: the node whose command gave it up does it,
    /// at most once.
    DeadLetter(Stored, Reason),
}

/// A message handed to a consumer of this node, for the node to send.
#[derive(Debug)]
pub struct Assigned {
    pub consumer: u64,
    pub delivery: u64,
    pub message: Stored,
    /// Times it came back to the queue before (`x-delivery-count`).
    pub returns: u32,
}

/// The node this replica runs on and where its consumers' deliveries go. Not replicated.
#[derive(Debug)]
pub struct Local {
    pub node: NodeId,
    pub deliveries: mpsc::UnboundedSender<ToNode>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_message_gives_back_its_parts_and_a_damaged_one_does_not_panic() {
        let stored = Stored::new(b"ex", b"key", b"\x80\x00", b"body", Some(5)).unwrap();
        assert_eq!(
            (
                stored.exchange(),
                stored.routing_key(),
                stored.properties(),
                stored.body()
            ),
            (&b"ex"[..], &b"key"[..], &b"\x80\x00"[..], &b"body"[..])
        );
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<Stored>(&json).unwrap(), stored);
        assert!(Stored::new(&[b'x'; 256], b"", b"", b"", None).is_none());
        // Lengths past the buffer (a damaged entry) are cut to it.
        let damaged: Stored = serde_json::from_str(r#"{"data":[1,2,3],"lens":[2,200,9]}"#).unwrap();
        assert_eq!(
            (damaged.exchange(), damaged.routing_key()),
            (&[1, 2][..], &[3][..])
        );
        assert_eq!((damaged.properties(), damaged.body()), (&[][..], &[][..]));
    }
}
