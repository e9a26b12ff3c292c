//! Deletions: `exchange.delete` and `queue.delete` as RabbitMQ checks them, and the queues that go
//! by themselves (auto-delete once their last consumer goes, exclusive ones with their connection,
//! and those whose `x-expires` ran out, through [`Vhost::remove_if`]). A queue or exchange takes
//! every binding to it along, and an auto-delete exchange left without bindings goes too. All
//! under the topology's write lock; what durable went is logged there and saved after it
//! (`changes.rs`).

use std::sync::Arc;

use warren_protocol::method::ShortStr;

use super::{default_exchange, is_built_in, Topology, Unsaved, Vhost};
use crate::broker::definition::{exchange_key, queue_key};
use crate::broker::exchange::{Destination, Target};
use crate::broker::queue::{Consumer, Queue};
use crate::error::Error;

impl Vhost {
    /// `exchange.delete` on this node only (`replicated.rs` adds the cluster's side).
    pub(super) fn delete_exchange_here(
        &self,
        name: &ShortStr,
        if_unused: bool,
    ) -> Result<Unsaved, Error> {
        if name.is_empty() {
            return Err(default_exchange());
        }
        if is_built_in(name) {
            return Err(Error::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut topology = self.write();
        let Some(exchange) = topology.exchanges.get(name) else {
            // Deleting what is not there succeeds, as in RabbitMQ 3.x.
            return Ok(Unsaved::default());
        };
        if if_unused && exchange.has_bindings() {
            return Err(Error::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topology.remove_exchange(name);
        Ok(self.unsaved(topology))
    }

    /// `queue.delete`: returns how many messages the queue held and the consumers to cancel;
    /// what it appended to the definitions log is the caller's to save.
    pub fn delete_queue_unsaved(
        &self,
        name: &ShortStr,
        if_unused: bool,
        if_empty: bool,
        connection: u64,
    ) -> Result<(u32, Vec<Arc<Consumer>>, Unsaved), Error> {
        let mut topology = self.write();
        let Some(queue) = topology.queues.get(name) else {
            return Ok((0, Vec::new(), Unsaved::default()));
        };
        if queue.is_exclusive_to_other(connection) {
            return Err(self.locked(name));
        }
        let (messages, consumers) = queue.counts();
        if if_unused && consumers > 0 {
            return Err(Error::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && messages > 0 {
            return Err(Error::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        if let (Some(node), true) = (self.cluster.get(), queue.quorum().is_some()) {
            let node = Arc::clone(node);
            drop(topology);
            self.delete_quorum(&node, name)?;
            return Ok((messages, Vec::new(), Unsaved::default()));
        }
        let (consumers, count) = topology.remove_queue(name);
        Ok((count, consumers, self.unsaved(topology)))
    }

    /// Deletes `queue` if it is still the queue of its name and `condition` still holds (checked
    /// under the topology's write lock); the number of messages it held, if it was deleted.
    pub(super) fn remove_if(
        &self,
        queue: &Arc<Queue>,
        condition: impl Fn(&Queue) -> bool,
    ) -> Option<u32> {
        let mut topology = self.write();
        let current = topology.queues.get(&queue.name);
        if !current.is_some_and(|q| Arc::ptr_eq(q, queue)) || !condition(queue) {
            return None;
        }
        let (consumers, messages) = topology.remove_queue(&queue.name);
        cancel_all(consumers);
        // A failure is logged; the queue is gone from memory either way.
        let _ = self.save(topology);
        Some(messages)
    }

    /// Deletes an auto-delete queue whose last consumer went, if it is still that queue and
    /// still unused.
    pub fn delete_if_unused(&self, queue: &Arc<Queue>) {
        self.remove_if(queue, |q| !q.has_consumers());
    }

    /// Deletes every queue (consumers cancelled, messages and logs gone) and the vhost's durable
    /// definitions: the vhost was removed ([`crate::broker::Broker::remove_vhost`]).
    pub fn delete_everything(&self) {
        let mut topology = self.write();
        // Nothing of the vhost is written any more.
        topology.definitions = None;
        topology.uncommitted = false;
        let names: Vec<ShortStr> = topology.queues.keys().cloned().collect();
        for name in names {
            let (consumers, _) = topology.remove_queue(&name);
            cancel_all(consumers);
        }
        self.delays.clear();
        if let Some((_, dir)) = &self.store {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::error!(vhost = %self.name, error = %e, "deleting the vhost's files failed")
                }
                _ => {}
            }
        }
    }

    /// Deletes the exclusive queues of a closed connection.
    pub fn delete_exclusive(&self, connection: u64) {
        let mut topology = self.write();
        let owned: Vec<ShortStr> = topology
            .queues
            .values()
            .filter(|q| q.options.exclusive_owner == Some(connection))
            .map(|q| q.name.clone())
            .collect();
        for name in owned {
            let (consumers, _) = topology.remove_queue(&name);
            cancel_all(consumers);
        }
        // An auto-delete exchange that went with them may have been durable.
        let _ = self.save(topology);
    }
}

impl Topology {
    /// Removes a queue and every binding to it; returns its consumers and message count.
    pub(super) fn remove_queue(&mut self, name: &ShortStr) -> (Vec<Arc<Consumer>>, u32) {
        let Some(queue) = self.queues.remove(name) else {
            return (Vec::new(), 0);
        };
        let durable = queue.options.durable && queue.options.exclusive_owner.is_none();
        if durable {
            self.log_delete(&queue_key(name));
        }
        let destination = Destination::Queue(name.clone());
        let target = Target::Queue(Arc::clone(&queue));
        self.unbind_everywhere(&destination, &target, durable);
        let (consumers, count) = queue.delete();
        (consumers, count)
    }

    fn remove_exchange(&mut self, name: &ShortStr) {
        let Some(exchange) = self.exchanges.remove(name) else {
            return;
        };
        if let Some(dedup) = &exchange.dedup {
            dedup.remove_file();
        }
        let destination = Destination::Exchange(name.clone());
        if exchange.durable && self.definitions.is_some() {
            self.log_delete(&exchange_key(name));
            for binding in exchange.bindings() {
                let durable = match &binding.destination {
                    to_itself if *to_itself == destination => true,
                    other => self.durable_destination(other),
                };
                if durable {
                    self.log_binding(name, binding, None);
                }
            }
        }
        let target = Target::Exchange(name.clone());
        self.unbind_everywhere(&destination, &target, exchange.durable);
    }

    /// Removes every binding to `destination` (whose definition is logged if `durable`).
    fn unbind_everywhere(&mut self, destination: &Destination, target: &Target, durable: bool) {
        let mut emptied = Vec::new();
        let mut gone = Vec::new();
        let logging = durable && self.definitions.is_some();
        for exchange in self.exchanges.values_mut() {
            if logging && exchange.durable && !exchange.name.is_empty() {
                let bound = exchange
                    .bindings()
                    .filter(|b| b.destination == *destination);
                gone.extend(bound.map(|b| (exchange.name.clone(), b.clone())));
            }
            if exchange.unbind_all_to(destination, target) > 0 {
                emptied.push(exchange.name.clone());
            }
        }
        for (source, binding) in gone {
            self.log_binding(&source, &binding, None);
        }
        for name in emptied {
            self.auto_delete_exchange(&name);
        }
    }

    /// Deletes an auto-delete exchange that has just lost its last binding.
    pub(super) fn auto_delete_exchange(&mut self, name: &ShortStr) {
        let unused = self
            .exchanges
            .get(name)
            .is_some_and(|x| x.auto_delete && !x.has_bindings());
        if unused {
            self.remove_exchange(name);
        }
    }
}

pub(super) fn cancel_all(consumers: Vec<Arc<Consumer>>) {
    for consumer in consumers {
        consumer.cancel();
    }
}
