//! What a Raft group replicates: the [`Machine`] trait an application implements (its commands,
//! their responses, its state as snapshot bytes), and [`TypeConfig`], openraft's type
//! configuration built from a machine.
//!
//! Owns the names every other file of the cluster shares ([`NodeId`], [`GroupId`]). Never does
//! I/O: a machine is pure state, applied in log order on every replica.

use std::cmp::Ordering;
use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use openraft::impls::OneshotResponder;
use openraft::{BasicNode, Entry, RaftTypeConfig, TokioRuntime};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A node of the cluster, as the configuration numbers it.
pub type NodeId = u64;

/// The state a Raft group replicates. Every replica applies the same commands in the same order,
/// so `apply` must be deterministic: no clocks, no randomness, no I/O.
pub trait Machine: Send + Sync + 'static {
    /// A change, written through the leader and carried in the log.
    type Command: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static;
    /// What applying a command returns to the writer (on the leader).
    type Response: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Response;
    /// The whole state as bytes, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's bytes. Errs (and leaves the state as it was)
    /// when the bytes are not a snapshot this machine wrote.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// About how many bytes the state holds, which is what a snapshot costs: the group builds
    /// one once the log has grown by at least as much since the last (so that snapshots cost a
    /// bounded share of what is logged, whatever the state's size).
    fn weight(&self) -> u64 {
        0
    }

    /// About how many bytes `command` adds to the log.
    fn command_weight(_command: &Self::Command) -> u64 {
        256
    }
}

/// Names one Raft group among those a node runs (`"meta"`, later one per quorum queue). It is
/// sent in every request, so that one listener serves them all; at most 255 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(String);

impl GroupId {
    pub const MAX_LEN: usize = 255;

    /// None when the name is empty or longer than [`GroupId::MAX_LEN`] bytes.
    pub fn new(name: impl Into<String>) -> Option<GroupId> {
        let name = name.into();
        (!name.is_empty() && name.len() <= Self::MAX_LEN).then_some(GroupId(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// openraft's type configuration for a machine `M`: `u64` node ids, nodes known by their cluster
/// address ([`BasicNode`]), snapshots as bytes in memory. A response is `None` for the entries
/// Raft writes itself (blank and membership entries).
pub struct TypeConfig<M>(PhantomData<fn() -> M>);

impl<M: Machine> RaftTypeConfig for TypeConfig<M> {
    type D = M::Command;
    type R = Option<M::Response>;
    type NodeId = NodeId;
    type Node = BasicNode;
    type Entry = Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = TokioRuntime;
    type Responder = OneshotResponder<Self>;
}

// openraft wants the configuration type to be a plain value type; derive would put the bounds on
// `M`, which is not one.
impl<M> fmt::Debug for TypeConfig<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}
impl<M> Clone for TypeConfig<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for TypeConfig<M> {}
impl<M> Default for TypeConfig<M> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<M> PartialEq for TypeConfig<M> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<M> Eq for TypeConfig<M> {}
impl<M> PartialOrd for TypeConfig<M> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for TypeConfig<M> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}
