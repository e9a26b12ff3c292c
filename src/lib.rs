//! Warren: an AMQP 0-9-1 message broker.
//!
//! Layers (see ARCHITECTURE.md), top to bottom: [`config`] reads, checks and applies the TOML
//! configuration file; [`server`] owns sockets and connection tasks and speaks the protocol
//! through the `warren-protocol` codec; [`broker`] is the model (vhosts, exchanges, queues,
//! consumers), with no sockets; [`store`] keeps bytes in files (queue logs, group commit,
//! definitions), with no AMQP; [`error`] maps every failure to an AMQP reply code in one place.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod definitions;
pub mod error;
pub mod management;
pub mod server;
pub mod store;

pub use server::{Server, ServerOptions, UnackedTimeoutAction};
