//! A quorum queue's replicated state ([`QueueMachine`], a [`Machine`] of `cluster`): its
//! messages, its consumers and what each holds, changed only by [`Command`]s applied in log
//! order on every replica, as RabbitMQ's `rabbit_fifo` does for its quorum queues.
//!
//! The machine, not a node, decides which consumer gets which message: applying an enqueue, a
//! checkout or a settle hands ready messages to consumers with credit (their prefetch), in
//! turn, and every replica comes to the same answer. Each hand-out is a *delivery*, numbered by
//! the machine; a consumer's node sends the message when its replica applies the entry (see
//! [`Local`]) and settles or returns it by that number, so a settle that comes late (after the
//! delivery was taken back) matches nothing.
//!
//! Owns the queue's state; never does I/O and reads no clock: the node-local [`Local`] link is
//! the only thing applying touches outside the state, and it is not replicated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cluster::{Machine, NodeId};

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

/// A published message as the queue keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub exchange: Vec<u8>,
    pub routing_key: Vec<u8>,
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Messages published: one entry for a round of a node's writer. `from` numbers it, so
    /// that the same entry sent again (its answer was lost) is applied once.
    Enqueue {
        from: Option<Batch>,
        messages: Vec<Stored>,
    },
    /// `basic.consume`: the consumer takes up to `prefetch` unsettled deliveries (0: no
    /// limit); a `no_ack` consumer's deliveries are settled as they are made.
    Checkout {
        consumer: ConsumerKey,
        prefetch: u32,
        no_ack: bool,
    },
    /// `basic.cancel`: no more deliveries; what it holds stays held until settled or returned.
    Cancel { consumer: ConsumerKey },
    /// Its channel closed: what it holds goes back to the queue.
    Down { consumer: ConsumerKey },
    /// Acked deliveries (of consumers on `node`).
    Settle { node: NodeId, deliveries: Vec<u64> },
    /// `basic.get` on `node`: the next ready message, held under (node, [`GET`]) until settled
    /// unless `no_ack`.
    Get { node: NodeId, no_ack: bool },
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
}

/// What applying a command returns to its writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Done,
    /// Messages a purge removed.
    Purged(u64),
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
    /// A message returned more often than the delivery limit, for this node to dead-letter
    /// (the node whose command returned it: one node does it, at most once).
    DeadLetter(Stored),
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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Held {
    message: Stored,
    returns: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConsumerState {
    prefetch: u32,
    no_ack: bool,
    cancelled: bool,
    holds: BTreeSet<u64>,
}

/// A delivery not settled yet.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Out {
    consumer: ConsumerKey,
    message: u64,
}

/// See the module doc.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct QueueMachine {
    /// `x-delivery-limit`: a message returned more often is dropped.
    delivery_limit: Option<u32>,
    next_message: u64,
    next_delivery: u64,
    messages: BTreeMap<u64, Held>,
    /// Messages waiting for a consumer: those returned first, then the rest in order.
    returned: VecDeque<u64>,
    ready: VecDeque<u64>,
    #[serde(with = "pairs")]
    consumers: BTreeMap<ConsumerKey, ConsumerState>,
    /// Consumers that take deliveries, in turn.
    rotation: VecDeque<ConsumerKey>,
    out: BTreeMap<u64, Out>,
    /// Messages dropped for the delivery limit, since the queue began.
    pub dropped: u64,
    /// The last enqueue applied of each writer (node, incarnation).
    #[serde(default, with = "pairs")]
    batches: BTreeMap<(NodeId, u64), u64>,
    #[serde(skip)]
    local: Option<Local>,
}

impl QueueMachine {
    pub fn new(delivery_limit: Option<u32>, local: Option<Local>) -> QueueMachine {
        QueueMachine {
            delivery_limit,
            local,
            ..QueueMachine::default()
        }
    }

    /// Messages waiting for a consumer.
    pub fn ready(&self) -> usize {
        self.returned.len() + self.ready.len()
    }

    /// Deliveries not settled.
    pub fn unsettled(&self) -> usize {
        self.out.len()
    }

    /// Consumers taking deliveries.
    pub fn consumers(&self) -> usize {
        self.rotation.len()
    }

