//! Putting a checked topology into the broker, idempotently: what exists and is equal is kept,
//! what is missing is declared, and what exists with other properties is a conflict that names
//! both definitions. At start every entry is checked against what the vhosts already hold
//! (recovered from the data directory) before anything is declared, so a conflict leaves the
//! broker untouched and it does not start.
//!
//! Equality is the broker's own: an existing entity is redeclared in a scratch vhost that holds
//! only a copy of it, and the answer (RabbitMQ's 406 text, or none) is the verdict. This module
//! goes through the vhosts' public declare/bind/delete calls only; it never reaches into their
//! topology.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::error::{Location, Problem};
use super::model::DestinationType;
use super::{BindingDef, ExchangeDef, QueueDef, Topology};
use crate::broker::exchange::{encode_arguments, Destination};
use crate::broker::values::show;
use crate::broker::vhost::{is_quorum, ExchangeDeclare, QueueDeclare, Vhost};
use crate::broker::Broker;
use crate::error::Error;

/// The connection id the configuration declares with (connections count from 1).
pub const CONFIG_CONNECTION: u64 = 0;

#[derive(Debug, Error)]
pub enum ApplyError {
    /// Entries that differ from what exists, one problem each.
    #[error("{}", super::Report::new(.0.clone()))]
    Conflicts(Vec<Problem>),
    /// The broker refused an entry that had passed the checks.
    #[error("{origin}: {error}")]
    Refused { origin: Location, error: Error },
    #[error("vhost '{0}' is not open")]
    NoVhost(String),
}

/// A vhost and a name: an exchange's or a queue's identity.
pub type EntityId = (String, String);

/// A binding's identity, as AMQP has it (arguments compared encoded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingId {
    pub vhost: String,
    pub source: String,
    pub destination_type: DestinationType,
    pub destination: String,
    pub routing_key: String,
    pub arguments: Bytes,
}

impl ExchangeDef {
    pub fn id(&self) -> EntityId {
        (self.vhost.clone(), self.name.clone())
    }
}

impl QueueDef {
    pub fn id(&self) -> EntityId {
        (self.vhost.clone(), self.name.clone())
    }
}

impl BindingDef {
    pub fn id(&self) -> BindingId {
        BindingId {
            vhost: self.vhost.clone(),
            source: self.source.clone(),
            destination_type: self.destination_type,
            destination: self.destination.clone(),
            routing_key: self.routing_key.clone(),
            arguments: encode_arguments(&self.arguments),
        }
    }
}

/// What in the broker came from the file: a reload deletes these when the file drops them,
/// and nothing else.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub exchanges: HashSet<EntityId>,
    pub queues: HashSet<EntityId>,
    pub bindings: HashSet<BindingId>,
}

/// How an entry compares with what the vhost holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Missing,
    Equal,
    /// It exists with other properties: how the file declares it, how it exists, and the
    /// broker's reason.
    Different {
        declared_as: String,
        exists_as: String,
        reason: String,
    },
}

