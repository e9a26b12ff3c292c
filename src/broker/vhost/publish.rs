//! One publish, from the exchange to the queues: route (the topology's read lock, once), put the
//! one shared message into every queue it reaches, dead-letter what the queues give up on (once
//! their locks are let go), and say what the publisher's confirm depends on. The channel makes
//! this one call per message and turns the answer into a confirm or a `basic.return`; it never
//! touches a queue on the way. A delayed-message exchange given an `x-delay` holds the message
//! instead (`broker/delays`), which routes it here again when it is due.

use std::sync::Arc;

use super::dead_letter::dead_letter;
use super::{short_lossy, RouteScratch, Vhost};
use crate::broker::dedup::{self, Dedup, Key, Verdict};
use crate::broker::delays::record::{mark_delayed, x_delay};
use crate::broker::delays::ReturnAddress;
use crate::broker::exchange::{Exchange, ExchangeKind, LazyHeaders, Target};
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::{Enqueued, Published, Queue};
use crate::broker::quorum::Quorum;
use crate::error::Error;
use crate::store::Store;

/// What a publish's confirm depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Every queue that took it has it (in memory, or nothing to sync).
    Safe,
    /// Safe once the group commit has synced the logs it went to.
    Syncing,
    /// A queue failed to take it (its log could not be written, or it refused it for length):
    /// the confirm is a nack.
    Failed,
}

/// What [`Vhost::publish`] did with a message.
#[derive(Debug)]
pub struct Routed {
    /// Some queue took it, or refused it for its length: a mandatory message is not returned.
    pub routed: bool,
    pub safety: Safety,
    /// The store whose group commit a `Syncing` publish waits for.
    pub store: Option<Arc<Store>>,
    /// The quorum queues whose commits it waits for too (empty but for quorum queues: no
    /// allocation on the common path).
    pub quorums: Vec<Arc<Quorum>>,
}

/// A publisher's reusable buffers, and what its publishes leave it to do (one per connection).
#[derive(Debug, Default)]
pub struct PublishScratch {
    route: RouteScratch,
    /// Queues whose logs took publishes and wait for the caller to flush them
    /// ([`Queue::flush_log`], once per log per read batch).
    pub unflushed: Vec<Arc<Queue>>,
    /// Queues that push back on this publisher (see `broker::flow`).
    pub pressured: Vec<Arc<Queue>>,
    /// Messages put into queues since the caller last reset this: the work its publishes made
    /// for consumers' connections.
    pub enqueued: usize,
}

impl Vhost {
    /// Routes `message` from its exchange and puts it into every queue it reaches, as `stamp`
    /// says they are to hold it. An unknown or internal exchange is the channel error
    /// RabbitMQ gives (404, 403).
    #[inline]
    pub fn publish(
        &self,
        message: &Arc<Message>,
        stamp: Stamp,
        scratch: &mut PublishScratch,
    ) -> Result<Routed, Error> {
        self.publish_from(message, stamp, None, scratch)
    }

    /// [`Vhost::publish`] for a publisher that can take a message back: a mandatory message
    /// held by a delayed-message exchange goes back to `returns` if it is unroutable when it
    /// fires (and the address still exists then).
    #[inline]
    pub fn publish_from(
        &self,
        message: &Arc<Message>,
        stamp: Stamp,
        returns: Option<&Arc<ReturnAddress>>,
        scratch: &mut PublishScratch,
    ) -> Result<Routed, Error> {
        let held = self.route_from(
            message.exchange_bytes(),
            message.routing_key_bytes(),
            message.properties(),
            &mut scratch.route,
            true,
        )?;
        if let Some(hold) = held {
            return Ok(self.hold(message, stamp, hold, returns));
        }
        Ok(self.enqueue(message, stamp, scratch, true))
    }

    /// Publishes a delayed message whose time came: routed by its exchange's type, never held
    /// again. A retry (`vhost/retry.rs`) skips the de-duplication windows: `windows` false.
    pub(crate) fn publish_fired(
        &self,
        message: &Arc<Message>,
        stamp: Stamp,
        windows: bool,
        scratch: &mut PublishScratch,
    ) -> Result<Routed, Error> {
        self.route(
            message.exchange_bytes(),
            message.routing_key_bytes(),
            message.properties(),
            &mut scratch.route,
        )?;
        Ok(self.enqueue(message, stamp, scratch, windows))
    }

    /// Holds a message for its delay (see `broker/delays`): routed as far as a mandatory
    /// publish is concerned; its confirm waits for the group commit if it is held durably.
    pub(super) fn hold(
        &self,
        message: &Message,
        stamp: Stamp,
        hold: Hold,
        returns: Option<&Arc<ReturnAddress>>,
    ) -> Routed {
        let durable = hold.durable && stamp.persistent && self.store.is_some();
        let marked = mark_delayed(message.properties(), hold.delay);
        let properties = marked.as_deref().unwrap_or(message.properties());
        match self
            .delays
            .hold(message, properties, hold.delay, durable, returns)
        {
            Ok(store) => Routed {
                routed: true,
                safety: match store {
                    Some(_) => Safety::Syncing,
                    None => Safety::Safe,
                },
                store,
                quorums: Vec::new(),
            },
            Err(e) => {
                tracing::error!(vhost = %self.name, exchange = %message.exchange(), error = %e, "cannot hold a delayed message");
                Routed {
                    routed: true,
                    safety: Safety::Failed,
                    store: None,
                    quorums: Vec::new(),
                }
            }
        }
    }

