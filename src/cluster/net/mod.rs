//! The cluster port: Raft RPCs between nodes over plain TCP.
//!
//! - [`frame`]: length-prefixed frames (the length bounded), the request header (group id and
//!   RPC kind) and the reply's status byte; bodies are JSON (serde).
//! - [`client`]: openraft's `RaftNetworkFactory`/`RaftNetwork`: one connection per (group,
//!   peer), made at the first call and made again after an error, every call under a timeout.
//! - [`server`]: [`Transport`], the listener one node runs for all its groups, and the dispatch
//!   of each request to the group it names.
//!
//! Owns sockets between nodes; never touches a group's files or machine.

pub mod client;
pub mod frame;
pub mod server;

pub use server::Transport;