/// Applies `topology` at start: checks every entry first, then declares; everything in the
/// file is the file's from now on.
pub fn apply_at_start(broker: &Broker, topology: &Topology) -> Result<Owned, ApplyError> {
    let vhost = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| ApplyError::NoVhost(name.to_owned()))
    };
    // On a cluster, quorum queues (and the bindings to them) are declared once the cluster
    // can take them: a node starting alone has no majority yet.
    let later = |def: &QueueDef| broker.cluster().is_some() && is_quorum(&def.arguments);
    let mut conflicts = Vec::new();
    let recovered = "recovered from the data directory";
    for def in &topology.exchanges {
        if let Existing::Different {
            declared_as,
            exists_as,
            reason,
        } = compare_exchange(vhost(&def.vhost)?.as_ref(), def)
        {
            let what = format!("exchange '{}' in vhost '{}'", def.name, def.vhost);
            conflicts.push(conflict(
                &def.origin,
                &what,
                &declared_as,
                &exists_as,
                recovered,
                &reason,
            ));
        }
    }
    for def in topology.queues.iter().filter(|def| !later(def)) {
        if let Existing::Different {
            declared_as,
            exists_as,
            reason,
        } = compare_queue(vhost(&def.vhost)?.as_ref(), def)
        {
            let what = format!("queue '{}' in vhost '{}'", def.name, def.vhost);
            conflicts.push(conflict(
                &def.origin,
                &what,
                &declared_as,
                &exists_as,
                recovered,
                &reason,
            ));
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    let refused = |origin: &Location| {
        let origin = origin.clone();
        move |error| ApplyError::Refused { origin, error }
    };
    let mut owned = Owned::default();
    let mut deferred = Deferred::default();
    for def in &topology.exchanges {
        declare_exchange(vhost(&def.vhost)?.as_ref(), def).map_err(refused(&def.origin))?;
        owned.exchanges.insert(def.id());
    }
    for def in &topology.queues {
        match later(def) {
            true => deferred.queues.push((vhost(&def.vhost)?, def.clone())),
            false => {
                declare_queue(vhost(&def.vhost)?.as_ref(), def).map_err(refused(&def.origin))?
            }
        }
        owned.queues.insert(def.id());
    }
    for def in &topology.bindings {
        let to_deferred = def.destination_type == DestinationType::Queue
            && deferred
                .queues
                .iter()
                .any(|(_, q)| q.vhost == def.vhost && q.name == def.destination);
        match to_deferred {
            true => deferred.bindings.push((vhost(&def.vhost)?, def.clone())),
            false => bind(vhost(&def.vhost)?.as_ref(), def).map_err(refused(&def.origin))?,
        }
        owned.bindings.insert(def.id());
    }
    if !deferred.queues.is_empty() {
        tokio::spawn(deferred.declare());
    }
    Ok(owned)
}

/// The file's quorum queues and the bindings to them, declared in the background once the
/// cluster takes writes.
#[derive(Default)]
struct Deferred {
    queues: Vec<(Arc<Vhost>, QueueDef)>,
    bindings: Vec<(Arc<Vhost>, BindingDef)>,
}

impl Deferred {
    async fn declare(self) {
        for (vhost, def) in &self.queues {
            let what = format!("quorum queue '{}' in vhost '{}'", def.name, def.vhost);
            until_taken(&what, || declare_queue(vhost, def)).await;
        }
        for (vhost, def) in &self.bindings {
            let what = format!(
                "binding of '{}' to quorum queue '{}' in vhost '{}'",
                def.source, def.destination, def.vhost
            );
            until_taken(&what, || bind(vhost, def)).await;
        }
    }
}

/// Runs `make` until it succeeds, or fails for another reason than the cluster's (logged).
async fn until_taken(what: &str, mut make: impl FnMut() -> Result<(), Error>) {
    const AGAIN: std::time::Duration = std::time::Duration::from_secs(1);
    let mut tries = 0u32;
    loop {
        match make() {
            Ok(()) => {
                tracing::info!("configuration file: {what} declared");
                return;
            }
            Err(Error::Internal(why)) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(30) {
                    tracing::warn!(tries, "configuration file: {what} not declared yet (trying again every second): {why}");
                }
                tokio::time::sleep(AGAIN).await;
            }
            // Declared in the cluster, but its group has no replica here.
            Err(Error::NotImplemented(why)) => {
                tracing::info!("configuration file: {what}: {why}");
                return;
            }
            Err(error) => {
                tracing::error!(error = %error, "configuration file: {what} not declared");
                return;
            }
        }
    }
}

/// The problem for an entry that differs from what exists, naming both definitions: `what` is
/// `queue 'q' in vhost '/'`, `how` says where the existing one came from.
pub fn conflict(
    origin: &Location,
    what: &str,
    declared_as: &str,
    exists_as: &str,
    how: &str,
    reason: &str,
) -> Problem {
    Problem::at(
        origin,
        format!(
            "{what} is declared here as {declared_as}, but it exists as {exists_as} ({how}): {reason}"
        ),
    )
}

pub fn compare_exchange(vhost: &Vhost, def: &ExchangeDef) -> Existing {
    let Some(existing) = vhost.exchange_declaration(&def.name) else {
        return Existing::Missing;
    };
    let scratch = Vhost::new(&vhost.name);
    let verdict = scratch
        .declare_exchange(existing.clone())
        .and_then(|()| scratch.declare_exchange(exchange_declare(def)));
    match verdict {
        Ok(()) => Existing::Equal,
        Err(e) => Existing::Different {
            declared_as: describe_exchange(&exchange_declare(def)),
            exists_as: describe_exchange(&existing),
            reason: e.to_string(),
        },
    }
}

pub fn compare_queue(vhost: &Vhost, def: &QueueDef) -> Existing {
    let Some((existing, owner)) = vhost.queue_declaration(&def.name) else {
        return Existing::Missing;
    };
    let scratch = Vhost::new(&vhost.name);
    let verdict = scratch
        .declare_queue(existing.clone(), owner.unwrap_or(u64::MAX))
        .and_then(|_| scratch.declare_queue(queue_declare(def), CONFIG_CONNECTION));
    match verdict {
        Ok(_) => Existing::Equal,
        Err(e) => Existing::Different {
            declared_as: describe_queue(&queue_declare(def)),
            exists_as: describe_queue(&existing),
            reason: e.to_string(),
        },
    }
}

