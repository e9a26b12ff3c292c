//! The node's view: `/api/overview`, `/api/nodes`, `/api/whoami`, the aliveness test and the
//! health checks (200 when healthy, 503 with the reason when not, as RabbitMQ's).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use warren_protocol::method::ShortStr;

use super::auth::Caller;
use super::lookup::{vhost_or_404, API_CONNECTION};
use super::reply::{rate, timestamp, ApiError, ApiResult};
use super::{Management, RABBITMQ_VERSION};
use crate::broker::message::{Message, Stamp};
use crate::broker::queue::ChannelCredit;
use crate::broker::vhost::{PublishScratch, QueueDeclare};
use crate::server::alarms;

/// Figures summed over the vhosts the caller sees.
#[derive(Default)]
struct Totals {
    ready: u64,
    unacked: u64,
    consumers: u64,
    queues: u64,
    exchanges: u64,
}

fn totals(state: &Management, caller: &Caller) -> Totals {
    let mut totals = Totals::default();
    for name in state.broker.vhost_names() {
        if !caller.sees(state, &name) {
            continue;
        }
        let Some(vhost) = state.broker.vhost(&name) else {
            continue;
        };
        let (exchanges, _) = vhost.object_counts();
        totals.exchanges += exchanges as u64;
        for queue in vhost.queues() {
            let stats = queue.stats();
            totals.queues += 1;
            totals.ready += stats.ready;
            totals.unacked += stats.unacked;
            totals.consumers += u64::from(stats.consumers);
        }
    }
    totals
}

/// RabbitMQ's global `message_stats`, from the registry's counters and the sampled rates.
pub fn message_stats(state: &Management) -> Value {
    let counts = state.registry.totals();
    let rates = state.rates.node();
    json!({
        "publish": counts.received, "publish_details": rate(rates.received),
        "confirm": counts.confirmed, "confirm_details": rate(rates.confirmed),
        "deliver_get": counts.delivered, "deliver_get_details": rate(rates.delivered),
        "redeliver": counts.redelivered, "redeliver_details": rate(rates.redelivered),
        "ack": counts.acknowledged, "ack_details": rate(rates.acknowledged),
        "return_unroutable": counts.received - counts.routed.min(counts.received),
        "return_unroutable_details": rate((rates.received - rates.routed).max(0.0)),
    })
}

fn exchange_types() -> Value {
    let types = ["direct", "fanout", "topic", "headers"].map(|name| {
        json!({"name": name, "description": format!("AMQP {name} exchange"), "enabled": true})
    });
    json!(types)
}

pub async fn overview(State(state): State<Arc<Management>>, caller: Caller) -> Json<Value> {
    let totals = totals(&state, &caller);
    let listeners: Vec<Value> = state
        .listeners
        .iter()
        .map(|(addr, tls)| {
            json!({
                "node": state.node,
                "protocol": if *tls { "amqp/ssl" } else { "amqp" },
                "ip_address": addr.ip().to_string(),
                "port": addr.port(),
            })
        })
        .chain(state.http_listeners.iter().map(|addr| {
            json!({"node": state.node, "protocol": "http", "ip_address": addr.ip().to_string(), "port": addr.port()})
        }))
        .collect();
    Json(json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": state.node,
        "erlang_version": "n/a",
        "disable_stats": false,
        "enable_queue_totals": true,
        "message_stats": message_stats(&state),
        "queue_totals": {
            "messages": totals.ready + totals.unacked, "messages_details": rate(0.0),
            "messages_ready": totals.ready, "messages_ready_details": rate(0.0),
            "messages_unacknowledged": totals.unacked, "messages_unacknowledged_details": rate(0.0),
        },
        "object_totals": {
            "channels": state.registry.connections().iter().map(|c| u64::from(c.channel_count())).sum::<u64>(),
            "connections": state.registry.connection_count(),
            "consumers": totals.consumers,
            "exchanges": totals.exchanges,
            "queues": totals.queues,
        },
        "node": state.node,
        "listeners": listeners,
    }))
}

