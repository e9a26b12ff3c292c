//! [`RaftGroup`]: one Raft group on this node, over a [`Machine`]. Start it on the node's
//! [`Transport`] with its directory and the static peer list, [`RaftGroup::initialize`] it (only
//! the lowest node id does anything), then [`RaftGroup::write`] commands through the leader; a
//! follower answers [`WriteError::NotLeader`] with the leader's id and address so the caller can
//! forward. [`RaftGroup::status`] reads openraft's metrics.
//!
//! Owns the group's openraft node; never reads the broker's configuration (the caller passes a
//! [`GroupConfig`]) and never retries a write (a timed-out write may still commit later).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};

use super::log::LogStore;
use super::machine::{GroupId, Machine, NodeId, TypeConfig};
use super::net::client::{Forwarder, Network};
use super::net::server::{Handler, Registration};
use super::net::Transport;
use super::state::MachineStore;
pub use super::write::WriteError;
use super::write::{change_voters, write_outcome};

/// Timers and thresholds of a group.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in `election` starts an election.
    pub election: (Duration, Duration),
    /// How long [`RaftGroup::write`] waits for its command to commit and apply.
    pub write_timeout: Duration,
    /// A snapshot is built once the commands applied since the last weigh this many bytes
    /// (see [`Machine::weight`]), and at least as much as the state.
    pub snapshot_bytes: u64,
    /// Entries kept in the log behind a snapshot (so a follower a little behind needs none).
    pub keep_after_snapshot: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            election: (Duration::from_millis(400), Duration::from_millis(800)),
            write_timeout: Duration::from_secs(5),
            // ~4,000 commands of the default weight.
            snapshot_bytes: 1 << 20,
            keep_after_snapshot: 1000,
        }
    }
}

/// What a group needs to start on this node.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub node: NodeId,
    pub group: GroupId,
    /// The group's own directory (log and snapshot), created if missing.
    pub dir: PathBuf,
    /// Every voter of the group, this node included: node id -> cluster address (`host:port`).
    pub peers: BTreeMap<NodeId, String>,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("raft group {group}: node {node} is not among its peers")]
    NotAPeer { group: GroupId, node: NodeId },
    #[error("raft group {group}: timing: {why}")]
    Timing { group: GroupId, why: String },
    #[error("raft group {group}: {source}")]
    Storage {
        group: GroupId,
        source: std::io::Error,
    },
    #[error("raft group {group} is already running on this node")]
    AlreadyRunning { group: GroupId },
    #[error("raft group {group}: {why}")]
    Raft { group: GroupId, why: String },
}

/// A node's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Learner,
    Follower,
    Candidate,
    Leader,
    Shutdown,
}

/// A group as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// The last entry the newest snapshot covers.
    pub snapshot: Option<u64>,
    /// The last entry removed from the log.
    pub purged: Option<u64>,
}

/// One Raft group on this node; see the module doc.
pub struct RaftGroup<M: Machine> {
    raft: Raft<TypeConfig<M>>,
    machine: MachineStore<M>,
    config: GroupConfig,
    registration: Registration,
    /// Connections to the leader for forwarded writes.
    forwarder: Forwarder,
    /// What the log held as committed at start (applied again as the group starts).
    committed_at_start: Option<u64>,
}

impl<M: Machine> RaftGroup<M> {
    /// Opens the group's directory (log, snapshot: `machine` is restored from it), starts its
    /// openraft node and registers it on `transport`.
    pub async fn start(
        config: GroupConfig,
        machine: M,
        transport: &Transport,
    ) -> Result<RaftGroup<M>, StartError> {
        let group = config.group.clone();
        if !config.peers.contains_key(&config.node) {
            return Err(StartError::NotAPeer {
                group,
                node: config.node,
            });
        }
        let timing = &config.timing;
        let raft_config = Config {
            cluster_name: group.to_string(),
            heartbeat_interval: timing.heartbeat.as_millis() as u64,
            election_timeout_min: timing.election.0.as_millis() as u64,
            election_timeout_max: timing.election.1.as_millis() as u64,
            // Built when `snapshot_due` says (see `watch_snapshots`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: timing.keep_after_snapshot,
            // Chunks stay far below the frame bound even as JSON arrays of numbers.
            snapshot_max_chunk_size: 1 << 20,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Timing {
            group: group.clone(),
            why: e.to_string(),
        })?;
        let storage = |source| StartError::Storage {
            group: group.clone(),
            source,
        };
        let log = LogStore::<TypeConfig<M>>::open(&config.dir).map_err(storage)?;
        let committed_at_start = log.committed_index();
        let store = MachineStore::open(&config.dir, machine).map_err(storage)?;
        let machine = store.reader();
        let watched = store.reader();
        let network = Network::<M>::new(config.node, group.clone());
        let raft = Raft::new(config.node, Arc::new(raft_config), network, log, store)
            .await
            .map_err(|e| StartError::Raft {
                group: group.clone(),
                why: e.to_string(),
            })?;
        if !transport.register(group.clone(), Arc::new(raft.clone()) as Arc<dyn Handler>) {
            let _ = raft.shutdown().await;
            return Err(StartError::AlreadyRunning { group });
        }
        tracing::info!(%group, node = config.node, dir = %config.dir.display(), "raft group started");
        tokio::spawn(watch_snapshots(
            raft.clone(),
            watched,
            config.timing.snapshot_bytes,
        ));
        let registration = transport.registration(group.clone());
        Ok(RaftGroup {
            raft,
            machine,
            config,
            registration,
            forwarder: Forwarder::new(group),
            committed_at_start,
        })
    }

