//! The plan's vhosts and their limits: vhosts the document names are created; limits come from
//! a vhost's `limits` (3.10's list of pairs, or an object) and from `vhost-limits` runtime
//! parameters, over what the vhost has. Other parameters are ignored with a warning.

use serde_json::{Map, Value};

use super::super::model::Definitions;
use super::super::users::limit;
use super::Checker;

impl Checker<'_> {
    pub(super) fn vhosts(&mut self, defs: &Definitions) {
        for def in defs.vhosts.iter().flatten() {
            if def.name.is_empty() {
                self.problems.push("a vhost has an empty name".into());
                continue;
            }
            if self.vhosts.insert(def.name.clone()) {
                self.plan.new_vhosts.push(def.name.clone());
            }
            match limits_object(&def.limits) {
                Some(object) => self.limits(&def.name, &object),
                None => self.problems.push(format!(
                    "vhost '{}': limits must be an object or a list of [name, value] pairs",
                    def.name
                )),
            }
        }
        for parameter in defs.parameters.iter().flatten() {
            self.parameter(parameter);
        }
    }

    fn parameter(&mut self, parameter: &Value) {
        let text = |key: &str| {
            parameter
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let (component, name, vhost) = (text("component"), text("name"), text("vhost"));
        if component != "vhost-limits" {
            self.warn(format!(
                "parameter '{name}' of component '{component}' in vhost '{vhost}' ignored"
            ));
            return;
        }
        let what = format!("vhost-limits parameter of vhost '{vhost}'");
        if !self.known_vhost(vhost, &what) {
            return;
        }
        match parameter.get("value").and_then(Value::as_object) {
            Some(object) => self.limits(vhost, &object.clone()),
            None => self
                .problems
                .push(format!("{what}: value must be an object")),
        }
    }

    /// Overlays the limits in `object` on what the vhost will have.
    fn limits(&mut self, vhost: &str, object: &Map<String, Value>) {
        if object.is_empty() {
            return;
        }
        let planned = self.plan.limits.iter().rev().find(|(v, _)| v == vhost);
        let mut limits = match planned {
            Some((_, limits)) => *limits,
            None => self.existing(vhost).map(|v| v.limits()).unwrap_or_default(),
        };
        let whose = format!("vhost '{vhost}'");
        for (key, value) in object {
            let parsed = limit(Some(value), &whose, key);
            match (key.as_str(), parsed) {
                (_, Err(problem)) => self.problems.push(problem),
                ("max-connections", Ok(n)) => limits.max_connections = n,
                ("max-queues", Ok(n)) => limits.max_queues = n,
                (other, Ok(_)) => self.warn(format!("{whose}: limit '{other}' ignored")),
            }
        }
        self.plan.limits.push((vhost.to_owned(), limits));
    }
}

/// Limits as an object, from either form; `None` for anything else.
fn limits_object(limits: &Value) -> Option<Map<String, Value>> {
    match limits {
        Value::Null => Some(Map::new()),
        Value::Object(object) => Some(object.clone()),
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(name), value]) => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}
