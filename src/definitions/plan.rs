//! Checking a whole document against the broker before anything changes: every name, type,
//! argument and reference, and every declaration against what exists (an existing queue or
//! exchange with other properties is refused, naming it). The answer is a [`Plan`] that
//! `apply.rs` carries out, or every problem found. Reads the broker; never changes it.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use warren_protocol::method::ShortStr;
use warren_protocol::types::{AMQPValue, FieldTable, LongString};

use super::model::{Definitions, ExchangeDef, QueueDef};
use super::values::json_to_table;
use super::{DefinitionsError, Warning};
use crate::broker::arguments::check_queue_arguments;
use crate::broker::exchange::{Destination, ExchangeKind};
use crate::broker::values::argument_mismatch;
use crate::broker::vhost::{
    ExchangeDeclare, QueueDeclare, Vhost, VhostLimits, EQUIVALENT_QUEUE_ARGS,
};
use crate::broker::Broker;
use crate::server::{Permission, TopicPermission, User, Users};

mod bindings;
mod users;
mod vhosts;

/// What an import will do, all of it checked.
#[derive(Debug, Default)]
pub struct Plan {
    pub warnings: Vec<Warning>,
    pub new_vhosts: Vec<String>,
    pub limits: Vec<(String, VhostLimits)>,
    /// The merged users, permissions and topic permissions (`None`: the document has none).
    pub users: Option<(Vec<User>, Vec<Permission>, Vec<TopicPermission>)>,
    pub exchanges: Vec<(String, ExchangeDeclare)>,
    pub queues: Vec<(String, QueueDeclare)>,
    pub bindings: Vec<Binding>,
}

#[derive(Debug)]
pub struct Binding {
    pub vhost: String,
    pub source: ShortStr,
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

/// The checks' working state: what the plan holds so far and what is wrong.
struct Checker<'a> {
    broker: &'a Broker,
    plan: Plan,
    problems: Vec<String>,
    /// Every vhost the import leaves: existing and new.
    vhosts: HashSet<String>,
    /// Exchanges and queues the plan declares, by (vhost, name).
    exchanges: HashMap<(String, String), ExchangeDef>,
    queues: HashMap<(String, String), QueueDef>,
}

pub fn check(broker: &Broker, users: &Users, defs: &Definitions) -> Result<Plan, DefinitionsError> {
    let mut checker = Checker {
        broker,
        plan: Plan::default(),
        problems: Vec::new(),
        vhosts: broker.vhost_names().into_iter().collect(),
        exchanges: HashMap::new(),
        queues: HashMap::new(),
    };
    checker.ignored(defs);
    checker.vhosts(defs);
    checker.users(users, defs);
    for exchange in defs.exchanges.iter().flatten() {
        checker.exchange(exchange);
    }
    for queue in defs.queues.iter().flatten() {
        checker.queue(queue);
    }
    checker.queue_limits();
    for binding in defs.bindings.iter().flatten() {
        checker.binding(binding);
    }
    match checker.problems.is_empty() {
        true => Ok(checker.plan),
        false => Err(DefinitionsError::Invalid(checker.problems)),
    }
}

fn short(name: &str, what: &str) -> Result<ShortStr, String> {
    match name.len() <= 255 {
        true => Ok(ShortStr::copy_from_str(name)),
        false => Err(format!("{what} '{name}' is longer than 255 bytes")),
    }
}

