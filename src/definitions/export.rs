//! The broker's state as a definitions document. Reads only: each vhost through one
//! [`Vhost::snapshot`] (a short hold of its topology's read lock), users through the
//! [`Users`] handle. Leaves out what RabbitMQ leaves out: the built-in exchanges (`""` and
//! `amq.*`), exclusive queues and server-named queues (`amq.gen-*`).

use serde_json::{json, Map, Value};

use super::model::{BindingDef, Definitions, ExchangeDef, QueueDef, VhostDef};
use super::users::{permission_def, topic_permission_def, user_def};
use super::values::table_to_json;
use super::RABBITMQ_VERSION;
use crate::broker::exchange::Destination;
use crate::broker::vhost::{Vhost, VhostLimits, VhostSnapshot};
use crate::broker::Broker;
use crate::server::Users;

/// Everything, each list in a stable order (by vhost, then name or user).
pub fn all(broker: &Broker, users: &Users) -> Definitions {
    let mut names = broker.vhost_names();
    names.sort();
    let vhosts: Vec<_> = names.iter().filter_map(|n| broker.vhost(n)).collect();
    let mut users_list = users.list();
    users_list.sort_by(|a, b| a.name.cmp(&b.name));
    let mut permissions = users.permissions();
    permissions.sort_by(|a, b| (&a.vhost, &a.user).cmp(&(&b.vhost, &b.user)));
    let mut topics = users.topic_permissions();
    topics.sort_by(|a, b| (&a.vhost, &a.user, &a.exchange).cmp(&(&b.vhost, &b.user, &b.exchange)));
    let mut defs = header();
    defs.users = Some(users_list.iter().map(user_def).collect());
    defs.vhosts = Some(vhosts.iter().map(|v| vhost_def(v)).collect());
    defs.permissions = Some(permissions.iter().map(permission_def).collect());
    defs.topic_permissions = Some(topics.iter().map(topic_permission_def).collect());
    defs.global_parameters = Some(Vec::new());
    fill_topology(&mut defs, &vhosts);
    defs
}

pub fn one_vhost(broker: &Broker, _users: &Users, name: &str) -> Option<Definitions> {
    let vhost = broker.vhost(name)?;
    let mut defs = header();
    fill_topology(&mut defs, &[vhost]);
    Some(defs)
}

fn header() -> Definitions {
    Definitions {
        rabbit_version: Some(RABBITMQ_VERSION.into()),
        rabbitmq_version: Some(RABBITMQ_VERSION.into()),
        product_name: Some("Warren".into()),
        product_version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Definitions::default()
    }
}

/// Parameters (vhost limits), policies (none), exchanges, queues and bindings of `vhosts`.
fn fill_topology(defs: &mut Definitions, vhosts: &[std::sync::Arc<Vhost>]) {
    let (mut parameters, mut exchanges, mut queues, mut bindings) = Default::default();
    for vhost in vhosts {
        parameters_of(vhost, &mut parameters);
        let snapshot = vhost.snapshot();
        topology_of(
            &vhost.name,
            snapshot,
            &mut exchanges,
            &mut queues,
            &mut bindings,
        );
    }
    defs.parameters = Some(parameters);
    defs.policies = Some(Vec::new());
    defs.exchanges = Some(exchanges);
    defs.queues = Some(queues);
    defs.bindings = Some(bindings);
}

/// RabbitMQ keeps vhost limits as the runtime parameter `vhost-limits`.
fn parameters_of(vhost: &Vhost, out: &mut Vec<Value>) {
    let limits = limits_object(vhost.limits());
    if !limits.is_empty() {
        out.push(json!({
            "component": "vhost-limits",
            "name": "limits",
            "value": limits,
            "vhost": vhost.name,
        }));
    }
}

fn limits_object(limits: VhostLimits) -> Map<String, Value> {
    let mut object = Map::new();
    if let Some(n) = limits.max_connections {
        object.insert("max-connections".into(), Value::from(n));
    }
    if let Some(n) = limits.max_queues {
        object.insert("max-queues".into(), Value::from(n));
    }
    object
}

/// A vhost as 3.10 writes it: limits as a list of `[name, value]` pairs.
fn vhost_def(vhost: &Vhost) -> VhostDef {
    let pairs = limits_object(vhost.limits())
        .into_iter()
        .map(|(k, v)| json!([k, v]))
        .collect();
    VhostDef {
        name: vhost.name.clone(),
        limits: Value::Array(pairs),
        metadata: Some(json!({ "description": "", "tags": [] })),
    }
}

fn is_built_in(exchange: &str) -> bool {
    exchange.is_empty() || exchange.starts_with("amq.")
}

fn topology_of(
    vhost: &str,
    snapshot: VhostSnapshot,
    exchanges: &mut Vec<ExchangeDef>,
    queues: &mut Vec<QueueDef>,
    bindings: &mut Vec<BindingDef>,
) {
    for x in snapshot.exchanges {
        if is_built_in(&x.name) {
            continue;
        }
        exchanges.push(ExchangeDef {
            name: x.name,
            vhost: vhost.into(),
            kind: x.kind.name().into(),
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: table_to_json(&x.arguments),
        });
    }
    let mut left_out = Vec::new();
    for q in snapshot.queues {
        if q.exclusive || q.name.starts_with("amq.gen-") {
            left_out.push(q.name);
            continue;
        }
        queues.push(QueueDef {
            name: q.name,
            vhost: vhost.into(),
            durable: q.durable,
            auto_delete: q.auto_delete,
            kind: Some(
                match crate::broker::stream::args::is_stream(&q.arguments) {
                    true => "stream",
                    false => "classic",
                }
                .into(),
            ),
            arguments: table_to_json(&q.arguments),
        });
    }
    for b in snapshot.bindings {
        let (destination, destination_type) = match b.destination {
            Destination::Queue(name) => (name, "queue"),
            Destination::Exchange(name) => (name, "exchange"),
        };
        let destination = String::from_utf8_lossy(destination.as_bytes()).into_owned();
        // The default exchange's implicit bindings are not bindings to export; neither are
        // those of queues left out.
        if b.source.is_empty() || (destination_type == "queue" && left_out.contains(&destination)) {
            continue;
        }
        bindings.push(BindingDef {
            source: b.source,
            vhost: vhost.into(),
            destination,
            destination_type: destination_type.into(),
            routing_key: b.routing_key,
            arguments: table_to_json(&b.arguments),
        });
    }
}
