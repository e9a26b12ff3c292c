//! [`Quorum`]: a quorum queue on this node: its Raft group ([`QueueMachine`] replicated), the
//! consumers attached here, and two tasks: the writer, which turns publishes, settles and
//! consumer changes into log entries (one per kind per round: a publisher's batch is one
//! entry, as are the acks that came while the last write was in flight), and the sender, which
//! hands the deliveries the machine assigns to this node's consumers to their connections.
//!
//! A publish is safe once its entry has committed (a majority has it on disk): the confirms
//! of a batch wait for [`Quorum::notify`], which reports after every write queued before it.
//!
//! Owns the local consumers and the two tasks; never locks a queue or the topology, and never
//! holds its mutexes across an await.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use warren_protocol::content::{with_header, with_long_header};
use warren_protocol::types::AMQPValue;

use super::limits::Limits;
use super::liveness::{Liveness, DOWN_AFTER};
use super::machine::{
    Assigned, Batch, Command, ConsumerKey, Local, QueueMachine, Response, Stored, ToNode,
};
use crate::broker::message::{now_ms, Entry, Message, Reason};
use crate::broker::queue::consumer::Consumer;
use crate::cluster::{GroupConfig, NodeId, RaftGroup, StartError, Transport, WriteError};
use crate::store::sync::Callback;

/// The header a redelivered message carries its count of returns in, as RabbitMQ's quorum
/// queues set it.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// Commands taken into one round of the writer at most.
const ROUND: usize = 4096;
/// Rounds the leader's writer lets wait for their commits at once.
const ROUNDS_IN_FLIGHT: usize = 8;

enum Work {
    Write(Command),
    Notify(Callback),
}

/// See the module doc.
pub struct Quorum {
    /// For logs.
    label: String,
    /// Its number in the metadata group (see `meta.rs`).
    pub serial: u64,
    node: NodeId,
    group: RaftGroup<QueueMachine>,
    work: mpsc::UnboundedSender<Work>,
    /// Publishes not handed to the writer yet (until the publisher's flush).
    pending: Mutex<Vec<Stored>>,
    consumers: Mutex<Vec<(u64, Arc<Consumer>)>>,
    /// Numbers this node's consumers; starts from the clock so that a restarted node never
    /// reuses a number its old consumers had in the log.
    next_consumer: AtomicU64,
    /// When the other nodes last answered (see `liveness.rs`).
    liveness: Arc<Liveness>,
    /// This writer's start and the number of its last enqueue (see `machine::Batch`).
    incarnation: u64,
    batches: AtomicU64,
    /// Messages the machine gave up on (delivery limit, time to live, length) for this node to
    /// dead-letter, until the queue takes them (see [`Quorum::on_dead_letters`]).
    dead_letters: Mutex<Vec<(Arc<Message>, Reason)>>,
    wake: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// `x-expires`, and what deletes the queue once it ran out (see [`Quorum::on_expiry`]).
    expires: Option<u64>,
    expire: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("label", &self.label)
            .finish()
    }
}

impl Quorum {
    /// Starts the queue's group on this node (initialized by its lowest node id), its writer
    /// and its sender, and tells the group this node (re)started, which takes back what its
    /// consumers of before held.
    pub async fn start(
        label: String,
        serial: u64,
        config: GroupConfig,
        limits: Limits,
        transport: &Transport,
        liveness: Arc<Liveness>,
    ) -> Result<Arc<Quorum>, StartError> {
        let node = config.node;
        let (deliveries, mut assigned) = mpsc::unbounded_channel();
        let expires = limits.expires;
        let machine = QueueMachine::new(limits, Some(Local { node, deliveries }));
        let group = RaftGroup::start(config, machine, transport).await?;
        group.initialize().await?;
        // What applying the log again at start told this node is history: its consumers of
        // before are gone, and its dead letters were sent (or lost: at most once).
        group.replayed(std::time::Duration::from_secs(10)).await;
        while assigned.try_recv().is_ok() {}
        let (work, queued) = mpsc::unbounded_channel();
        let quorum = Arc::new(Quorum {
            label,
            serial,
            node,
            group,
            work,
            pending: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
            next_consumer: AtomicU64::new(now_ms() << 16),
            liveness,
            incarnation: now_ms(),
            batches: AtomicU64::new(0),
            dead_letters: Mutex::new(Vec::new()),
            wake: std::sync::OnceLock::new(),
            expires,
            expire: std::sync::OnceLock::new(),
        });
        quorum.write(Command::NodeUp { node });
        tokio::spawn(write_loop(Arc::downgrade(&quorum), queued));
        tokio::spawn(send_loop(Arc::downgrade(&quorum), assigned));
        tokio::spawn(watch_nodes(Arc::downgrade(&quorum)));
        Ok(quorum)
    }

