//! The plan's bindings: the source exchange and the destination must be what the import
//! leaves (declared by the document, existing, or built in), a headers exchange's arguments
//! must be a valid `x-match`, and a queue destination may not be another connection's
//! exclusive queue.

use super::super::model::BindingDef;
use super::super::values::json_to_table;
use super::{short, Binding, Checker};
use crate::broker::exchange::{Destination, ExchangeKind};
use crate::broker::headers::HeadersMatch;
use crate::broker::vhost::BUILT_IN;

impl Checker<'_> {
    pub(super) fn binding(&mut self, def: &BindingDef) {
        let what = format!(
            "binding of {} '{}' to exchange '{}' (routing key '{}') in vhost '{}'",
            def.destination_type, def.destination, def.source, def.routing_key, def.vhost
        );
        if !self.known_vhost(&def.vhost, &what) {
            return;
        }
        match self.planned_binding(def, &what) {
            Ok(binding) => self.plan.bindings.push(binding),
            Err(problem) => self.problems.push(problem),
        }
    }

    fn planned_binding(&self, def: &BindingDef, what: &str) -> Result<Binding, String> {
        if def.source.is_empty() {
            return Err(format!("{what}: the default exchange cannot be bound"));
        }
        let kind = self
            .exchange_kind(&def.vhost, &def.source)
            .ok_or_else(|| format!("{what}: no exchange '{}'", def.source))?;
        let arguments = json_to_table(&def.arguments).map_err(|e| format!("{what}: {e}"))?;
        if kind == ExchangeKind::Headers {
            HeadersMatch::parse(&arguments).map_err(|e| format!("{what}: {e}"))?;
        }
        let name = short(&def.destination, "destination")?;
        let destination = match def.destination_type.as_str() {
            "queue" => {
                self.check_queue_destination(&def.vhost, &def.destination, what)?;
                Destination::Queue(name)
            }
            "exchange" => {
                if def.destination.is_empty()
                    || self.exchange_kind(&def.vhost, &def.destination).is_none()
                {
                    return Err(format!("{what}: no exchange '{}'", def.destination));
                }
                Destination::Exchange(name)
            }
            other => return Err(format!("{what}: unknown destination_type '{other}'")),
        };
        Ok(Binding {
            vhost: def.vhost.clone(),
            source: short(&def.source, "exchange name")?,
            destination,
            routing_key: short(&def.routing_key, "routing key")?,
            arguments,
        })
    }

    fn check_queue_destination(&self, vhost: &str, queue: &str, what: &str) -> Result<(), String> {
        if self
            .queues
            .contains_key(&(vhost.to_owned(), queue.to_owned()))
        {
            return Ok(());
        }
        match self
            .existing(vhost)
            .and_then(|v| v.queue_declaration(queue))
        {
            Some((_, None)) => Ok(()),
            Some((_, Some(_))) => Err(format!(
                "{what}: queue '{queue}' is exclusive to a connection"
            )),
            None => Err(format!("{what}: no queue '{queue}'")),
        }
    }

    /// The type of an exchange the import leaves in `vhost`: declared by it, existing, or
    /// built in.
    fn exchange_kind(&self, vhost: &str, name: &str) -> Option<ExchangeKind> {
        if let Some(def) = self.exchanges.get(&(vhost.to_owned(), name.to_owned())) {
            return ExchangeKind::parse(&def.kind);
        }
        match self.existing(vhost) {
            Some(v) => v.exchange_kind(name.as_bytes()),
            None => BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, kind)| *kind),
        }
    }
}
