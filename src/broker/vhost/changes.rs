//! What a change to something durable appends to the vhost's definitions log
//! ([`crate::store::definitions`]), and when it is made durable.
//!
//! Every change is appended under the topology's write lock, where it is made, so the log holds
//! the changes in the order they happened: a put for what is declared or bound, a delete for what
//! goes (with the bindings a deletion takes along, and the auto-delete exchanges it empties).
//! The change then lets go of the lock and hands its caller an [`Unsaved`]: the caller waits for
//! the group commit (the blocking calls, [`Vhost::save`]), or a connection registers with it
//! once per batch of input (the `*_unsaved` calls), so the reply that follows (`declare-ok`,
//! `bind-ok`, `delete-ok`) means "on disk" either way. Compaction rewrites the log from
//! the topology ([`Vhost::compact_definitions`]), off the connections' threads.

use std::io;
use std::sync::{Arc, RwLockWriteGuard};

use tracing::{error, info, warn};
use warren_protocol::method::ShortStr;
use warren_protocol::table::decode_field_table;
use warren_protocol::types::FieldTable;

use super::{is_built_in, ExchangeDeclare, QueueDeclare, QueueDeclared, Topology, Vhost};
use crate::broker::definition::{binding_key, exchange_key, queue_key, Definition};
use crate::broker::exchange::{BindingKey, Destination, Exchange};
use crate::broker::queue::{Consumer, Queue};
use crate::error::Error;
use crate::store::definitions::Snapshot;
use crate::store::Store;

impl Topology {
    fn log_put(&mut self, key: &[u8], record: &[u8]) {
        let Some(log) = &self.definitions else {
            return;
        };
        match log.put(key, record) {
            Ok(()) => self.uncommitted = true,
            Err(e) => error!(error = %e, "a durable definition cannot be logged"),
        }
    }

    pub(super) fn log_delete(&mut self, key: &[u8]) {
        let Some(log) = &self.definitions else {
            return;
        };
        match log.delete(key) {
            Ok(()) => self.uncommitted = true,
            Err(e) => error!(error = %e, "a deleted definition cannot be logged"),
        }
    }

    /// Whether the log records this: a durable exchange (the default one excepted) or a
    /// durable queue that no connection owns.
    pub(super) fn durable_destination(&self, destination: &Destination) -> bool {
        match destination {
            Destination::Queue(name) => self.queues.get(name).is_some_and(|q| durable_queue(q)),
            Destination::Exchange(name) => {
                !name.is_empty() && self.exchanges.get(name).is_some_and(|x| x.durable)
            }
        }
    }

    /// Logs a new exchange, if durable.
    pub(super) fn log_exchange(&mut self, exchange: &Exchange) {
        if self.definitions.is_some() && durable_exchange(exchange) {
            self.log_put(&exchange_key(&exchange.name), &exchange_record(exchange));
        }
    }

    /// Logs a new queue, if durable and owned by no connection.
    pub(super) fn log_queue(&mut self, queue: &Queue) {
        if self.definitions.is_some() && durable_queue(queue) {
            self.log_put(&queue_key(&queue.name), &queue_record(queue));
        }
    }

    /// Logs a new binding (`arguments` given) or a binding gone (`None`); the caller checked
    /// that both ends are durable.
    pub(super) fn log_binding(
        &mut self,
        source: &ShortStr,
        binding: &BindingKey,
        arguments: Option<&FieldTable>,
    ) {
        if self.definitions.is_none() {
            return;
        }
        let key = binding_key(
            source,
            &binding.destination,
            &binding.routing_key,
            &binding.arguments,
        );
        match arguments {
            Some(arguments) => {
                let record = binding_record(source, binding, arguments.clone());
                self.log_put(&key, &record);
            }
            None => self.log_delete(&key),
        }
    }