fn exchange_declare(def: &ExchangeDef) -> ExchangeDeclare {
    ExchangeDeclare {
        name: ShortStr::copy_from_str(&def.name),
        kind: def.kind.name().to_owned(),
        passive: false,
        durable: def.durable,
        auto_delete: def.auto_delete,
        internal: def.internal,
        arguments: def.arguments.clone(),
    }
}

fn queue_declare(def: &QueueDef) -> QueueDeclare {
    QueueDeclare {
        name: ShortStr::copy_from_str(&def.name),
        server_named: false,
        passive: false,
        durable: def.durable,
        exclusive: false,
        auto_delete: def.auto_delete,
        arguments: def.arguments.clone(),
    }
}

pub fn declare_exchange(vhost: &Vhost, def: &ExchangeDef) -> Result<(), Error> {
    vhost.declare_exchange(exchange_declare(def))
}

pub fn declare_queue(vhost: &Vhost, def: &QueueDef) -> Result<(), Error> {
    vhost
        .declare_queue(queue_declare(def), CONFIG_CONNECTION)
        .map(|_| ())
}

fn destination(destination_type: DestinationType, name: &str) -> Destination {
    let name = ShortStr::copy_from_str(name);
    match destination_type {
        DestinationType::Queue => Destination::Queue(name),
        DestinationType::Exchange => Destination::Exchange(name),
    }
}

pub fn bind(vhost: &Vhost, def: &BindingDef) -> Result<(), Error> {
    vhost.bind(
        &ShortStr::copy_from_str(&def.source),
        destination(def.destination_type, &def.destination),
        ShortStr::copy_from_str(&def.routing_key),
        &def.arguments,
        CONFIG_CONNECTION,
    )
}

pub fn has_binding(vhost: &Vhost, def: &BindingDef) -> bool {
    vhost.has_binding(
        &def.source,
        destination(def.destination_type, &def.destination),
        ShortStr::copy_from_str(&def.routing_key),
        &def.arguments,
    )
}

pub fn unbind(vhost: &Vhost, id: &BindingId) -> Result<(), Error> {
    let arguments = match id.arguments.is_empty() {
        true => FieldTable::default(),
        false => warren_protocol::table::decode_field_table(&id.arguments).unwrap_or_default(),
    };
    vhost.unbind(
        &ShortStr::copy_from_str(&id.source),
        destination(id.destination_type, &id.destination),
        ShortStr::copy_from_str(&id.routing_key),
        &arguments,
        CONFIG_CONNECTION,
    )
}

/// Deletes a queue, cancelling its consumers; the number of messages it held.
pub fn delete_queue(vhost: &Vhost, name: &str) -> Result<u32, Error> {
    let (messages, consumers) = vhost.delete_queue(
        &ShortStr::copy_from_str(name),
        false,
        false,
        CONFIG_CONNECTION,
    )?;
    for consumer in consumers {
        consumer.cancel();
    }
    Ok(messages)
}

pub fn delete_exchange(vhost: &Vhost, name: &str) -> Result<(), Error> {
    vhost.delete_exchange(&ShortStr::copy_from_str(name), false)
}

/// `a durable topic exchange (arguments: alternate-exchange = 'unrouted')`.
fn describe_exchange(declare: &ExchangeDeclare) -> String {
    let mut flags = vec![if declare.durable {
        "durable"
    } else {
        "transient"
    }];
    if declare.auto_delete {
        flags.push("auto-delete");
    }
    if declare.internal {
        flags.push("internal");
    }
    format!(
        "a {} {} exchange{}",
        flags.join(" "),
        declare.kind,
        describe_arguments(&declare.arguments)
    )
}

/// `a durable queue (arguments: x-message-ttl = '5000')`.
fn describe_queue(declare: &QueueDeclare) -> String {
    let mut flags = vec![if declare.durable {
        "durable"
    } else {
        "transient"
    }];
    if declare.auto_delete {
        flags.push("auto-delete");
    }
    if declare.exclusive {
        flags.push("exclusive");
    }
    format!(
        "a {} queue{}",
        flags.join(" "),
        describe_arguments(&declare.arguments)
    )
}

fn describe_arguments(arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        return " with no arguments".into();
    }
    let shown: Vec<String> = arguments
        .inner()
        .iter()
        .map(|(key, value)| format!("{key} = '{}'", show(Some(value))))
        .collect();
    format!(" with arguments {}", shown.join(", "))
}
