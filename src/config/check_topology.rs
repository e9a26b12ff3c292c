//! The checks of `[[exchanges]]` and `[[queues]]`: names (empty, too long, the reserved `amq.`
//! prefix, duplicates per vhost), exchange types (a delayed-message exchange's
//! `x-delayed-type` too), argument values (the broker's own
//! queue-argument checks, worded for the file), and a warning for an alternate or dead-letter
//! exchange that nothing declares. The bindings are checked in `check_bindings.rs`, against
//! what is declared here.

use std::collections::{HashMap, HashSet};

use toml::Spanned;
use warren_protocol::types::FieldTable;

use super::arguments::{explain, field_name, field_value};
use super::check::{vhost_of, Names};
use super::error::{Problem, Source};
use super::model::{Arguments, BindingEntry, ExchangeEntry, QueueEntry};
use super::{ExchangeDef, QueueDef, Topology};
use crate::broker::arguments::check_queue_arguments;
use crate::broker::exchange::{routing_kind, ExchangeKind, KindError};

/// The exchanges every vhost has (they need no declaring).
pub use crate::broker::vhost::BUILT_IN;

/// What the bindings may refer to: exchanges with their type (if it was valid), and queues.
#[derive(Default)]
pub(super) struct Declared {
    pub exchanges: HashMap<(String, String), Option<ExchangeKind>>,
    pub queues: HashSet<(String, String)>,
}

/// An exchange an argument names (`alternate-exchange`, `x-dead-letter-exchange`).
struct Reference {
    vhost: String,
    exchange: String,
    at: std::ops::Range<usize>,
    /// `queue 'q': x-dead-letter-exchange`.
    by: String,
}

pub(super) struct Checker<'a, 's> {
    pub source: &'a Source<'s>,
    vhosts: &'a [String],
    pub problems: &'a mut Vec<Problem>,
    references: Vec<Reference>,
}

