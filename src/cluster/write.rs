//! What becomes of a client write, on this node or forwarded to the leader: [`WriteError`] (also
//! the answer a leader sends back over the cluster port), openraft's answer turned into it
//! ([`write_outcome`]), and a change of a group's voters on the leader ([`change_voters`]).
//! Shared by the group's handle (`raft.rs`) and the listener that serves forwarded requests
//! (`net/server.rs`).
//!
//! Owns no state; never sends anything over the network.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};

use super::machine::{Machine, NodeId, TypeConfig};

/// Why a write was not applied; also the answer a leader sends back to a forwarded write.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// This node is not the leader; `leader` (with its cluster address) is the one it knows of.
    #[error("not the leader; the leader is {}", leader.map_or("unknown".into(), |l| format!("node {l} at {}", address.as_deref().unwrap_or("?"))))]
    NotLeader {
        leader: Option<NodeId>,
        address: Option<String>,
    },
    /// Not committed and applied in time (no quorum, or a slow one). It may still commit later.
    #[error("not committed within {0:?}")]
    Timeout(Duration),
    /// The group has stopped (shut down, or a storage failure).
    #[error("raft group stopped: {0}")]
    Stopped(String),
}

/// What openraft's `client_write` returns.
pub(crate) type Written<M> = Result<
    openraft::raft::ClientWriteResponse<TypeConfig<M>>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

/// What a client write came to, as [`RaftGroup::write`] reports it (and a leader answers a
/// forwarded one).
pub(crate) fn write_outcome<M: Machine>(
    written: Written<M>,
    peers: &BTreeMap<NodeId, String>,
) -> Result<M::Response, WriteError> {
    match written {
        Ok(response) => response
            .data
            .ok_or_else(|| WriteError::Stopped("a command applied to nothing".into())),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            let address = to
                .leader_node
                .map(|node| node.addr)
                .or_else(|| to.leader_id.and_then(|id| peers.get(&id).cloned()));
            Err(WriteError::NotLeader {
                leader: to.leader_id,
                address,
            })
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(WriteError::Stopped(e.to_string()))
        }
        Err(RaftError::Fatal(e)) => Err(WriteError::Stopped(e.to_string())),
    }
}

/// On the leader: adds the nodes of `voters` it does not have as learners (waiting for each to
/// catch up), then makes `voters` the voter set. A follower answers `NotLeader`.
pub(crate) async fn change_voters<M: Machine>(
    raft: &Raft<TypeConfig<M>>,
    voters: &BTreeMap<NodeId, String>,
) -> Result<(), WriteError> {
    let known: BTreeMap<NodeId, BasicNode> = {
        let metrics = raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect()
    };
    let no_peers = BTreeMap::new();
    for (id, address) in voters {
        if !known.contains_key(id) {
            let added = raft.add_learner(*id, BasicNode::new(address), true).await;
            membership_outcome::<M>(added, &no_peers)?;
        }
    }
    let ids: std::collections::BTreeSet<NodeId> = voters.keys().copied().collect();
    let changed = raft.change_membership(ids, false).await;
    membership_outcome::<M>(changed, &no_peers)
}

fn membership_outcome<M: Machine>(
    written: Written<M>,
    peers: &BTreeMap<NodeId, String>,
) -> Result<(), WriteError> {
    match written {
        Ok(_) => Ok(()),
        Err(e) => match write_outcome::<M>(Err(e), peers) {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    }
}