impl Checker<'_> {
    fn warn(&mut self, text: String) {
        self.plan.warnings.push(Warning(text));
    }

    /// Accepted but not acted on: unknown keys, policies, global parameters.
    fn ignored(&mut self, defs: &Definitions) {
        for key in defs.other.keys() {
            self.warn(format!("unknown key '{key}' ignored"));
        }
        for policy in defs.policies.iter().flatten() {
            let name = policy.get("name").and_then(Value::as_str).unwrap_or("?");
            self.warn(format!("policy '{name}' ignored: Warren has no policies"));
        }
        for parameter in defs.global_parameters.iter().flatten() {
            let name = parameter.get("name").and_then(Value::as_str).unwrap_or("?");
            self.warn(format!("global parameter '{name}' ignored"));
        }
    }

    /// The vhost of an entry must exist or be created by the document.
    fn known_vhost(&mut self, vhost: &str, what: &str) -> bool {
        let known = self.vhosts.contains(vhost);
        if !known {
            self.problems.push(format!("{what}: no vhost '{vhost}'"));
        }
        known
    }

    /// An existing vhost, if there is one (a new one has only the built-in exchanges).
    fn existing(&self, vhost: &str) -> Option<std::sync::Arc<Vhost>> {
        self.broker.vhost(vhost)
    }

    fn exchange(&mut self, def: &ExchangeDef) {
        let what = format!("exchange '{}' in vhost '{}'", def.name, def.vhost);
        if !self.known_vhost(&def.vhost, &what) {
            return;
        }
        if def.name.is_empty() || def.name.starts_with("amq.") {
            self.warn(format!("{what} skipped: built-in"));
            return;
        }
        match self.exchange_declaration(def, &what) {
            Ok(declare) => {
                let key = (def.vhost.clone(), def.name.clone());
                if let Some(earlier) = self.exchanges.get(&key) {
                    if earlier != def {
                        self.problems
                            .push(format!("{what} is defined twice, differently"));
                    }
                    return;
                }
                self.exchanges.insert(key, def.clone());
                self.plan.exchanges.push((def.vhost.clone(), declare));
            }
            Err(problem) => self.problems.push(problem),
        }
    }

    fn exchange_declaration(
        &self,
        def: &ExchangeDef,
        what: &str,
    ) -> Result<ExchangeDeclare, String> {
        let kind = ExchangeKind::parse(&def.kind)
            .ok_or_else(|| format!("{what}: unknown exchange type '{}'", def.kind))?;
        let arguments = json_to_table(&def.arguments).map_err(|e| format!("{what}: {e}"))?;
        let declare = ExchangeDeclare {
            name: short(&def.name, "exchange name")?,
            kind: kind.name().into(),
            passive: false,
            durable: def.durable,
            auto_delete: def.auto_delete,
            internal: def.internal,
            arguments,
        };
        let Some(existing) = self
            .existing(&def.vhost)
            .and_then(|v| v.exchange_declaration(&def.name))
        else {
            return Ok(declare);
        };
        let flags = [
            ("type", declare.kind.as_str(), existing.kind.as_str()),
            (
                "durable",
                bool_text(declare.durable),
                bool_text(existing.durable),
            ),
            (
                "auto_delete",
                bool_text(declare.auto_delete),
                bool_text(existing.auto_delete),
            ),
            (
                "internal",
                bool_text(declare.internal),
                bool_text(existing.internal),
            ),
        ];
        differs(what, &flags)?;
        let arg = "alternate-exchange";
        let (got, have) = (
            declare.arguments.inner().get(arg),
            existing.arguments.inner().get(arg),
        );
        if let Some((got, have)) = argument_mismatch(got, have) {
            return Err(format!(
                "{what} exists with '{arg}' {have}, the document has {got}"
            ));
        }
        Ok(declare)
    }

    fn queue(&mut self, def: &QueueDef) {
        let what = format!("queue '{}' in vhost '{}'", def.name, def.vhost);
        if !self.known_vhost(&def.vhost, &what) {
            return;
        }
        match self.queue_declaration(def, &what) {
            Ok(declare) => {
                let key = (def.vhost.clone(), def.name.clone());
                if let Some(earlier) = self.queues.get(&key) {
                    if earlier != def {
                        self.problems
                            .push(format!("{what} is defined twice, differently"));
                    }
                    return;
                }
                self.queues.insert(key, def.clone());
                self.plan.queues.push((def.vhost.clone(), declare));
            }
            Err(problem) => self.problems.push(problem),
        }
    }

    fn queue_declaration(&self, def: &QueueDef, what: &str) -> Result<QueueDeclare, String> {
        if def.name.is_empty() || def.name.starts_with("amq.") {
            return Err(format!(
                "{what}: the name is empty or has the reserved prefix 'amq.'"
            ));
        }
        let mut arguments = json_to_table(&def.arguments).map_err(|e| format!("{what}: {e}"))?;
        if let Some(kind) = def.kind.as_deref().filter(|k| *k != "classic") {
            // RabbitMQ's queue type: refused below unless Warren takes it as x-queue-type.
            if !arguments.inner().contains_key("x-queue-type") {
                let value = LongString::from(kind.as_bytes().to_vec());
                arguments.insert("x-queue-type".into(), AMQPValue::LongString(value));
            }
        }
        if let Err(error) = check_queue_arguments(&arguments) {
            let (arg, reason) = crate::config::arguments::explain(&error);
            return Err(format!("{what}: argument '{arg}' {reason}"));
        }
        if crate::broker::stream::args::is_stream(&arguments) {
            let checked = crate::broker::vhost::check_stream_declaration(
                def.durable,
                false,
                def.auto_delete,
                &arguments,
            );
            if let Err(refused) = checked {
                return Err(format!("{what}: as a stream, {refused}"));
            }
        }
        let declare = QueueDeclare {
            name: short(&def.name, "queue name")?,
            server_named: false,
            passive: false,
            durable: def.durable,
            exclusive: false,
            auto_delete: def.auto_delete,
            arguments,
        };
        let Some((existing, owner)) = self
            .existing(&def.vhost)
            .and_then(|v| v.queue_declaration(&def.name))
        else {
            return Ok(declare);
        };
        if owner.is_some() {
            return Err(format!(
                "{what} exists as an exclusive queue of a connection"
            ));
        }
        let flags = [
            (
                "durable",
                bool_text(declare.durable),
                bool_text(existing.durable),
            ),
            (
                "auto_delete",
                bool_text(declare.auto_delete),
                bool_text(existing.auto_delete),
            ),
        ];
        differs(what, &flags)?;
        for arg in EQUIVALENT_QUEUE_ARGS {
            let (got, have) = (
                declare.arguments.inner().get(arg),
                existing.arguments.inner().get(arg),
            );
            if let Some((got, have)) = argument_mismatch(got, have) {
                return Err(format!(
                    "{what} exists with '{arg}' {have}, the document has {got}"
                ));
            }
        }
        Ok(declare)
    }

    /// The new queues must fit each vhost's `max-queues` (as the import leaves it).
    fn queue_limits(&mut self) {
        let mut added: HashMap<&str, u32> = HashMap::new();
        for (vhost, declare) in &self.plan.queues {
            let exists = self
                .existing(vhost)
                .is_some_and(|v| v.has_queue(declare.name.as_bytes()));
            if !exists {
                *added.entry(vhost.as_str()).or_default() += 1;
            }
        }
        for (vhost, added) in added {
            let planned = self
                .plan
                .limits
                .iter()
                .rev()
                .find(|(v, _)| v == vhost)
                .map(|(_, l)| *l);
            let existing = self.existing(vhost);
            let limits = planned.or_else(|| existing.as_ref().map(|v| v.limits()));
            let Some(limit) = limits.and_then(|l| l.max_queues) else {
                continue;
            };
            let count = existing.map_or(0, |v| v.queues().len()) as u64 + u64::from(added);
            if count > u64::from(limit) {
                self.problems.push(format!(
                    "vhost '{vhost}' would hold {count} queues, over its max-queues limit {limit}"
                ));
            }
        }
    }
}

fn bool_text(b: bool) -> &'static str {
    match b {
        true => "true",
        false => "false",
    }
}

/// The first property an existing exchange or queue has otherwise than the document says.
fn differs(what: &str, flags: &[(&str, &str, &str)]) -> Result<(), String> {
    match flags.iter().find(|(_, got, have)| got != have) {
        Some((name, got, have)) => Err(format!(
            "{what} exists with {name} '{have}', the document has '{got}'"
        )),
        None => Ok(()),
    }
}