    /// Puts a routed message into the queues `scratch.route` holds; `windows`: through the
    /// de-duplication windows of its exchange and queues.
    #[inline]
    fn enqueue(
        &self,
        message: &Arc<Message>,
        stamp: Stamp,
        scratch: &mut PublishScratch,
        windows: bool,
    ) -> Routed {
        let mut result = Routed {
            routed: false,
            safety: Safety::Safe,
            store: None,
            quorums: Vec::new(),
        };
        // The message's de-duplication key, read once if a window asks for it.
        let mut key: Option<Option<Key>> = None;
        let mut admitted_by_exchange = None;
        let exchange_window = scratch.route.dedup.take().filter(|_| windows);
        if let Some(dedup) = exchange_window {
            let key = key.get_or_insert_with(|| dedup::key(message.properties()));
            if let Some(key) = key {
                // A duplicate goes nowhere, before any queue sees it.
                match dedup.admit(key) {
                    Verdict::Duplicate => {
                        // Its original went to these queues (as the bindings stand now): their
                        // logs are flushed with this publisher's, before its confirm waits.
                        for queue in scratch.route.queues.drain(..) {
                            flush_with_batch(&mut scratch.unflushed, queue);
                        }
                        return duplicate(self.sync_store(&dedup));
                    }
                    Verdict::Failed => {
                        scratch.route.queues.clear();
                        result.routed = true;
                        result.safety = Safety::Failed;
                        return result;
                    }
                    Verdict::New => {
                        wait_for_window(&mut result, &dedup);
                        admitted_by_exchange = Some(dedup);
                    }
                }
            }
        }
        scratch.enqueued += scratch.route.queues.len();
        for queue in scratch.route.queues.drain(..) {
            let mut admitted = None;
            if let Some(dedup) = queue.dedup().filter(|_| windows) {
                let key = key.get_or_insert_with(|| dedup::key(message.properties()));
                if let Some(key) = key {
                    match dedup.admit(key) {
                        Verdict::Duplicate => {
                            let answer = duplicate(self.sync_store(dedup));
                            flush_with_batch(&mut scratch.unflushed, Arc::clone(&queue));
                            result.routed = true;
                            if answer.safety == Safety::Syncing && result.safety == Safety::Safe {
                                result.safety = Safety::Syncing;
                                result.store = answer.store;
                            }
                            continue;
                        }
                        Verdict::Failed => {
                            result.routed = true;
                            result.safety = Safety::Failed;
                            continue;
                        }
                        Verdict::New => {
                            wait_for_window(&mut result, dedup);
                            admitted = Some(dedup);
                        }
                    }
                }
            }
            let Published {
                enqueued,
                logged,
                dropped,
            } = queue.publish(message, stamp);
            if let (Some(dedup), Some(Some(key))) = (admitted, &key) {
                // Not taken: a resend must not be dropped as a duplicate of it.
                if matches!(
                    enqueued,
                    Enqueued::Failed | Enqueued::Rejected | Enqueued::Deleted
                ) {
                    dedup.forget(key);
                }
            }
            for (message, reason) in dropped {
                dead_letter(self, &queue, &message, reason);
            }
            if logged && !scratch.unflushed.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                scratch.unflushed.push(Arc::clone(&queue));
            }
            let pushes_back = queue.flow.under_pressure();
            if pushes_back && !scratch.pressured.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                scratch.pressured.push(Arc::clone(&queue));
            }
            match enqueued {
                Enqueued::Queued => result.routed = true,
                Enqueued::Logged => {
                    result.routed = true;
                    if result.safety == Safety::Safe {
                        result.safety = Safety::Syncing;
                    }
                    match queue.quorum() {
                        Some(quorum) => {
                            if !result.quorums.iter().any(|q| Arc::ptr_eq(q, quorum)) {
                                result.quorums.push(Arc::clone(quorum));
                            }
                        }
                        None => result.store = queue.store().cloned(),
                    }
                }
                Enqueued::Failed => result.safety = Safety::Failed,
                // Routed (no return for mandatory), but refused: a confirm is a nack.
                Enqueued::Rejected => {
                    result.routed = true;
                    result.safety = Safety::Failed;
                }
                Enqueued::Deleted => {}
            }
        }
        if let (Some(dedup), Some(Some(key))) = (admitted_by_exchange, &key) {
            if result.safety == Safety::Failed {
                dedup.forget(key);
            }
        }
        result
    }
}

/// A publish a delayed-message exchange holds: for how long, and whether the exchange is
/// durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    delay: u64,
    durable: bool,
}