    /// An enqueue gets this writer's next number (see `Batch`); other commands are as given.
    fn numbered(&self, command: Command) -> Command {
        match command {
            Command::Enqueue { messages, .. } => Command::Enqueue {
                from: Some(Batch {
                    node: self.node,
                    incarnation: self.incarnation,
                    seq: self.batches.fetch_add(1, Relaxed) + 1,
                }),
                messages,
                at: now_ms(),
            },
            other => other,
        }
    }

    fn write(&self, command: Command) {
        let _ = self.work.send(Work::Write(command));
    }

    /// Who to tell when there are dead letters to take ([`Quorum::take_dead_letters`]): the
    /// queue, which dead-letters them on its vhost's next tick.
    pub fn on_dead_letters(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.wake.set(wake);
    }

    /// What deletes the queue (in the cluster) once it has been unused for its `x-expires`:
    /// the leader calls it.
    pub fn on_expiry(&self, expire: Box<dyn Fn() + Send + Sync>) {
        let _ = self.expire.set(expire);
    }

    /// The queue was declared again: it counts as used.
    pub fn touch(&self) {
        if self.expires.is_some() {
            self.write(Command::Touch {
                at: now_ms(),
                by: self.node,
            });
        }
    }

    pub fn take_dead_letters(&self) -> Vec<(Arc<Message>, Reason)> {
        std::mem::take(&mut *self.dead_letters.lock())
    }

    /// Takes a published message; it goes to the log at the publisher's [`Quorum::flush`].
    pub fn publish(&self, message: &Message, ttl: Option<u64>) {
        let stored = Stored::new(
            message.exchange_bytes(),
            message.routing_key_bytes(),
            message.properties(),
            message.body(),
            ttl,
        );
        match stored {
            Some(stored) => self.pending.lock().push(stored),
            // The codec bounds both: a message from the wire always fits.
            None => tracing::error!(queue = %self.label, "a message too large to keep was dropped"),
        }
    }