    /// The nodes that have consumers (taking deliveries or holding some).
    pub fn consumer_nodes(&self) -> BTreeSet<NodeId> {
        self.consumers.keys().map(|k| k.node).collect()
    }

    /// Takes away every consumer of `node` (for node `by`'s command).
    fn forget_node(&mut self, node: NodeId, by: NodeId) {
        let gone: Vec<ConsumerKey> = self
            .consumers
            .keys()
            .filter(|k| k.node == node)
            .copied()
            .collect();
        for key in gone {
            self.down(key, by);
        }
    }

    fn settle(&mut self, node: NodeId, deliveries: &[u64], back: bool) {
        for delivery in deliveries {
            let Some(out) = self.out.get(delivery).copied() else {
                continue;
            };
            if out.consumer.node != node {
                continue;
            }
            self.out.remove(delivery);
            self.release(out.consumer, *delivery);
            if back {
                self.put_back(out.message, node);
            } else {
                self.messages.remove(&out.message);
            }
        }
    }

    /// The consumer no longer holds `delivery`; a cancelled one with nothing left is forgotten.
    fn release(&mut self, key: ConsumerKey, delivery: u64) {
        if let Some(consumer) = self.consumers.get_mut(&key) {
            consumer.holds.remove(&delivery);
            if consumer.cancelled && consumer.holds.is_empty() {
                self.consumers.remove(&key);
            }
        }
    }

    /// A message comes back because of node `by`'s command: its count goes up, and past the
    /// delivery limit it is dropped (node `by` dead-letters it).
    fn put_back(&mut self, message: u64, by: NodeId) {
        let Some(held) = self.messages.get_mut(&message) else {
            return;
        };
        held.returns = held.returns.saturating_add(1);
        if self
            .delivery_limit
            .is_some_and(|limit| held.returns > limit)
        {
            if let Some(held) = self.messages.remove(&message) {
                if let Some(local) = self.local.as_ref().filter(|l| l.node == by) {
                    let _ = local.deliveries.send(ToNode::DeadLetter(held.message));
                }
            }
            self.dropped += 1;
            return;
        }
        self.returned.push_back(message);
    }

    /// Takes a consumer away (for node `by`'s command) and returns everything it holds.
    fn down(&mut self, key: ConsumerKey, by: NodeId) {
        self.rotation.retain(|k| *k != key);
        let Some(consumer) = self.consumers.remove(&key) else {
            return;
        };
        for delivery in consumer.holds {
            if let Some(out) = self.out.remove(&delivery) {
                self.put_back(out.message, by);
            }
        }
    }

    /// `basic.get`: the next waiting message, as a delivery of (node, [`GET`]).
    fn get(&mut self, node: NodeId, no_ack: bool) -> Option<Got> {
        let message = self
            .returned
            .pop_front()
            .or_else(|| self.ready.pop_front())?;
        let held = self.messages.get(&message)?.clone();
        let delivery = self.next_delivery;
        self.next_delivery += 1;
        if no_ack {
            self.messages.remove(&message);
        } else {
            let key = ConsumerKey { node, id: GET };
            let getter = self.consumers.entry(key).or_insert_with(|| ConsumerState {
                prefetch: 0,
                no_ack: false,
                cancelled: true,
                holds: BTreeSet::new(),
            });
            getter.holds.insert(delivery);
            self.out.insert(
                delivery,
                Out {
                    consumer: key,
                    message,
                },
            );
        }
        Some(Got {
            delivery,
            message: held.message,
            returns: held.returns,
            remaining: self.ready() as u64,
        })
    }

    /// Hands waiting messages to consumers with credit, in turn.
    fn assign(&mut self) {
        while !(self.returned.is_empty() && self.ready.is_empty()) {
            let Some(key) = self.next_with_credit() else {
                return;
            };
            let Some(message) = self.returned.pop_front().or_else(|| self.ready.pop_front()) else {
                return;
            };
            let Some(held) = self.messages.get(&message) else {
                continue;
            };
            let delivery = self.next_delivery;
            self.next_delivery += 1;
            let no_ack = self.consumers.get(&key).is_some_and(|c| c.no_ack);
            if let Some(local) = self.local.as_ref().filter(|l| l.node == key.node) {
                let _ = local.deliveries.send(ToNode::Deliver(Assigned {
                    consumer: key.id,
                    delivery,
                    message: held.message.clone(),
                    returns: held.returns,
                }));
            }
            if no_ack {
                self.messages.remove(&message);
            } else {
                self.out.insert(
                    delivery,
                    Out {
                        consumer: key,
                        message,
                    },
                );
                if let Some(consumer) = self.consumers.get_mut(&key) {
                    consumer.holds.insert(delivery);
                }
            }
        }
    }

