//! Carrying out a checked [`Plan`](super::plan::Plan), in RabbitMQ's order: vhosts, their
//! limits, users and permissions, exchanges, queues, bindings. Declarations go through the
//! vhosts' own calls, as a connection's would (durable things are saved by them), with the
//! connection id no connection has. A failure here (a vhost or queue log that cannot be
//! opened, or a change made meanwhile by a client) stops the import where it is.

use super::plan::Plan;
use super::DefinitionsError;
use crate::broker::Broker;
use crate::config::apply::CONFIG_CONNECTION;
use crate::server::Users;

/// The connection id imports declare with (no client connection has it).
const IMPORT_CONNECTION: u64 = CONFIG_CONNECTION;

pub fn apply(broker: &Broker, users: &Users, plan: Plan) -> Result<(), DefinitionsError> {
    let failed = |e: String| DefinitionsError::Apply(e);
    for name in &plan.new_vhosts {
        broker
            .add_vhost(name)
            .map_err(|e| failed(format!("cannot create vhost '{name}': {e}")))?;
    }
    let vhost = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| failed(format!("vhost '{name}' was removed during the import")))
    };
    for (name, limits) in &plan.limits {
        vhost(name)?.set_limits(*limits);
    }
    if let Some((list, permissions, topics)) = plan.users {
        users.replace_all(list, permissions, topics);
    }
    for (name, declare) in plan.exchanges {
        let exchange = declare.name.clone();
        vhost(&name)?
            .declare_exchange(declare)
            .map_err(|e| failed(format!("exchange '{exchange}' in vhost '{name}': {e}")))?;
    }
    for (name, declare) in plan.queues {
        let queue = declare.name.clone();
        vhost(&name)?
            .declare_queue(declare, IMPORT_CONNECTION)
            .map_err(|e| failed(format!("queue '{queue}' in vhost '{name}': {e}")))?;
    }
    for b in plan.bindings {
        vhost(&b.vhost)?
            .bind(
                &b.source,
                b.destination,
                b.routing_key,
                &b.arguments,
                IMPORT_CONNECTION,
            )
            .map_err(|e| {
                failed(format!(
                    "binding from exchange '{}' in vhost '{}': {e}",
                    b.source, b.vhost
                ))
            })?;
    }
    tracing::info!(vhosts = plan.new_vhosts.len(), "definitions imported");
    Ok(())
}
