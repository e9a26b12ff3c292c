//! Bindings: `exchange.bind` / `queue.bind` and their unbinds, checked as RabbitMQ checks them
//! (the default exchange cannot be bound, destinations must exist), under the topology's write
//! lock.

use super::*;

impl Vhost {
    /// `queue.bind` and `exchange.bind` on this node only (`replicated.rs` adds the cluster's
    /// side).
    pub(super) fn bind_here(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<Unsaved, Error> {
        let mut topology = self.write();
        let target = self.resolve(&topology, &destination, connection)?;
        if source.is_empty() {
            return Err(default_exchange());
        }
        let durable_destination = topology.durable_destination(&destination);
        let exchange = topology
            .exchanges
            .get_mut(source)
            .ok_or_else(|| self.no_exchange(source))?;
        exchange
            .validate_binding(arguments)
            .map_err(Error::PreconditionFailed)?;
        let (destination, routing_key) = share_queue_name(&target, destination, routing_key);
        let key = BindingKey {
            destination,
            routing_key,
            arguments: encode_arguments(arguments),
        };
        let logged = (exchange.durable && durable_destination).then(|| key.clone());
        if exchange.bind(key, target, arguments) {
            if let Some(key) = logged {
                topology.log_binding(source, &key, Some(arguments));
            }
        }
        Ok(self.unsaved(topology))
    }

    /// `queue.unbind` and `exchange.unbind` on this node only (`replicated.rs` adds the
    /// cluster's side).
    pub(super) fn unbind_here(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<Unsaved, Error> {
        if source.is_empty() {
            return Err(default_exchange());
        }
        let mut topology = self.write();
        // Unbinding from or to what does not exist, or what is not bound, succeeds, as in
        // RabbitMQ 3.x.
        let target = match self.resolve(&topology, &destination, connection) {
            Ok(target) => target,
            Err(Error::NotFound(_)) => return Ok(Unsaved::default()),
            Err(other) => return Err(other),
        };
        let durable_destination = topology.durable_destination(&destination);
        let Some(exchange) = topology.exchanges.get_mut(source) else {
            return Ok(Unsaved::default());
        };
        let key = BindingKey {
            destination,
            routing_key,
            arguments: encode_arguments(arguments),
        };
        if exchange.unbind(&key, &target) {
            if exchange.durable && durable_destination {
                topology.log_binding(source, &key, None);
            }
            topology.auto_delete_exchange(source);
        }
        Ok(self.unsaved(topology))
    }

    fn resolve(
        &self,
        topology: &Topology,
        destination: &Destination,
        connection: u64,
    ) -> Result<Target, Error> {
        match destination {
            Destination::Queue(name) => {
                let queue = topology
                    .queues
                    .get(name)
                    .ok_or_else(|| self.no_queue(name))?;
                if queue.is_exclusive_to_other(connection) {
                    return Err(self.locked(name));
                }
                Ok(Target::Queue(Arc::clone(queue)))
            }
            Destination::Exchange(name) => {
                if name.is_empty() {
                    return Err(default_exchange());
                }
                if !topology.exchanges.contains_key(name) {
                    return Err(self.no_exchange(name));
                }
                Ok(Target::Exchange(name.clone()))
            }
        }
    }

    /// Whether the exchange `source` has this binding.
    pub fn has_binding(
        &self,
        source: &str,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
    ) -> bool {
        let key = BindingKey {
            destination,
            routing_key,
            arguments: encode_arguments(arguments),
        };
        let topology = self.read();
        topology
            .exchanges
            .get(source.as_bytes())
            .is_some_and(|exchange| exchange.bindings().any(|binding| *binding == key))
    }
}

/// A binding's names, made to share the allocation of the queue's own name: the destination of
/// a binding to a queue is that name, and so is the binding key of the usual direct binding (a
/// queue bound by its name). Each would otherwise be a copy of its own, and a second allocation
/// once the binding set and the routing index share it: ~100 bytes per binding (issue 19).
pub(super) fn share_queue_name(
    target: &Target,
    destination: Destination,
    routing_key: ShortStr,
) -> (Destination, ShortStr) {
    let Target::Queue(queue) = target else {
        return (destination, routing_key);
    };
    let routing_key = match routing_key == queue.name {
        true => queue.name.clone(),
        false => routing_key,
    };
    (Destination::Queue(queue.name.clone()), routing_key)
}
