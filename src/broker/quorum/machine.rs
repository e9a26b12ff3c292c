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
//! Limits ([`Limits`]): a message returned past the delivery limit, expired, or dropped from
//! the head for length is given up; the node whose command gave it up dead-letters it (one
//! node, at most once, as RabbitMQ's quorum queues do by default). Time is what the commands
//! carry (their writer's clock, never going back), so expiry too is the same on every replica.
//!
//! Owns the queue's state; never does I/O and reads no clock: the node-local [`Local`] link is
//! the only thing applying touches outside the state, and it is not replicated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

pub use super::commands::{
    Assigned, Batch, Command, ConsumerKey, Got, Local, Response, Stored, ToNode, GET,
};
use super::limits::Limits;
use crate::broker::message::Reason;
use crate::cluster::{Machine, NodeId};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Held {
    message: Stored,
    returns: u32,
    /// When its time to live runs out (ms since the epoch; 0: never).
    #[serde(default)]
    expires: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConsumerState {
    prefetch: u32,
    no_ack: bool,
    cancelled: bool,
    holds: BTreeSet<u64>,
}

impl ConsumerState {
    /// Whether it may take another delivery (its prefetch allows).
    fn has_room(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.holds.len() < self.prefetch as usize
    }
}

/// A delivery not settled yet.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Out {
    consumer: ConsumerKey,
    message: u64,
}

/// About what a message costs in the state beside its body (for [`Machine::weight`]).
const HELD: u64 = 96;

/// See the module doc.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct QueueMachine {
    /// From the queue's definition (not in snapshots: every replica has it).
    #[serde(skip)]
    limits: Limits,
    /// The latest time a command carried (ms since the epoch).
    #[serde(default)]
    now: u64,
    /// The bodies' bytes of the messages waiting.
    #[serde(default)]
    waiting_bytes: u64,
    /// When a consumer came, a `basic.get` or a redeclaration last (for `x-expires`).
    #[serde(default)]
    last_used: u64,
    /// The node of the command being applied.
    #[serde(skip)]
    actor: Option<NodeId>,
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
    /// Messages given up on (delivery limit, time to live, length), since the queue began.
    pub dropped: u64,
    /// The last enqueue applied of each writer (node, incarnation).
    #[serde(default, with = "pairs")]
    batches: BTreeMap<(NodeId, u64), u64>,
    #[serde(skip)]
    local: Option<Local>,
}

impl QueueMachine {
    pub fn new(limits: Limits, local: Option<Local>) -> QueueMachine {
        QueueMachine {
            limits,
            local,
            ..QueueMachine::default()
        }
    }

    /// Messages waiting for a consumer.
    pub fn ready(&self) -> usize {
        self.returned.len() + self.ready.len()
    }

