//! Read-only views of a vhost's topology for the management API: exchanges and bindings copied
//! out under the topology's read lock in one short critical section. Nothing here changes the
//! vhost or takes a queue's lock (a queue's figures are [`crate::broker::queue::Queue::stats`]).

use std::sync::Arc;

use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::Vhost;
use crate::broker::exchange::{Destination, Exchange, ExchangeKind};
use crate::broker::queue::Queue;

/// An exchange as the management API shows it.
#[derive(Debug, Clone)]
pub struct ExchangeInfo {
    pub name: ShortStr,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A binding as the management API shows it (RabbitMQ lists the default exchange's implicit
/// binding to every queue too).
#[derive(Debug, Clone)]
pub struct BindingInfo {
    pub source: ShortStr,
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

impl ExchangeInfo {
    fn of(exchange: &Exchange) -> ExchangeInfo {
        ExchangeInfo {
            name: exchange.name.clone(),
            kind: exchange.kind,
            durable: exchange.durable,
            auto_delete: exchange.auto_delete,
            internal: exchange.internal,
            arguments: exchange.arguments.clone(),
        }
    }
}

impl Vhost {
    /// Every exchange, the built-in ones included.
    pub fn exchange_infos(&self) -> Vec<ExchangeInfo> {
        let topology = self.read();
        topology.exchanges.values().map(ExchangeInfo::of).collect()
    }

    /// The exchange `name`, if there is one.
    pub fn exchange_info(&self, name: &str) -> Option<ExchangeInfo> {
        self.read()
            .exchanges
            .get(name.as_bytes())
            .map(ExchangeInfo::of)
    }

    /// The queue `name`, whoever may use it.
    pub fn queue_named(&self, name: &str) -> Option<Arc<Queue>> {
        self.read().queues.get(name.as_bytes()).cloned()
    }

    /// (exchanges, queues) counts.
    pub fn object_counts(&self) -> (usize, usize) {
        let topology = self.read();
        (topology.exchanges.len(), topology.queues.len())
    }

    /// Every binding: the default exchange's implicit ones (one per queue, its name as the
    /// routing key), then each exchange's.
    pub fn binding_infos(&self) -> Vec<BindingInfo> {
        let topology = self.read();
        let implicit = topology.queues.keys().map(|name| BindingInfo {
            source: ShortStr::default(),
            destination: Destination::Queue(name.clone()),
            routing_key: name.clone(),
            arguments: FieldTable::default(),
        });
        let explicit = topology.exchanges.values().flat_map(|exchange| {
            exchange.bindings().map(|key| BindingInfo {
                source: exchange.name.clone(),
                destination: key.destination.clone(),
                routing_key: key.routing_key.clone(),
                arguments: match key.arguments.is_empty() {
                    true => FieldTable::default(),
                    false => warren_protocol::table::decode_field_table(&key.arguments)
                        .unwrap_or_default(),
                },
            })
        });
        implicit.chain(explicit).collect()
    }
}
