//! `/api/queues`: list, show, declare (PUT), delete, purge (`DELETE …/contents`) and get
//! messages (`POST …/get`). Declares and deletes are the vhost's own calls, checked and
//! persisted as `queue.declare` / `queue.delete` are.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::listing::{list, ListQuery, Named};
use super::lookup::{short, vhost_or_404, visible_vhost, API_CONNECTION};
use super::reply::{self, created_or_not, flag, parse_body, rate, table_json, ApiError, ApiResult};
use super::Management;
use crate::broker::queue::Queue;
use crate::broker::vhost::{QueueDeclare, Vhost};

/// A queue with its vhost, for listing.
pub struct Listed {
    pub vhost: Arc<Vhost>,
    pub queue: Arc<Queue>,
}

impl Named for Listed {
    fn vhost(&self) -> &str {
        &self.vhost.name
    }
    fn name(&self) -> &str {
        self.queue.name.as_str()
    }
    fn name_bytes(&self) -> &[u8] {
        self.queue.name.as_bytes()
    }
    fn sort_value(&self, path: &str) -> Option<f64> {
        let stats = || self.queue.stats();
        let value = match path {
            "messages" => {
                let stats = stats();
                stats.ready + stats.unacked
            }
            "messages_ready" => stats().ready,
            "messages_unacknowledged" => stats().unacked,
            "consumers" => u64::from(stats().consumers),
            "message_bytes" | "message_bytes_ready" => stats().ready_bytes,
            "memory" | "message_bytes_ram" => stats().memory,
            "message_stats.publish" => stats().published,
            "message_stats.deliver_get" => stats().delivered,
            _ => return None,
        };
        Some(value as f64)
    }
}

/// RabbitMQ's name of the queue's type.
fn queue_type(queue: &Queue) -> &'static str {
    match (queue.stream(), queue.quorum()) {
        (Some(_), _) => "stream",
        (_, Some(_)) => "quorum",
        _ => "classic",
    }
}

/// A queue as RabbitMQ 3.10 shows it (the fields tools read).
pub fn queue_json(state: &Management, vhost: &str, queue: &Queue) -> Value {
    let stats = queue.stats();
    let rates = state.rates.queue(queue);
    let idle = state.rates.idle_since(queue);
    let consumers = queue.consumer_infos();
    json!({
        "name": queue.name.as_str(),
        "vhost": vhost,
        "durable": queue.options.durable,
        "auto_delete": queue.options.auto_delete,
        "exclusive": queue.options.exclusive_owner.is_some(),
        "arguments": table_json(&queue.options.arguments),
        "node": state.node,
        "state": "running",
        "type": queue_type(queue),
        "policy": null,
        "exclusive_consumer_tag": consumers.iter().find(|c| c.exclusive).map(|c| c.tag.as_str()),
        "messages": stats.ready + stats.unacked,
        "messages_details": rate(0.0),
        "messages_ready": stats.ready,
        "messages_ready_details": rate(0.0),
        "messages_unacknowledged": stats.unacked,
        "messages_unacknowledged_details": rate(0.0),
        "message_bytes": stats.ready_bytes,
        "message_bytes_ready": stats.ready_bytes,
        "message_bytes_ram": stats.memory,
        "memory": stats.memory,
        "consumers": stats.consumers,
        "consumer_capacity": if stats.consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if stats.consumers > 0 { 1.0 } else { 0.0 },
        "idle_since": idle,
        "message_stats": {
            "publish": stats.published,
            "publish_details": rate(rates.publish),
            "deliver_get": stats.delivered,
            "deliver_get_details": rate(rates.deliver_get),
        },
    })
}

fn listed(state: &Management, caller: &Caller, vhost: Option<&str>) -> ApiResult<Vec<Listed>> {
    let vhosts = match vhost {
        Some(name) => vec![visible_vhost(state, caller, name)?],
        None => state
            .broker
            .vhost_names()
            .iter()
            .filter(|name| caller.sees(state, name))
            .filter_map(|name| state.broker.vhost(name))
            .collect(),
    };
    Ok(vhosts
        .into_iter()
        .flat_map(|vhost| {
            vhost.queues().into_iter().map(move |queue| Listed {
                vhost: Arc::clone(&vhost),
                queue,
            })
        })
        .collect())
}

pub async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = listed(&state, &caller, None)?;
    let rendered = list(items, &query, |l| {
        queue_json(&state, &l.vhost.name, &l.queue)
    })?;
    Ok(Json(rendered))
}

pub async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = listed(&state, &caller, Some(&vhost))?;
    let rendered = list(items, &query, |l| {
        queue_json(&state, &l.vhost.name, &l.queue)
    })?;
    Ok(Json(rendered))
}

fn queue_or_404(vhost: &Vhost, name: &str) -> ApiResult<Arc<Queue>> {
    vhost.queue_named(name).ok_or_else(ApiError::not_found)
}

pub async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let handle = visible_vhost(&state, &caller, &vhost)?;
    let queue = queue_or_404(&handle, &name)?;
    let mut shown = queue_json(&state, &vhost, &queue);
    let consumers: Vec<Value> = queue
        .consumer_infos()
        .iter()
        .map(|c| super::connections::consumer_json(&state, &vhost, queue.name.as_str(), c))
        .collect();
    shown["consumer_details"] = Value::Array(consumers);
    Ok(Json(shown))
}

pub async fn put(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let body = parse_body(&body)?;
    if name.is_empty() || name.starts_with("amq.") {
        return Err(ApiError::forbidden(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    let arguments = reply::json_table(body.get("arguments")).map_err(ApiError::bad_request)?;
    let existed = handle.queue_named(&name).is_some();
    let declare = QueueDeclare {
        name: short(&name, "queue")?,
        server_named: false,
        passive: false,
        durable: flag(&body, "durable", false)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments,
    };
    handle.declare_queue(declare, API_CONNECTION)?;
    Ok(created_or_not(!existed))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

pub async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    queue_or_404(&handle, &name)?;
    let (_, consumers) = handle.delete_queue(
        &short(&name, "queue")?,
        query.if_unused.as_deref() == Some("true"),
        query.if_empty.as_deref() == Some("true"),
        API_CONNECTION,
    )?;
    for consumer in consumers {
        consumer.cancel();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/queues/{vhost}/{name}/contents`.
pub async fn purge(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let queue = handle.queue(&short(&name, "queue")?, API_CONNECTION)?;
    queue.purge();
    Ok(StatusCode::NO_CONTENT.into_response())
}
