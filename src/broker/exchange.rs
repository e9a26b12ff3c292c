//! An exchange: its declared properties, its bindings, and the index that turns a routing key
//! (or headers) into destinations for its type.
//!
//! Owned by the topology (see `vhost.rs`), read under its read lock on every publish. Routing
//! never allocates per destination: matches are pushed into the caller's reusable buffer.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use warren_protocol::method::ShortStr;
use warren_protocol::types::FieldTable;

use super::dedup::Dedup;
use super::headers::HeadersMatch;
use super::queue::Queue;
use super::topic::TopicTrie;
use super::{Map, Set};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-delayed-message` (the RabbitMQ plugin's type): holds a message for its `x-delay`
    /// header's milliseconds, then routes it as its `x-delayed-type` argument says.
    Delayed,
}

/// The delayed-message exchange type's name.
pub const DELAYED_TYPE: &str = "x-delayed-message";

impl ExchangeKind {
    pub fn parse(name: &str) -> Option<ExchangeKind> {
        match name {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            DELAYED_TYPE => Some(ExchangeKind::Delayed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::Delayed => DELAYED_TYPE,
        }
    }
}

/// Why an exchange's arguments are refused for its type (the delayed-message plugin's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindError {
    /// `x-delayed-type` is missing or not a string: 406.
    MissingDelayedType,
    /// `x-delayed-type` names `x-delayed-message` itself: 406.
    DelayedItself,
    /// `x-delayed-type` names no exchange type: 503.
    UnknownDelayedType(String),
}

impl fmt::Display for KindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KindError::MissingDelayedType => {
                f.write_str("Invalid argument, 'x-delayed-type' must be an existing exchange type")
            }
            KindError::DelayedItself => f.write_str(
                "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
            ),
            KindError::UnknownDelayedType(name) => write!(f, "unknown exchange type '{name}'"),
        }
    }
}

/// The type an exchange of `kind` routes by: its own, or for `x-delayed-message` the one its
/// `x-delayed-type` argument names.
pub fn routing_kind(kind: ExchangeKind, arguments: &FieldTable) -> Result<ExchangeKind, KindError> {
    if kind != ExchangeKind::Delayed {
        return Ok(kind);
    }
    let Some(name) = arguments
        .inner()
        .get("x-delayed-type")
        .and_then(super::values::text)
    else {
        return Err(KindError::MissingDelayedType);
    };
    let name = String::from_utf8_lossy(name);
    match ExchangeKind::parse(&name) {
        Some(ExchangeKind::Delayed) => Err(KindError::DelayedItself),
        Some(routing) => Ok(routing),
        None => Err(KindError::UnknownDelayedType(name.into_owned())),
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a binding leads, by name (the binding's identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(ShortStr),
    Exchange(ShortStr),
}

/// One binding of an exchange, as identified by AMQP: destination, binding key and arguments
/// (compared in their encoded form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingKey {
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: Bytes,
}

/// A resolved destination, as the routing index holds it.
#[derive(Debug, Clone)]
pub enum Target {
    Queue(Arc<Queue>),
    Exchange(ShortStr),
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Target::Queue(a), Target::Queue(b)) => Arc::ptr_eq(a, b),
            (Target::Exchange(a), Target::Exchange(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Router {
    Direct(Map<ShortStr, Vec<Target>>),
    Fanout(Vec<Target>),
    Topic(TopicTrie<Target>),
    Headers(Vec<(HeadersMatch, Target)>),
}

#[derive(Debug)]
pub struct Exchange {
    pub name: ShortStr,
    pub kind: ExchangeKind,
    /// What it routes by: `kind`, or a delayed exchange's `x-delayed-type`.
    pub routing: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// `alternate-exchange`: where a message goes that this exchange routes nowhere.
    pub alternate: Option<ShortStr>,
    /// `x-message-deduplication`: the window of keys it has seen (see `broker/dedup.rs`).
    pub dedup: Option<Arc<Dedup>>,
    bindings: Set<BindingKey>,
    router: Router,
}

/// The `alternate-exchange` argument: a string naming an exchange (RabbitMQ ignores other
/// types, and so does Warren).
fn alternate_exchange(arguments: &FieldTable) -> Option<ShortStr> {
    let name = super::values::text(arguments.inner().get("alternate-exchange")?)?;
    Some(ShortStr::copy_from_str(&String::from_utf8_lossy(name)))
}

/// The encoded form of a field table: bindings compare arguments by it.
pub fn encode_arguments(arguments: &FieldTable) -> Bytes {
    if arguments.inner().is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::new();
    warren_protocol::table::encode_field_table(&mut out, arguments);
    out.freeze()
}

impl Exchange {
    pub fn new(
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        // Declarations check the arguments first; a recovered delayed exchange whose
        // `x-delayed-type` is not understood routes as `direct`.
        let routing = routing_kind(kind, &arguments).unwrap_or(ExchangeKind::Direct);
        let router = match routing {
            ExchangeKind::Direct | ExchangeKind::Delayed => Router::Direct(Map::default()),
            ExchangeKind::Fanout => Router::Fanout(Vec::new()),
            ExchangeKind::Topic => Router::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Router::Headers(Vec::new()),
        };
        let alternate = alternate_exchange(&arguments);
        Exchange {
            name,
            kind,
            routing,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            dedup: None,
            bindings: Set::default(),
            router,
        }
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// Checks a binding's arguments for this exchange type (headers: `x-match`).
    pub fn validate_binding(&self, arguments: &FieldTable) -> Result<(), String> {
        match self.routing {
            ExchangeKind::Headers => HeadersMatch::parse(arguments).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Adds a binding; false if it already existed.
    pub fn bind(&mut self, key: BindingKey, target: Target, arguments: &FieldTable) -> bool {
        if !self.bindings.insert(key.clone()) {
            return false;
        }
        match &mut self.router {
            // Most keys lead to one queue (bound by its own name): a first push would reserve
            // room for four targets (160 bytes per binding at 100,000 queues).
            Router::Direct(map) => map
                .entry(key.routing_key)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(target),
            Router::Fanout(targets) => targets.push(target),
            Router::Topic(trie) => trie.insert(key.routing_key.as_bytes(), target),
            Router::Headers(rules) => {
                if let Ok(rule) = HeadersMatch::parse(arguments) {
                    rules.push((rule, target));
                }
            }
        }
        true
    }

    /// Removes a binding; false if there was none.
    pub fn unbind(&mut self, key: &BindingKey, target: &Target) -> bool {
        if !self.bindings.remove(key) {
            return false;
        }
        match &mut self.router {
            Router::Direct(map) => {
                if let Some(targets) = map.get_mut(&key.routing_key) {
                    if let Some(i) = targets.iter().position(|t| t == target) {
                        targets.swap_remove(i);
                    }
                    if targets.is_empty() {
                        map.remove(&key.routing_key);
                    }
                }
            }
            Router::Fanout(targets) => {
                if let Some(i) = targets.iter().position(|t| t == target) {
                    targets.swap_remove(i);
                }
            }
            Router::Topic(trie) => {
                trie.remove(key.routing_key.as_bytes(), target);
            }
            Router::Headers(rules) => {
                // Rules for the same target differ only by arguments; rebuild that target's.
                rules.retain(|(_, t)| t != target);
                for other in self
                    .bindings
                    .iter()
                    .filter(|b| b.destination == key.destination)
                {
                    if let Some(rule) = decode_rule(&other.arguments) {
                        rules.push((rule, target.clone()));
                    }
                }
            }
        }
        true
    }

    /// Removes every binding to `destination`; returns how many.
    pub fn unbind_all_to(&mut self, destination: &Destination, target: &Target) -> usize {
        let keys: Vec<BindingKey> = self
            .bindings
            .iter()
            .filter(|b| &b.destination == destination)
            .cloned()
            .collect();
        for key in &keys {
            self.unbind(key, target);
        }
        keys.len()
    }

    /// Every binding's destination (for cleanup when the exchange goes).
    pub fn bindings(&self) -> impl Iterator<Item = &BindingKey> {
        self.bindings.iter()
    }

    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.bindings.iter().map(|b| &b.destination)
    }

    /// Pushes the targets that match into `out`.
    pub fn route(&self, routing_key: &[u8], headers: &mut LazyHeaders<'_>, out: &mut Vec<Target>) {
        match &self.router {
            Router::Direct(map) => {
                if let Some(targets) = map.get(routing_key) {
                    out.extend(targets.iter().cloned());
                }
            }
            Router::Fanout(targets) => out.extend(targets.iter().cloned()),
            Router::Topic(trie) => trie.for_each_match(routing_key, &mut |t| out.push(t.clone())),
            Router::Headers(rules) => {
                if rules.is_empty() {
                    return;
                }
                let headers = headers.get();
                for (rule, target) in rules {
                    if rule.matches(headers) {
                        out.push(target.clone());
                    }
                }
            }
        }
    }
}

fn decode_rule(encoded: &Bytes) -> Option<HeadersMatch> {
    let table = warren_protocol::table::decode_field_table(encoded)?;
    HeadersMatch::parse(&table).ok()
}

/// A message's `headers` property, decoded only if a headers exchange asks for it.
pub struct LazyHeaders<'a> {
    properties: &'a [u8],
    decoded: Option<Option<FieldTable>>,
}

impl<'a> LazyHeaders<'a> {
    pub fn new(properties: &'a [u8]) -> LazyHeaders<'a> {
        LazyHeaders {
            properties,
            decoded: None,
        }
    }

    fn get(&mut self) -> Option<&FieldTable> {
        let properties = self.properties;
        self.decoded
            .get_or_insert_with(|| warren_protocol::content::decode_headers(properties))
            .as_ref()
    }
}
