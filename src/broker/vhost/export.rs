//! A read-only picture of a vhost's topology (exchanges, queues, bindings) for the definitions
//! export and the management API, and the declaration that would recreate one exchange or queue
//! (for the configuration's and the definitions import's checks).
//!
//! Owns nothing: [`Vhost::snapshot`] clones what it needs in one short hold of the topology's
//! read lock. It must never lock a queue (the lock order is topology, then a queue, and a
//! snapshot needs nothing a queue's lock guards) nor write anything.

use warren_protocol::table::decode_field_table;

use super::*;

impl Vhost {
    /// The declaration that would recreate the exchange `name` as it is (for the
    /// configuration's checks against what exists); `None` if there is no such exchange.
    pub fn exchange_declaration(&self, name: &str) -> Option<ExchangeDeclare> {
        let topology = self.read();
        let exchange = topology.exchanges.get(name.as_bytes())?;
        Some(ExchangeDeclare {
            name: exchange.name.clone(),
            kind: exchange.kind.name().to_owned(),
            passive: false,
            durable: exchange.durable,
            auto_delete: exchange.auto_delete,
            internal: exchange.internal,
            arguments: exchange.arguments.clone(),
        })
    }

    /// The declaration that would recreate the queue `name` as it is, and the connection that
    /// owns it if it is exclusive; `None` if there is no such queue.
    pub fn queue_declaration(&self, name: &str) -> Option<(QueueDeclare, Option<u64>)> {
        let topology = self.read();
        let queue = topology.queues.get(name.as_bytes())?;
        let declare = QueueDeclare {
            name: queue.name.clone(),
            server_named: false,
            passive: false,
            durable: queue.options.durable,
            exclusive: queue.options.exclusive_owner.is_some(),
            auto_delete: queue.options.auto_delete,
            arguments: queue.options.arguments.clone(),
        };
        Some((declare, queue.options.exclusive_owner))
    }
}

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