    /// Every durable record, into a compaction's snapshot.
    fn durable_records(&self, snapshot: &mut Snapshot) -> io::Result<()> {
        for exchange in self.exchanges.values() {
            if durable_exchange(exchange) {
                snapshot.put(&exchange_key(&exchange.name), &exchange_record(exchange))?;
            }
        }
        for queue in self.queues.values() {
            if durable_queue(queue) {
                snapshot.put(&queue_key(&queue.name), &queue_record(queue))?;
            }
        }
        for exchange in self.exchanges.values() {
            if !exchange.durable || exchange.name.is_empty() {
                continue;
            }
            for binding in exchange.bindings() {
                if !self.durable_destination(&binding.destination) {
                    continue;
                }
                let key = binding_key(
                    &exchange.name,
                    &binding.destination,
                    &binding.routing_key,
                    &binding.arguments,
                );
                let arguments = match binding.arguments.is_empty() {
                    true => FieldTable::default(),
                    false => decode_field_table(&binding.arguments).unwrap_or_default(),
                };
                snapshot.put(&key, &binding_record(&exchange.name, binding, arguments))?;
            }
        }
        Ok(())
    }
}

fn durable_exchange(exchange: &Exchange) -> bool {
    exchange.durable && !is_built_in(&exchange.name) && !exchange.name.is_empty()
}

fn durable_queue(queue: &Queue) -> bool {
    queue.options.durable && queue.options.exclusive_owner.is_none()
}

fn exchange_record(exchange: &Exchange) -> Vec<u8> {
    Definition::Exchange {
        name: exchange.name.clone(),
        kind: exchange.kind.name().to_owned(),
        auto_delete: exchange.auto_delete,
        internal: exchange.internal,
        arguments: exchange.arguments.clone(),
    }
    .encode()
}

fn queue_record(queue: &Queue) -> Vec<u8> {
    Definition::Queue {
        name: queue.name.clone(),
        auto_delete: queue.options.auto_delete,
        arguments: queue.options.arguments.clone(),
    }
    .encode()
}

fn binding_record(source: &ShortStr, binding: &BindingKey, arguments: FieldTable) -> Vec<u8> {
    Definition::Binding {
        source: source.clone(),
        destination: binding.destination.clone(),
        routing_key: binding.routing_key.clone(),
        arguments,
    }
    .encode()
}

/// What a change appended to the definitions log and is not on disk yet (nothing, for a change
/// to nothing durable). Its caller either waits for it ([`Unsaved::wait`]) or writes it and
/// registers with the group commit itself ([`Unsaved::write`]), and answers only after the sync.
#[must_use = "a change to something durable is not on disk until it is saved"]
#[derive(Debug, Default)]
pub struct Unsaved(Option<(Log, Arc<Store>)>);

impl Unsaved {
    /// Whether there is nothing to save.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Writes what was appended and returns once it is synced (blocks in place on a
    /// multi-threaded runtime, so that other connections keep being served meanwhile).
    pub fn wait(self) -> Result<(), Error> {
        let Some((log, store)) = self.0 else {
            return Ok(());
        };
        blocking(|| log.commit(&store.syncer)).map_err(|e| {
            error!(error = %e, "saving the durable definitions failed");
            Error::Internal(format!("cannot save the durable definitions: {e}"))
        })
    }

    /// Writes what was appended and hands the file to the group commit, without waiting; the
    /// store whose [`crate::store::sync::Syncer::notify`] then reports the sync (`None`:
    /// nothing to save).
    pub fn write(&self) -> io::Result<Option<&Arc<Store>>> {
        let Some((log, store)) = &self.0 else {
            return Ok(None);
        };
        log.write(&store.syncer)?;
        Ok(Some(store))
    }

