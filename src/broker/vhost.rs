//! A virtual host's topology: its exchanges, queues and bindings, behind one read-write lock.
//!
//! Declarations, deletions and bindings take the write lock; routing a publish takes the read lock
//! only to collect destination queues into the caller's reusable buffer, then lets go before any
//! queue is locked (lock order: topology, then a queue; never the reverse). Every check RabbitMQ
//! makes on these methods, with its reply code and text, is made here.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable};

use super::consumer::Consumer;
use super::exchange::{
    encode_arguments, BindingKey, Destination, Exchange, ExchangeKind, LazyHeaders, Target,
};
use super::queue::{Queue, QueueOptions};
use crate::error::Error;

/// The exchanges every vhost has.
const BUILT_IN: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Queue arguments compared on redeclaration (RabbitMQ's equivalence list).
const EQUIVALENT_QUEUE_ARGS: [&str; 12] = [
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-consumer-timeout",
];

/// `exchange.declare`, as the topology needs it.
#[derive(Debug, Clone)]
pub struct ExchangeDeclare {
    pub name: ShortStr,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// `queue.declare`, as the topology needs it.
#[derive(Debug, Clone)]
pub struct QueueDeclare {
    pub name: ShortStr,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// The answer to a queue declaration.
#[derive(Debug, Clone)]
pub struct QueueDeclared {
    pub queue: Arc<Queue>,
    pub message_count: u32,
    pub consumer_count: u32,
}

/// Reusable buffers for routing one publish: kept by the connection so that routing allocates
/// nothing once they have grown.
#[derive(Debug, Default)]
pub struct RouteScratch {
    pub queues: Vec<Arc<Queue>>,
    targets: Vec<Target>,
    visited: Vec<ShortStr>,
}

#[derive(Debug)]
struct Topology {
    exchanges: HashMap<ShortStr, Exchange>,
    queues: HashMap<ShortStr, Arc<Queue>>,
}

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    topology: RwLock<Topology>,
    /// Seeds server-generated names.
    names: RandomState,
    next_name: AtomicU64,
}

impl Vhost {
    pub fn new(name: &str) -> Vhost {
        let mut exchanges = HashMap::new();
        for (name, kind) in BUILT_IN {
            let name = ShortStr::copy_from_str(name);
            let exchange = Exchange::new(
                name.clone(),
                kind,
                true,
                false,
                false,
                FieldTable::default(),
            );
            exchanges.insert(name, exchange);
        }
        Vhost {
            name: name.to_owned(),
            topology: RwLock::new(Topology {
                exchanges,
                queues: HashMap::new(),
            }),
            names: RandomState::new(),
            next_name: AtomicU64::new(0),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        // Every mutation below leaves the maps consistent before it can panic.
        self.topology.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology.write().unwrap_or_else(|p| p.into_inner())
    }

    fn no_exchange(&self, name: &ShortStr) -> Error {
        Error::NotFound(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &ShortStr) -> Error {
        Error::NotFound(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &ShortStr) -> Error {
        Error::ResourceLocked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be \
             originally declared on another connection or the exclusive property value does not \
             match that of the original declaration.",
            self.name
        ))
    }

    fn inequivalent(&self, what: &str, arg: &str, name: &ShortStr, got: &str, have: &str) -> Error {
        Error::PreconditionFailed(format!(
            "inequivalent arg '{arg}' for {what} '{name}' in vhost '{}': received '{got}' but \
             current is '{have}'",
            self.name
        ))
    }

    /// A fresh `amq.gen-…` name.
    pub fn generate_name(&self, prefix: &str) -> ShortStr {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        let mut text = String::from(prefix);
        for round in 0..2u64 {
            let mut hasher = self.names.build_hasher();
            hasher.write_u64(n);
            hasher.write_u64(round);
            let mut bits = hasher.finish();
            for _ in 0..11 {
                const ALPHABET: &[u8; 64] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                text.push(ALPHABET[(bits & 63) as usize] as char);
                bits >>= 6;
            }
        }
        ShortStr::copy_from_str(&text)
    }

    pub fn declare_exchange(&self, declare: ExchangeDeclare) -> Result<(), Error> {
        if declare.name.is_empty() {
            return Err(default_exchange());
        }
        let mut topology = self.write();
        if declare.passive {
            return match topology.exchanges.contains_key(&declare.name) {
                true => Ok(()),
                false => Err(self.no_exchange(&declare.name)),
            };
        }
        let Some(kind) = ExchangeKind::parse(&declare.kind) else {
            return Err(Error::CommandInvalid(format!(
                "unknown exchange type '{}'",
                declare.kind
            )));
        };
        if let Some(existing) = topology.exchanges.get(&declare.name) {
            let name = &declare.name;
            let what = "exchange";
            if existing.kind != kind {
                return Err(self.inequivalent(
                    what,
                    "type",
                    name,
                    kind.name(),
                    existing.kind.name(),
                ));
            }
            for (arg, got, have) in [
                ("durable", declare.durable, existing.durable),
                ("auto_delete", declare.auto_delete, existing.auto_delete),
                ("internal", declare.internal, existing.internal),
            ] {
                if got != have {
                    return Err(self.inequivalent(
                        what,
                        arg,
                        name,
                        &got.to_string(),
                        &have.to_string(),
                    ));
                }
            }
            let got = declare.arguments.inner().get("alternate-exchange");
            let have = existing.arguments.inner().get("alternate-exchange");
            if got != have {
                return Err(self.inequivalent(
                    what,
                    "alternate-exchange",
                    name,
                    &show(got),
                    &show(have),
                ));
            }
            return Ok(());
        }
        if declare.name.as_str().starts_with("amq.") {
            return Err(Error::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        let exchange = Exchange::new(
            declare.name.clone(),
            kind,
            declare.durable,
            declare.auto_delete,
            declare.internal,
            declare.arguments,
        );
        topology.exchanges.insert(declare.name, exchange);
        Ok(())
    }

    pub fn delete_exchange(&self, name: &ShortStr, if_unused: bool) -> Result<(), Error> {
        if name.is_empty() || is_built_in(name) {
            return Err(default_exchange());
        }
        let mut topology = self.write();
        let Some(exchange) = topology.exchanges.get(name) else {
            // Deleting what is not there succeeds, as in RabbitMQ 3.x.
            return Ok(());
        };
        if if_unused && exchange.has_bindings() {
            return Err(Error::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topology.remove_exchange(name);
        Ok(())
    }

    pub fn declare_queue(
        &self,
        declare: QueueDeclare,
        connection: u64,
    ) -> Result<QueueDeclared, Error> {
        let mut topology = self.write();
        if declare.passive {
            let queue = topology
                .queues
                .get(&declare.name)
                .ok_or_else(|| self.no_queue(&declare.name))?;
            if queue.is_exclusive_to_other(connection) {
                return Err(self.locked(&declare.name));
            }
            return Ok(declared(queue));
        }
        let owner = declare.exclusive.then_some(connection);
        if let Some(queue) = topology.queues.get(&declare.name) {
            let name = &declare.name;
            if queue.options.exclusive_owner != owner {
                return Err(self.locked(name));
            }
            let what = "queue";
            for (arg, got, have) in [
                ("durable", declare.durable, queue.options.durable),
                (
                    "auto_delete",
                    declare.auto_delete,
                    queue.options.auto_delete,
                ),
            ] {
                if got != have {
                    return Err(self.inequivalent(
                        what,
                        arg,
                        name,
                        &got.to_string(),
                        &have.to_string(),
                    ));
                }
            }
            for arg in EQUIVALENT_QUEUE_ARGS {
                let got = declare.arguments.inner().get(arg);
                let have = queue.options.arguments.inner().get(arg);
                if got != have {
                    return Err(self.inequivalent(what, arg, name, &show(got), &show(have)));
                }
            }
            return Ok(declared(queue));
        }
        if declare.name.as_str().starts_with("amq.") {
            return Err(Error::AccessRefused(format!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        let consumer_timeout = match declare.arguments.inner().get("x-consumer-timeout") {
            None => None,
            Some(value) => match integer(value) {
                Some(ms) if ms >= 0 => {
                    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
                }
                _ => return Err(Error::PreconditionFailed(format!(
                    "invalid arg 'x-consumer-timeout' for queue '{}' in vhost '{}': {} is not a \
                         non-negative integer",
                    declare.name,
                    self.name,
                    show(Some(value))
                ))),
            },
        };
        let queue = Arc::new(Queue::new(
            declare.name.clone(),
            QueueOptions {
                durable: declare.durable,
                exclusive_owner: owner,
                auto_delete: declare.auto_delete,
                arguments: declare.arguments,
                consumer_timeout,
            },
        ));
        topology.queues.insert(declare.name, Arc::clone(&queue));
        Ok(declared(&queue))
    }

    /// Looks up a queue the connection may use.
    pub fn queue(&self, name: &ShortStr, connection: u64) -> Result<Arc<Queue>, Error> {
        let topology = self.read();
        let queue = topology
            .queues
            .get(name)
            .ok_or_else(|| self.no_queue(name))?;
        if queue.is_exclusive_to_other(connection) {
            return Err(self.locked(name));
        }
        Ok(Arc::clone(queue))
    }

    /// `queue.delete`: returns how many messages the queue held, and the consumers to cancel.
    pub fn delete_queue(
        &self,
        name: &ShortStr,
        if_unused: bool,
        if_empty: bool,
        connection: u64,
    ) -> Result<(u32, Vec<Arc<Consumer>>), Error> {
        let mut topology = self.write();
        let Some(queue) = topology.queues.get(name) else {
            return Ok((0, Vec::new()));
        };
        if queue.is_exclusive_to_other(connection) {
            return Err(self.locked(name));
        }
        let (messages, consumers) = queue.counts();
        if if_unused && consumers > 0 {
            return Err(Error::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && messages > 0 {
            return Err(Error::PreconditionFailed(format!(
                "queue '{name}' in vhost '{}' is not empty",
                self.name
            )));
        }
        let (consumers, count) = topology.remove_queue(name);
        Ok((count, consumers))
    }

    /// Deletes an auto-delete queue whose last consumer went, if it is still that queue and
    /// still unused.
    pub fn delete_if_unused(&self, queue: &Arc<Queue>) {
        let mut topology = self.write();
        let current = topology.queues.get(&queue.name);
        if current.is_some_and(|q| Arc::ptr_eq(q, queue)) && !queue.has_consumers() {
            let (consumers, _) = topology.remove_queue(&queue.name);
            cancel_all(consumers);
        }
    }

    /// Deletes the exclusive queues of a closed connection.
    pub fn delete_exclusive(&self, connection: u64) {
        let mut topology = self.write();
        let owned: Vec<ShortStr> = topology
            .queues
            .values()
            .filter(|q| q.options.exclusive_owner == Some(connection))
            .map(|q| q.name.clone())
            .collect();
        for name in owned {
            let (consumers, _) = topology.remove_queue(&name);
            cancel_all(consumers);
        }
    }

    /// `queue.bind` and `exchange.bind`.
    pub fn bind(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), Error> {
        let mut topology = self.write();
        let target = self.resolve(&topology, &destination, connection)?;
        if source.is_empty() {
            return Err(default_exchange());
        }
        let exchange = topology
            .exchanges
            .get_mut(source)
            .ok_or_else(|| self.no_exchange(source))?;
        exchange
            .validate_binding(arguments)
            .map_err(Error::PreconditionFailed)?;
        let key = BindingKey {
            destination,
            routing_key,
            arguments: encode_arguments(arguments),
        };
        exchange.bind(key, target, arguments);
        Ok(())
    }

    /// `queue.unbind` and `exchange.unbind`.
    pub fn unbind(
        &self,
        source: &ShortStr,
        destination: Destination,
        routing_key: ShortStr,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(), Error> {
        let mut topology = self.write();
        let target = self.resolve(&topology, &destination, connection)?;
        if source.is_empty() {
            return Err(default_exchange());
        }
        let exchange = topology
            .exchanges
            .get_mut(source)
            .ok_or_else(|| self.no_exchange(source))?;
        let key = BindingKey {
            destination,
            routing_key,
            arguments: encode_arguments(arguments),
        };
        // Unbinding what is not bound succeeds, as in RabbitMQ 3.x.
        if exchange.unbind(&key, &target) {
            topology.auto_delete_exchange(source);
        }
        Ok(())
    }

    fn resolve(
        &self,
        topology: &Topology,
        destination: &Destination,
        connection: u64,
    ) -> Result<Target, Error> {
        match destination {
            Destination::Queue(name) => {
                let queue = topology
                    .queues
                    .get(name)
                    .ok_or_else(|| self.no_queue(name))?;
                if queue.is_exclusive_to_other(connection) {
                    return Err(self.locked(name));
                }
                Ok(Target::Queue(Arc::clone(queue)))
            }
            Destination::Exchange(name) => {
                if name.is_empty() {
                    return Err(default_exchange());
                }
                if !topology.exchanges.contains_key(name) {
                    return Err(self.no_exchange(name));
                }
                Ok(Target::Exchange(name.clone()))
            }
        }
    }

    /// Checks that a publish may go to `exchange` (404 unknown, 403 internal).
    pub fn check_publish(&self, exchange: &[u8]) -> Result<(), Error> {
        let topology = self.read();
        match topology.exchanges.get(exchange) {
            None => Err(self.no_exchange(&short_lossy(exchange))),
            Some(x) if x.internal => Err(Error::AccessRefused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                x.name, self.name
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Routes one message: fills `scratch.queues` with each destination queue once.
    pub fn route(
        &self,
        exchange: &[u8],
        routing_key: &[u8],
        properties: &[u8],
        scratch: &mut RouteScratch,
    ) -> Result<(), Error> {
        scratch.queues.clear();
        scratch.targets.clear();
        scratch.visited.clear();
        let topology = self.read();
        if exchange.is_empty() {
            if let Some(queue) = topology.queues.get(routing_key) {
                scratch.queues.push(Arc::clone(queue));
            }
            return Ok(());
        }
        let Some(first) = topology.exchanges.get(exchange) else {
            return Err(self.no_exchange(&short_lossy(exchange)));
        };
        let mut headers = LazyHeaders::new(properties);
        first.route(routing_key, &mut headers, &mut scratch.targets);
        scratch.visited.push(first.name.clone());
        while let Some(target) = scratch.targets.pop() {
            match target {
                Target::Queue(queue) => scratch.queues.push(queue),
                Target::Exchange(name) => {
                    // Each exchange routes a message once: loops end here.
                    if scratch.visited.contains(&name) {
                        continue;
                    }
                    if let Some(next) = topology.exchanges.get(&name) {
                        next.route(routing_key, &mut headers, &mut scratch.targets);
                    }
                    scratch.visited.push(name);
                }
            }
        }
        drop(topology);
        if scratch.queues.len() > 1 {
            scratch
                .queues
                .sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
            scratch.queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        Ok(())
    }
}

impl Topology {
    /// Removes a queue and every binding to it; returns its consumers and message count.
    fn remove_queue(&mut self, name: &ShortStr) -> (Vec<Arc<Consumer>>, u32) {
        let Some(queue) = self.queues.remove(name) else {
            return (Vec::new(), 0);
        };
        let destination = Destination::Queue(name.clone());
        let target = Target::Queue(Arc::clone(&queue));
        self.unbind_everywhere(&destination, &target);
        let (consumers, count) = queue.delete();
        (consumers, count)
    }

    fn remove_exchange(&mut self, name: &ShortStr) {
        if self.exchanges.remove(name).is_none() {
            return;
        }
        let destination = Destination::Exchange(name.clone());
        let target = Target::Exchange(name.clone());
        self.unbind_everywhere(&destination, &target);
    }

    fn unbind_everywhere(&mut self, destination: &Destination, target: &Target) {
        let mut emptied = Vec::new();
        for exchange in self.exchanges.values_mut() {
            if exchange.unbind_all_to(destination, target) > 0 {
                emptied.push(exchange.name.clone());
            }
        }
        for name in emptied {
            self.auto_delete_exchange(&name);
        }
    }

    /// Deletes an auto-delete exchange that has just lost its last binding.
    fn auto_delete_exchange(&mut self, name: &ShortStr) {
        let unused = self
            .exchanges
            .get(name)
            .is_some_and(|x| x.auto_delete && !x.has_bindings());
        if unused {
            self.remove_exchange(name);
        }
    }
}

fn declared(queue: &Arc<Queue>) -> QueueDeclared {
    let (message_count, consumer_count) = queue.counts();
    QueueDeclared {
        queue: Arc::clone(queue),
        message_count,
        consumer_count,
    }
}

fn cancel_all(consumers: Vec<Arc<Consumer>>) {
    for consumer in consumers {
        consumer.cancel();
    }
}

fn default_exchange() -> Error {
    Error::AccessRefused("operation not permitted on the default exchange".into())
}

fn is_built_in(name: &ShortStr) -> bool {
    BUILT_IN
        .iter()
        .any(|(n, _)| n.as_bytes() == name.as_bytes())
}

fn short_lossy(bytes: &[u8]) -> ShortStr {
    ShortStr::copy_from_str(&String::from_utf8_lossy(bytes))
}

/// An integer argument of any AMQP integer type.
pub fn integer(value: &AMQPValue) -> Option<i128> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i128::from(*v),
        AMQPValue::ShortShortUInt(v) => i128::from(*v),
        AMQPValue::ShortInt(v) => i128::from(*v),
        AMQPValue::ShortUInt(v) => i128::from(*v),
        AMQPValue::LongInt(v) => i128::from(*v),
        AMQPValue::LongUInt(v) => i128::from(*v),
        AMQPValue::LongLongInt(v) => i128::from(*v),
        _ => return None,
    })
}

fn show(value: Option<&AMQPValue>) -> String {
    match value {
        None => "none".into(),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(other) => match integer(other) {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}
