//! Warren: an AMQP 0-9-1 message broker.
//!
//! Layers (see ARCHITECTURE.md): [`server`] owns sockets and connection tasks and speaks the
//! protocol through the `warren-protocol` codec; [`error`] maps every failure to an AMQP reply code
//! in one place.

pub mod broker;
pub mod error;
pub mod server;
pub mod store;

pub use server::{Server, ServerOptions, UnackedTimeoutAction};