    /// Whether `self` and `other` save to the same log (so that one write covers both).
    pub fn same_log(&self, other: &Unsaved) -> bool {
        match (&self.0, &other.0) {
            (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Vhost {
    /// Ends a change: lets go of the topology's lock and says what the change appended to the
    /// definitions log, still to be made durable.
    pub(super) fn unsaved(&self, mut topology: RwLockWriteGuard<'_, Topology>) -> Unsaved {
        if !std::mem::take(&mut topology.uncommitted) {
            return Unsaved::default();
        }
        let (Some(log), Some((store, _))) = (topology.definitions.clone(), &self.store) else {
            return Unsaved::default();
        };
        drop(topology);
        Unsaved(Some((log, Arc::clone(store))))
    }

    /// Ends a change: lets go of the topology's lock and, if the change appended to the
    /// definitions log, returns once that is on disk.
    pub(super) fn save(&self, topology: RwLockWriteGuard<'_, Topology>) -> Result<(), Error> {
        self.unsaved(topology).wait()
    }

    /// `exchange.declare`, returning once what it changed is on disk.
    pub fn declare_exchange(&self, declare: ExchangeDeclare) -> Result<(), Error> {
        self.declare_exchange_unsaved(declare)?.wait()
    }

    /// `queue.declare`, returning once what it changed is on disk.
    pub fn declare_queue(
        &self,
        declare: QueueDeclare,
        connection: u64,
    ) -> Result<QueueDeclared, Error> {
        let (declared, unsaved) = self.declare_queue_unsaved(declare, connection)?;
        unsaved.wait()?;
        Ok(declared)
    }

    /// `queue.bind` and `exchange.bind`, returning once what they changed is on disk.
    pub fn bind(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), Error> {
        self.bind_unsaved(source, destination, routing_key, arguments, connection)?
            .wait()
    }

    /// `queue.unbind` and `exchange.unbind`, returning once what they changed is on disk.
    pub fn unbind(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), Error> {
        self.unbind_unsaved(source, destination, routing_key, arguments, connection)?
            .wait()
    }

    /// `exchange.delete`, returning once what it changed is on disk.
    pub fn delete_exchange(&self, name: &ShortStr, if_unused: bool) -> Result<(), Error> {
        self.delete_exchange_unsaved(name, if_unused)?.wait()
    }

    /// `queue.delete`, returning once what it changed is on disk: how many messages the queue
    /// held, and the consumers to cancel (cancelled here if saving failed).
    pub fn delete_queue(
        &self,
        name: &ShortStr,
        if_unused: bool,
        if_empty: bool,
        connection: u64,
    ) -> Result<(u32, Vec<Arc<Consumer>>), Error> {
        let (count, consumers, unsaved) =
            self.delete_queue_unsaved(name, if_unused, if_empty, connection)?;
        if let Err(e) = unsaved.wait() {
            super::delete::cancel_all(consumers);
            return Err(e);
        }
        Ok((count, consumers))
    }

    /// Rewrites the definitions log from the topology if it holds mostly dead entries (the
    /// broker's compaction tick, on the blocking pool); the bytes saved.
    pub fn compact_definitions(&self) -> u64 {
        let wanted = self
            .read()
            .definitions
            .as_ref()
            .is_some_and(|log| log.wants_compaction());
        if !wanted {
            return 0;
        }
        match self.rewrite_definitions() {
            Ok(saved) => {
                info!(vhost = %self.name, saved_bytes = saved, "definitions log compacted");
                saved
            }
            Err(e) => {
                warn!(vhost = %self.name, error = %e, "definitions log compaction failed");
                0
            }
        }
    }

    /// Rewrites the definitions log from the topology: the live set is copied under the read
    /// lock (no change can be appended meanwhile) and written out after it.
    pub(super) fn rewrite_definitions(&self) -> io::Result<u64> {
        let (log, snapshot) = {
            let topology = self.read();
            let Some(log) = topology.definitions.clone() else {
                return Ok(0);
            };
            log.begin_compaction()?;
            let mut snapshot = Snapshot::new();
            if let Err(e) = topology.durable_records(&mut snapshot) {
                log.abort_compaction();
                return Err(e);
            }
            (log, snapshot)
        };
        log.finish_compaction(&snapshot)
    }
}

/// Runs `wait` (a wait for the disk) so that the async runtime keeps serving other connections
/// meanwhile, whose changes can then join the same sync.
fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// The log of a vhost opened on a store, shared by its topology.
pub(super) type Log = Arc<crate::store::definitions::DefinitionLog>;
