//! The checks of `[[exchanges]]`, `[[queues]]` and `[[bindings]]`: names (empty, too long, the
//! reserved `amq.` prefix, duplicates per vhost), exchange types, argument values (the broker's
//! own queue-argument checks, worded for the file), and bindings only between things that are
//! declared in the file or built in, with topic binding keys free of empty words.

use std::collections::{HashMap, HashSet};

use toml::Spanned;
use warren_protocol::types::FieldTable;

use super::arguments::{explain, field_name, field_value};
use super::check::{vhost_of, Names};
use super::error::{Problem, Source};
use super::model::{Arguments, BindingEntry, DestinationType, ExchangeEntry, QueueEntry};
use super::{BindingDef, ExchangeDef, QueueDef, Topology};
use crate::broker::arguments::check_queue_arguments;
use crate::broker::exchange::{encode_arguments, ExchangeKind};
use crate::broker::headers::HeadersMatch;

/// The exchanges every vhost has (they need no declaring).
pub const BUILT_IN: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// What the bindings may refer to: exchanges with their type (if it was valid), and queues.
#[derive(Default)]
struct Declared {
    exchanges: HashMap<(String, String), Option<ExchangeKind>>,
    queues: HashSet<(String, String)>,
}

struct Checker<'a, 's> {
    source: &'a Source<'s>,
    vhosts: &'a [String],
    problems: &'a mut Vec<Problem>,
}