pub async fn cluster_name(State(state): State<Arc<Management>>, _caller: Caller) -> Json<Value> {
    Json(json!({ "name": state.node }))
}

pub async fn extensions(_caller: Caller) -> Json<Value> {
    Json(json!([]))
}

fn node_json(state: &Management) -> Value {
    let rss = alarms::rss_bytes();
    let disk = alarms::free_disk_bytes(&state.data_dir).unwrap_or(0);
    let limit = state
        .thresholds
        .memory_high_watermark
        .load(std::sync::atomic::Ordering::Relaxed);
    let disk_limit = state
        .thresholds
        .disk_free_limit
        .load(std::sync::atomic::Ordering::Relaxed);
    let alarm = state.alarms.borrow().clone();
    json!({
        "name": state.node,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "mem_used": rss,
        "mem_limit": limit,
        "mem_alarm": alarm.as_deref().is_some_and(|a| a.contains("memory")),
        "disk_free": disk,
        "disk_free_limit": disk_limit,
        "disk_free_alarm": alarm.as_deref().is_some_and(|a| a.contains("disk")),
        "uptime": state.started.elapsed().as_millis() as u64,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "started_at": timestamp(state.started_at),
    })
}

pub async fn nodes(State(state): State<Arc<Management>>, _caller: Caller) -> Json<Value> {
    Json(json!([node_json(&state)]))
}

pub async fn node(
    State(state): State<Arc<Management>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    match name == state.node {
        true => Ok(Json(node_json(&state))),
        false => Err(ApiError::not_found()),
    }
}

pub async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.name, "tags": caller.tags }))
}

/// 503 with RabbitMQ's body for a failed health check.
fn unhealthy(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
        .into_response()
}

fn healthy() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn alarms(State(state): State<Arc<Management>>, _caller: Caller) -> Response {
    match state.alarms.borrow().clone() {
        None => healthy(),
        Some(alarm) => unhealthy(format!("resource alarm(s) in effect: {alarm}")),
    }
}

pub async fn virtual_hosts(State(state): State<Arc<Management>>, _caller: Caller) -> Response {
    // Every vhost the broker has is up: they have no process of their own that could be down.
    let _ = state.broker.vhost_names();
    healthy()
}

pub async fn port_listener(
    State(state): State<Arc<Management>>,
    _caller: Caller,
    Path(port): Path<String>,
) -> ApiResult<Response> {
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{port}' is not a port number")))?;
    let ports = state.listeners.iter().map(|(a, _)| a.port());
    let ports = ports.chain(state.http_listeners.iter().map(|a| a.port()));
    Ok(match ports.clone().any(|p| p == port) {
        true => Json(json!({"status": "ok", "port": port})).into_response(),
        false => unhealthy(format!(
            "No active listener on port {port}; listening on {:?}",
            ports.collect::<Vec<_>>()
        )),
    })
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish a message to it and get it
/// back.
pub async fn aliveness(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.may_manage(&state, &vhost)?;
    let handle = vhost_or_404(&state, &vhost)?;
    let name = ShortStr::from_static("aliveness-test");
    let declare = QueueDeclare {
        name: name.clone(),
        server_named: false,
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: Default::default(),
    };
    let queue = handle.declare_queue(declare, API_CONNECTION)?.queue;
    let body = Bytes::from_static(b"test_message");
    let message = Arc::new(Message::new(b"", name.as_bytes(), &[0, 0], body.clone()));
    let mut scratch = PublishScratch::default();
    handle.publish(&message, Stamp::default(), &mut scratch)?;
    let taker = Arc::new(ChannelCredit::default());
    let mut found = false;
    while let Some((entry, _)) = queue.get(true, &taker) {
        found |= entry.message.body() == &body[..];
    }
    match found {
        true => Ok(healthy()),
        false => Ok(unhealthy("the test message did not come back".into())),
    }
}
