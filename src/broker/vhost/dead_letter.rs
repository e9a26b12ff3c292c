//! Dead-lettering: a message a queue gives up on (rejected or nacked with `requeue=false`,
//! expired, or dropped for length) is republished to the queue's `x-dead-letter-exchange`, with
//! its `x-death` history updated as RabbitMQ does.
//!
//! `x-death` is an array of tables, the most recent first, one per (queue, reason) with a
//! `count` that grows each time the message dies that way again (the entry moves to the front);
//! `x-first-death-queue`, `-reason` and `-exchange` are set once, by the first death. The new
//! message keeps every other property and its body; it is routed with the dead-letter routing key
//! (`x-dead-letter-routing-key`, else its own routing keys), without its `expiration` (kept in
//! the new `x-death` entry as `original-expiration`), so that it does not expire again.
//! Dead-lettering is at most once: it never holds up the ack that caused it, and a missing
//! dead-letter exchange drops the message. A dead-letter exchange of type `x-delayed-message`
//! holds a message with an `x-delay` header for that long, as it does a publish.
//!
//! Cycles: a message that died automatically (expired, maxlen) all the way round back to a queue
//! it died in before is not delivered to that queue again (RabbitMQ's rule: a cycle is broken
//! unless some death on it was a client's reject). Called without any queue lock held (it
//! routes, which takes the topology lock).

use std::sync::Arc;

use warren_protocol::content::{encode_properties, without_expiration, ContentHeader};
use warren_protocol::method::CLASS_BASIC;
use warren_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use super::super::message::{now_ms, Entry, Message, Reason, Stamp};
use super::super::queue::Queue;
use super::{RouteScratch, Vhost};
use crate::store::Store;

impl Vhost {
    /// Deliveries of `queue` rejected without requeue: each is held for its next retry if the
    /// queue has retry delays left for it (`vhost/retry.rs`), otherwise dead-lettered to the
    /// queue's dead-letter exchange (if it has one, with its `x-death` updated); then all are
    /// settled in the queue's log, those held durably for a retry only once their held copies
    /// are synced. The broker's one way of rejecting: the server never dead-letters.
    pub fn reject(&self, queue: &Arc<Queue>, entries: Vec<Entry>) {
        let mut batch = DeadLetters::new(self);
        let mut now = Vec::with_capacity(entries.len());
        let mut after_sync: Option<(Arc<Store>, Vec<Entry>)> = None;
        for entry in entries {
            match self.retry(queue, &entry.message) {
                None => {
                    batch.send(queue, &entry.message, Reason::Rejected);
                    now.push(entry);
                }
                Some(Some(store)) if entry.position.is_some() => {
                    after_sync
                        .get_or_insert_with(|| (store, Vec::new()))
                        .1
                        .push(entry);
                }
                Some(_) => now.push(entry),
            }
        }
        drop(batch);
        queue.settle(now);
        if let Some((store, entries)) = after_sync {
            let queue = Arc::clone(queue);
            store.syncer.notify(Box::new(move |result| match result {
                Ok(()) => queue.settle(entries),
                Err(e) => tracing::warn!(queue = %queue.name, error = %e, count = entries.len(),
                    "retry: the held copies did not sync; the originals stay in the queue's log until the next start"),
            }));
        }
    }
}

/// Republishes `message`, which `queue` gave up on for `reason`, to the queue's dead-letter
/// exchange, if it has one.
pub fn dead_letter(vhost: &Vhost, queue: &Queue, message: &Message, reason: Reason) {
    DeadLetters::new(vhost).send(queue, message, reason);
}

/// A batch of dead-lettering: the logs of the queues it reaches are flushed once, when the batch
/// is dropped, instead of once per message.
pub struct DeadLetters<'a> {
    vhost: &'a Vhost,
    scratch: RouteScratch,
    /// Target queues with log writes to flush.
    logged: Vec<Arc<Queue>>,
}

