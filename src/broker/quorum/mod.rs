//! Quorum queues (`x-queue-type: quorum` on a node with `[cluster]`, issue 22): each is a Raft
//! group over the cluster's nodes, as RabbitMQ's quorum queues are Ra groups.
//!
//! - [`machine`]: a queue's replicated state: messages, consumers, deliveries; [`commands`],
//!   what its log holds; [`limits`], the limits it applies.
//! - [`queue`]: [`Quorum`], a queue on this node: its group, its writer and sender tasks.
//! - [`meta`]: the cluster-wide metadata group: which quorum queues exist, exchanges,
//!   bindings, and ([`accounts`]) vhosts, users and permissions.
//! - [`node`]: [`Node`], this broker in its cluster: the cluster port, the metadata group.
//!
//! Owns the replicated side of quorum queues; never takes the topology lock (the vhost calls
//! in, `broker/vhost/quorum.rs`) and never touches sockets but the cluster port's.

pub mod accounts;
pub mod commands;
pub mod limits;
pub mod liveness;
pub mod machine;
pub mod meta;
pub mod node;
pub mod queue;

pub use node::{ClusterConfig, Node};
pub use queue::Quorum;

/// Runs a cluster write to its end on this worker thread, for the broker's synchronous callers
/// (a declaration, a `basic.get`, a purge): tokio moves the thread's other tasks elsewhere
/// meanwhile. The write's own timeout bounds the wait.
pub fn block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}
