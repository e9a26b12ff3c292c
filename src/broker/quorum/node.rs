//! [`Node`]: this broker as a member of a cluster (`[cluster]` in the configuration): the
//! cluster port, the metadata group ([`super::meta`]) and the place quorum queues' groups
//! start from. The broker's vhosts ask it to declare and delete quorum queues; the events of
//! the metadata group tell the broker which to open or close.
//!
//! Owns the transport and the metadata group; never touches a vhost (the broker does, on the
//! events it takes from [`Node::start`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::liveness::Liveness;
use super::meta::{Change, Command, Event, MetaMachine, QueueDefinition, Response};
use super::Quorum;
use crate::cluster::{
    GroupConfig, GroupId, NodeId, RaftGroup, StartError, Timing, Transport, WriteError,
};

/// `[cluster]`: this node's id, the address its cluster port listens on, and every node of the
/// cluster (this one too) by id with the address the others reach its cluster port at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub listen: String,
    pub peers: BTreeMap<NodeId, String>,
}

/// See the module doc.
pub struct Node {
    pub config: ClusterConfig,
    /// `data_dir/cluster`: the metadata group's directory and one per quorum queue.
    dir: PathBuf,
    transport: Transport,
    meta: RaftGroup<MetaMachine>,
    /// One queue opened at a time (by a declaration, or by an event), so a group never starts
    /// twice.
    pub opening: tokio::sync::Mutex<()>,
    /// When each peer last answered a ping.
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .finish()
    }
}