    /// Waits (up to `within`) until this replica has applied again what its log held as
    /// committed when it started; false if it has not by then.
    pub async fn replayed(&self, within: Duration) -> bool {
        let Some(index) = self.committed_at_start else {
            return true;
        };
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "replay")
            .await
            .is_ok()
    }

    /// Makes the peer list the group's first membership, on the lowest node id only; elsewhere,
    /// and where the group has a log already, it does nothing. True when this call did it.
    pub async fn initialize(&self) -> Result<bool, StartError> {
        if self.config.peers.keys().next() != Some(&self.config.node) {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(StartError::Raft {
                group: self.config.group.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// Commits `command` and returns what applying it returned. A follower forwards it to the
    /// leader it knows of (and waits for one while there is none), until the write timeout. A
    /// forwarded write whose answer was lost is sent again: a command may then apply twice.
    pub async fn write(&self, command: M::Command) -> Result<M::Response, WriteError> {
        let within = self.config.timing.write_timeout;
        match tokio::time::timeout(within, self.write_through_leader(command)).await {
            Err(_) => Err(WriteError::Timeout(within)),
            Ok(written) => written,
        }
    }

    /// On the leader: hands `command` to the log now and returns what waits for its commit, so
    /// that the caller can submit the next before this one commits (the log keeps their
    /// order). Elsewhere the command comes back, for [`RaftGroup::write`].
    pub async fn submit(&self, command: M::Command) -> Result<Submitted<M::Response>, M::Command> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return Err(command);
        }
        let peers = self.config.peers.clone();
        let within = self.config.timing.write_timeout;
        let submitted = self.raft.client_write_ff(command).await;
        Ok(Box::pin(async move {
            let receiver = submitted.map_err(|e| WriteError::Stopped(e.to_string()))?;
            let answer = match tokio::time::timeout(within, receiver).await {
                Err(_) => return Err(WriteError::Timeout(within)),
                Ok(Err(_)) => return Err(WriteError::Stopped("the write was dropped".into())),
                Ok(Ok(answer)) => answer,
            };
            write_outcome::<M>(answer.map_err(RaftError::APIError), &peers)
        }))
    }

    async fn write_through_leader(&self, command: M::Command) -> Result<M::Response, WriteError> {
        const NO_LEADER_YET: Duration = Duration::from_millis(20);
        loop {
            let written = self.raft.client_write(command.clone()).await;
            let (leader, address) = match write_outcome::<M>(written, &self.config.peers) {
                Err(WriteError::NotLeader {
                    leader: Some(leader),
                    address: Some(address),
                }) if leader != self.config.node => (leader, address),
                Err(WriteError::NotLeader { .. }) => {
                    tokio::time::sleep(NO_LEADER_YET).await;
                    continue;
                }
                outcome => return outcome,
            };
            let body = serde_json::to_vec(&command)
                .map_err(|e| WriteError::Stopped(format!("command not encoded: {e}")))?;
            // A leader cut off from this node answers nothing: give up on it as soon as this
            // node hears of another (the write may then apply twice, as after a lost answer).
            let mut metrics = self.raft.metrics();
            let moved_on = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != leader));
            let answer = tokio::select! {
                answer = self.forwarder.call(&address, &body) => answer,
                _ = moved_on => {
                    tracing::debug!(group = %self.config.group, "the leader changed during a forwarded write; sending it again");
                    continue;
                }
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(group = %self.config.group, %address, error = %e, "forwarded write failed; trying again");
                    tokio::time::sleep(NO_LEADER_YET).await;
                    continue;
                }
            };
            match serde_json::from_slice::<Result<M::Response, WriteError>>(&answer) {
                Ok(Err(WriteError::NotLeader { .. })) => tokio::time::sleep(NO_LEADER_YET).await,
                Ok(outcome) => return outcome,
                Err(e) => return Err(WriteError::Stopped(format!("leader's answer: {e}"))),
            }
        }
    }

    /// The group's voters now (id -> cluster address), as this node knows them.
    pub fn voters(&self) -> BTreeMap<NodeId, String> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// Makes `voters` (id -> cluster address) the group's voters, through its leader: a new
    /// node is added as a learner first (and caught up), then the voter set changes. Waits while
    /// there is no leader, until the write timeout.
    pub async fn set_voters(&self, voters: BTreeMap<NodeId, String>) -> Result<(), WriteError> {
        let within = self.config.timing.write_timeout;
        let change = async {
            loop {
                let leader = self.leader();
                let outcome = match leader {
                    Some((id, address)) if id != self.config.node => {
                        let body = serde_json::to_vec(&voters)
                            .map_err(|e| WriteError::Stopped(e.to_string()))?;
                        match self.forwarder.membership(&address, &body).await {
                            Ok(answer) => serde_json::from_slice::<Result<(), WriteError>>(&answer)
                                .unwrap_or_else(|e| Err(WriteError::Stopped(e.to_string()))),
                            Err(_) => Err(WriteError::NotLeader {
                                leader: None,
                                address: None,
                            }),
                        }
                    }
                    _ => change_voters::<M>(&self.raft, &voters).await,
                };
                match outcome {
                    Err(WriteError::NotLeader { .. }) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    outcome => return outcome,
                }
            }
        };
        // Catching a learner up may take longer than a write: twice the write timeout.
        match tokio::time::timeout(within * 2, change).await {
            Err(_) => Err(WriteError::Timeout(within * 2)),
            Ok(outcome) => outcome,
        }
    }

    /// Whether the node at `addr` answers a ping within `within`.
    pub async fn ping(&self, addr: &str, within: Duration) -> bool {
        self.forwarder.ping(addr, within).await
    }

    /// The leader this node knows of, with its cluster address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let leader = self.raft.metrics().borrow().current_leader?;
        Some((
            leader,
            self.config.peers.get(&leader).cloned().unwrap_or_default(),
        ))
    }

    pub fn status(&self) -> Status {
        let metrics = self.raft.metrics().borrow().clone();
        let role = match metrics.state {
            ServerState::Learner => Role::Learner,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Leader => Role::Leader,
            ServerState::Shutdown => Role::Shutdown,
        };
        Status {
            node: metrics.id,
            role,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot: metrics.snapshot.map(|id| id.index),
            purged: metrics.purged.map(|id| id.index),
        }
    }

    /// Reads this replica's machine (it may lag the leader's).
    pub fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        self.machine.read(f)
    }

    /// Builds a snapshot now (the group does it by itself, see `watch_snapshots`).
    pub async fn snapshot(&self) -> Result<(), WriteError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| WriteError::Stopped(e.to_string()))
    }

    /// [`RaftGroup::shutdown`] through a shared handle (the group is useless after it).
    pub async fn stop(&self) {
        self.registration.remove();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.config.group, error = %e, "raft group did not stop cleanly");
        }
    }

    /// Leaves the transport and stops the openraft node; its files stay for a restart.
    pub async fn shutdown(self) {
        self.registration.remove();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.config.group, error = %e, "raft group did not stop cleanly");
        }
        tracing::info!(group = %self.config.group, node = self.config.node, "raft group stopped");
    }
}

/// What waits for a submitted command's commit (see [`RaftGroup::submit`]).
pub type Submitted<R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, WriteError>> + Send>>;

/// Asks for a snapshot whenever one is due (see [`MachineStore::snapshot_due`]), until the
/// group stops.
async fn watch_snapshots<M: Machine>(
    raft: Raft<TypeConfig<M>>,
    machine: MachineStore<M>,
    least: u64,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = raft.metrics();
    loop {
        ticker.tick().await;
        // The group's core has stopped (its metrics have no sender any more).
        if metrics.has_changed().is_err() {
            return;
        }
        if machine.snapshot_due(least) && raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}
