//! A read-only picture of a vhost's topology (exchanges, queues, bindings) for the definitions
//! export and the management API.
//!
//! Owns nothing: [`Vhost::snapshot`] clones what it needs in one short hold of the topology's
//! read lock. It must never lock a queue (the lock order is topology, then a queue, and a
//! snapshot needs nothing a queue's lock guards) nor write anything.

use warren_protocol::table::decode_field_table;

use super::*;

/// An exchange as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSnapshot {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A queue as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
}

/// One binding of an exchange (`source`) to a queue or exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingSnapshot {
    pub source: String,
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// The topology of one vhost at one moment; built-in exchanges included (the caller decides
/// what to leave out), each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VhostSnapshot {
    pub exchanges: Vec<ExchangeSnapshot>,
    pub queues: Vec<QueueSnapshot>,
    pub bindings: Vec<BindingSnapshot>,
}

impl Vhost {
    /// Its exchanges, queues and bindings, as they are now.
    pub fn snapshot(&self) -> VhostSnapshot {
        let (exchanges, queues, keys) = {
            let topology = self.read();
            let keys: Vec<(ShortStr, BindingKey)> = topology
                .exchanges
                .values()
                .flat_map(|x| x.bindings().map(|key| (x.name.clone(), key.clone())))
                .collect();
            (
                topology.exchanges.values().map(exchange).collect(),
                topology.queues.values().map(|q| queue(q)).collect(),
                keys,
            )
        };
        // Decoding the binding arguments needs no lock.
        let bindings = keys.into_iter().map(binding).collect();
        let mut snapshot = VhostSnapshot {
            exchanges,
            queues,
            bindings,
        };
        snapshot.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        snapshot.queues.sort_by(|a, b| a.name.cmp(&b.name));
        snapshot.bindings.sort_by(|a, b| {
            (&a.source, destination_name(&a.destination), &a.routing_key).cmp(&(
                &b.source,
                destination_name(&b.destination),
                &b.routing_key,
            ))
        });
        snapshot
    }
}

fn text(name: &ShortStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

fn destination_name(destination: &Destination) -> &[u8] {
    match destination {
        Destination::Queue(name) | Destination::Exchange(name) => name.as_bytes(),
    }
}

pub(super) fn exchange(exchange: &Exchange) -> ExchangeSnapshot {
    ExchangeSnapshot {
        name: text(&exchange.name),
        kind: exchange.kind,
        durable: exchange.durable,
        auto_delete: exchange.auto_delete,
        internal: exchange.internal,
        arguments: exchange.arguments.clone(),
    }
}

fn queue(queue: &Queue) -> QueueSnapshot {
    QueueSnapshot {
        name: text(&queue.name),
        durable: queue.options.durable,
        auto_delete: queue.options.auto_delete,
        exclusive: queue.options.exclusive_owner.is_some(),
        arguments: queue.options.arguments.clone(),
    }
}

pub(super) fn binding((source, key): (ShortStr, BindingKey)) -> BindingSnapshot {
    BindingSnapshot {
        source: text(&source),
        destination: key.destination,
        routing_key: text(&key.routing_key),
        // The bytes were encoded from a table the broker accepted: they decode.
        arguments: match key.arguments.is_empty() {
            true => FieldTable::default(),
            false => decode_field_table(&key.arguments).unwrap_or_default(),
        },
    }
}
