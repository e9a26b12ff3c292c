//! Quorum queues in a vhost (`x-queue-type: quorum` on a node with `[cluster]`, see
//! `broker/quorum`): their declaration (written to the cluster's metadata group, then opened
//! here), opening one as the metadata group's events ask, and closing a deleted one. Their
//! definitions live in the metadata group, never in the vhost's definitions log.
//!
//! A declaration or deletion waits for the metadata write on the connection's worker thread
//! (`block_in_place`): rare, and bounded by the write timeout.

use std::sync::Arc;

use warren_protocol::method::ShortStr;
use warren_protocol::table::decode_field_table;
use warren_protocol::types::FieldTable;

use super::replicated::table_bytes;
use super::{consumer_timeout, declared, QueueDeclare, QueueDeclared, Vhost};
use crate::broker::queue::{Queue, QueueOptions};
use crate::broker::quorum::limits::Limits;
use crate::broker::quorum::meta::QueueDefinition;
use crate::broker::quorum::{block, Node};
use crate::broker::values::integer;
use crate::error::Error;

/// Whether a declaration asks for a quorum queue.
pub fn is_quorum(arguments: &FieldTable) -> bool {
    matches!(
        arguments.inner().get("x-queue-type"),
        Some(value) if crate::broker::values::text(value).is_some_and(|t| t == b"quorum")
    )
}

impl Vhost {
    /// Makes this vhost's quorum queues replicated ones, in `node`'s cluster.
    pub fn set_cluster(&self, node: Arc<Node>) {
        let _ = self.cluster.set(node);
    }

    /// The cluster node, when this declaration is of a quorum queue on a cluster.
    pub(super) fn quorum_node(&self, arguments: &FieldTable) -> Option<Arc<Node>> {
        self.cluster.get().filter(|_| is_quorum(arguments)).cloned()
    }

    /// `queue.declare` of a quorum queue on a cluster: RabbitMQ's checks, the definition
    /// written to the metadata group (or the one there already), then this node's replica.
    pub(super) fn declare_quorum(
        &self,
        node: &Arc<Node>,
        declare: QueueDeclare,
    ) -> Result<QueueDeclared, Error> {
        self.check_arguments(&declare)?;
        self.check_quorum(&declare)?;
        let existing = self.read().queues.get(&declare.name).cloned();
        if let Some(queue) = existing {
            self.check_equivalent(&declare, None, &queue)?;
            if let Some(quorum) = queue.quorum() {
                quorum.touch();
            }
            return Ok(declared(&queue));
        }
        if !declare.server_named && declare.name.as_str().starts_with("amq.") {
            return Err(Error::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        let size = match declare.arguments.inner().get("x-quorum-initial-group-size") {
            None => None,
            Some(value) => Some(
                integer(value)
                    .filter(|n| *n > 0)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::PreconditionFailed(format!(
                            "invalid arg 'x-quorum-initial-group-size' for queue '{}' in vhost \
                             '{}': must be a positive integer",
                            declare.name, self.name
                        ))
                    })?,
            ),
        };
        let definition = QueueDefinition {
            vhost: self.name.clone(),
            name: declare.name.as_str().to_owned(),
            arguments: table_bytes(&declare.arguments),
            members: node.members(size),
            serial: 0,
        };
        let definition = block(node.declare(definition)).map_err(|e| {
            Error::Internal(format!(
                "cannot declare quorum queue '{}' in vhost '{}': {e}",
                declare.name, self.name
            ))
        })?;
        let queue = block(self.open_quorum(node, &definition))?;
        self.check_equivalent(&declare, None, &queue)?;
        Ok(declared(&queue))
    }

    /// RabbitMQ's checks of a quorum queue's properties.
    fn check_quorum(&self, declare: &QueueDeclare) -> Result<(), Error> {
        let property = if !declare.durable {
            Some("non-durable")
        } else if declare.exclusive {
            Some("exclusive-owner")
        } else if declare.auto_delete {
            Some("auto-delete")
        } else {
            None
        };
        if let Some(property) = property {
            return Err(Error::PreconditionFailed(format!(
                "invalid property '{property}' for queue '{}' in vhost '{}'",
                declare.name, self.name
            )));
        }
        Limits::from_arguments(&declare.arguments)
            .map(|_| ())
            .map_err(|(arg, why)| {
                Error::PreconditionFailed(format!(
                    "invalid arg '{arg}' for queue '{}' in vhost '{}': {why}",
                    declare.name, self.name
                ))
            })
    }

