//! What each `warren ctl` command asks of the management API: the paths (RabbitMQ's), the
//! bodies, and the [`Output`] the caller prints.
//!
//! It never prints; `mod.rs` does, through `tables.rs`.

use serde_json::{json, Map, Value};

use super::client::{segment, Client, CtlError};
use super::tables::{self, Column};
use super::{DeclareCommand, DeleteCommand, DestinationType, Listing};

/// A command's outcome, to print.
pub enum Output {
    /// A listing (a JSON array): a table of these columns.
    Table(Value, &'static [Column]),
    /// Key/value lines, and the JSON they were read from.
    Lines(Vec<(&'static str, String)>, Value),
    /// JSON only.
    Json(Value),
    /// A change made: one line to confirm it (nothing with `--json`).
    Done(String),
}

/// `--arg KEY=VALUE`: integers and booleans as such, the rest as a string.
pub fn parse_argument(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("'{text}' has an empty key"));
    }
    let value = match value {
        "true" => json!(true),
        "false" => json!(false),
        _ => value
            .parse::<i64>()
            .map_or_else(|_| json!(value), |n| json!(n)),
    };
    Ok((key.to_owned(), value))
}

/// `status`: from `/api/overview` and this node's entry of `/api/nodes`.
pub fn status(client: &Client) -> Result<Output, CtlError> {
    let overview = client.get("/api/overview")?;
    let nodes = client.get("/api/nodes")?;
    let name = overview.get("node").cloned().unwrap_or(Value::Null);
    let node = nodes
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n.get("name") == Some(&name)))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |value: &Value, path: &str| {
        tables::cell(path.split('.').try_fold(value, |v, key| v.get(key)))
    };
    let rate = |path: &str| match text(&overview, path) {
        rate if rate.is_empty() => "0.0/s".to_owned(),
        rate => format!("{rate}/s"),
    };
    let product = format!(
        "{} {}",
        text(&overview, "product_name"),
        text(&overview, "product_version")
    );
    let uptime = node
        .get("uptime")
        .and_then(Value::as_u64)
        .map(tables::duration);
    let mut lines = vec![
        ("node", text(&overview, "node")),
        ("product", product.trim().to_owned()),
        ("rabbitmq_version", text(&overview, "rabbitmq_version")),
        ("management_version", text(&overview, "management_version")),
        ("uptime", uptime.unwrap_or_default()),
        ("listeners", listeners(&overview)),
    ];
    for key in [
        "connections",
        "channels",
        "exchanges",
        "queues",
        "consumers",
    ] {
        lines.push((key, text(&overview, &format!("object_totals.{key}"))));
    }
    for key in ["messages", "messages_ready", "messages_unacknowledged"] {
        lines.push((key, text(&overview, &format!("queue_totals.{key}"))));
    }
    lines.push(("publish_rate", rate("message_stats.publish_details.rate")));
    lines.push((
        "deliver_rate",
        rate("message_stats.deliver_get_details.rate"),
    ));
    lines.push(("ack_rate", rate("message_stats.ack_details.rate")));
    let json = json!({ "overview": overview, "node": node });
    Ok(Output::Lines(lines, json))
}

