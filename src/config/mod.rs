//! The configuration file: server settings, users, vhosts, permissions and a declarative
//! topology (exchanges, queues, bindings) in TOML.
//!
//! Owns the file's model and everything done with it: reading it with spans ([`parse`]),
//! checking it whole so that every problem is reported at once with its file, line and column
//! ([`check`]), turning it into [`ServerOptions`] ([`settings`]), applying the topology to the
//! broker at start ([`apply`]) and the difference on reload ([`reload`]).
//!
//! It must never keep a topology of its own beside the broker's: the vhosts are the truth, and
//! the configuration only remembers which of their entities came from the file, so that a reload
//! deletes those and never what clients declared.

pub mod apply;
pub(crate) mod arguments;
mod check;
mod check_bindings;
mod check_cluster;
mod check_permissions;
mod check_tls;
mod check_topology;
mod error;
mod model;
mod parse;
pub mod reload;
pub mod settings;
mod units;

#[cfg(test)]
mod tests;

use std::path::Path;

use warren_protocol::types::FieldTable;

pub use error::{Location, Problem, Report, Source};
pub use model::{DestinationType, LogFormat};
pub use settings::Settings;

use crate::broker::exchange::ExchangeKind;
use crate::broker::vhost::VhostLimits;
use crate::server::{Permission, TopicPermission, User, Users};

/// A checked configuration: everything in it can be applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file's name as given (errors and the summary use it).
    pub file: String,
    pub settings: Settings,
    /// The users: the file's, or the embedded guest when the file has none.
    pub users: Vec<User>,
    pub permissions: Vec<Permission>,
    pub topic_permissions: Vec<TopicPermission>,
    /// Every vhost: `/` and the file's.
    pub vhosts: Vec<String>,
    /// The vhosts' limits (connections, queues) the file gives.
    pub vhost_limits: Vec<(String, VhostLimits)>,
    pub topology: Topology,
    /// What is allowed but unwise (a plain-text password): logged at start, printed by
    /// `check-config`.
    pub warnings: Vec<Problem>,
    /// How many `[[users]]` and `[[vhosts]]` the file itself has (for the summary).
    file_users: usize,
    file_vhosts: usize,
}

/// The exchanges, queues and bindings a file declares, in file order.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
}

/// An `[[exchanges]]` entry.
#[derive(Debug, Clone)]
pub struct ExchangeDef {
    pub vhost: String,
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// Where the entry is in the file.
    pub origin: Location,
}

/// A `[[queues]]` entry (never exclusive: an exclusive queue belongs to a connection).
#[derive(Debug, Clone)]
pub struct QueueDef {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    pub origin: Location,
}

/// A `[[bindings]]` entry.
#[derive(Debug, Clone)]
pub struct BindingDef {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_type: DestinationType,
    pub routing_key: String,
    pub arguments: FieldTable,
    pub origin: Location,
}

impl Config {
    /// The embedded defaults: what Warren runs with when no file is given.
    pub fn embedded() -> Config {
        Config {
            file: "(embedded defaults)".into(),
            settings: Settings::default(),
            users: Users::default().list(),
            permissions: Users::default().permissions(),
            topic_permissions: Vec::new(),
            vhosts: vec!["/".into()],
            vhost_limits: Vec::new(),
            topology: Topology::default(),
            warnings: Vec::new(),
            file_users: 0,
            file_vhosts: 0,
        }
    }

    /// The one-line summary of a good file:
    /// `orders.toml: ok: 1 vhost, 3 exchanges, 6 queues, 8 bindings, 1 user`.
    pub fn summary(&self) -> String {
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        format!(
            "{}: ok: {}, {}, {}, {}, {}",
            self.file,
            count(self.file_vhosts, "vhost"),
            count(self.topology.exchanges.len(), "exchange"),
            count(self.topology.queues.len(), "queue"),
            count(self.topology.bindings.len(), "binding"),
            count(self.file_users, "user"),
        )
    }
}

/// Reads and checks a file: every problem in it, or the configuration.
pub fn load(path: &Path) -> Result<Config, Report> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => from_str(&name, &text),
        Err(e) => Err(Report::new(vec![Problem {
            file: name,
            position: None,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Checks a file's text; `name` is how problems name the file.
pub fn from_str(name: &str, text: &str) -> Result<Config, Report> {
    let source = Source::new(name, text);
    let mut problems = Vec::new();
    let parsed = parse::parse(&source, &mut problems);
    let config = check::check(&source, parsed, &mut problems);
    match problems.is_empty() {
        true => Ok(config),
        false => Err(Report::new(problems)),
    }
}