    /// Hands the publishes taken so far to the writer, as one entry.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock());
        if !batch.is_empty() {
            self.write(Command::Enqueue {
                from: None,
                messages: batch,
                at: 0,
            });
        }
    }

    /// Calls `done` once every write queued before it has committed (or failed: an error).
    pub fn notify(&self, done: Callback) {
        if let Err(mpsc::error::SendError(Work::Notify(done))) = self.work.send(Work::Notify(done))
        {
            done(Err(io::Error::other("the quorum queue has stopped")));
        }
    }

    /// Acked deliveries.
    pub fn settle(&self, deliveries: Vec<u64>) {
        if !deliveries.is_empty() {
            let node = self.node;
            self.write(Command::Settle { node, deliveries });
        }
    }

    /// Requeued deliveries (their delivery count goes up).
    pub fn requeue(&self, deliveries: Vec<u64>) {
        if !deliveries.is_empty() {
            let node = self.node;
            self.write(Command::Return { node, deliveries });
        }
    }

    /// A consumer attached here: the machine starts handing it messages.
    pub fn subscribe(&self, consumer: Arc<Consumer>) {
        let id = self.next_consumer.fetch_add(1, Relaxed);
        let checkout = self.checkout(id, &consumer);
        self.consumers.lock().push((id, consumer));
        self.write(checkout);
    }

    fn checkout(&self, id: u64, consumer: &Consumer) -> Command {
        Command::Checkout {
            consumer: ConsumerKey {
                node: self.node,
                id,
            },
            prefetch: consumer.prefetch(),
            no_ack: consumer.no_ack,
            at: now_ms(),
        }
    }

    /// The queue forgot this node's consumers (it was silent too long): attach them again.
    /// What they held went to others; their acks for it now match nothing.
    fn attach_again(&self) {
        let consumers = self.consumers.lock().clone();
        tracing::warn!(queue = %self.label, consumers = consumers.len(), "quorum queue: this node was taken for gone; its consumers attach again");
        for (id, consumer) in consumers {
            self.write(self.checkout(id, &consumer));
        }
    }

    /// A consumer cancelled (or its channel closed: its channel requeues what it holds).
    pub fn unsubscribe(&self, consumer: &Arc<Consumer>) -> bool {
        let removed = {
            let mut consumers = self.consumers.lock();
            let at = consumers.iter().position(|(_, c)| Arc::ptr_eq(c, consumer));
            at.map(|at| consumers.swap_remove(at).0)
        };
        let Some(id) = removed else {
            return false;
        };
        let consumer = ConsumerKey {
            node: self.node,
            id,
        };
        self.write(Command::Cancel { consumer });
        true
    }

    /// Whether this node has consumers of the queue.
    pub fn has_consumers(&self) -> bool {
        !self.consumers.lock().is_empty()
    }

    /// (messages ready, consumers) as this replica has applied them.
    pub fn counts(&self) -> (u64, u64) {
        let (ready, _, consumers, _) = self.stats();
        (ready, consumers)
    }

    /// As this replica has it: messages waiting, deliveries not settled, consumers (on every
    /// node), bytes of the bodies waiting.
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        self.group.read(|m| {
            let (ready, unsettled) = (m.ready() as u64, m.unsettled() as u64);
            (ready, unsettled, m.consumers() as u64, m.waiting_bytes())
        })
    }

    /// Removes the ready messages (through the leader); how many.
    pub async fn purge(&self) -> Result<u64, WriteError> {
        match self.group.write(Command::Purge).await? {
            Response::Purged(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// `basic.get`, through the leader: the message with its delivery number (settled like a
    /// consumer's, unless `no_ack`), and how many are left.
    pub async fn get(&self, no_ack: bool) -> Result<Option<(Entry, u64)>, WriteError> {
        let node = self.node;
        let get = Command::Get {
            node,
            no_ack,
            at: now_ms(),
        };
        let got = match self.group.write(get).await? {
            Response::Got(got) => got,
            _ => None,
        };
        Ok(got.map(|got| {
            let entry = Entry {
                seq: got.delivery,
                message: Arc::new(to_message(got.message, got.returns)),
                redelivered: got.returns > 0,
                position: None,
                priority: 0,
                expires: 0,
            };
            (entry, got.remaining)
        }))
    }

    /// The group's state on this node (for status pages and tests).
    pub fn status(&self) -> crate::cluster::Status {
        self.group.status()
    }

    /// The queue's group's voters now.
    pub fn voters(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.group.voters()
    }

    /// Takes node `id` out of the queue's group (it left the cluster).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), WriteError> {
        let mut voters = self.group.voters();
        if voters.remove(&id).is_none() {
            return Ok(());
        }
        self.group.set_voters(voters).await
    }

    /// Stops this node's replica (the queue was deleted).
    pub async fn stop(&self) {
        self.group.stop().await;
    }

    /// Drops the local consumers (their connections are told) and leaves the group running for
    /// the other nodes' sake until the node stops.
    pub fn cancel_consumers(&self) -> Vec<Arc<Consumer>> {
        std::mem::take(&mut *self.consumers.lock())
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }
}

/// Writes what the queue's users asked for, a round at a time: the commands that came since
/// the last round, runs of one kind merged into one entry. On the leader a round is handed to
/// the log and the next round starts at once (up to [`ROUNDS_IN_FLIGHT`] wait for their commits
/// side by side); elsewhere each command is forwarded and waited for. A round's notifications
/// are told, after those of the round before, whether every publish of it committed.
async fn write_loop(quorum: Weak<Quorum>, mut queued: mpsc::UnboundedReceiver<Work>) {
    let rounds = Arc::new(tokio::sync::Semaphore::new(ROUNDS_IN_FLIGHT));
    let mut round = Vec::new();
    let mut before: Option<tokio::sync::oneshot::Receiver<()>> = None;
    while let Some(first) = queued.recv().await {
        round.push(first);
        while round.len() < ROUND {
            match queued.try_recv() {
                Ok(work) => round.push(work),
                Err(_) => break,
            }
        }
        let Some(quorum) = quorum.upgrade() else {
            return;
        };
        let Ok(slot) = Arc::clone(&rounds).acquire_owned().await else {
            return;
        };
        let mut commands: Vec<Command> = Vec::new();
        let mut notified = Vec::new();
        for work in round.drain(..) {
            match work {
                Work::Notify(done) => notified.push(done),
                Work::Write(command) => merge(&mut commands, command),
            }
        }
        let mut published = true;
        let mut pending = Vec::new();
        for command in commands {
            let publish = matches!(command, Command::Enqueue { .. });
            let command = quorum.numbered(command);
            match quorum.group.submit(command).await {
                Ok(commit) => pending.push((publish, commit)),
                Err(command) => {
                    let written = quorum.group.write(command).await;
                    published &= !publish || taken(&quorum.label, written);
                }
            }
        }
        let (finished, after) = tokio::sync::oneshot::channel();
        let before = before.replace(after);
        let label = quorum.label.clone();
        drop(quorum);
        tokio::spawn(async move {
            for (publish, commit) in pending {
                let written = commit.await;
                published &= !publish || taken(&label, written);
            }
            if let Some(before) = before {
                let _ = before.await;
            }
            for done in notified {
                done(if published {
                    Ok(())
                } else {
                    Err(io::Error::other("not committed by a majority"))
                });
            }
            let _ = finished.send(());
            drop(slot);
        });
    }
}

/// Whether a write of publishes committed and the queue took them (a full queue with
/// `x-overflow: reject-publish` refuses them).
fn taken(label: &str, written: Result<Response, WriteError>) -> bool {
    match written {
        Ok(Response::Refused) => false,
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(queue = %label, error = %e, "quorum queue: a write failed");
            false
        }
    }
}