/// The answer for a dropped duplicate: routed (never returned, even if mandatory) and
/// confirmed only after the group commit that follows it (when there is a store), so that
/// whatever was written before it, its original included (a durable queue's log, a durable
/// window's file), is on disk by then: a publisher never holds the ack of a duplicate whose
/// original a crash could still lose.
fn duplicate(store: Option<&Arc<Store>>) -> Routed {
    match store {
        Some(store) => Routed {
            routed: true,
            safety: Safety::Syncing,
            store: Some(Arc::clone(store)),
            quorums: Vec::new(),
        },
        None => Routed {
            routed: true,
            safety: Safety::Safe,
            store: None,
            quorums: Vec::new(),
        },
    }
}

/// A duplicate's original may still sit in its queue's log buffer, appended by another
/// connection that has not flushed yet: the duplicate's publisher flushes that log too (at the
/// end of its batch, before registering its confirm with the group commit), so that its confirm
/// never comes before the original is synced.
fn flush_with_batch(unflushed: &mut Vec<Arc<Queue>>, queue: Arc<Queue>) {
    if queue.store().is_some() && !unflushed.iter().any(|q| Arc::ptr_eq(q, &queue)) {
        unflushed.push(queue);
    }
}

impl Vhost {
    /// The group commit a duplicate's confirm waits for: its window's, else the vhost's store.
    fn sync_store<'a>(&'a self, dedup: &'a Dedup) -> Option<&'a Arc<Store>> {
        dedup
            .store()
            .or_else(|| self.store.as_ref().map(|(store, _)| store))
    }
}

/// A key written to a durable window's file: the confirm waits for the group commit.
fn wait_for_window(result: &mut Routed, dedup: &Dedup) {
    if let Some(store) = dedup.store() {
        if result.safety == Safety::Safe {
            result.safety = Safety::Syncing;
            result.store = Some(Arc::clone(store));
        }
    }
}

impl Vhost {
    /// Checks that a publish may go to `exchange` (404 unknown, 403 internal).
    pub fn check_publish(&self, exchange: &[u8]) -> Result<(), Error> {
        let topology = self.read();
        match topology.exchanges.get(exchange) {
            None => Err(self.no_exchange(&short_lossy(exchange))),
            Some(x) if x.internal => Err(self.internal(x)),
            Some(_) => Ok(()),
        }
    }

    /// Routes one message: fills `scratch.queues` with each destination queue once. A
    /// delayed-message exchange routes at once (dead-lettering, a fired message).
    pub fn route(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        scratch: &mut RouteScratch,
    ) -> Result<(), Error> {
        self.route_from(exchange, routing_key, properties, scratch, false)
            .map(|_| ())
    }

    /// [`Vhost::route`]; with `hold`, a delayed-message exchange given a message with an
    /// `x-delay` routes nothing and says how long to hold it.
    pub(super) fn route_from(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        scratch: &mut RouteScratch,
        hold: bool,
    ) -> Result<Option<Hold>, Error> {
        scratch.queues.clear();
        scratch.targets.clear();
        scratch.visited.clear();
        scratch.dedup = None;
        let topology = self.read();
        if exchange.is_empty() {
            if let Some(queue) = topology.queues.get(routing_key) {
                scratch.queues.push(Arc::clone(queue));
            }
            return Ok(None);
        }
        let Some(first) = topology.exchanges.get(exchange) else {
            return Err(self.no_exchange(&short_lossy(exchange)));
        };
        if first.internal {
            return Err(self.internal(first));
        }
        // The exchange's de-duplication window (a held message meets it when it fires).
        scratch.dedup.clone_from(&first.dedup);
        if hold && first.kind == ExchangeKind::Delayed {
            if let Some(delay) = x_delay(properties) {
                let durable = first.durable;
                return Ok(Some(Hold { delay, durable }));
            }
        }
        let mut headers = LazyHeaders::new(properties);
        route_or_alternate(first, routing_key, &mut headers, &mut scratch.targets);
        scratch.visited.push(first.name.clone());
        while let Some(target) = scratch.targets.pop() {
            match target {
                Target::Queue(queue) => scratch.queues.push(queue),
                Target::Exchange(name) => {
                    // Each exchange routes a message once: loops end here.
                    if scratch.visited.contains(&name) {
                        continue;
                    }
                    if let Some(next) = topology.exchanges.get(&name) {
                        route_or_alternate(next, routing_key, &mut headers, &mut scratch.targets);
                    }
                    scratch.visited.push(name);
                }
            }
        }
        drop(topology);
        if scratch.queues.len() > 1 {
            scratch
                .queues
                .sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
            scratch.queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        Ok(None)
    }
}

/// Routes through one exchange; if it finds no destination at all, its alternate exchange (if
/// it has one) is the destination, as in RabbitMQ.
fn route_or_alternate(
    exchange: &Exchange,
    routing_key: &[u8],
    headers: &mut LazyHeaders<'_>,
    targets: &mut Vec<Target>,
) {
    let before = targets.len();
    exchange.route(routing_key, headers, targets);
    if targets.len() == before {
        if let Some(alternate) = &exchange.alternate {
            targets.push(Target::Exchange(alternate.clone()));
        }
    }
}