pub(super) fn check(
    source: &Source<'_>,
    vhosts: &[String],
    entries: (Vec<ExchangeEntry>, Vec<QueueEntry>, Vec<BindingEntry>),
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Topology {
    let (exchanges, queues, bindings) = entries;
    let mut checker = Checker {
        source,
        vhosts,
        problems,
        references: Vec::new(),
    };
    let mut topology = Topology::default();
    let mut declared = Declared::default();
    let mut names = Names::new("exchange");
    for entry in exchanges {
        topology
            .exchanges
            .extend(checker.exchange(entry, &mut names, &mut declared));
    }
    let mut names = Names::new("queue");
    for entry in queues {
        topology
            .queues
            .extend(checker.queue(entry, &mut names, &mut declared));
    }
    for reference in &checker.references {
        let key = (reference.vhost.clone(), reference.exchange.clone());
        let built_in = BUILT_IN.iter().any(|(name, _)| *name == reference.exchange);
        if !built_in && !declared.exchanges.contains_key(&key) {
            warnings.push(source.problem(
                &reference.at,
                format!(
                    "{} names exchange '{}', which is neither declared in this file nor built in: \
                     what goes there is dropped until a client declares it",
                    reference.by, reference.exchange
                ),
            ));
        }
    }
    let mut names = Names::new("binding");
    for entry in bindings {
        topology
            .bindings
            .extend(checker.binding(entry, &mut names, &declared));
    }
    topology
}

impl Checker<'_, '_> {
    pub fn problem(&mut self, at: &std::ops::Range<usize>, message: String) {
        self.problems.push(self.source.problem(at, message));
    }

    /// Remembers the exchange a string argument names, to warn if nothing declares it.
    fn reference(&mut self, vhost: &str, by: String, value: Option<&Spanned<toml::Value>>) {
        if let Some(value) = value {
            if let Some(exchange) = value.get_ref().as_str() {
                self.references.push(Reference {
                    vhost: vhost.to_owned(),
                    exchange: exchange.to_owned(),
                    at: value.span(),
                    by,
                });
            }
        }
    }

    /// The entry's vhost; with `ok` cleared when it is not declared (its name is still used to
    /// file the entry, so that the bindings to it raise no second problem).
    pub fn vhost(&mut self, vhost: Option<&Spanned<String>>, ok: &mut bool) -> String {
        match vhost_of(self.source, vhost, self.vhosts, self.problems) {
            Some(name) => name,
            None => {
                *ok = false;
                vhost.map(|v| v.get_ref().clone()).unwrap_or_default()
            }
        }
    }

    /// The problems of a name any entity has: empty, longer than a short string, `amq.`.
    fn name(&mut self, what: &str, name: &Spanned<String>, ok: &mut bool) {
        let text = name.get_ref();
        let why = if text.is_empty() {
            Some(match what {
                "exchange" => {
                    "the default exchange (\"\") is built in and cannot be declared".to_owned()
                }
                _ => "a queue in a file needs a name (server-named queues belong to clients)"
                    .to_owned(),
            })
        } else if text.len() > 255 {
            Some(format!("{what} name '{text}' is longer than 255 bytes"))
        } else if BUILT_IN.iter().any(|(built_in, _)| built_in == text) {
            Some(format!(
                "exchange '{text}' is built in: bind to it without declaring it"
            ))
        } else if text.starts_with("amq.") {
            Some(format!(
                "{what} name '{text}' uses the reserved prefix 'amq.'"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.problem(&name.span(), why);
            *ok = false;
        }
    }

    /// A stream queue (`x-queue-type = "stream"`): durable, not auto-delete, and only the
    /// arguments streams take, as the broker checks them at declare.
    fn stream(&mut self, name: &str, entry: &QueueEntry, arguments: &FieldTable, ok: &mut bool) {
        use crate::broker::stream::args::StreamRefused;
        use crate::broker::vhost::check_stream_declaration;
        let checked = check_stream_declaration(entry.durable, false, entry.auto_delete, arguments);
        let Err(refused) = checked else {
            return;
        };
        let (at, why) = match refused {
            StreamRefused::Property("non-durable") => (
                entry.name.span(),
                "a stream must be durable (durable = true)".to_owned(),
            ),
            StreamRefused::Property(property) => (
                entry.name.span(),
                format!("a stream cannot be {}", property.replace('-', " ")),
            ),
            StreamRefused::Unsupported(arg) => (
                entry
                    .arguments
                    .get(&arg)
                    .map_or_else(|| entry.name.span(), |v| v.span()),
                format!("argument '{arg}' does not apply to a stream"),
            ),
            StreamRefused::Invalid { arg, reason } => (
                entry
                    .arguments
                    .get(arg)
                    .map_or_else(|| entry.name.span(), |v| v.span()),
                format!("argument '{arg}' is invalid ({reason})"),
            ),
        };
        self.problem(&at, format!("queue '{name}': {why}"));
        *ok = false;
    }

    /// A quorum queue (`x-queue-type = "quorum"`): durable, not auto-delete, and its group
    /// size and delivery limit integers, as the broker checks them at declare.
    fn quorum(&mut self, name: &str, entry: &QueueEntry, ok: &mut bool) {
        if !entry.durable || entry.auto_delete {
            let why = match entry.durable {
                false => "a quorum queue must be durable (durable = true)",
                true => "a quorum queue cannot be auto delete",
            };
            self.problem(&entry.name.span(), format!("queue '{name}': {why}"));
            *ok = false;
        }
        let bounds = [
            ("x-quorum-initial-group-size", 1, "a positive integer"),
            ("x-delivery-limit", 0, "a non-negative integer"),
        ];
        for (arg, least, what) in bounds {
            let Some(value) = entry.arguments.get(arg) else {
                continue;
            };
            if value.get_ref().as_integer().is_none_or(|n| n < least) {
                self.problem(
                    &value.span(),
                    format!("queue '{name}': argument '{arg}' must be {what}"),
                );
                *ok = false;
            }
        }
    }

    /// The de-duplication arguments (`x-message-deduplication`, `x-cache-size`, `x-cache-ttl`),
    /// checked by the broker's own rule; the problem points at the refused value.
    fn dedup(
        &mut self,
        what: &str,
        name: &str,
        entries: &Arguments,
        arguments: &FieldTable,
        at_name: &toml::Spanned<String>,
        ok: &mut bool,
    ) {
        if let Err(refused) = crate::broker::dedup::settings(arguments) {
            let at = entries
                .get(refused.arg)
                .map_or_else(|| at_name.span(), |value| value.span());
            self.problem(&at, format!("{what} '{name}': {refused}"));
            *ok = false;
        }
    }

    /// An `arguments` table as a field table; a problem per value AMQP cannot carry.
    pub fn arguments(&mut self, arguments: &Arguments, ok: &mut bool) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in arguments {
            match field_name(key).and_then(|k| Ok((k, field_value(value.get_ref())?))) {
                Ok((key, value)) => {
                    table.insert(key, value);
                }
                Err(why) => {
                    self.problem(&value.span(), format!("argument '{key}': {why}"));
                    *ok = false;
                }
            }
        }
        table
    }

    fn exchange(
        &mut self,
        entry: ExchangeEntry,
        names: &mut Names,
        declared: &mut Declared,
    ) -> Option<ExchangeDef> {
        let mut ok = true;
        let vhost = self.vhost(entry.vhost.as_ref(), &mut ok);
        let name = entry.name.get_ref().clone();
        self.name("exchange", &entry.name, &mut ok);
        let shown = format!("'{name}' in vhost '{vhost}'");
        let key = format!("{vhost}\0{name}");
        if let Some(problem) = names.add(self.source, key, &entry.name, &shown) {
            self.problems.push(problem);
            ok = false;
        }
        let kind = ExchangeKind::parse(entry.kind.get_ref());
        if kind.is_none() {
            self.problem(
                &entry.kind.span(),
                format!(
                    "unknown exchange type '{}' (expected direct, fanout, topic, headers or \
                     x-delayed-message)",
                    entry.kind.get_ref()
                ),
            );
            ok = false;
        }
        let arguments = self.arguments(&entry.arguments, &mut ok);
        // A delayed-message exchange routes by its `x-delayed-type`: bindings to it are
        // checked for that type.
        let routing = match kind.map(|kind| routing_kind(kind, &arguments)) {
            Some(Ok(routing)) => Some(routing),
            Some(Err(e)) => {
                let at = entry
                    .arguments
                    .get("x-delayed-type")
                    .map_or_else(|| entry.kind.span(), |value| value.span());
                let why = match e {
                    KindError::MissingDelayedType => format!(
                        "an exchange of type 'x-delayed-message' needs the argument \
                         'x-delayed-type' (a string: direct, fanout, topic or headers) ({e})"
                    ),
                    _ => format!(
                        "argument 'x-delayed-type' must be direct, fanout, topic or headers \
                         ({e})"
                    ),
                };
                self.problem(&at, format!("exchange '{name}': {why}"));
                ok = false;
                None
            }
            None => None,
        };
        declared
            .exchanges
            .entry((vhost.clone(), name.clone()))
            .or_insert(routing);
        let alternate = entry.arguments.get("alternate-exchange");
        self.reference(
            &vhost,
            format!("exchange '{name}': alternate-exchange"),
            alternate,
        );
        if let Some(alternate) = alternate {
            if !alternate.get_ref().is_str() {
                self.problem(
                    &alternate.span(),
                    "argument 'alternate-exchange' must be a string naming an exchange".into(),
                );
                ok = false;
            }
        }
        self.dedup(
            "exchange",
            &name,
            &entry.arguments,
            &arguments,
            &entry.name,
            &mut ok,
        );
        Some(ExchangeDef {
            vhost,
            name,
            kind: kind?,
            durable: entry.durable,
            auto_delete: entry.auto_delete,
            internal: entry.internal,
            arguments,
            origin: self.source.locate(entry.name.span().start),
        })
        .filter(|_| ok)
    }

    fn queue(
        &mut self,
        entry: QueueEntry,
        names: &mut Names,
        declared: &mut Declared,
    ) -> Option<QueueDef> {
        let mut ok = true;
        let vhost = self.vhost(entry.vhost.as_ref(), &mut ok);
        let name = entry.name.get_ref().clone();
        self.name("queue", &entry.name, &mut ok);
        let shown = format!("'{name}' in vhost '{vhost}'");
        if let Some(problem) =
            names.add(self.source, format!("{vhost}\0{name}"), &entry.name, &shown)
        {
            self.problems.push(problem);
            ok = false;
        }
        declared.queues.insert((vhost.clone(), name.clone()));
        if let Some(exclusive) = entry.exclusive.as_ref().filter(|e| *e.get_ref()) {
            self.problem(
                &exclusive.span(),
                format!("queue '{name}': exclusive queues belong to the connection that declares them and cannot be declared in a file"),
            );
            ok = false;
        }
        let arguments = self.arguments(&entry.arguments, &mut ok);
        let dead_letter = entry.arguments.get("x-dead-letter-exchange");
        let by = format!("queue '{name}': x-dead-letter-exchange");
        self.reference(
            &vhost,
            by,
            dead_letter.filter(|v| v.get_ref().as_str() != Some("")),
        );
        // Every refusal, not just the first: each refused argument is taken out and the rest
        // checked again.
        let mut remaining = arguments.inner().clone();
        while let Err(error) = check_queue_arguments(&FieldTable::from(remaining.clone())) {
            let (arg, why) = explain(&error);
            let at = entry
                .arguments
                .get(arg)
                .map_or_else(|| entry.name.span(), |value| value.span());
            self.problem(&at, format!("queue '{name}': argument '{arg}' {why}"));
            ok = false;
            if remaining.remove(arg).is_none() {
                break;
            }
        }
        self.dedup(
            "queue",
            &name,
            &entry.arguments,
            &arguments,
            &entry.name,
            &mut ok,
        );
        if crate::broker::stream::args::is_stream(&arguments) {
            self.stream(&name, &entry, &arguments, &mut ok);
        }
        if crate::broker::vhost::is_quorum(&arguments) {
            self.quorum(&name, &entry, &mut ok);
        }
        Some(QueueDef {
            vhost,
            name,
            durable: entry.durable,
            auto_delete: entry.auto_delete,
            arguments,
            origin: self.source.locate(entry.name.span().start),
        })
        .filter(|_| ok)
    }
}