/// Appends `command` to `commands`, into the last one when both are of one mergeable kind.
fn merge(commands: &mut Vec<Command>, command: Command) {
    match (commands.last_mut(), command) {
        (
            Some(Command::Enqueue { messages: into, .. }),
            Command::Enqueue { messages: more, .. },
        ) => into.extend(more),
        (
            Some(Command::Settle {
                node,
                deliveries: into,
            }),
            Command::Settle {
                node: n,
                deliveries: more,
            },
        ) if *node == n => into.extend(more),
        (
            Some(Command::Return {
                node,
                deliveries: into,
            }),
            Command::Return {
                node: n,
                deliveries: more,
            },
        ) if *node == n => into.extend(more),
        (_, command) => commands.push(command),
    }
}

/// Sends what the machine assigned to this node's consumers; a delivery for a consumer that
/// has gone goes back to the queue.
async fn send_loop(quorum: Weak<Quorum>, mut told: mpsc::UnboundedReceiver<ToNode>) {
    while let Some(told) = told.recv().await {
        let Some(quorum) = quorum.upgrade() else {
            return;
        };
        let assigned = match told {
            ToNode::Deliver(assigned) => assigned,
            ToNode::Forgotten => {
                quorum.attach_again();
                continue;
            }
            ToNode::DeadLetter(stored, reason) => {
                let message = Arc::new(to_message(stored, 0));
                quorum.dead_letters.lock().push((message, reason));
                if let Some(wake) = quorum.wake.get() {
                    wake();
                }
                continue;
            }
        };
        let consumer = {
            let consumers = quorum.consumers.lock();
            let found = consumers.iter().find(|(id, _)| *id == assigned.consumer);
            found.map(|(_, c)| Arc::clone(c))
        };
        let Some(consumer) = consumer.filter(|c| c.is_active()) else {
            quorum.requeue(vec![assigned.delivery]);
            continue;
        };
        let Assigned {
            delivery,
            message,
            returns,
            ..
        } = assigned;
        let entry = Entry {
            seq: delivery,
            message: Arc::new(to_message(message, returns)),
            redelivered: returns > 0,
            position: None,
            priority: 0,
            expires: 0,
        };
        consumer.take_assigned();
        if consumer.send(entry).is_err() && !consumer.no_ack {
            quorum.requeue(vec![delivery]);
        }
    }
}

