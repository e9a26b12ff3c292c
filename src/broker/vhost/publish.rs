//! One publish, from the exchange to the queues: route (the topology's read lock, once), put the
//! one shared message into every queue it reaches, dead-letter what the queues give up on (once
//! their locks are let go), and say what the publisher's confirm depends on. The channel makes
//! this one call per message and turns the answer into a confirm or a `basic.return`; it never
//! touches a queue on the way.

use std::sync::Arc;

use super::dead_letter::dead_letter;
use super::{short_lossy, RouteScratch, Vhost};
use crate::broker::dedup::{self, Dedup, Key, Verdict};
use crate::broker::exchange::{Exchange, LazyHeaders, Target};
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::{Enqueued, Published, Queue};
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
        self.route(
            message.exchange_bytes(),
            message.routing_key_bytes(),
            message.properties(),
            &mut scratch.route,
        )?;
        let mut result = Routed {
            routed: false,
            safety: Safety::Safe,
            store: None,
        };
        // The message's de-duplication key, read once if a window asks for it.
        let mut key: Option<Option<Key>> = None;
        let mut admitted_by_exchange = None;
        if let Some(dedup) = scratch.route.dedup.take() {
            let key = key.get_or_insert_with(|| dedup::key(message.properties()));
            if let Some(key) = key {
                // A duplicate goes nowhere, before any queue sees it.
                match dedup.admit(key) {
                    Verdict::Duplicate => {
                        scratch.route.queues.clear();
                        return Ok(duplicate(self.sync_store(&dedup)));
                    }
                    Verdict::Failed => {
                        scratch.route.queues.clear();
                        result.routed = true;
                        result.safety = Safety::Failed;
                        return Ok(result);
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
            if let Some(dedup) = queue.dedup() {
                let key = key.get_or_insert_with(|| dedup::key(message.properties()));
                if let Some(key) = key {
                    match dedup.admit(key) {
                        Verdict::Duplicate => {
                            let answer = duplicate(self.sync_store(dedup));
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
                    result.store = queue.store().cloned();
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
        Ok(result)
    }
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
        },
        None => Routed {
            routed: true,
            safety: Safety::Safe,
            store: None,
        },
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

    /// Routes one message: fills `scratch.queues` with each destination queue once.
    pub fn route(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        scratch: &mut RouteScratch,
    ) -> Result<(), Error> {
        scratch.queues.clear();
        scratch.targets.clear();
        scratch.visited.clear();
        scratch.dedup = None;
        let topology = self.read();
        if exchange.is_empty() {
            if let Some(queue) = topology.queues.get(routing_key) {
                scratch.queues.push(Arc::clone(queue));
            }
            return Ok(());
        }
        let Some(first) = topology.exchanges.get(exchange) else {
            return Err(self.no_exchange(&short_lossy(exchange)));
        };
        if first.internal {
            return Err(self.internal(first));
        }
        scratch.dedup.clone_from(&first.dedup);
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
        Ok(())
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
