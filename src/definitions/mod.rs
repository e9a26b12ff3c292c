//! RabbitMQ's definitions (the JSON of `rabbitmqctl export_definitions` and `GET
//! /api/definitions`, as RabbitMQ 3.10.8 writes it): the broker's users, vhosts, permissions
//! and durable-or-not topology exported to it, and imported from it.
//!
//! Owns the conversion only: [`model`] is the document, [`values`] field tables as JSON,
//! `export.rs` reads the broker (through [`Vhost::snapshot`](crate::broker::vhost::Vhost) and
//! the [`Users`] handle), `plan.rs` checks a whole document against the broker before anything
//! changes, `apply.rs` carries a checked plan out through the vhosts' own declare and bind calls
//! (so durable things are saved exactly as an AMQP declaration saves them) and
//! [`Users::replace_all`]. It must never touch a socket or a file itself, never lock a queue,
//! and never change anything when a document fails its checks.

pub mod accounts;
mod apply;
mod export;
pub mod model;
pub mod overlay;
mod plan;
pub mod users;
pub mod values;

use std::fmt;

use crate::broker::Broker;
use crate::server::Users;

pub use model::{
    BindingDef, Definitions, ExchangeDef, PermissionDef, QueueDef, TopicPermissionDef, UserDef,
    VhostDef,
};

/// The RabbitMQ version Warren's exports claim to be (the format they follow).
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// Why a document was not imported (nothing was changed), or why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    /// Not JSON, or not the shape of a definitions document.
    #[error("malformed definitions: {0}")]
    Malformed(String),
    /// The document failed its checks; every problem found, in document order.
    #[error("invalid definitions: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Applying a checked document failed part way (a vhost or queue could not be opened on
    /// disk, or the broker changed under the import).
    #[error("import failed part way: {0}")]
    Apply(String),
}

/// Something in a document that was accepted but not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole broker: every user, vhost, permission and topic permission, and each vhost's
/// exchanges, queues and bindings (not the built-in exchanges, exclusive or server-named
/// queues).
pub fn export(broker: &Broker, users: &Users) -> Definitions {
    export::all(broker, users)
}

/// One vhost, as RabbitMQ's `GET /api/definitions/{vhost}`: its parameters (limits),
/// exchanges, queues and bindings, with no users, vhosts or permissions; `None` if there is no
/// such vhost.
pub fn export_vhost(broker: &Broker, users: &Users, vhost: &str) -> Option<Definitions> {
    export::one_vhost(broker, users, vhost)
}

/// Imports a document as RabbitMQ does: vhosts created, users added or replaced by name,
/// permissions set, exchanges and queues declared, bindings added. Everything is checked first;
/// on a problem nothing changes. Returns what was accepted but ignored.
pub fn import(
    broker: &Broker,
    users: &Users,
    defs: &Definitions,
) -> Result<Vec<Warning>, DefinitionsError> {
    let plan = plan::check(broker, users, defs)?;
    let warnings = plan.warnings.clone();
    apply::apply(broker, users, plan)?;
    for warning in &warnings {
        tracing::warn!(%warning, "definitions import");
    }
    Ok(warnings)
}

/// Reads a document.
pub fn from_json(bytes: &[u8]) -> Result<Definitions, DefinitionsError> {
    serde_json::from_slice(bytes).map_err(|e| DefinitionsError::Malformed(e.to_string()))
}

/// Writes a document (pretty-printed, as `rabbitmqctl export_definitions` does not, but
/// readable in a file).
pub fn to_json(defs: &Definitions) -> Vec<u8> {
    // Serializing plain data with string keys cannot fail.
    serde_json::to_vec_pretty(defs).unwrap_or_default()
}

#[cfg(test)]
mod tests;
