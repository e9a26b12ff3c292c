//! The broker in a cluster (`[cluster]`): joining starts this node's [`Node`] (cluster port,
//! metadata group), gives it to every vhost, and runs the task that opens and closes quorum
//! queues as the metadata group's events say (those of its recovery first, so that a restarted
//! node opens every quorum queue it has a replica of).
//!
//! Owns that task; never handles a queue's messages.

use std::path::Path;
use std::sync::{Arc, Weak};

use super::quorum::meta::{Change, Event};
use super::quorum::{ClusterConfig, Node};
use super::Broker;

impl Broker {
    /// The cluster this node joined, if any.
    pub fn cluster(&self) -> Option<Arc<Node>> {
        self.cluster.get().cloned()
    }

    /// Joins the cluster `config` describes; the node, for status pages.
    pub async fn join_cluster(
        self: &Arc<Self>,
        config: ClusterConfig,
        data_dir: &Path,
    ) -> std::io::Result<Arc<Node>> {
        let (node, mut events) = Node::start(config, data_dir)
            .await
            .map_err(std::io::Error::other)?;
        let _ = self.cluster.set(Arc::clone(&node));
        for vhost in Broker::all(&self.vhosts) {
            vhost.set_cluster(Arc::clone(&node));
        }
        let broker: Weak<Broker> = Arc::downgrade(self);
        let on_events = Arc::clone(&node);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                apply(&broker, &on_events, event).await;
            }
        });
        tracing::info!(node = node.id(), peers = ?node.config.peers, "joined the cluster");
        Ok(node)
    }
}

async fn apply(broker: &Broker, node: &Node, event: Event) {
    match event {
        Event::Declared(definition) => {
            let Some(vhost) = broker.vhost(&definition.vhost) else {
                tracing::warn!(vhost = %definition.vhost, queue = %definition.name, "quorum queue of a vhost this node does not have");
                return;
            };
            if !definition.members.contains(&node.id()) {
                return;
            }
            if let Err(e) = vhost.open_quorum(node, &definition).await {
                tracing::warn!(vhost = %definition.vhost, queue = %definition.name, error = %e, "quorum queue not opened");
            }
        }
        Event::Deleted(definition) => {
            if let Some(vhost) = broker.vhost(&definition.vhost) {
                vhost.close_quorum(node, &definition).await;
            }
        }
        Event::Changed(change) => {
            let name = match &change {
                Change::DeclareExchange(x) => &x.vhost,
                Change::DeleteExchange { vhost, .. } => vhost,
                Change::Bind(b) | Change::Unbind(b) => &b.vhost,
            };
            let Some(vhost) = broker.vhost(name) else {
                return;
            };
            // Saving waits for the definitions log's sync: off the runtime's workers.
            let applied = tokio::task::spawn_blocking(move || vhost.apply_change(&change)).await;
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a cluster topology change was not applied here")
                }
                Err(e) => tracing::warn!(error = %e, "applying a cluster topology change failed"),
            }
        }
    }
}