/// `amqp 127.0.0.1:5672, http 127.0.0.1:15672`.
fn listeners(overview: &Value) -> String {
    let listeners = overview.get("listeners").and_then(Value::as_array);
    listeners
        .into_iter()
        .flatten()
        .map(|l| {
            let field = |key: &str| tables::cell(l.get(key));
            let ip = field("ip_address");
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            format!("{} {ip}:{}", field("protocol"), field("port"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `list WHAT`: every vhost's, or `vhost`'s only.
pub fn list(client: &Client, what: Listing, vhost: Option<&str>) -> Result<Output, CtlError> {
    let v = vhost.map(segment);
    let (path, columns) = match what {
        Listing::Queues => (in_vhost("/api/queues", &v), tables::QUEUES),
        Listing::Exchanges => (in_vhost("/api/exchanges", &v), tables::EXCHANGES),
        Listing::Bindings => (in_vhost("/api/bindings", &v), tables::BINDINGS),
        Listing::Consumers => (in_vhost("/api/consumers", &v), tables::CONSUMERS),
        Listing::Connections => match &v {
            Some(v) => (format!("/api/vhosts/{v}/connections"), tables::CONNECTIONS),
            None => ("/api/connections".to_owned(), tables::CONNECTIONS),
        },
        Listing::Permissions => match &v {
            Some(v) => (format!("/api/vhosts/{v}/permissions"), tables::PERMISSIONS),
            None => ("/api/permissions".to_owned(), tables::PERMISSIONS),
        },
        Listing::Channels => ("/api/channels".to_owned(), tables::CHANNELS),
        Listing::Users => ("/api/users".to_owned(), tables::USERS),
        Listing::Vhosts => ("/api/vhosts".to_owned(), tables::VHOSTS),
    };
    let mut items = client.get(&path)?;
    if let (Listing::Channels, Some(vhost), Some(all)) = (what, vhost, items.as_array_mut()) {
        all.retain(|channel| channel.get("vhost").and_then(Value::as_str) == Some(vhost));
    }
    Ok(Output::Table(items, columns))
}

fn in_vhost(path: &str, vhost: &Option<String>) -> String {
    match vhost {
        Some(vhost) => format!("{path}/{vhost}"),
        None => path.to_owned(),
    }
}

pub fn purge(client: &Client, vhost: &str, queue: &str) -> Result<Output, CtlError> {
    let path = format!("/api/queues/{}/{}/contents", segment(vhost), segment(queue));
    client.delete(&path, &[])?;
    Ok(Output::Done(format!(
        "purged queue '{queue}' in vhost '{vhost}'"
    )))
}

pub fn delete(client: &Client, vhost: &str, what: &DeleteCommand) -> Result<Output, CtlError> {
    let v = segment(vhost);
    let (path, done) = match what {
        DeleteCommand::Queue {
            name,
            if_empty,
            if_unused,
        } => {
            let mut conditions = Vec::new();
            if *if_empty {
                conditions.push("if-empty=true");
            }
            if *if_unused {
                conditions.push("if-unused=true");
            }
            let mut path = format!("/api/queues/{v}/{}", segment(name));
            if !conditions.is_empty() {
                path = format!("{path}?{}", conditions.join("&"));
            }
            (path, format!("deleted queue '{name}' in vhost '{vhost}'"))
        }
        DeleteCommand::Exchange { name } => (
            format!("/api/exchanges/{v}/{}", segment(name)),
            format!("deleted exchange '{name}' in vhost '{vhost}'"),
        ),
    };
    client.delete(&path, &[])?;
    Ok(Output::Done(done))
}

pub fn declare(client: &Client, vhost: &str, what: &DeclareCommand) -> Result<Output, CtlError> {
    let v = segment(vhost);
    let done = match what {
        DeclareCommand::Queue {
            name,
            durable,
            auto_delete,
            arguments,
        } => {
            let arguments: Map<String, Value> = arguments.iter().cloned().collect();
            let body =
                json!({"durable": durable, "auto_delete": auto_delete, "arguments": arguments});
            client.put(&format!("/api/queues/{v}/{}", segment(name)), &body)?;
            format!("declared queue '{name}' in vhost '{vhost}'")
        }
        DeclareCommand::Exchange {
            name,
            kind,
            durable,
            auto_delete,
        } => {
            let body = json!({"type": kind, "durable": durable, "auto_delete": auto_delete,
                              "internal": false, "arguments": {}});
            client.put(&format!("/api/exchanges/{v}/{}", segment(name)), &body)?;
            format!("declared {kind} exchange '{name}' in vhost '{vhost}'")
        }
        DeclareCommand::Binding {
            source,
            destination,
            destination_type,
            routing_key,
        } => {
            let kind = match destination_type {
                DestinationType::Queue => "q",
                DestinationType::Exchange => "e",
            };
            let (s, d) = (segment(source), segment(destination));
            let body = json!({"routing_key": routing_key, "arguments": {}});
            client.post(&format!("/api/bindings/{v}/e/{s}/{kind}/{d}"), &body)?;
            format!("bound '{destination}' to '{source}' with routing key '{routing_key}' in vhost '{vhost}'")
        }
    };
    Ok(Output::Done(done))
}

pub fn close_connection(
    client: &Client,
    name: &str,
    reason: Option<&str>,
) -> Result<Output, CtlError> {
    let headers: Vec<(&str, &str)> = reason.map(|r| ("X-Reason", r)).into_iter().collect();
    client.delete(&format!("/api/connections/{}", segment(name)), &headers)?;
    Ok(Output::Done(format!("closed connection '{name}'")))
}

/// `cluster status`: from `/api/cluster/status`: this node and the metadata group on lines,
/// then one line per quorum queue (its group's role here, leader and term).
pub fn cluster_status(client: &Client) -> Result<Output, CtlError> {
    let status = client.get("/api/cluster/status")?;
    let text = |value: &Value, path: &str| {
        tables::cell(path.split('.').try_fold(value, |v, key| v.get(key)))
    };
    let peers = status
        .get("peers")
        .and_then(Value::as_object)
        .map(|peers| {
            let list: Vec<String> = peers
                .iter()
                .map(|(id, a)| format!("{id}={}", tables::cell(Some(a))))
                .collect();
            list.join(", ")
        })
        .unwrap_or_default();
    let mut lines = vec![
        ("node_id", text(&status, "node_id")),
        ("listen", text(&status, "listen")),
        ("peers", peers),
        ("metadata_role", text(&status, "metadata.role")),
        ("metadata_leader", text(&status, "metadata.leader")),
        ("metadata_term", text(&status, "metadata.term")),
    ];
    let queues = status.get("quorum_queues").and_then(Value::as_array);
    for queue in queues.into_iter().flatten() {
        lines.push((
            "quorum_queue",
            format!(
                "{}/{}: {} (leader {}, term {}), members {}, {} ready",
                text(queue, "vhost"),
                text(queue, "name"),
                text(queue, "group.role"),
                text(queue, "group.leader"),
                text(queue, "group.term"),
                text(queue, "members"),
                text(queue, "messages_ready"),
            ),
        ));
    }
    Ok(Output::Lines(lines, status))
}

/// `cluster join ID ADDRESS`.
pub fn cluster_join(client: &Client, id: u64, address: &str) -> Result<Output, CtlError> {
    let body = json!({ "node_id": id, "address": address });
    client.post("/api/cluster/join", &body)?;
    Ok(Output::Done(format!("node {id} joined the cluster")))
}

/// `cluster leave ID`.
pub fn cluster_leave(client: &Client, id: u64) -> Result<Output, CtlError> {
    client.post("/api/cluster/leave", &json!({ "node_id": id }))?;
    Ok(Output::Done(format!("node {id} left the cluster")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_integers_and_booleans() {
        assert_eq!(
            parse_argument("x-max-length=10"),
            Ok(("x-max-length".into(), json!(10)))
        );
        assert_eq!(parse_argument("a=true"), Ok(("a".into(), json!(true))));
        assert_eq!(parse_argument("m=lazy"), Ok(("m".into(), json!("lazy"))));
        assert_eq!(parse_argument("k=a=b"), Ok(("k".into(), json!("a=b"))));
        assert!(parse_argument("novalue").is_err());
        assert!(parse_argument("=1").is_err());
    }
}
