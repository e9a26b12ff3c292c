//! Reading a file into its sections and entries, collecting every problem instead of stopping at
//! the first: all TOML syntax errors; every unknown key (each entry's keys are checked against
//! its struct's fields before serde sees it); and, per entry, each wrong-typed value (the key
//! serde complained about is taken out and the entry read again, until it reads). An entry that
//! reads once its bad keys are out is still checked further (its other problems are reported
//! too); one that lacks a required key is left out.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{Problem, Source};
use super::model::{
    BindingEntry, ClusterSection, ExchangeEntry, PermissionEntry, QueueEntry, ServerSection,
    TopicPermissionEntry, UserEntry, VhostEntry,
};

/// The sections of a file, each entry well-formed.
#[derive(Debug, Default)]
pub struct Parsed {
    pub server: ServerSection,
    pub users: Vec<UserEntry>,
    pub vhosts: Vec<VhostEntry>,
    pub permissions: Vec<PermissionEntry>,
    pub topic_permissions: Vec<TopicPermissionEntry>,
    pub exchanges: Vec<ExchangeEntry>,
    pub queues: Vec<QueueEntry>,
    pub bindings: Vec<BindingEntry>,
    pub cluster: Option<ClusterSection>,
}

const SECTIONS: &str =
    "[server], [cluster], [[users]], [[vhosts]], [[permissions]], [[topic_permissions]], \
     [[exchanges]], [[queues]], [[bindings]], loopback_users";

/// Reads `source`; syntax errors end the reading (nothing after them is trusted).
pub fn parse(source: &Source<'_>, problems: &mut Vec<Problem>) -> Parsed {
    let mut parsed = Parsed::default();
    let (document, errors) = DeTable::parse_recoverable(source.text);
    if !errors.is_empty() {
        for error in errors {
            let message = error.message().trim().replace('\n', "; ");
            problems.push(match error.span() {
                Some(span) => source.problem(&span, format!("TOML syntax: {message}")),
                None => source.whole(format!("TOML syntax: {message}")),
            });
        }
        return parsed;
    }
    for (key, value) in document.into_inner() {
        let reader = Reader { source, problems };
        match key.get_ref().as_ref() {
            "server" => {
                if let Some(server) = reader.entry("[server]", value) {
                    parsed.server = server;
                }
            }
            "cluster" => parsed.cluster = reader.entry("[cluster]", value),
            "users" => parsed.users = reader.entries("users", value),
            // Also accepted at the top of the file, as RabbitMQ's setting is top-level.
            "loopback_users" => {
                if let Some(users) = reader.value::<Vec<String>>("loopback_users", value) {
                    parsed.server.loopback_users.get_or_insert(users);
                }
            }
            "vhosts" => parsed.vhosts = reader.entries("vhosts", value),
            "permissions" => parsed.permissions = reader.entries("permissions", value),
            "topic_permissions" => {
                parsed.topic_permissions = reader.entries("topic_permissions", value)
            }
            "exchanges" => parsed.exchanges = reader.entries("exchanges", value),
            "queues" => parsed.queues = reader.entries("queues", value),
            "bindings" => parsed.bindings = reader.entries("bindings", value),
            other => problems.push(source.problem(
                &key.span(),
                format!("unknown key '{other}' (a configuration file has {SECTIONS})"),
            )),
        }
    }
    parsed
}

struct Reader<'s, 'p> {
    source: &'s Source<'s>,
    problems: &'p mut Vec<Problem>,
}

impl Reader<'_, '_> {
    /// An array of tables, `[[name]]`.
    fn entries<T: DeserializeOwned>(self, name: &str, value: Spanned<DeValue<'_>>) -> Vec<T> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.problems.push(self.source.problem(
                &span,
                format!("'{name}' must be an array of tables: write each entry as [[{name}]]"),
            ));
            return Vec::new();
        };
        let what = format!("[[{name}]]");
        let mut entries = Vec::new();
        for item in items {
            let reader = Reader {
                source: self.source,
                problems: &mut *self.problems,
            };
            if let Some(entry) = reader.entry(&what, item) {
                entries.push(entry);
            }
        }
        entries
    }

    /// A plain value (not a table), read into `T`; a problem at its span if it is not one.
    fn value<T: DeserializeOwned>(self, what: &str, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(value) => Some(value),
            Err(error) => {
                let message = error.message().trim().replace('\n', "; ");
                let at = error.span().unwrap_or(span);
                self.problems
                    .push(self.source.problem(&at, format!("{what}: {message}")));
                None
            }
        }
    }

    /// One table, read into `T` with every problem collected.
    fn entry<T: DeserializeOwned>(self, what: &str, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            self.problems.push(
                self.source
                    .problem(&span, format!("{what} must be a table")),
            );
            return None;
        };
        let fields = field_names::<T>();
        let unknown: Vec<Spanned<_>> = table
            .keys()
            .filter(|key| !fields.contains(&key.get_ref().as_ref()))
            .cloned()
            .collect();
        for key in unknown {
            self.problems.push(self.source.problem(
                &key.span(),
                format!(
                    "unknown key '{}' in {what} (expected one of: {})",
                    key.get_ref(),
                    fields.join(", ")
                ),
            ));
            table.remove(&key);
        }
        let mut removed: Vec<String> = Vec::new();
        loop {
            let input = Spanned::new(span.clone(), DeValue::Table(table.clone()));
            let error = match T::deserialize(ValueDeserializer::from(input)) {
                Ok(entry) => return Some(entry),
                Err(error) => error,
            };
            let message = error.message().trim().replace('\n', "; ");
            if removed
                .iter()
                .any(|key| message == format!("missing field `{key}`"))
            {
                return None;
            }
            let culprit = error.span().and_then(|at| key_at(&table, &at));
            let at = error.span().unwrap_or_else(|| span.clone());
            match culprit {
                Some(key) => {
                    let name = key.get_ref().to_string();
                    self.problems
                        .push(self.source.problem(&at, format!("{name}: {message}")));
                    table.remove(&key);
                    removed.push(name);
                }
                None => {
                    let message = match message
                        .strip_prefix("missing field `")
                        .and_then(|rest| rest.strip_suffix('`'))
                    {
                        Some(field) => format!("{what} entry has no '{field}', which is required"),
                        None => format!("{what}: {message}"),
                    };
                    self.problems.push(self.source.problem(&at, message));
                    return None;
                }
            }
        }
    }
}

/// The key whose value holds the span `at`.
fn key_at<'i>(
    table: &DeTable<'i>,
    at: &std::ops::Range<usize>,
) -> Option<Spanned<std::borrow::Cow<'i, str>>> {
    table
        .iter()
        .find(|(key, value)| {
            let (k, v) = (key.span(), value.span());
            (v.start <= at.start && at.end <= v.end) || k == *at
        })
        .map(|(key, _)| key.clone())
}

/// The field names a derived `Deserialize` struct asks for (what `deny_unknown_fields` allows).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field list it is handed by `deserialize_struct`.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
