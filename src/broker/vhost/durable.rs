//! The durable side of a vhost: opening it on the store (recovering its definitions, queues and
//! their messages) and creating queues with their logs. What a change appends to the definitions
//! log is `changes.rs`. The rest of the vhost never touches a file.

use std::io;
use std::sync::Arc;

use tracing::{info, warn};
use warren_protocol::method::ShortStr;

use super::{consumer_timeout, Topology, Vhost};
use crate::broker::activity::Watched;
use crate::broker::definition::Definition;
use crate::broker::exchange::{
    encode_arguments, BindingKey, Destination, Exchange, ExchangeKind, Target,
};
use crate::broker::queue::{Queue, QueueOptions};
use crate::broker::storage::{LogStore, Memory, Spill};
use crate::store::definitions::DefinitionLog;
use crate::store::Store;

impl Vhost {
    /// A vhost whose durable exchanges, queues, bindings and persistent messages live in
    /// `store`: recovers what the store holds (a damaged definitions file is an error).
    pub fn open(name: &str, store: Arc<Store>) -> io::Result<Vhost> {
        let dir = crate::store::vhost_dir(&store.data_dir, name);
        let mut vhost = Vhost::new(name);
        vhost.delays = crate::broker::delays::Delays::open(Arc::clone(&store), &dir)?;
        vhost.store = Some((store, dir));
        vhost.recover()?;
        Ok(vhost)
    }

    /// Opens the definitions log and applies it: exchanges, then queues (with their logs), then
    /// bindings. What cannot be applied (unreadable, of an unknown type, a binding to something
    /// missing) is dropped from the log by rewriting it from what was recovered.
    fn recover(&self) -> io::Result<()> {
        let Some((_, dir)) = &self.store else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let legacy_key = |record: &[u8]| Definition::decode(record).map(|d| d.key());
        let (log, records) = DefinitionLog::open(dir, &legacy_key)?;
        let total = records.len();
        let mut definitions = Vec::with_capacity(total);
        for (_, record) in &records {
            match Definition::decode(record) {
                Some(definition) => definitions.push(definition),
                None => warn!(vhost = %self.name, "skipping an unreadable definition"),
            }
        }
        drop(records);
        let mut topology = self.write();
        let exchanges = self.recover_exchanges(&mut topology, &definitions);
        let (queues, messages) = self.recover_queues(&mut topology, &definitions)?;
        let bindings = self.recover_bindings(&mut topology, definitions);
        topology.definitions = Some(Arc::new(log));
        drop(topology);
        info!(
            vhost = %self.name,
            exchanges,
            queues,
            bindings,
            messages,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered durable definitions and messages"
        );
        let applied = exchanges + queues + bindings;
        if applied < total {
            self.rewrite_definitions()?;
        }
        Ok(())
    }

    /// The durable exchanges of the definitions; how many.
    fn recover_exchanges(&self, topology: &mut Topology, definitions: &[Definition]) -> usize {
        let mut exchanges = 0;
        for definition in definitions {
            if let Definition::Exchange {
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } = definition
            {
                let Some(kind) = ExchangeKind::parse(kind) else {
                    warn!(vhost = %self.name, exchange = %name, "skipping an exchange of unknown type");
                    continue;
                };
                let exchange = Exchange::new(
                    name.clone(),
                    kind,
                    true,
                    *auto_delete,
                    *internal,
                    arguments.clone(),
                );
                let exchange = self.with_exchange_dedup(exchange);
                topology.exchanges.insert(name.clone(), exchange);
                exchanges += 1;
            }
        }
        exchanges
    }

    /// The durable queues of the definitions, each with the messages its log holds; (queues,
    /// messages).
    fn recover_queues(
        &self,
        topology: &mut Topology,
        definitions: &[Definition],
    ) -> io::Result<(usize, u32)> {
        let (mut queues, mut messages) = (0, 0);
        for definition in definitions {
            if let Definition::Queue {
                name,
                auto_delete,
                arguments,
            } = definition
            {
                let options = QueueOptions {
                    durable: true,
                    exclusive_owner: None,
                    auto_delete: *auto_delete,
                    arguments: arguments.clone(),
                    consumer_timeout: consumer_timeout(arguments),
                };
                let queue = self.new_queue(name.clone(), options)?;
                messages += queue.counts().0;
                topology.queues.insert(name.clone(), queue);
                queues += 1;
            }
        }
        Ok((queues, messages))
    }

    /// The bindings of the definitions between what was recovered; how many.
    fn recover_bindings(&self, topology: &mut Topology, definitions: Vec<Definition>) -> usize {
        let mut bindings = 0;
        for definition in definitions {
            if let Definition::Binding {
                source,
                destination,
                routing_key,
                arguments,
            } = definition
            {
                let target = match &destination {
                    Destination::Queue(name) => {
                        topology.queues.get(name).cloned().map(Target::Queue)
                    }
                    Destination::Exchange(name) => topology
                        .exchanges
                        .contains_key(name)
                        .then(|| Target::Exchange(name.clone())),
                };
                let (Some(target), Some(exchange)) = (target, topology.exchanges.get_mut(&source))
                else {
                    warn!(vhost = %self.name, exchange = %source, "skipping a binding to something missing");
                    continue;
                };
                let (destination, routing_key) =
                    super::bind::share_queue_name(&target, destination, routing_key);
                let key = BindingKey {
                    destination,
                    routing_key,
                    arguments: encode_arguments(&arguments),
                };
                exchange.bind(key, target, &arguments);
                bindings += 1;
            }
        }
        bindings
    }

    /// Creates a queue: with a log in the store if it is durable and not exclusive (its messages
    /// left from before a restart are recovered into it), else one that spills its backlog to
    /// the store past the memory window.
    pub(super) fn new_queue(
        &self,
        name: ShortStr,
        options: QueueOptions,
    ) -> io::Result<Arc<Queue>> {
        let queue = self.open_queue(name, options)?;
        queue.attach(&self.deadlines);
        Ok(queue)
    }

    /// The queue's storage is wrapped in a [`Watched`] that lists it on the vhost's
    /// [`crate::broker::activity::Activity`] when it changes.
    fn open_queue(&self, name: ShortStr, options: QueueOptions) -> io::Result<Arc<Queue>> {
        if crate::broker::stream::args::is_stream(&options.arguments) {
            return self.open_stream(name, options);
        }
        let dedup = self.queue_dedup(&name, &options)?;
        let Some((store, dir)) = &self.store else {
            return Ok(Arc::new_cyclic(|queue| {
                let watch = self.activity.watch(queue.clone());
                Queue::new(name, options)
                    .with_storage(Box::new(Watched::new(Memory, watch, false)))
                    .with_dedup(dedup)
            }));
        };
        let label = String::from_utf8_lossy(name.as_bytes()).into_owned();
        if !options.durable || options.exclusive_owner.is_some() {
            let spill = Spill::new(Arc::clone(store), &label);
            return Ok(Arc::new_cyclic(|queue| {
                let watch = self.activity.watch(queue.clone());
                Queue::new(name, options)
                    .with_storage(Box::new(Watched::new(spill, watch, true)))
                    .with_dedup(dedup)
            }));
        }
        let queue_dir = crate::store::queue_dir(dir, name.as_bytes());
        let (log, backlog) = LogStore::recover(Arc::clone(store), &queue_dir, &label)?;
        Ok(Arc::new_cyclic(|queue| {
            let watch = self.activity.watch(queue.clone());
            Queue::recovered(
                name,
                options,
                Box::new(Watched::new(log, watch, true)),
                backlog,
            )
            .with_dedup(dedup)
        }))
    }
}