pub(super) fn check(
    source: &Source<'_>,
    vhosts: &[String],
    exchanges: Vec<ExchangeEntry>,
    queues: Vec<QueueEntry>,
    bindings: Vec<BindingEntry>,
    problems: &mut Vec<Problem>,
) -> Topology {
    let mut checker = Checker {
        source,
        vhosts,
        problems,
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
    let mut names = Names::new("binding");
    for entry in bindings {
        topology
            .bindings
            .extend(checker.binding(entry, &mut names, &declared));
    }
    topology
}

impl Checker<'_, '_> {
    fn problem(&mut self, at: &std::ops::Range<usize>, message: String) {
        self.problems.push(self.source.problem(at, message));
    }

    /// The entry's vhost; with `ok` cleared when it is not declared (its name is still used to
    /// file the entry, so that the bindings to it raise no second problem).
    fn vhost(&mut self, vhost: Option<&Spanned<String>>, ok: &mut bool) -> String {
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

    /// An `arguments` table as a field table; a problem per value AMQP cannot carry.
    fn arguments(&mut self, arguments: &Arguments, ok: &mut bool) -> FieldTable {
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
                    "unknown exchange type '{}' (expected direct, fanout, topic or headers)",
                    entry.kind.get_ref()
                ),
            );
            ok = false;
        }
        declared
            .exchanges
            .entry((vhost.clone(), name.clone()))
            .or_insert(kind);
        let arguments = self.arguments(&entry.arguments, &mut ok);
        if let Some(alternate) = entry.arguments.get("alternate-exchange") {
            if !alternate.get_ref().is_str() {
                self.problem(
                    &alternate.span(),
                    "argument 'alternate-exchange' must be a string naming an exchange".into(),
                );
                ok = false;
            }
        }
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

    fn binding(
        &mut self,
        entry: BindingEntry,
        names: &mut Names,
        declared: &Declared,
    ) -> Option<BindingDef> {
        let mut ok = true;
        let vhost = self.vhost(entry.vhost.as_ref(), &mut ok);
        let source = entry.source.get_ref().clone();
        let destination = entry.destination.get_ref().clone();
        let kind = self.exchange_kind(&vhost, &entry.source, "from", declared, &mut ok);
        match entry.destination_type {
            DestinationType::Queue => {
                if !declared
                    .queues
                    .contains(&(vhost.clone(), destination.clone()))
                {
                    self.problem(
                        &entry.destination.span(),
                        format!("binding to queue '{destination}' in vhost '{vhost}', which is not declared in this file"),
                    );
                    ok = false;
                }
            }
            DestinationType::Exchange => {
                self.exchange_kind(&vhost, &entry.destination, "to", declared, &mut ok);
            }
        }
        let routing_key = entry
            .routing_key
            .as_ref()
            .map(|key| key.get_ref().clone())
            .unwrap_or_default();
        let key_at = entry
            .routing_key
            .as_ref()
            .map_or_else(|| entry.source.span(), |key| key.span());
        if routing_key.len() > 255 {
            self.problem(&key_at, "routing_key is longer than 255 bytes".into());
            ok = false;
        }
        if kind == Some(ExchangeKind::Topic) && has_empty_word(&routing_key) {
            self.problem(
                &key_at,
                format!("topic binding key '{routing_key}' has an empty word (words are separated by single dots: 'a.b', 'a.*', 'a.#')"),
            );
            ok = false;
        }
        let arguments = self.arguments(&entry.arguments, &mut ok);
        if kind == Some(ExchangeKind::Headers) {
            if let Err(why) = HeadersMatch::parse(&arguments) {
                let at = entry
                    .arguments
                    .get("x-match")
                    .map_or_else(|| entry.source.span(), |value| value.span());
                self.problem(&at, format!("headers binding: {why}"));
                ok = false;
            }
        }
        let identity = format!(
            "{vhost}\0{source}\0{:?}\0{destination}\0{routing_key}\0{:?}",
            entry.destination_type,
            encode_arguments(&arguments)
        );
        let shown = format!(
            "from '{source}' to {} '{destination}' with key '{routing_key}' in vhost '{vhost}'",
            match entry.destination_type {
                DestinationType::Queue => "queue",
                DestinationType::Exchange => "exchange",
            }
        );
        if let Some(problem) = names.add(self.source, identity, &entry.source, &shown) {
            self.problems.push(problem);
            ok = false;
        }
        Some(BindingDef {
            vhost,
            source,
            destination,
            destination_type: entry.destination_type,
            routing_key,
            arguments,
            origin: self.source.locate(entry.source.span().start),
        })
        .filter(|_| ok)
    }

    /// The type of an exchange a binding names (`side`: "from" its source, "to" its
    /// destination); a problem if it is neither declared in the file nor built in.
    fn exchange_kind(
        &mut self,
        vhost: &str,
        name: &Spanned<String>,
        side: &str,
        declared: &Declared,
        ok: &mut bool,
    ) -> Option<ExchangeKind> {
        let text = name.get_ref();
        if text.is_empty() {
            let why = match side {
                "from" => "binding from the default exchange (\"\"): every queue is bound to it by its name already",
                _ => "binding to the default exchange (\"\") is not allowed",
            };
            self.problem(&name.span(), why.into());
            *ok = false;
            return None;
        }
        if let Some((_, kind)) = BUILT_IN.iter().find(|(built_in, _)| built_in == text) {
            return Some(*kind);
        }
        match declared.exchanges.get(&(vhost.to_owned(), text.clone())) {
            Some(kind) => *kind,
            None => {
                self.problem(
                    &name.span(),
                    format!("binding {side} exchange '{text}' in vhost '{vhost}', which is neither declared in this file nor built in"),
                );
                *ok = false;
                None
            }
        }
    }
}

/// A topic binding key with an empty word: `a..b`, `.a`, `a.` (an empty key is one word that
/// matches the empty routing key, as in RabbitMQ, and is allowed).
fn has_empty_word(key: &str) -> bool {
    !key.is_empty() && key.split('.').any(str::is_empty)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_words() {
        for key in ["a..b", ".a", "a.", ".", "a.#..b"] {
            assert!(super::has_empty_word(key), "{key}");
        }
        for key in ["", "a", "a.b", "*.#", "#"] {
            assert!(!super::has_empty_word(key), "{key}");
        }
    }
}