    /// The next consumer in turn that may take a delivery, moved to the back of the turn.
    fn next_with_credit(&mut self) -> Option<ConsumerKey> {
        for _ in 0..self.rotation.len() {
            let key = self.rotation.pop_front()?;
            self.rotation.push_back(key);
            let Some(consumer) = self.consumers.get(&key) else {
                continue;
            };
            let room = consumer.no_ack
                || consumer.prefetch == 0
                || consumer.holds.len() < consumer.prefetch as usize;
            if room {
                return Some(key);
            }
        }
        None
    }
}

impl Machine for QueueMachine {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command) -> Response {
        let mut response = Response::Done;
        match command {
            Command::Enqueue { from, messages } => {
                if let Some(batch) = from {
                    let last = self
                        .batches
                        .entry((batch.node, batch.incarnation))
                        .or_default();
                    if batch.seq <= *last && *last != 0 {
                        return Response::Done;
                    }
                    *last = batch.seq;
                }
                for message in messages {
                    let id = self.next_message;
                    self.next_message += 1;
                    self.messages.insert(
                        id,
                        Held {
                            message: message.clone(),
                            returns: 0,
                        },
                    );
                    self.ready.push_back(id);
                }
            }
            Command::Checkout {
                consumer,
                prefetch,
                no_ack,
            } => {
                let state = self
                    .consumers
                    .entry(*consumer)
                    .or_insert_with(|| ConsumerState {
                        prefetch: *prefetch,
                        no_ack: *no_ack,
                        cancelled: false,
                        holds: BTreeSet::new(),
                    });
                state.prefetch = *prefetch;
                state.cancelled = false;
                if !self.rotation.contains(consumer) {
                    self.rotation.push_back(*consumer);
                }
            }
            Command::Cancel { consumer } => {
                self.rotation.retain(|k| k != consumer);
                if let Some(state) = self.consumers.get_mut(consumer) {
                    state.cancelled = true;
                    if state.holds.is_empty() {
                        self.consumers.remove(consumer);
                    }
                }
            }
            Command::Down { consumer } => self.down(*consumer, consumer.node),
            Command::Settle { node, deliveries } => self.settle(*node, deliveries, false),
            Command::Return { node, deliveries } => self.settle(*node, deliveries, true),
            Command::NodeUp { node } => self.forget_node(*node, *node),
            Command::NodeDown { node, by } => {
                self.forget_node(*node, *by);
                if let Some(local) = self.local.as_ref().filter(|l| l.node == *node) {
                    let _ = local.deliveries.send(ToNode::Forgotten);
                }
            }
            Command::Get { node, no_ack } => response = Response::Got(self.get(*node, *no_ack)),
            Command::Purge => {
                let ready = std::mem::take(&mut self.ready);
                let returned = std::mem::take(&mut self.returned);
                let mut purged = 0;
                for id in ready.into_iter().chain(returned) {
                    purged += u64::from(self.messages.remove(&id).is_some());
                }
                response = Response::Purged(purged);
            }
        }
        self.assign();
        response
    }

    fn snapshot(&self) -> Vec<u8> {
        // Every key is a number or a list of pairs: JSON takes the state as it is.
        serde_json::to_vec(self).unwrap_or_else(|e| {
            tracing::error!(error = %e, "quorum queue state not encoded");
            Vec::new()
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let restored: QueueMachine =
            serde_json::from_slice(bytes).map_err(|e| format!("quorum queue snapshot: {e}"))?;
        let local = self.local.take();
        *self = QueueMachine { local, ..restored };
        Ok(())
    }
}

/// A map with keys JSON cannot take as object keys, as a list of pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        let pairs = Vec::<(K, V)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
