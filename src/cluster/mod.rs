//! The cluster's replication foundation (issue 22): Raft groups on openraft.
//!
//! A [`RaftGroup`] is one Raft group over the cluster's nodes, generic over a [`Machine`] (the
//! application's commands and state): the broker will run one for the metadata and, later, one
//! per quorum queue. Each group keeps its vote and log in a directory of its own ([`log`]), its
//! machine's snapshots beside them ([`state`]), and talks to its peers through the node's one
//! [`Transport`] ([`net`]): a TCP listener on the cluster port that carries every group's RPCs.
//!
//! Owns: the Raft groups of this node, their files and the cluster port. Never: AMQP, sockets
//! of clients, the broker's model or configuration — the broker drives this module, not the
//! reverse.
//!
//! - [`machine`]: the [`Machine`] trait and the openraft type configuration built from it.
//! - [`log`]: the durable log store (vote, entries, truncation, purge) over one journal file.
//! - [`state`]: the machine wrapped as openraft's state machine; `snapshot.rs` keeps its
//!   snapshot file (and the newest snapshot in memory, for followers that need it).
//! - [`net`]: length-prefixed frames over TCP, the client side and the listener.
//! - [`raft`]: the handle: start, initialize, write (forwarded from a follower), submit,
//!   leader, status, voters, shutdown.
//! - [`write`]: what becomes of a write ([`WriteError`]), shared with the listener.

mod fsio;
pub mod log;
pub mod machine;
pub mod net;
pub mod raft;
mod snapshot;
pub mod state;
pub mod write;

pub use machine::{GroupId, Machine, NodeId};
pub use net::Transport;
pub use raft::{GroupConfig, RaftGroup, Role, StartError, Status, Timing};
pub use write::WriteError;