impl Node {
    /// Binds the cluster port and starts the metadata group (initialized by the lowest node
    /// id). The events of its machine come out of the receiver, those of its recovery first.
    pub async fn start(
        config: ClusterConfig,
        data_dir: &std::path::Path,
    ) -> Result<(Arc<Node>, mpsc::UnboundedReceiver<Event>), StartError> {
        let dir = data_dir.join("cluster");
        let meta_group = GroupId::new("meta").ok_or_else(|| StartError::Raft {
            group: GroupId::new("?").expect("a constant name"),
            why: "no group id".into(),
        })?;
        let transport =
            Transport::bind(&config.listen)
                .await
                .map_err(|source| StartError::Storage {
                    group: meta_group.clone(),
                    source,
                })?;
        let (events, received) = mpsc::unbounded_channel();
        let group = GroupConfig {
            node: config.node_id,
            group: meta_group,
            dir: dir.join("meta"),
            peers: config.peers.clone(),
            timing: Timing::default(),
        };
        let meta = RaftGroup::start(group, MetaMachine::new(events), &transport).await?;
        meta.initialize().await?;
        // What the metadata log held as committed is applied again before the broker follows
        // it, so that it finds every change of the recovery in its events at once.
        if !meta.replayed(std::time::Duration::from_secs(10)).await {
            tracing::warn!("the cluster's metadata was not applied again within 10 s");
        }
        let node = Arc::new(Node {
            config,
            dir,
            transport,
            meta,
            opening: tokio::sync::Mutex::new(()),
            liveness: Arc::new(Liveness::new()),
        });
        tokio::spawn(ping_peers(Arc::downgrade(&node)));
        Ok((node, received))
    }

    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The nodes of a new queue's group: this one first, then the next ids round the ring of
    /// the cluster's nodes (the metadata group's voters), `size` in all (every node when
    /// `None`).
    pub fn members(&self, size: Option<usize>) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.nodes().keys().copied().collect();
        let at = ids.iter().position(|id| *id == self.id()).unwrap_or(0);
        let size = size.unwrap_or(ids.len()).clamp(1, ids.len());
        (0..size).map(|i| ids[(at + i) % ids.len()]).collect()
    }

    /// Declares a quorum queue in the cluster: the definition that stands (the given one, or
    /// the one declared before under that name).
    pub async fn declare(
        &self,
        definition: QueueDefinition,
    ) -> Result<QueueDefinition, WriteError> {
        match self.meta.write(Command::Declare(definition)).await? {
            Response::Declared(definition) => Ok(definition),
            _ => Err(WriteError::Stopped("unexpected answer".into())),
        }
    }

    /// Deletes a quorum queue in the cluster; false if there was none.
    pub async fn delete(&self, vhost: &str, name: &str) -> Result<bool, WriteError> {
        let command = Command::Delete {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
        };
        match self.meta.write(command).await? {
            Response::Deleted(deleted) => Ok(deleted),
            _ => Err(WriteError::Stopped("unexpected answer".into())),
        }
    }

    /// The cluster's nodes (the metadata group's voters) by id, with their cluster addresses:
    /// the configuration's peers, and those joined since, less those that left.
    pub fn nodes(&self) -> BTreeMap<NodeId, String> {
        match self.meta.voters() {
            voters if voters.is_empty() => self.config.peers.clone(),
            voters => voters,
        }
    }

    /// `warren ctl cluster join`: makes node `id` (at `address`) a voter of the metadata group.
    /// Quorum queues declared after this may place replicas on it.
    pub async fn join(&self, id: NodeId, address: String) -> Result<(), WriteError> {
        let mut voters = self.nodes();
        voters.insert(id, address);
        self.meta.set_voters(voters).await
    }

    /// `warren ctl cluster leave`: removes node `id` from the metadata group (the caller takes
    /// it out of each quorum queue's group).
    pub async fn leave(&self, id: NodeId) -> Result<(), WriteError> {
        let mut voters = self.nodes();
        if voters.remove(&id).is_none() {
            return Ok(());
        }
        self.meta.set_voters(voters).await
    }

    /// Writes a change of the routing topology, for every node to apply.
    pub async fn change(&self, change: Change) -> Result<(), WriteError> {
        self.meta.write(Command::Change(change)).await.map(|_| ())
    }

    /// The account changes that bring a node to what the metadata group holds.
    pub fn accounts(&self) -> Vec<super::accounts::AccountChange> {
        self.meta.read(|m| m.accounts())
    }

    /// The queue's definition as this node's replica has it.
    pub fn definition(&self, vhost: &str, name: &str) -> Option<QueueDefinition> {
        self.meta.read(|m| m.queue(vhost, name).cloned())
    }

    /// Starts this node's replica of a queue's group (None when this node is not a member).
    pub async fn open(
        &self,
        definition: &QueueDefinition,
        limits: super::limits::Limits,
    ) -> Result<Option<Arc<Quorum>>, StartError> {
        if !definition.members.contains(&self.id()) {
            return Ok(None);
        }
        let name = format!("q{}", definition.serial);
        let group = GroupId::new(name.clone()).ok_or_else(|| StartError::Raft {
            group: GroupId::new("?").expect("a constant name"),
            why: "no group id".into(),
        })?;
        let nodes = self.nodes();
        let peers = definition
            .members
            .iter()
            .filter_map(|id| Some((*id, nodes.get(id)?.clone())))
            .collect();
        let config = GroupConfig {
            node: self.id(),
            group,
            dir: self.dir.join("queues").join(&name),
            peers,
            // The log keeps its entries in memory until a snapshot lets it drop them: a
            // queue snapshots after 8 MiB of commands (or as much as its state weighs, so
            // that a long backlog is not written out again and again).
            timing: Timing {
                snapshot_bytes: 8 << 20,
                keep_after_snapshot: 64,
                ..Timing::default()
            },
        };
        let label = format!("{}/{}", definition.vhost, definition.name);
        Quorum::start(
            label,
            definition.serial,
            config,
            limits,
            &self.transport,
            Arc::clone(&self.liveness),
        )
        .await
        .map(Some)
    }

    /// Removes a deleted queue's directory (its group stopped first).
    pub fn remove_files(&self, serial: u64) {
        let dir = self.dir.join("queues").join(format!("q{serial}"));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "quorum queue files not removed");
            }
        }
    }

    /// The metadata group as this node sees it.
    pub fn status(&self) -> crate::cluster::Status {
        self.meta.status()
    }
}

/// Pings every peer once a second (through the metadata group's port), noting who answers.
async fn ping_peers(node: std::sync::Weak<Node>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let mut pings = tokio::task::JoinSet::new();
        for (id, addr) in &node.nodes() {
            if *id == node.id() {
                continue;
            }
            let (id, addr, pinger) = (*id, addr.clone(), Arc::clone(&node));
            pings.spawn(async move { (id, pinger.meta.ping(&addr, EVERY).await) });
        }
        while let Some(answer) = pings.join_next().await {
            if let Ok((id, true)) = answer {
                node.liveness.heard(id);
            }
        }
    }
}