    /// Opens this node's replica of a quorum queue the metadata group holds and puts the queue
    /// in the topology; the queue there already if it is open.
    pub async fn open_quorum(
        &self,
        node: &Node,
        definition: &QueueDefinition,
    ) -> Result<Arc<Queue>, Error> {
        let _one_at_a_time = node.opening.lock().await;
        let name = ShortStr::copy_from_str(&definition.name);
        let existing = self.read().queues.get(&name).cloned();
        if let Some(queue) = existing {
            if queue.quorum().is_some() {
                return Ok(queue);
            }
            return Err(Error::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' exists on this node as a classic queue",
                self.name
            )));
        }
        let arguments = decode_field_table(&definition.arguments).unwrap_or_default();
        let limits = Limits::from_arguments(&arguments).unwrap_or_default();
        let quorum = node
            .open(definition, limits)
            .await
            .map_err(|e| Error::Internal(format!("cannot open quorum queue '{name}': {e}")))?;
        let Some(quorum) = quorum else {
            return Err(Error::NotImplemented(format!(
                "quorum queue '{name}' in vhost '{}' has no replica on this node (node {}); \
                 connect to one of nodes {:?}",
                self.name,
                node.id(),
                definition.members
            )));
        };
        let options = QueueOptions {
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            consumer_timeout: consumer_timeout(&arguments),
            arguments,
        };
        let queue = Arc::new(Queue::new(name.clone(), options).with_quorum(Arc::clone(&quorum)));
        queue.attach(&self.deadlines);
        let weak = Arc::downgrade(&queue);
        quorum.on_dead_letters(Box::new(move || {
            if let Some(queue) = weak.upgrade() {
                queue.due_now();
            }
        }));
        if let Some(node) = self.cluster.get().cloned() {
            let (vhost, queue) = (self.name.clone(), definition.name.clone());
            quorum.on_expiry(Box::new(move || {
                let (node, vhost, queue) = (Arc::clone(&node), vhost.clone(), queue.clone());
                tokio::spawn(async move {
                    if let Err(e) = node.delete(&vhost, &queue).await {
                        tracing::warn!(%vhost, %queue, error = %e, "an expired quorum queue was not deleted (tried again in 10 s)");
                    }
                });
            }));
        }
        self.write().queues.insert(name, Arc::clone(&queue));
        tracing::info!(vhost = %self.name, queue = %definition.name, members = ?definition.members, "quorum queue open");
        Ok(queue)
    }

    /// `queue.delete` of a quorum queue: deleted in the metadata group (every node then closes
    /// its replica), then here.
    pub(super) fn delete_quorum(&self, node: &Arc<Node>, name: &ShortStr) -> Result<(), Error> {
        let definition = node.definition(&self.name, name.as_str());
        block(node.delete(&self.name, name.as_str())).map_err(|e| {
            Error::Internal(format!(
                "cannot delete quorum queue '{name}' in vhost '{}': {e}",
                self.name
            ))
        })?;
        if let Some(definition) = definition {
            block(self.close_quorum(node, &definition.name, definition.serial));
        }
        Ok(())
    }

    /// Closes a deleted quorum queue's replica (that of `serial`: the queue of that name here
    /// may be a newer one): out of the topology (its consumers cancelled), its group stopped
    /// and its files removed.
    pub async fn close_quorum(&self, node: &Node, name: &str, serial: u64) {
        let _one_at_a_time = node.opening.lock().await;
        let name = ShortStr::copy_from_str(name);
        let removed = {
            let mut topology = self.write();
            let quorum = topology
                .queues
                .get(&name)
                .and_then(|q| q.quorum().cloned())
                .filter(|q| q.serial == serial);
            if quorum.is_some() {
                let (consumers, _) = topology.remove_queue(&name);
                super::delete::cancel_all(consumers);
            }
            quorum
        };
        if let Some(quorum) = removed {
            quorum.stop().await;
            tracing::info!(vhost = %self.name, queue = %name, "quorum queue deleted");
        }
        node.remove_files(serial);
    }

    /// Closes every quorum queue replica of this vhost (it is being deleted).
    pub async fn close_every_quorum(&self, node: &Node) {
        let open: Vec<(ShortStr, u64)> = self
            .read()
            .queues
            .values()
            .filter_map(|q| Some((q.name.clone(), q.quorum()?.serial)))
            .collect();
        for (name, serial) in open {
            self.close_quorum(node, name.as_str(), serial).await;
        }
    }
}
