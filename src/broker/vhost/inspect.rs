//! Read-only views of a vhost's topology for the management API, in the shapes of
//! [`super::export`]'s snapshot: one exchange, the exchanges, and every binding with the
//! default exchange's implicit ones. Copied under the topology's read lock in one short
//! critical section; nothing here changes the vhost or takes a queue's lock (a queue's figures
//! are [`crate::broker::queue::Queue::stats`]).

use std::sync::Arc;

use super::export::{binding, exchange};
use super::{BindingSnapshot, ExchangeSnapshot, Vhost};
use crate::broker::exchange::Destination;
use crate::broker::queue::Queue;

impl Vhost {
    /// Every exchange, the built-in ones included.
    pub fn exchange_infos(&self) -> Vec<ExchangeSnapshot> {
        self.read().exchanges.values().map(exchange).collect()
    }

    /// The exchange `name`, if there is one.
    pub fn exchange_info(&self, name: &str) -> Option<ExchangeSnapshot> {
        self.read().exchanges.get(name.as_bytes()).map(exchange)
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
    /// routing key, as RabbitMQ lists them), then each exchange's.
    pub fn binding_infos(&self) -> Vec<BindingSnapshot> {
        let (names, keys) = {
            let topology = self.read();
            let names: Vec<_> = topology.queues.keys().cloned().collect();
            let keys: Vec<_> = topology
                .exchanges
                .values()
                .flat_map(|x| x.bindings().map(|key| (x.name.clone(), key.clone())))
                .collect();
            (names, keys)
        };
        let implicit = names.into_iter().map(|name| BindingSnapshot {
            source: String::new(),
            routing_key: name.as_str().to_owned(),
            destination: Destination::Queue(name),
            arguments: Default::default(),
        });
        implicit.chain(keys.into_iter().map(binding)).collect()
    }
}
