//! Warren: an AMQP 0-9-1 message broker.
//!
//! Layers (see ARCHITECTURE.md): [`server`] owns sockets and connection tasks and speaks the
//! protocol through the `warren-protocol` codec; [`error`] maps every failure to an AMQP reply code
//! in one place; [`config`] reads, checks and applies the TOML configuration file.

pub mod broker;
pub mod config;
pub mod error;
pub mod server;
pub mod store;

pub use server::{Server, ServerOptions, UnackedTimeoutAction};