/// The message as delivered: a returned one carries its count in `x-delivery-count`.
fn to_message(stored: Stored, returns: u32) -> Message {
    let (exchange, routing_key) = (stored.exchange().to_vec(), stored.routing_key().to_vec());
    let properties = stored.properties();
    let properties = if returns > 0 {
        with_long_header(properties, DELIVERY_COUNT_HEADER, i64::from(returns))
            .or_else(|| {
                with_header(
                    properties,
                    DELIVERY_COUNT_HEADER,
                    AMQPValue::LongLongInt(i64::from(returns)),
                )
            })
            .unwrap_or_else(|| properties.to_vec())
    } else {
        properties.to_vec()
    };
    // The body stays in the stored buffer, shared, not copied.
    let (data, body) = stored.into_parts();
    let body = Bytes::from(data.into_vec()).slice(body..);
    Message::new(&exchange, &routing_key, &properties, body)
}

/// On the leader: a node with consumers that has been silent for [`DOWN_AFTER`] is written off
/// (`NodeDown`), once, so that what its consumers hold goes to others; it is watched again once
/// it answers. When a waiting message's time to live has run out, the time is written (`Tick`),
/// so that it expires even with no other command coming. And a queue with `x-expires` unused
/// for that long (no consumer, as the log says, since the later of its last use and this
/// node's leadership) is deleted, once.
async fn watch_nodes(quorum: Weak<Quorum>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut written_off = std::collections::BTreeSet::new();
    let mut leading_since = None;
    // When the queue was last asked to be deleted (asked again 10 s later if still here).
    let mut deleting: Option<u64> = None;
    loop {
        ticker.tick().await;
        let Some(quorum) = quorum.upgrade() else {
            return;
        };
        if quorum.group.status().role != crate::cluster::Role::Leader {
            leading_since = None;
            continue;
        }
        let leader_from = *leading_since.get_or_insert_with(now_ms);
        let nodes = quorum.group.read(|m| m.consumer_nodes());
        for node in nodes.into_iter().filter(|n| *n != quorum.node) {
            let silent = quorum.liveness.silent_for(node);
            if silent < DOWN_AFTER {
                written_off.remove(&node);
            } else if written_off.insert(node) {
                tracing::warn!(queue = %quorum.label, node, silent_s = silent.as_secs(), "quorum queue: a node with consumers is silent; its messages go to others");
                quorum.write(Command::NodeDown {
                    node,
                    by: quorum.node,
                });
            }
        }
        let now = now_ms();
        if quorum
            .group
            .read(|m| m.next_expiry())
            .is_some_and(|at| at <= now)
        {
            quorum.write(Command::Tick {
                at: now,
                by: quorum.node,
            });
        }
        let asked = deleting.is_some_and(|at| now.saturating_sub(at) < 10_000);
        if let (Some(expires), false) = (quorum.expires, asked) {
            let unused = quorum.group.read(|m| m.unused());
            let since = unused.map(|used| used.max(leader_from));
            if since.is_some_and(|since| now.saturating_sub(since) >= expires) {
                tracing::info!(queue = %quorum.label, expires_ms = expires, "quorum queue unused for its x-expires: deleting it");
                if let Some(expire) = quorum.expire.get() {
                    expire();
                    deleting = Some(now);
                }
            }
        }
    }
}