impl<'a> DeadLetters<'a> {
    pub fn new(vhost: &'a Vhost) -> DeadLetters<'a> {
        DeadLetters {
            vhost,
            scratch: RouteScratch::default(),
            logged: Vec::new(),
        }
    }

    /// Republishes `message`, which `queue` gave up on for `reason`, to the queue's dead-letter
    /// exchange, if it has one.
    pub fn send(&mut self, queue: &Queue, message: &Message, reason: Reason) {
        let Some((exchange, routing_key)) = queue.dead_letter_target() else {
            return;
        };
        let Some((properties, deaths)) = with_death(queue, message, reason) else {
            tracing::warn!(queue = %queue.name, "dead-lettering: the message's properties do not decode; dropped");
            return;
        };
        let routing_key = routing_key.map_or_else(
            || message.routing_key_bytes().to_vec(),
            |key| key.as_bytes().to_vec(),
        );
        let dead = Arc::new(Message::new(
            exchange.as_bytes(),
            &routing_key,
            &properties,
            message.body_bytes(),
        ));
        let checks = warren_protocol::content::publish_checks(&properties);
        let stamp = Stamp {
            persistent: checks.delivery_mode == Some(2),
            ttl: None,
            priority: checks.priority.unwrap_or(0),
        };
        let routed = self.vhost.route_from(
            exchange.as_bytes(),
            &routing_key,
            &properties,
            &mut self.scratch,
            true,
        );
        match routed {
            // The dead-letter exchange does not exist: dropped, as in RabbitMQ.
            Err(_) => return,
            // A delayed-message exchange holds it for its `x-delay`, as for a publish.
            Ok(Some(hold)) => {
                self.vhost.hold(&dead, stamp, hold, None);
                return;
            }
            Ok(None) => {}
        }
        for target in self.scratch.queues.drain(..) {
            if reason != Reason::Rejected && is_cycle(target.name.as_str(), &deaths) {
                tracing::warn!(
                    queue = %queue.name,
                    target = %target.name,
                    "dead-lettering: message died in a cycle with no reject; not delivered there again"
                );
                continue;
            }
            // What this pushes out of a full dead-letter queue is dropped, not dead-lettered
            // again: a ring of full queues must not go round forever.
            let published = target.publish(&dead, stamp);
            if published.logged && !self.logged.iter().any(|q| Arc::ptr_eq(q, &target)) {
                self.logged.push(target);
            }
        }
    }
}

impl Drop for DeadLetters<'_> {
    fn drop(&mut self) {
        for target in self.logged.drain(..) {
            if let Err(e) = target.flush_log() {
                tracing::error!(queue = %target.name, error = %e, "dead-lettering: writing to the log failed");
            }
        }
    }
}

/// Whether delivering a message with these `x-death` entries (most recent first, this death
/// included) to `target` closes a cycle of automatic deaths: `target` is among the queues it
/// died in, and no death from the most recent back to that one was a reject.
fn is_cycle(target: &str, deaths: &[AMQPValue]) -> bool {
    for death in deaths {
        if death_field(death, "reason") == Some(Reason::Rejected.name().as_bytes()) {
            return false;
        }
        if death_field(death, "queue") == Some(target.as_bytes()) {
            return true;
        }
    }
    false
}

/// A string field (`queue`, `reason`) of an `x-death` entry.
fn death_field<'a>(death: &'a AMQPValue, key: &str) -> Option<&'a [u8]> {
    match death {
        AMQPValue::FieldTable(table) => super::super::values::text(table.inner().get(key)?),
        _ => None,
    }
}

/// The message's properties with this death recorded in its headers and its expiration
/// removed, and its `x-death` entries.
fn with_death(
    queue: &Queue,
    message: &Message,
    reason: Reason,
) -> Option<(Vec<u8>, Vec<AMQPValue>)> {
    let header = ContentHeader {
        class_id: CLASS_BASIC,
        body_size: 0,
        properties: bytes::Bytes::copy_from_slice(message.properties()),
    };
    let properties = header.decode_properties().ok()?;
    let mut headers = properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let queue_name = queue.name.as_str();
    let exchange = message.exchange();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(array)) => array.as_slice().to_vec(),
        _ => Vec::new(),
    };
    // The entry for this queue and reason, if the message died this way before: counted and
    // moved to the front.
    let same = |death: &AMQPValue| {
        death_field(death, "queue") == Some(queue_name.as_bytes())
            && death_field(death, "reason") == Some(reason.name().as_bytes())
    };
    let entry = match deaths.iter().position(same) {
        Some(at) => {
            let AMQPValue::FieldTable(mut table) = deaths.remove(at) else {
                return None;
            };
            let count = match table.inner().get("count") {
                Some(value) => super::super::values::integer(value).unwrap_or(0),
                None => 0,
            };
            let count = i64::try_from(count).unwrap_or(0).saturating_add(1);
            table.insert("count".into(), AMQPValue::LongLongInt(count));
            table.insert("time".into(), AMQPValue::Timestamp(now_ms() / 1000));
            table
        }
        None => {
            let mut table = FieldTable::default();
            table.insert("count".into(), AMQPValue::LongLongInt(1));
            table.insert("reason".into(), text(reason.name()));
            table.insert("queue".into(), text(queue_name));
            table.insert("time".into(), AMQPValue::Timestamp(now_ms() / 1000));
            table.insert("exchange".into(), text(exchange));
            let keys = FieldArray::from(vec![text(message.routing_key())]);
            table.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
            if let Some(expiration) = properties.expiration().as_ref() {
                table.insert("original-expiration".into(), text(expiration.as_str()));
            }
            table
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths.clone())),
    );
    for (key, value) in [
        ("x-first-death-reason", reason.name()),
        ("x-first-death-queue", queue_name),
        ("x-first-death-exchange", exchange),
    ] {
        if !headers.inner().contains_key(key) {
            headers.insert(key.into(), text(value));
        }
    }
    let encoded = encode_properties(&properties.with_headers(headers));
    Some((without_expiration(&encoded)?, deaths))
}