    /// The bodies' bytes of the messages waiting for a consumer.
    pub fn waiting_bytes(&self) -> u64 {
        self.waiting_bytes
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

    /// Takes away every consumer of `node`.
    fn forget_node(&mut self, node: NodeId) {
        let gone: Vec<ConsumerKey> = self
            .consumers
            .keys()
            .filter(|k| k.node == node)
            .copied()
            .collect();
        for key in gone {
            self.down(key);
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
                self.put_back(out.message);
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

    /// A message comes back: its count goes up, and past the delivery limit it is given up.
    fn put_back(&mut self, message: u64) {
        let Some(held) = self.messages.get_mut(&message) else {
            return;
        };
        held.returns = held.returns.saturating_add(1);
        let limit = self.limits.delivery_limit;
        if limit.is_some_and(|limit| held.returns > limit) {
            self.give_up(message, Reason::DeliveryLimit);
            return;
        }
        self.waiting_bytes += held.message.body().len() as u64;
        self.returned.push_back(message);
    }

    /// Drops a message (not waiting any more): the node whose command this is dead-letters it.
    fn give_up(&mut self, message: u64, reason: Reason) {
        let Some(held) = self.messages.remove(&message) else {
            return;
        };
        self.dropped += 1;
        let mine = self.local.as_ref().filter(|l| Some(l.node) == self.actor);
        if let Some(local) = mine {
            let _ = local
                .deliveries
                .send(ToNode::DeadLetter(held.message, reason));
        }
    }

    /// The next waiting message (those returned first), out of the line.
    fn pop_waiting(&mut self) -> Option<u64> {
        self.drop_expired();
        let message = self
            .returned
            .pop_front()
            .or_else(|| self.ready.pop_front())?;
        let bytes = self
            .messages
            .get(&message)
            .map_or(0, |h| h.message.body().len());
        self.waiting_bytes = self.waiting_bytes.saturating_sub(bytes as u64);
        Some(message)
    }

    /// Gives up the waiting messages at the heads of the line whose time to live ran out.
    fn drop_expired(&mut self) {
        loop {
            let now = self.now;
            let expired = |line: &VecDeque<u64>, messages: &BTreeMap<u64, Held>| {
                let head = line.front()?;
                let expires = messages.get(head)?.expires;
                (expires != 0 && expires <= now).then_some(*head)
            };
            let head = match expired(&self.returned, &self.messages) {
                Some(head) => self.returned.pop_front().map(|_| head),
                None => match expired(&self.ready, &self.messages) {
                    Some(head) => self.ready.pop_front().map(|_| head),
                    None => return,
                },
            };
            let Some(head) = head else {
                return;
            };
            let bytes = self
                .messages
                .get(&head)
                .map_or(0, |h| h.message.body().len());
            self.waiting_bytes = self.waiting_bytes.saturating_sub(bytes as u64);
            self.give_up(head, Reason::Expired);
        }
    }

    /// When the next waiting message at a head of the line expires (ms since the epoch).
    pub fn next_expiry(&self) -> Option<u64> {
        let heads = [self.returned.front(), self.ready.front()];
        let expiries = heads.into_iter().flatten();
        let expiries = expiries.filter_map(|id| self.messages.get(id).map(|h| h.expires));
        expiries.filter(|e| *e != 0).min()
    }

    /// `x-max-length` and `x-max-length-bytes` with `drop-head`: the oldest waiting messages go
    /// until the queue is within both.
    fn drop_over_limits(&mut self) {
        while self.limits.over(self.ready() as u64, self.waiting_bytes) {
            let Some(head) = self.pop_waiting() else {
                return;
            };
            self.give_up(head, Reason::Maxlen);
        }
    }

    /// Takes a consumer away and returns everything it holds.
    fn down(&mut self, key: ConsumerKey) {
        self.rotation.retain(|k| *k != key);
        let Some(consumer) = self.consumers.remove(&key) else {
            return;
        };
        for delivery in consumer.holds {
            if let Some(out) = self.out.remove(&delivery) {
                self.put_back(out.message);
            }
        }
    }

    /// Publishes: added to the line with their expiry, unless a full queue refuses them.
    fn enqueue(&mut self, messages: &[Stored]) -> Response {
        if self.limits.reject_publish && self.limits.full(self.ready() as u64, self.waiting_bytes) {
            return Response::Refused;
        }
        for message in messages {
            let id = self.next_message;
            self.next_message += 1;
            let ttl = match (self.limits.message_ttl, message.ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // A time to live of 0 expires at once (unless handed to a consumer in this apply).
            let expires = ttl.map_or(0, |ttl| self.now.saturating_add(ttl).max(1));
            let held = Held {
                message: message.clone(),
                returns: 0,
                expires,
            };
            self.waiting_bytes += message.body().len() as u64;
            self.messages.insert(id, held);
            self.ready.push_back(id);
        }
        self.drop_over_limits();
        Response::Done
    }

    /// `basic.get`: the next waiting message, as a delivery of (node, [`GET`]).
    fn get(&mut self, node: NodeId, no_ack: bool) -> Option<Got> {
        let message = self.pop_waiting()?;
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
            let Some(message) = self.pop_waiting() else {
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

    /// Whether no consumer is attached (`basic.get`s holding messages aside), and since when
    /// the queue was last used, as far as the log says.
    pub fn unused(&self) -> Option<u64> {
        self.rotation.is_empty().then_some(self.last_used)
    }

    /// The next consumer in turn that may take a delivery, moved to the back of the turn (with
    /// a single active consumer: the first, if it may).
    fn next_with_credit(&mut self) -> Option<ConsumerKey> {
        if self.limits.single_active {
            let key = *self.rotation.front()?;
            return self
                .consumers
                .get(&key)
                .filter(|c| c.has_room())
                .map(|_| key);
        }
        for _ in 0..self.rotation.len() {
            let key = self.rotation.pop_front()?;
            self.rotation.push_back(key);
            if self
                .consumers
                .get(&key)
                .is_some_and(ConsumerState::has_room)
            {
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
        self.actor = command.actor();
        if let Some(at) = command.at() {
            self.now = self.now.max(at);
        }
        let mut response = Response::Done;
        if matches!(
            command,
            Command::Checkout { .. } | Command::Get { .. } | Command::Touch { .. }
        ) {
            self.last_used = self.now;
        }
        match command {
            Command::Enqueue { from, messages, .. } => {
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
                response = self.enqueue(messages);
            }
            Command::Checkout {
                consumer,
                prefetch,
                no_ack,
                ..
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
            Command::Down { consumer } => self.down(*consumer),
            Command::Settle { node, deliveries } => self.settle(*node, deliveries, false),
            Command::Return { node, deliveries } => self.settle(*node, deliveries, true),
            Command::NodeUp { node } => self.forget_node(*node),
            Command::NodeDown { node, .. } => {
                self.forget_node(*node);
                if let Some(local) = self.local.as_ref().filter(|l| l.node == *node) {
                    let _ = local.deliveries.send(ToNode::Forgotten);
                }
            }
            Command::Get { node, no_ack, .. } => response = Response::Got(self.get(*node, *no_ack)),
            Command::Purge => {
                let ready = std::mem::take(&mut self.ready);
                let returned = std::mem::take(&mut self.returned);
                self.waiting_bytes = 0;
                let mut purged = 0;
                for id in ready.into_iter().chain(returned) {
                    purged += u64::from(self.messages.remove(&id).is_some());
                }
                response = Response::Purged(purged);
            }
            Command::Tick { .. } => self.drop_expired(),
            Command::Touch { .. } => {}
        }
        self.assign();
        self.drop_expired();
        response
    }

    fn weight(&self) -> u64 {
        self.messages.len() as u64 * HELD + self.waiting_bytes
    }

    fn command_weight(command: &Command) -> u64 {
        match command {
            Command::Enqueue { messages, .. } => messages
                .iter()
                .map(|m| HELD + m.body().len() as u64 + m.properties().len() as u64)
                .sum(),
            _ => 64,
        }
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
        let limits = std::mem::take(&mut self.limits);
        *self = QueueMachine {
            local,
            limits,
            ..restored
        };
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
