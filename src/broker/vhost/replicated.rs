//! The routing topology on a cluster: a durable exchange, and a binding to a quorum queue or
//! between durable exchanges, declared on one node is written to the metadata group
//! (`broker/quorum/meta.rs`) once this node has made the change, and every node applies it
//! ([`Vhost::apply_change`], from the broker's event task). Everything else stays on the node
//! it was made on. Without a cluster these are the local operations, nothing more.
//!
//! The metadata write waits on the connection's worker thread (`block_in_place`), as a quorum
//! queue's declaration does.

use bytes::BytesMut;
use warren_protocol::method::ShortStr;
use warren_protocol::table::{decode_field_table, encode_field_table};
use warren_protocol::types::FieldTable;

use super::{ExchangeDeclare, Unsaved, Vhost};
use crate::broker::exchange::Destination;
use crate::broker::quorum::block;
use crate::broker::quorum::meta::{BindingDefinition, Change, ExchangeDefinition};
use crate::error::Error;

/// The connection id remote changes are applied under (no queue is exclusive to it).
const CLUSTER: u64 = u64::MAX;

/// A field table as the metadata group keeps it (AMQP's encoding).
pub(super) fn table_bytes(table: &FieldTable) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    encode_field_table(&mut bytes, table);
    bytes.to_vec()
}

impl Vhost {
    /// `exchange.declare`; what it appended to the definitions log is the caller's to save.
    pub fn declare_exchange_unsaved(&self, declare: ExchangeDeclare) -> Result<Unsaved, Error> {
        let replicate = declare.durable && !declare.passive && self.cluster.get().is_some();
        let change = replicate.then(|| {
            Change::DeclareExchange(ExchangeDefinition {
                vhost: self.name.clone(),
                name: declare.name.as_str().to_owned(),
                kind: declare.kind.clone(),
                auto_delete: declare.auto_delete,
                internal: declare.internal,
                arguments: table_bytes(&declare.arguments),
            })
        });
        let unsaved = self.declare_exchange_here(declare)?;
        self.replicate(change)?;
        Ok(unsaved)
    }

    /// `exchange.delete`; what it appended to the definitions log is the caller's to save.
    pub fn delete_exchange_unsaved(
        &self,
        name: &ShortStr,
        if_unused: bool,
    ) -> Result<Unsaved, Error> {
        let durable = self.read().exchanges.get(name).is_some_and(|x| x.durable);
        let unsaved = self.delete_exchange_here(name, if_unused)?;
        if durable {
            self.replicate(Some(Change::DeleteExchange {
                vhost: self.name.clone(),
                name: name.as_str().to_owned(),
            }))?;
        }
        Ok(unsaved)
    }

    /// `queue.bind` and `exchange.bind`; what it appended to the definitions log is the caller's
    /// to save.
    pub fn bind_unsaved(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<Unsaved, Error> {
        let binding = self.binding(source, &destination, &routing_key, arguments);
        let unsaved = self.bind_here(source, destination, routing_key, arguments, connection)?;
        self.replicate(binding.map(Change::Bind))?;
        Ok(unsaved)
    }

    /// `queue.unbind` and `exchange.unbind`; what it appended to the definitions log is the
    /// caller's to save.
    pub fn unbind_unsaved(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<Unsaved, Error> {
        let binding = self.binding(source, &destination, &routing_key, arguments);
        let unsaved = self.unbind_here(source, destination, routing_key, arguments, connection)?;
        self.replicate(binding.map(Change::Unbind))?;
        Ok(unsaved)
    }

    /// The binding as the cluster keeps it, when every node routes by it: on a cluster, to a
    /// quorum queue, or from a durable exchange to another.
    fn binding(
        &self,
        source: &ShortStr,
        destination: &Destination,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> Option<BindingDefinition> {
        self.cluster.get()?;
        let topology = self.read();
        let (name, to_queue) = match destination {
            Destination::Queue(name) => {
                topology.queues.get(name)?.quorum()?;
                (name, true)
            }
            Destination::Exchange(name) => {
                let durable = |n: &ShortStr| topology.exchanges.get(n).is_some_and(|x| x.durable);
                if !(durable(source) && durable(name)) {
                    return None;
                }
                (name, false)
            }
        };
        Some(BindingDefinition {
            vhost: self.name.clone(),
            source: source.as_str().to_owned(),
            destination: name.as_str().to_owned(),
            to_queue,
            routing_key: routing_key.as_str().to_owned(),
            arguments: table_bytes(arguments),
        })
    }

    /// Writes a change this node made to the metadata group, for the others.
    fn replicate(&self, change: Option<Change>) -> Result<(), Error> {
        let (Some(change), Some(node)) = (change, self.cluster.get()) else {
            return Ok(());
        };
        block(node.change(change)).map_err(|e| {
            Error::Internal(format!(
                "changed on this node, but not written to the cluster: {e}"
            ))
        })
    }

    /// Applies a change the metadata group holds (made here or on another node): on this node
    /// only, saved before it returns; what is there already is left as it is.
    pub fn apply_change(&self, change: &Change) -> Result<(), Error> {
        let unsaved = match change {
            Change::DeclareExchange(exchange) => self.declare_exchange_here(ExchangeDeclare {
                name: ShortStr::copy_from_str(&exchange.name),
                kind: exchange.kind.clone(),
                passive: false,
                durable: true,
                auto_delete: exchange.auto_delete,
                internal: exchange.internal,
                arguments: decode_field_table(&exchange.arguments).unwrap_or_default(),
            })?,
            Change::DeleteExchange { name, .. } => {
                self.delete_exchange_here(&ShortStr::copy_from_str(name), false)?
            }
            Change::Bind(binding) | Change::Unbind(binding) => {
                let destination = match binding.to_queue {
                    true => Destination::Queue(ShortStr::copy_from_str(&binding.destination)),
                    false => Destination::Exchange(ShortStr::copy_from_str(&binding.destination)),
                };
                let source = ShortStr::copy_from_str(&binding.source);
                let key = ShortStr::copy_from_str(&binding.routing_key);
                let arguments = decode_field_table(&binding.arguments).unwrap_or_default();
                match change {
                    Change::Bind(_) => {
                        self.bind_here(&source, destination, key, &arguments, CLUSTER)?
                    }
                    _ => self.unbind_here(&source, destination, key, &arguments, CLUSTER)?,
                }
            }
            // The broker applies those (a vhost is not its own to create or delete).
            Change::Account(_) => return Ok(()),
        };
        unsaved.wait()
    }
}
