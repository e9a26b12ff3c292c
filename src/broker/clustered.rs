//! The broker in a cluster (`[cluster]`): joining starts this node's [`Node`] (cluster port,
//! metadata group) and gives it to every vhost; following it ([`Broker::follow_cluster`]) runs
//! the task that applies the metadata group's events in their order: quorum queues opened and
//! closed, exchanges and bindings changed, vhosts created and deleted (those of its recovery
//! first, so that a restarted node opens every quorum queue it has a replica of). What an
//! account change does to users and permissions is the follower's [`AccountSink`].
//!
//! Owns that task; never handles a queue's messages and never changes a user.

use std::path::Path;
use std::sync::{Arc, Weak};

use super::quorum::accounts::AccountChange;
use super::quorum::meta::{Change, Event};
use super::quorum::{ClusterConfig, Node};
use super::Broker;

/// What applies an account change to the users and permissions (and records it), on every
/// node, after the broker made its part (a vhost created or deleted).
pub type AccountSink = Box<dyn Fn(&AccountChange) + Send + Sync>;

impl Broker {
    /// The cluster this node joined, if any.
    pub fn cluster(&self) -> Option<Arc<Node>> {
        self.cluster.get().cloned()
    }

    /// Joins the cluster `config` describes; the node, for status pages. The metadata group's
    /// events wait for [`Broker::follow_cluster`].
    pub async fn join_cluster(
        self: &Arc<Self>,
        config: ClusterConfig,
        data_dir: &Path,
    ) -> std::io::Result<Arc<Node>> {
        let (node, events) = Node::start(config, data_dir)
            .await
            .map_err(std::io::Error::other)?;
        let _ = self.cluster.set(Arc::clone(&node));
        for vhost in Broker::all(&self.vhosts) {
            vhost.set_cluster(Arc::clone(&node));
        }
        *self.cluster_events.lock() = Some(events);
        tracing::info!(node = node.id(), peers = ?node.config.peers, "joined the cluster");
        Ok(node)
    }

    /// Starts applying the metadata group's events (nothing without a cluster, or the second
    /// time): once this node's own accounts are in place, so that the cluster's changes come
    /// over them. The accounts the events of the recovery hold are applied here and now, as
    /// they stand at their end (a user deleted since is never back for a moment), and those
    /// events skipped.
    pub fn follow_cluster(self: &Arc<Self>, accounts: AccountSink) {
        let (Some(node), Some(mut events)) = (self.cluster(), self.cluster_events.lock().take())
        else {
            return;
        };
        let recovered = events.len();
        for change in node.accounts() {
            match &change {
                AccountChange::PutVhost(name) => self.open_vhost(name),
                AccountChange::DeleteVhost(name) => drop(self.remove_vhost(name)),
                _ => {}
            }
            accounts(&change);
        }
        let broker: Weak<Broker> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(event) = events.recv().await {
                seen += 1;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                if seen <= recovered && matches!(event, Event::Changed(Change::Account(_))) {
                    continue;
                }
                apply(&broker, &node, event, &accounts).await;
            }
        });
    }

    /// Opens a vhost the cluster created.
    fn open_vhost(&self, name: &str) {
        if let Err(e) = self.add_vhost(name) {
            tracing::error!(vhost = %name, error = %e, "cannot open a vhost the cluster created");
        }
    }

    /// Deletes the vhost `name` on this node, its quorum queue replicas closed first; false if
    /// there was none.
    pub async fn delete_vhost(&self, name: &str) -> bool {
        let Some(vhost) = self.vhost(name) else {
            return false;
        };
        if let Some(node) = self.cluster() {
            vhost.close_every_quorum(&node).await;
        }
        self.remove_vhost(name).is_some()
    }
}

async fn apply(broker: &Broker, node: &Node, event: Event, accounts: &AccountSink) {
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
                vhost
                    .close_quorum(node, &definition.name, definition.serial)
                    .await;
            }
        }
        Event::Changed(Change::Account(change)) => {
            match &change {
                AccountChange::PutVhost(name) => broker.open_vhost(name),
                AccountChange::DeleteVhost(name) => {
                    broker.delete_vhost(name).await;
                }
                _ => {}
            }
            accounts(&change);
        }
        Event::Changed(change) => {
            let Some(vhost) = change.vhost().and_then(|name| broker.vhost(name)) else {
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
